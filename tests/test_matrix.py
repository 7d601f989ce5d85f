"""The compatibility matrix and what the project claims agree (the matrix itself: scripts/test-matrix)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .matrix_cases import rucio_metrics_problems
from .support import matrix_envs
from .support.interpreters import Interpreter
from .support.matrix import (
    LOWEST,
    PACKAGES,
    PYTHONS,
    REPO,
    Case,
    admitted,
    install_requires,
    python_requires,
    supported_versions_table,
    system_cases,
)
from .support.matrix_envs import key

README = (REPO / "README.md").read_text()
SUPPORTED_VERSIONS = (REPO / "docs" / "supported-versions.md").read_text()


def test_setup_cfg_lower_bounds_are_the_lowest_tested_versions():
    requires = install_requires()
    for package in PACKAGES:
        if package == "rucio-jupyterlab":
            assert "rucio-jupyterlab" not in requires  # not a dependency: see docs/supported-versions.md
            continue
        assert str(requires[package.replace("_", "-")].specifier) == f">={LOWEST[package]}", package


def test_python_requires_admits_exactly_the_tested_pythons():
    assert str(python_requires()) == f">={PYTHONS[0]}"
    assert all(admitted(p) for p in PYTHONS)
    assert not admitted("3.8")


@pytest.mark.parametrize("page", ["README.md", "docs/supported-versions.md"])
def test_the_tables_of_supported_versions_are_the_matrix(page):
    text = README if page == "README.md" else SUPPORTED_VERSIONS
    table = re.search(r"^\| package .*?\n(?=\n)", text, re.S | re.M)
    assert table is not None
    assert table.group(0) == supported_versions_table()


def vermin(path: Path) -> subprocess.CompletedProcess[str]:
    """vermin's verdict on ``path`` against the oldest Python that setup.cfg admits."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--no-tips", f"--target={PYTHONS[0]}-", "--violations",
         str(path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )


def test_vermin_finds_nothing_newer_than_python_requires():
    # A second line of defence beside the matrix's Python cases: the package's
    # source needs nothing beyond the oldest Python that setup.cfg admits.
    done = vermin(REPO / "rucio_metrics")
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_flags_newer_syntax(tmp_path):
    (tmp_path / "newer.py").write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    done = vermin(tmp_path)
    assert done.returncode != 0 and "pattern matching requires !2, 3.10" in done.stdout, done.stdout


def test_environment_key_follows_interpreter_and_pins():
    case = system_cases("3.11")[0]
    python = Interpreter("/usr/bin/python3", "3.11.2")
    assert key(case, python) == key(Case(case.name, case.python, dict(case.pins)), python)
    assert key(case, python) != key(case, Interpreter("/usr/bin/python3", "3.11.9"))
    assert key(case, python) != key(Case(case.name, case.python, {**case.pins, "tornado": "6.3"}), python)
    assert key(case, python).startswith(case.name + "-")


def test_prune_removes_only_stale_environments(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix_envs, "CACHE", tmp_path)
    stale = time.time() - (matrix_envs.PRUNE_AFTER_DAYS + 1) * 86400
    for name in ("current", "recent", "old", "old-half-made"):
        (tmp_path / name).mkdir()
        (tmp_path / f"{name}.lock").touch()
    for name in ("current", "recent", "old"):
        (tmp_path / name / "ready").touch()
    os.utime(tmp_path / "old" / "ready", (stale, stale))
    os.utime(tmp_path / "current" / "ready", (stale, stale))
    os.utime(tmp_path / "old-half-made", (stale, stale))
    assert sorted(matrix_envs.prune({"current"})) == ["old", "old-half-made"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "current.lock", "recent", "recent.lock"]


def test_the_matrix_log_check_tells_ours_from_upstreams():
    ours = "[W 2026-11-26 05:00:00.000 ServerApp] rucio_metrics: RucioAPI has changed shape: x not found"
    not_loaded = "[W 2026-11-26 05:00:00.000 ServerApp] rucio_metrics | extension failed loading with message: X"
    upstream_info = "[I 2026-11-26 05:00:00.000 ServerApp] rucio_metrics: instrumented 16 routes: /rucio-jupyterlab/x"
    through_our_wrapper = """Traceback (most recent call last):
  File "/env/lib/python3.11/site-packages/rucio_metrics/outbound.py", line 1, in measured
  File "/env/lib/python3.11/site-packages/rucio_jupyterlab/rucio/rucio.py", line 2, in get_scopes
TypeError: RucioRequestsException.__init__() takes 2 positional arguments but 3 were given
"""
    raised_in_ours = """Traceback (most recent call last):
  File "/env/lib/python3.11/site-packages/tornado/web.py", line 1, in _execute
  File "/env/lib/python3.11/site-packages/rucio_metrics/instrument.py", line 2, in on_finish
KeyError: 'x'
"""
    assert rucio_metrics_problems("\n".join([upstream_info, through_our_wrapper])) == []
    assert rucio_metrics_problems("\n".join([ours, not_loaded, raised_in_ours])) == [
        ours, not_loaded, "an exception raised in /env/lib/python3.11/site-packages/rucio_metrics/instrument.py",
    ]
