"""The release files: ``python -m build``'s sdist and wheel pass ``twine check --strict``, and the wheel,
installed into a fresh virtual environment beside rucio-jupyterlab, enables itself in a real ``jupyter server``.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from trove_classifiers import classifiers as known_classifiers

import rucio_metrics

from .servers.jupyter_server_process import REPO, JupyterServerProcess, sample
from .support.matrix import PYTHONS, python_requires

VERSION = rucio_metrics.__version__
REPOSITORY = "https://github.com/rucio/rucio-metrics"


def run(*command: str | Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This environment without the checkout on the path, with a HOME and Jupyter config of its own."""
    root = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(root), JUPYTER_CONFIG_DIR=str(root / "config"))
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> tuple[Path, Path]:
    """(sdist, wheel) as the release workflow builds them: the wheel is built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO, env=clean_env)
    (sdist,) = out.glob(f"rucio_metrics-{VERSION}.tar.gz")
    (wheel,) = out.glob(f"rucio_metrics-{VERSION}-py3-none-any.whl")
    return sdist, wheel


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as whl:
        return email.message_from_string(whl.read(f"rucio_metrics-{VERSION}.dist-info/METADATA").decode())


def test_twine_check_strict_passes(dist: tuple[Path, Path], clean_env: dict[str, str]) -> None:
    output = run(sys.executable, "-m", "twine", "check", "--strict", *dist, env=clean_env)
    assert output.count("PASSED") == 2, output


def test_the_metadata_names_the_distribution_its_pythons_and_its_home(dist: tuple[Path, Path]) -> None:
    meta = wheel_metadata(dist[1])
    assert (meta["Name"], meta["Version"], meta["License"]) == ("rucio-metrics", VERSION, "Apache-2.0")
    # The supported-versions table's Pythons, as python_requires and as classifiers.
    assert meta["Requires-Python"] == str(python_requires())
    classifiers = meta.get_all("Classifier")
    pythons = [c for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert [c.rsplit(" :: ", 1)[1] for c in pythons] == list(PYTHONS)
    assert "Framework :: Jupyter" in classifiers
    assert set(classifiers) <= known_classifiers, set(classifiers) - known_classifiers  # PyPI refuses others
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Documentation", "Changelog", "Source", "Issues"}
    for url in urls.values():
        assert url.startswith(REPOSITORY)
        if "/blob/main/" in url:
            assert (REPO / url.split("/blob/main/", 1)[1]).is_file(), url
    dependencies = meta.get_all("Requires-Dist")
    assert [d for d in dependencies if "extra ==" not in d] == \
        ["jupyter_server>=2.4.0", "tornado>=6.2", "prometheus_client>=0.5.0", "traitlets"]


def test_the_description_on_pypi_links_to_this_release_s_files(dist: tuple[Path, Path]) -> None:
    # PyPI resolves no relative link: every one points at the tag of this version, at a file that exists.
    description = wheel_metadata(dist[1]).get_payload()
    assert isinstance(description, str) and description.startswith("# rucio_metrics")
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets and all(re.match(r"https?://|#", t) for t in targets), targets
    ours = [t for t in targets if t.startswith(REPOSITORY)]
    assert ours
    for target in ours:
        kind, tag, path = re.fullmatch(rf"{REPOSITORY}/(blob|raw)/([^/]+)/(.+?)(?:#.*)?", target).groups()  # type: ignore[union-attr]
        assert tag == f"v{VERSION}" and (REPO / path).exists(), target
        assert (kind == "raw") == path.endswith(".png"), target


def test_the_wheel_and_the_sdist_carry_what_they_need(dist: tuple[Path, Path]) -> None:
    sdist, wheel = dist
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert f"rucio_metrics-{VERSION}.data/data/etc/jupyter/jupyter_server_config.d/rucio_metrics.json" in names
    assert {"rucio_metrics/py.typed", "rucio_metrics/fleet.py", "rucio_metrics/build_info.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "deploy/"))]
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    # The README links to these: they travel with it; and the tests.
    assert {"LICENSE", "CHANGELOG.md", "docs/operations.md", "docs/prometheus-graph.png", "setup.py",
            "jupyter-config/jupyter_server_config.d/rucio_metrics.json", "tests/test_install.py"} <= in_sdist


@pytest.fixture(scope="module")
def installed(dist: tuple[Path, Path], clean_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment: the wheel (not the checkout) installed by pip, beside rucio-jupyterlab.

    The dependencies, the wheel's and rucio-jupyterlab's from PyPI, come first by uv where the test
    environment has it (seconds where pip takes a minute and more), resolved together as pip would; the
    wheel itself by the environment's own pip, which places its data files, and pip checks the result.
    """
    venv = tmp_path_factory.mktemp("venv")
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "venv", venv, env=clean_env)
    requires = [d for d in wheel_metadata(dist[1]).get_all("Requires-Dist") if "extra ==" not in d]
    uv = Path(sys.executable).parent / "uv"
    pip: list[str | Path] = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # Compiled as pip compiles them: else each `jupyter` command here compiles its modules anew.
    dependencies_by = [uv, "pip", "install", "-q", "--compile-bytecode", "--python", python] if uv.is_file() else pip
    run(*dependencies_by, *requires, "rucio-jupyterlab", env=clean_env)
    run(*pip, "--no-compile", "--no-deps", dist[1], env=clean_env)
    run(python, "-m", "pip", "check", env=clean_env)
    return venv


