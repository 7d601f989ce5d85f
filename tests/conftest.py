"""Shared fixtures: a fresh registry per test, and a temporary HOME for rucio-jupyterlab."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(autouse=True)
def _temporary_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing rucio_jupyterlab.db creates ~/.rucio_jupyterlab/cache.db.
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
