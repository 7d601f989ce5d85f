"""Packaging: the sdist, installed (not editable) into a fresh venv, enables itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import rucio_metrics

from .servers.jupyter_server_process import REPO


def run(*command: str | Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(root / "home"), JUPYTER_CONFIG_DIR=str(root / "config"))
    run(sys.executable, "-m", "build", "--sdist", "--outdir", root / "dist", REPO, env=env)
    (sdist,) = (root / "dist").glob("rucio_metrics-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("jupyter-config/jupyter_server_config.d/rucio_metrics.json") for n in names), names
    assert any(n.endswith("/LICENSE") for n in names)
    # The README links to these: they travel with it.
    assert any(n.endswith("/docs/operations.md") for n in names) and any(n.endswith(".png") for n in names)
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, env=env)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", sdist, env=env)
    return venv, env


def extension_state(venv: Path, env: dict[str, str]) -> str:
    listing = run(venv / "bin" / "jupyter", "server", "extension", "list", env=env)
    return re.sub(r"\x1b\[[0-9;]*m", "", listing)  # drop colours


def test_pip_install_enables_the_extension(installed):
    venv, env = installed
    shipped = venv / "etc" / "jupyter" / "jupyter_server_config.d" / "rucio_metrics.json"
    assert shipped.is_file()
    listing = extension_state(venv, env)
    assert "rucio_metrics enabled" in listing
    assert re.search(rf"rucio_metrics {re.escape(rucio_metrics.__version__)} +OK", listing), listing


def test_disable_and_enable(installed):
    venv, env = installed
    run(venv / "bin" / "jupyter", "server", "extension", "disable", "rucio_metrics", env=env)
    assert "rucio_metrics disabled" in extension_state(venv, env)
    run(venv / "bin" / "jupyter", "server", "extension", "enable", "rucio_metrics", env=env)
    assert "rucio_metrics enabled" in extension_state(venv, env)
