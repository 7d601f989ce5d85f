"""Shared fixtures: a fresh registry per test, and a temporary HOME for rucio-jupyterlab; the files'
order for the workers."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

# The test files that take longest (seconds of one worker, on a machine of 2 cores), longest first.
# ``scripts/test`` hands whole files to the workers in the order collected (``--dist loadfile
# --no-loadscope-reorder``): starting these first keeps a long file from running alone at the end while
# the other worker idles. Only the order changes; no test depends on it.
SLOWEST_FIRST = (
    "test_deploy.py",
    "test_benchmarks.py",
    "test_transfers.py",
    "test_install.py",
    "test_sharding.py",
    "test_reliability.py",
    "test_fleet.py",
    "test_time_to_data.py",
    "test_rule_equivalence.py",
    "test_browser.py",
    "test_zero_to_jupyterhub.py",
    "test_operator_hub_page.py",
    "test_rucio_routes.py",
    "test_hub_credentials.py",
    "test_error_budget.py",
    "test_prometheus.py",
    "test_kubernetes.py",
    "test_screenshot.py",
    "test_remote_write.py",
    "test_metrics_listener.py",
    "test_scrape_limits.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests stay in order


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(autouse=True)
def _temporary_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing rucio_jupyterlab.db creates ~/.rucio_jupyterlab/cache.db.
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(autouse=True)
def _no_closed_current_loop() -> Iterator[None]:
    # pytest_jupyter's autouse jp_asyncio_loop (in the modules that import its fixtures) closes the
    # thread's current loop after each test and leaves it current: a later test in the same worker
    # that runs on IOLoop.current() (pytest-tornasync without io_loop) would find it closed.
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return
    if loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())
