"""Reading what a finished transfer child left, on files laid out as rucio-jupyterlab 41 writes them."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, OTHER)  # no log: reason unknown
    assert upload_result(failed, str(tmp_path), True, KNOWN) == Result(KILLED)  # ended by a signal
    (tmp_path / "2.log").write_text(
        "Upload failed\nTraceback (most recent call last):\n  File \"x.py\", line 1, in upload\n"
        "rucio.common.exception.InsufficientAccountLimit: There is not enough quota left.\n"
    )
    assert upload_result(failed, str(tmp_path), False, KNOWN) == Result(FAILED, "InsufficientAccountLimit")


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
