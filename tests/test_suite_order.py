"""The workers' order (``tests/conftest.py``) names files that exist: a renamed one would lose its place quietly."""

from __future__ import annotations

from pathlib import Path

from .conftest import SLOWEST_FIRST


def test_every_file_the_order_names_is_a_test_file() -> None:
    here = Path(__file__).parent
    assert [name for name in SLOWEST_FIRST if not (here / name).is_file()] == []
    assert len(set(SLOWEST_FIRST)) == len(SLOWEST_FIRST)
