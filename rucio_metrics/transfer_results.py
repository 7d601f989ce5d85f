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
an upload also one ended by a signal) ended ``killed``. Reading happens once
per transfer, after the child exited, off the IOLoop; never during a scrape.

Whose fault a failure was (``Result.fault``) follows from its reason, except
for an upload whose cause nothing tells: upstream catches the failure and
exits normally, and writes no log (below), or its log names
``NoFilesUploaded``, which rucio-clients raises whatever kept the file from
being uploaded (the file exists already, the user's; every storage protocol
failed, the service's). Such a failure is ``unknown``: judged by no rule.

Whoever can write in the user's home can put anything where these files
belong, so nothing there is trusted:

- a result file or log is opened without following a symlink and without
  blocking (a FIFO would block ``open`` for ever), and read only if the open
  descriptor is a regular file's (not a FIFO's, a device's, a folder's);
  an ``error.json`` that is something else still means failed (upstream's UI
  shows the DID failed when one exists), with reason ``other``;
- a download's bytes are the sizes of the distinct regular files its
  ``.donefile`` names that, symlinks resolved, lie in a subfolder of its own
  download folder, where rucio-clients writes them
  (``<scope or dataset>/<name>``); any other path counts 0;
- an upload's bytes are the size of the file the user chose to upload
  (``job["path"]``), which may be anywhere they can read: the upload client
  read it through any symlink, so it is ``stat``-ed following symlinks. It
  is never opened (``stat`` does not block) and counts only if it is a
  regular file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from .faults import SERVICE, UNKNOWN, USER

SUCCEEDED, FAILED, KILLED = "succeeded", "failed", "killed"
OUTCOMES = (SUCCEEDED, FAILED, KILLED)
# The failure reason of a transfer whose child never ran: the spawn failed (upstream still says success).
NOT_STARTED = "not_started"
# Any reason that is not one of Rucio's client exception classes.
OTHER = "other"

# The reasons that are the user's, not the service's: Rucio refused what the user asked for or may do
# (no quota, no permission, no such DID or scope, the file exists already, invalid input). A transfer
# that failed for one of them spends no error budget and raises no alert: it is counted with
# fault="user", so the shipped rules never name a reason. Every other reason, "other" and "not_started"
# included, is the service's, but for an upload whose cause nothing tells (Result.fault: "unknown"); a
# killed transfer is not a failure here (its outcome says killed).
USER_REASONS = frozenset({
    "AccessDenied", "AccountNotFound", "CannotAuthenticate", "CannotAuthorize", "DataIdentifierAlreadyExists",
    "DataIdentifierNotFound", "Duplicate", "DuplicateContent", "FileAlreadyExists", "FileReplicaAlreadyExists",
    "InputValidationError", "InsufficientAccountLimit", "InvalidMetadata", "InvalidObject", "InvalidPath",
    "InvalidRSEExpression", "InvalidType", "InvalidValueForKey", "NameTypeError", "NoAuthInformation",
    "RSENotFound", "ScopeAccessDenied", "ScopeNotFound", "UnsupportedDIDType",
})

# rucio-clients' UploadClient raises this when it uploaded none of the files, for any cause (see the module's
# docstring): on its own it says nothing about whose fault that was.
NO_FILES_UPLOADED = "NoFilesUploaded"

# At most this much of a result file or upload log is read: a corrupt or huge file cannot stall the reader.
MAX_READ = 1 << 20

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


@dataclass(frozen=True)
class Result:
    outcome: str
    reason: str | None = None  # for FAILED only
    bytes: int = 0
    # For FAILED only: False when what the child left cannot tell whose fault the failure was.
    cause_known: bool = True

    @property
    def fault(self) -> str | None:
        """``user``, ``service`` or ``unknown`` for a failed transfer; None for any other."""
        if self.outcome != FAILED:
            return None
        if not self.cause_known:
            return UNKNOWN
        return USER if self.reason in USER_REASONS else SERVICE


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
    """The start of the regular file at ``path``; None if there is none (anything else there is not read)."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_READ).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _download_bytes(dest_folder: str, paths: object) -> int:
    """The sizes of the distinct regular files among ``paths`` in a subfolder of ``dest_folder``, symlinks resolved."""
    if not isinstance(paths, dict):
        return 0
    root = os.path.realpath(dest_folder)
    sizes: dict[str, int] = {}
    for path in paths.values():
        try:
            real = os.path.realpath(path)
            folder = os.path.dirname(real)
            if folder == root or os.path.commonpath([root, folder]) != root:
                continue
            st = os.lstat(real)
        except (OSError, TypeError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[real] = st.st_size
    return sum(sizes.values())


def _upload_bytes(path: object) -> int:
    """The size of the file an upload read, if it is a regular file (``stat`` follows symlinks, opens nothing)."""
    try:
        st = os.stat(os.path.abspath(str(path)))
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def download_result(dest_folder: str, known: frozenset[str]) -> Result:
    """The outcome of the download child of ``dest_folder``, from the files it left there."""
    error_path = os.path.join(dest_folder, "error.json")
    if os.path.lexists(error_path):
        try:
            details: Any = json.loads(_read_text(error_path) or "")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            details = {}
        exception_class = details.get("exception_class") if isinstance(details, dict) else None
        return Result(FAILED, reason_label(exception_class, known))
    done = _read_text(os.path.join(dest_folder, ".donefile"))
    if done is not None:
        try:
            paths: Any = json.loads(done).get("paths")
        except (ValueError, RecursionError, AttributeError):
            paths = None
        return Result(SUCCEEDED, bytes=_download_bytes(dest_folder, paths))
    return Result(KILLED)


def upload_result(job: dict[str, Any] | None, log_folder: str, killed_by_signal: bool, known: frozenset[str],
                  crashed: bool = False) -> Result:
    """The outcome of an upload child from its ``FileUploadJob`` row (None: it never wrote one).

    ``crashed``: the child exited with a code above 0, an exception out of upstream's own code.
    """
    if job is None:
        return Result(KILLED)
    if job.get("uploaded"):
        return Result(SUCCEEDED, bytes=_upload_bytes(job.get("path", "")))
    if killed_by_signal:
        return Result(KILLED)
    # The child catches the failure, logs it and exits normally. In a server whose root logger has a
    # handler (inherited under ``fork``), upstream writes no log file (it adds its file handler only to a
    # logger tree without any): the reason is then unknown, ``other``, and so is whose fault it was, unless the child
    # crashed, which is the extension's own failure.
    exception_class = last_exception(_read_text(os.path.join(log_folder, f"{job.get('id')}.log")) or "")
    reason = reason_label(exception_class, known)
    return Result(FAILED, reason, cause_known=crashed or reason not in (OTHER, NO_FILES_UPLOADED))


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
