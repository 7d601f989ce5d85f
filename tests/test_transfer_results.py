"""Reading what a finished transfer child left, on files laid out as rucio-jupyterlab 41 writes them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rucio_metrics.transfer_results import (
    FAILED,
    KILLED,
    OTHER,
    SUCCEEDED,
    Result,
    download_result,
    last_exception,
    reason_label,
    rucio_exception_names,
    upload_result,
)

KNOWN = rucio_exception_names()


def test_rucios_client_exceptions_are_the_known_reasons() -> None:
    assert {"NoFilesDownloaded", "NotAllFilesDownloaded", "InsufficientAccountLimit", "RucioException"} <= KNOWN
    assert reason_label("rucio.common.exception.NoFilesDownloaded", KNOWN) == "NoFilesDownloaded"
    assert reason_label("NoFilesDownloaded", KNOWN) == "NoFilesDownloaded"
    # Anything else, however it is spelt, is one bounded value.
    for other in ("ValueError", "requests.exceptions.ConnectionError", "", None, "x" * 10_000, "a b c"):
        assert reason_label(other, KNOWN) == OTHER


def test_a_download_folder_with_a_donefile_succeeded_with_the_sizes_of_its_files(tmp_path: Path) -> None:
    one, two = tmp_path / "user.alice" / "a.root", tmp_path / "user.alice" / "b.root"
    one.parent.mkdir()
    one.write_bytes(b"1" * 1000)
    two.write_bytes(b"2" * 234)
    (tmp_path / ".donefile").write_text(json.dumps({"paths": {"user.alice:a.root": str(one),
                                                               "user.alice:b.root": str(two),
                                                               "user.alice:gone.root": str(tmp_path / "gone")}}))
    assert download_result(str(tmp_path), KNOWN) == Result(SUCCEEDED, bytes=1234)


def test_a_download_folder_with_an_error_file_failed_with_its_exception_class(tmp_path: Path) -> None:
    (tmp_path / "error.json").write_text(json.dumps({"success": False, "error": "DownloadFailed",
                                                     "exception_class": "NotAllFilesDownloaded",
                                                     "exception_message": "..."}))
    assert download_result(str(tmp_path), KNOWN) == Result(FAILED, "NotAllFilesDownloaded")
    (tmp_path / "error.json").write_text("{not json")
    assert download_result(str(tmp_path), KNOWN) == Result(FAILED, OTHER)


def test_a_download_folder_without_a_result_was_killed(tmp_path: Path) -> None:
    (tmp_path / ".lockfile").write_text("12345")
    assert download_result(str(tmp_path), KNOWN) == Result(KILLED)
    assert download_result(str(tmp_path / "never-made"), KNOWN) == Result(KILLED)


def test_upload_results_from_the_job_row_and_its_log(tmp_path: Path) -> None:
    data = tmp_path / "up.txt"
    data.write_bytes(b"u" * 777)
    assert upload_result(None, str(tmp_path), False, KNOWN) == Result(KILLED)
    uploaded = {"id": 1, "path": str(data), "uploaded": True}
    assert upload_result(uploaded, str(tmp_path), False, KNOWN) == Result(SUCCEEDED, bytes=777)
    failed = {"id": 2, "path": str(data), "uploaded": False}
    # No log (upstream writes none under fork): neither the reason nor whose fault it was is known.
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, OTHER, cause_known=False)
    assert upload_result(failed, str(tmp_path), False, KNOWN).fault == "unknown"
    # A child that exited with an exception out of upstream's own code: the extension's failure.
    assert upload_result(failed, str(tmp_path), False, KNOWN, crashed=True).fault == "service"
    assert upload_result(failed, str(tmp_path), True, KNOWN) == Result(KILLED)  # ended by a signal
    (tmp_path / "2.log").write_text(
        "Upload failed\nTraceback (most recent call last):\n  File \"x.py\", line 1, in upload\n"
        "rucio.common.exception.InsufficientAccountLimit: There is not enough quota left.\n"
    )
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, "InsufficientAccountLimit")
    assert upload_result(failed, str(tmp_path), False, KNOWN).fault == "user"
    (tmp_path / "2.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in upload\n"
        "rucio.common.exception.ServiceUnavailable: The service is unavailable.\n"
    )
    assert upload_result(failed, str(tmp_path), False, KNOWN).fault == "service"
    # rucio-clients raises NoFilesUploaded for any cause (the file exists already, every protocol failed).
    (tmp_path / "2.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in upload\n"
        "rucio.common.exception.NoFilesUploaded: None of the given files have been uploaded.\n"
    )
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, "NoFilesUploaded", cause_known=False)
    assert upload_result(failed, str(tmp_path), False, KNOWN).fault == "unknown"


def test_the_last_exception_of_a_chained_traceback_is_the_one_raised() -> None:
    log = (
        "Traceback (most recent call last):\n  File \"a\", line 1\nrequests.exceptions.ConnectionError: refused\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File \"b\", line 2\n"
        "rucio.common.exception.RucioException: An unknown exception occurred.\n"
        "Details: no details\n"
    )
    assert last_exception(log) == "rucio.common.exception.RucioException"
    assert last_exception("no traceback here\nValueError: not in a traceback\n") is None


def test_a_last_exception_line_without_a_message_is_the_one_raised(tmp_path: Path) -> None:
    # A message-less exception (SystemExit, KeyboardInterrupt) ends a chained traceback with its bare name.
    log = (
        "Upload failed\nTraceback (most recent call last):\n  File \"a\", line 1, in upload\n"
        "rucio.common.exception.NoFilesUploaded: None of the given files have been uploaded.\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File \"b\", line 2, in upload\nSystemExit\n"
    )
    assert last_exception(log) == "SystemExit"
    (tmp_path / "4.log").write_text(log)
    failed = {"id": 4, "path": str(tmp_path / "up.txt"), "uploaded": False}
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, OTHER, cause_known=False)


def test_a_download_failure_always_knows_whose_fault_it_was(tmp_path: Path) -> None:
    (tmp_path / "error.json").write_text(json.dumps({"exception_class": "NoFilesDownloaded"}))
    assert download_result(str(tmp_path), KNOWN).fault == "service"
    (tmp_path / "error.json").write_text(json.dumps({"exception_class": "DataIdentifierNotFound"}))
    assert download_result(str(tmp_path), KNOWN).fault == "user"
    (tmp_path / "error.json").write_text("{not json")
    assert download_result(str(tmp_path), KNOWN).fault == "service"
    assert Result(KILLED).fault is None
    assert Result(SUCCEEDED).fault is None


def finished_download(folder: Path, paths: dict[str, str]) -> Path:
    (folder / ".donefile").write_text(json.dumps({"paths": paths}))
    return folder


def test_a_donefile_counts_only_regular_files_inside_its_own_download_folder(tmp_path: Path) -> None:
    folder = tmp_path / "downloads" / "did-folder"
    (folder / "user.alice").mkdir(parents=True)
    mine = folder / "user.alice" / "a.root"
    mine.write_bytes(b"1" * 1000)
    (folder / "user.alice" / "passwd").symlink_to("/etc/passwd")
    (folder / "user.alice" / "sub").mkdir()
    neighbour = tmp_path / "downloads" / "other-folder" / "user.alice" / "b.root"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_bytes(b"2" * 234)
    assert os.path.getsize("/etc/passwd") > 0
    finished_download(folder, {"user.alice:passwd": "/etc/passwd"})
    assert download_result(str(folder), KNOWN) == Result(SUCCEEDED, bytes=0)
    finished_download(folder, {"user.alice:passwd": str(folder / "user.alice" / "passwd")})
    assert download_result(str(folder), KNOWN) == Result(SUCCEEDED, bytes=0)
    finished_download(folder, {
        "user.alice:a.root": str(mine),
        "user.alice:again.root": str(folder / "user.alice" / ".." / "user.alice" / "a.root"),  # the same file
        "user.alice:up.root": str(folder / "user.alice" / ".." / ".." / "other-folder" / "user.alice" / "b.root"),
        "user.alice:b.root": str(neighbour),  # another download's file
        "user.alice:result": str(folder / ".donefile"),  # the folder's own files are no DID's
        "user.alice:sub": str(folder / "user.alice" / "sub"),
        "user.alice:devnull": "/dev/null",
        "user.alice:number": 5,  # type: ignore[dict-item]
        "user.alice:nul": "a\0b",
    })
    assert download_result(str(folder), KNOWN) == Result(SUCCEEDED, bytes=1000)


def test_a_download_folder_reached_through_a_symlink_still_counts_its_files(tmp_path: Path) -> None:
    # A home (or ~/rucio) that is a symlink to another disk: the folder and its files resolve alike.
    real = tmp_path / "disk" / "did-folder"
    (real / "user.alice").mkdir(parents=True)
    (real / "user.alice" / "a.root").write_bytes(b"1" * 1000)
    (tmp_path / "home").symlink_to(tmp_path / "disk")
    folder = tmp_path / "home" / "did-folder"
    finished_download(folder, {"user.alice:a.root": str(folder / "user.alice" / "a.root")})
    assert download_result(str(folder), KNOWN) == Result(SUCCEEDED, bytes=1000)


def answered_promptly(read: Callable[[], Result], fifo: Path) -> Result:
    """``read()``'s result, which must come within 5 s though ``fifo`` has no writer.

    A reader stuck opening the FIFO is let go (a writer opens and closes it), so that a regression
    fails the test instead of hanging the suite and, at exit, the interpreter.
    """
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(read()), daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading a result with a FIFO at {fifo.name} blocked")
    return results[0]


def test_an_error_file_that_is_a_fifo_is_never_waited_for_and_means_failed(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "error.json")
    # Upstream's UI shows the DID failed when an error.json exists; its reason cannot be read.
    assert answered_promptly(lambda: download_result(str(tmp_path), KNOWN), tmp_path / "error.json") \
        == Result(FAILED, OTHER)


def test_result_files_that_are_not_regular_files_are_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".donefile")
    assert answered_promptly(lambda: download_result(str(tmp_path), KNOWN), tmp_path / ".donefile") \
        == Result(KILLED)
    (tmp_path / "error.json").mkdir()
    assert download_result(str(tmp_path), KNOWN) == Result(FAILED, OTHER)
    os.rmdir(tmp_path / "error.json")
    (tmp_path / "error.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"exception_class": "NoFilesDownloaded"}))
    assert download_result(str(tmp_path), KNOWN) == Result(FAILED, OTHER)
    failed = {"id": 3, "path": str(tmp_path / "up.txt"), "uploaded": False}
    os.mkfifo(tmp_path / "3.log")
    assert answered_promptly(lambda: upload_result(failed, str(tmp_path), False, KNOWN), tmp_path / "3.log") \
        == Result(FAILED, OTHER, cause_known=False)


def test_an_uploads_bytes_are_its_regular_files_size_through_a_symlink(tmp_path: Path) -> None:
    # The user chose the file; the upload client read it through the symlink, so its target's bytes moved.
    data = tmp_path / "elsewhere" / "data.txt"
    data.parent.mkdir()
    data.write_bytes(b"u" * 777)
    (tmp_path / "link.txt").symlink_to(data)
    uploaded = {"id": 1, "path": str(tmp_path / "link.txt"), "uploaded": True}
    assert upload_result(uploaded, str(tmp_path), False, KNOWN) == Result(SUCCEEDED, bytes=777)
    os.mkfifo(tmp_path / "pipe")
    for path in (tmp_path / "pipe", tmp_path / "elsewhere", "/dev/zero", "a\0b"):
        uploaded = {"id": 1, "path": str(path), "uploaded": True}
        assert upload_result(uploaded, str(tmp_path), False, KNOWN) == Result(SUCCEEDED, bytes=0)
