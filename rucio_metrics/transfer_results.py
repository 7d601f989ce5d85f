"""What a finished transfer child left behind, read from the Jupyter server's process.

rucio-jupyterlab 41 runs each download and upload in a ``multiprocessing``
child and keeps the result where its own UI reads it:

- a download (one per DID) writes ``.donefile`` (``{"paths": {did: path}}``)
  on success or ``error.json`` (``exception_class``, ``exception_message``) on
  failure into ``~/rucio/<namespace>/downloads/<base32(did)>/``; the parent
  removes both before it starts the child, so what is there is this child's;
- an upload (one per file) inserts a ``FileUploadJob`` row with its own pid
  into the extension's database, marks it ``uploaded`` on success, and logs
  a failure's traceback to ``~/.rucio_jupyterlab/logs/upload/<id>.log``.

A child that leaves no result (killed, or dead before it got that far; for
an upload also one ended by a signal) ended ``killed``. Reading happens once per transfer, after the child exited, off
the IOLoop; never during a scrape.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

SUCCEEDED, FAILED, KILLED = "succeeded", "failed", "killed"
OUTCOMES = (SUCCEEDED, FAILED, KILLED)
# The failure reason of a transfer whose child never ran: the spawn failed (upstream still says success).
NOT_STARTED = "not_started"
# Any reason that is not one of Rucio's client exception classes.
OTHER = "other"

# At most this much of a result file or upload log is read: a corrupt or huge file cannot stall the reader.
MAX_READ = 1 << 20

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


@dataclass(frozen=True)
class Result:
    outcome: str
    reason: str | None = None  # for FAILED only
    bytes: int = 0


def rucio_exception_names() -> frozenset[str]:
    """Class names of Rucio's client exceptions (``rucio.common.exception``): the bounded reasons."""
    try:
        from rucio.common import exception
    except Exception:
        return frozenset()
    return frozenset(
        name for name, value in vars(exception).items()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == exception.__name__
    )


def reason_label(exception_class: object, known: frozenset[str]) -> str:
    """``exception_class``'s last dotted part if it is one of ``known``, else ``other``."""
    name = str(exception_class or "").rsplit(".", 1)[-1]
    return name if name in known else OTHER


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(MAX_READ)
    except OSError:
        return None


def _size(path: object) -> int:
    try:
        return os.stat(str(path)).st_size
    except (OSError, ValueError):
        return 0


def download_result(dest_folder: str, known: frozenset[str]) -> Result:
    """The outcome of the download child of ``dest_folder``, from the files it left there."""
    error = _read_text(os.path.join(dest_folder, "error.json"))
    if error is not None:
        try:
            details: Any = json.loads(error)
        except ValueError:
            details = {}
        exception_class = details.get("exception_class") if isinstance(details, dict) else None
        return Result(FAILED, reason_label(exception_class, known))
    done = _read_text(os.path.join(dest_folder, ".donefile"))
    if done is not None:
        try:
            paths: Any = json.loads(done).get("paths") or {}
        except (ValueError, AttributeError):
            paths = {}
        moved = sum(_size(p) for p in paths.values()) if isinstance(paths, dict) else 0
        return Result(SUCCEEDED, bytes=moved)
    return Result(KILLED)


def upload_result(job: dict[str, Any] | None, log_folder: str, killed_by_signal: bool, known: frozenset[str]) -> Result:
    """The outcome of an upload child from its ``FileUploadJob`` row (None: it never wrote one)."""
    if job is None:
        return Result(KILLED)
    if job.get("uploaded"):
        return Result(SUCCEEDED, bytes=_size(os.path.abspath(str(job.get("path", "")))))
    if killed_by_signal:
        return Result(KILLED)
    # The child catches the failure, logs it and exits normally. Under ``fork`` in a server whose root
    # logger has handlers, upstream writes no log file (it only adds its file handler to a logger
    # without any): the reason is then unknown, ``other``.
    exception_class = last_exception(_read_text(os.path.join(log_folder, f"{job.get('id')}.log")) or "")
    return Result(FAILED, reason_label(exception_class, known))


def last_exception(log_text: str) -> str | None:
    """The class of the last traceback's exception in a log, as its final line names it.

    >>> last_exception("Upload failed\\nTraceback (most recent call last):\\n  File ...\\n"
    ...                "rucio.common.exception.NoFilesUploaded: None of the given files have been uploaded.\\n")
    'rucio.common.exception.NoFilesUploaded'
    """
    found = None
    in_traceback = False
    for line in log_text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and not line.startswith((" ", "\t")):
            m = _EXCEPTION_LINE.match(line)
            if m:
                found = m.group(1)
            in_traceback = False
    return found
