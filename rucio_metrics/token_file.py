"""Bearer tokens read from files: the one check of their shape, in words that never show them."""

from __future__ import annotations

import os
from pathlib import Path


class TokenFileError(Exception):
    """A token file that cannot be used; the message names the file and the rule, never the token."""


def token_problem(token: str) -> str | None:
    """Which rule ``token`` breaks, in words that never include it; None if it is usable."""
    if not token:
        return "is empty"
    if "\n" in token or "\r" in token:
        return "has more than one line (one token alone is expected)"
    if not all("!" <= c <= "~" for c in token):
        return "contains a space, a control character or a character outside printable ASCII"
    return None


class TokenFile:
    """A token kept in a file, read again when the file changes (a rotated Kubernetes Secret).

        token = TokenFile("/etc/jupyter/metrics-token")
        token.read()    # raises TokenFileError naming the file and what is wrong
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        """The token; re-read only when the file's inode, size or mtime changed."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise TokenFileError(f"{self.path} cannot be read: {e.strerror or e}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                token = Path(self.path).read_text(errors="replace").strip()
            except OSError as e:
                raise TokenFileError(f"{self.path} cannot be read: {e.strerror or e}") from None
            problem = token_problem(token)
            if problem:
                raise TokenFileError(f"{self.path} {problem}")
            self._token, self._stamp = token, stamp
        return self._token
