"""Bearer tokens read from files: the one check of their shape, in words that never show them.

Neither the token nor the file's path is ever put in a message: a token
pasted where the path belongs would otherwise be printed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class TokenFileError(Exception):
    """A token file that cannot be used; the message says what is wrong, never the token or the path."""


def token_problem(token: str, min_length: int = 1) -> str | None:
    """Which rule ``token`` breaks, in words that never include it; None if it is usable."""
    if not token:
        return "is empty"
    if "\n" in token or "\r" in token:
        return "has more than one line (one token alone is expected)"
    if not all("!" <= c <= "~" for c in token):
        return "contains a space, a control character or a character outside printable ASCII"
    if len(token) < min_length:
        return f"holds a token shorter than {min_length} characters (make one with: openssl rand -hex 32)"
    return None


def readable_by_others(path: str) -> bool:
    """Whether the file at ``path`` may be read by its group or by anyone (False if it cannot be stat'ed)."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


class TokenFile:
    """A token kept in a file, read again when the file changes (a rotated Kubernetes Secret).

        token = TokenFile("/etc/jupyter/metrics-token", min_length=16)
        token.read()    # raises TokenFileError saying what is wrong with the file
    """

    def __init__(self, path: str, min_length: int = 1) -> None:
        self.path = path
        self.min_length = min_length
        self._stamp: tuple[int, int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        """The token; re-read only when the file's inode, size, mtime or ctime changed.

        The ctime catches a rewrite in place whose size is the same and whose mtime
        was set back (``touch -r``, a restored backup): nothing but the kernel sets it.
        """
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise TokenFileError(f"cannot be read ({e.strerror or type(e).__name__})") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            try:
                token = Path(self.path).read_text(errors="replace").strip()
            except OSError as e:
                raise TokenFileError(f"cannot be read ({e.strerror or type(e).__name__})") from None
            problem = token_problem(token, self.min_length)
            if problem:
                raise TokenFileError(problem)
            self._token, self._stamp = token, stamp
        return self._token
