"""Shared fixtures: a fresh registry per test, and a temporary HOME for rucio-jupyterlab."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry


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
