"""rucio_metrics_build_info: the versions a server runs, one series, on a fresh registry."""

from __future__ import annotations

import platform
import re
from importlib.metadata import version

import jupyter_server
from prometheus_client import CollectorRegistry, generate_latest

import rucio_metrics
from rucio_metrics.build_info import BUILD_INFO, LABELS, BuildInfo, installed_version

from .servers.jupyter_server_process import REPO
from .support.deploy_files import promtool


def test_the_labels_are_the_versions_this_process_runs(registry: CollectorRegistry) -> None:
    assert BuildInfo.on(registry).labels == {
        "version": rucio_metrics.__version__,
        "rucio_jupyterlab_version": version("rucio-jupyterlab"),
        "jupyter_server_version": jupyter_server.__version__,
        "python_version": platform.python_version(),
    }


def test_a_distribution_not_installed_is_an_empty_version() -> None:
    assert installed_version("rucio-jupyterlab") == version("rucio-jupyterlab")
    assert installed_version("no-such-distribution-here") == ""


def test_metadata_without_a_version_is_an_empty_version(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # What Python 3.9 and 3.10 give for a dist-info without Version: the scrape must not break on it.
    monkeypatch.setattr("importlib.metadata.version", lambda distribution: None)
    assert installed_version("rucio-jupyterlab") == ""


def test_one_series_at_1_that_promtool_accepts(registry: CollectorRegistry) -> None:
    info = BuildInfo.on(registry)
    assert BuildInfo.on(registry) is info
    text = generate_latest(registry).decode()
    samples = [line for line in text.splitlines() if line.startswith(BUILD_INFO)]
    assert len(samples) == 1 and samples[0].endswith(" 1.0")
    assert f"# TYPE {BUILD_INFO} gauge" in text and f"# HELP {BUILD_INFO} " in text
    result = promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_readme_and_the_metrics_page_list_it_as_the_code_has_it() -> None:
    labels = ", ".join(f"`{label}`" for label in LABELS)
    for page in ("README.md", "docs/metrics.md"):
        text = (REPO / page).read_text()
        assert re.search(rf"^\| `{BUILD_INFO}` \| gauge \| {re.escape(labels)} \| ", text, re.M), page