def extension_state(venv: Path, env: dict[str, str]) -> str:
    listing = run(venv / "bin" / "jupyter", "server", "extension", "list", env=env)
    return re.sub(r"\x1b\[[0-9;]*m", "", listing)  # drop colours


def test_pip_install_of_the_wheel_enables_the_extension(installed: Path, clean_env: dict[str, str]) -> None:
    shipped = installed / "etc" / "jupyter" / "jupyter_server_config.d" / "rucio_metrics.json"
    assert shipped.is_file()
    listing = extension_state(installed, clean_env)
    assert "rucio_metrics enabled" in listing
    assert re.search(rf"rucio_metrics {re.escape(VERSION)} +OK", listing), listing


def test_a_real_server_from_the_wheel_serves_the_metrics(installed: Path) -> None:
    # Only rucio-jupyterlab is enabled by our config: rucio_metrics by the wheel's own json.
    only_rucio = {"ServerApp": {"jpserver_extensions": {"rucio_jupyterlab.server": True}}}
    # Run in the server's process: where the rucio_metrics it imports lives.
    where = "import pathlib, rucio_metrics; pathlib.Path('imported-from').write_text(rucio_metrics.__file__)\n"
    with JupyterServerProcess(python=str(installed / "bin" / "python"), extra_config=only_rucio,
                              python_config=where) as server:
        assert server.request("GET", "rucio-jupyterlab/instances").status_code == 200
        samples = server.samples()
        build_info = server.samples("rucio_metrics_")
        imported_from = Path((server.root / "imported-from").read_text())
    assert sample(samples, "rucio_jupyterlab_http_instrumented_routes") == 16
    assert sample(samples, "rucio_jupyterlab_http_requests_total", handler="/rucio-jupyterlab/instances",
                  method="GET", status_code="200") == 1
    [(_, labels)] = build_info
    assert dict(labels)["version"] == VERSION
    # The server imported the wheel's copy in the environment, not this checkout.
    assert imported_from.is_relative_to(installed / "lib"), imported_from


def test_disable_and_enable(installed: Path, clean_env: dict[str, str]) -> None:
    run(installed / "bin" / "jupyter", "server", "extension", "disable", "rucio_metrics", env=clean_env)
    assert "rucio_metrics disabled" in extension_state(installed, clean_env)
    run(installed / "bin" / "jupyter", "server", "extension", "enable", "rucio_metrics", env=clean_env)
    assert "rucio_metrics enabled" in extension_state(installed, clean_env)
