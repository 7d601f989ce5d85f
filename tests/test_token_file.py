"""Token files: read again whenever the file changes, refused by the rule they break, never shown."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rucio_metrics.token_file import TokenFile, TokenFileError, readable_by_others, token_problem

FIRST = "a" * 32
SECOND = "b" * 32  # the same length: a size check alone cannot tell them apart


def rewrite_in_place(path: Path, text: str, keep_mtime: bool) -> None:
    """Overwrite ``path``'s bytes in the same inode, optionally setting its mtime back."""
    before = path.stat()
    time.sleep(0.02)  # past the file system's timestamp granularity
    with open(path, "r+") as f:
        f.write(text)
        f.truncate()
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-changed", "mtime-set-back"])
def test_a_same_length_rewrite_in_place_is_read_again(tmp_path: Path, keep_mtime: bool) -> None:
    # A revoked token replaced by one of the same length must stop working, even if the mtime was set back.
    path = tmp_path / "token"
    path.write_text(FIRST + "\n")
    token = TokenFile(str(path))
    assert token.read() == FIRST
    rewrite_in_place(path, SECOND + "\n", keep_mtime)
    assert token.read() == SECOND


def test_a_short_token_is_refused_when_a_minimum_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("x" * 15)
    with pytest.raises(TokenFileError, match="shorter than 16 characters") as raised:
        TokenFile(str(path), min_length=16).read()
    assert "x" * 15 not in str(raised.value)
    path.write_text("x" * 16)
    assert TokenFile(str(path), min_length=16).read() == "x" * 16


def test_messages_never_show_the_path_a_token_may_have_been_pasted_into(tmp_path: Path) -> None:
    pasted = "0123456789abcdef" * 4  # a token given where the path belongs
    with pytest.raises(TokenFileError) as raised:
        TokenFile(pasted).read()
    assert pasted not in str(raised.value)
    assert "cannot be read" in str(raised.value)


@pytest.mark.parametrize(("mode", "shared"), [(0o600, False), (0o400, False), (0o640, True), (0o604, True)])
def test_readable_by_others(tmp_path: Path, mode: int, shared: bool) -> None:
    path = tmp_path / "token"
    path.write_text(FIRST)
    path.chmod(mode)
    assert readable_by_others(str(path)) is shared


def test_the_rules_name_what_is_wrong() -> None:
    assert token_problem("") == "is empty"
    assert token_problem(FIRST) is None
    assert "shorter than 40" in str(token_problem(FIRST, 40))
