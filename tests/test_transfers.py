"""Downloads and uploads for real: rucio-clients copies real bytes between a real Rucio server's posix RSEs
and the Jupyter server's home, in children started with ``fork`` and with ``spawn`` (and, for the part
that differs there, the children being the fork server's, ``forkserver``).

Each transfer's metrics are checked against what the extension's own job state
says (the DID's status, the upload job's status) and what Rucio holds, and each
duration recorded against the test's own clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from prometheus_client import CollectorRegistry

from rucio_metrics.transfer_results import Result, reason_label, rucio_exception_names
from rucio_metrics.transfers import TransferMetrics, load_transfers

from .servers.jupyter_server_process import JupyterServerProcess
from .servers.rucio_server import RucioServer
from .support.own_loop import run_on_own_loop

NAMESPACE = "cms"  # the instance in download mode
Key = tuple[str, frozenset[tuple[str, str]]]


class Samples(dict[Key, float]):
    """One scrape's transfer samples, and when it was done (``time.monotonic()`` once it answered)."""

    def __init__(self, samples: dict[Key, float]) -> None:
        super().__init__(samples)
        self.taken = time.monotonic()


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioServer]:
    with RucioServer() as rucio:
        yield rucio


def start_method_config(method: str, extra: str = "") -> str:
    return f"import multiprocessing\nmultiprocessing.set_start_method({method!r}, force=True)\n{extra}"


@dataclass
class Transfers:
    server: JupyterServerProcess
    rucio: RucioServer
    method: str

    def samples(self) -> Samples:
        return Samples(self.server.samples("rucio_jupyterlab_transfer"))

    def value(self, samples: Samples, name: str, **labels: str) -> float:
        return samples.get((name, frozenset({"rucio_instance": NAMESPACE, **labels}.items())), 0.0)

    def wait_until_ended(self, before: Samples, direction: str, count: int = 1, seconds: float = 90) -> Samples:
        """The samples once ``count`` more transfers of ``direction`` ended and none is in progress."""
        deadline = time.monotonic() + seconds
        while True:
            now = self.samples()
            ended = sum(self.value(now, "rucio_jupyterlab_transfers_ended_total", direction=direction, outcome=o)
                        - self.value(before, "rucio_jupyterlab_transfers_ended_total", direction=direction, outcome=o)
                        for o in ("succeeded", "failed", "killed"))
            progress = self.value(now, "rucio_jupyterlab_transfers_in_progress", direction=direction)
            if ended >= count and progress == 0:
                return now
            assert time.monotonic() < deadline, f"{direction}: {ended} of {count} ended, {progress} in progress"
            time.sleep(0.1)

    def changes(self, before: Samples, after: Samples) -> dict[Key, float]:
        """Every sample that changed, except durations' sums, which are checked instead: each transfer
        counted took more than 0 s and less than the time between the two scrapes."""
        wall = after.taken - before.taken
        for (name, labels), count in after.items():
            if name.endswith("_duration_seconds_count") and count > before.get((name, labels), 0.0):
                key = (name.replace("_count", "_sum"), labels)
                seconds = after[key] - before.get(key, 0.0)
                transfers = count - before.get((name, labels), 0.0)
                assert 0 < seconds < transfers * wall, \
                    f"{dict(labels)}: {seconds} s for {transfers:g} transfer(s) seen within {wall:.3f} s"
        return {key: after[key] - before.get(key, 0.0) for key in after
                if after[key] != before.get(key, 0.0) and not key[0].endswith(("_sum", "_created"))}

    def make_available(self, did: str) -> None:
        response = self.server.request("POST", f"rucio-jupyterlab/did/make-available?namespace={NAMESPACE}",
                                       json={"did": did})
        assert response.status_code == 200, response.text

    def did_status(self, did: str) -> list[dict[str, Any]]:
        response = self.server.request("GET", f"rucio-jupyterlab/did?namespace={NAMESPACE}&did={did}&force=1")
        assert response.status_code == 200, response.text
        return list(response.json())

    def upload(self, name: str, content: bytes, rse: str) -> str:
        path = self.server.root / "notebooks" / name
        path.write_bytes(content)
        response = self.server.request("POST", f"rucio-jupyterlab/upload?namespace={NAMESPACE}",
                                       json={"file_paths": [str(path)], "rse": rse, "scope": "user.alice"})
        assert response.status_code == 200 and response.json() == {"success": True}, response.text
        return str(path)

    def upload_job(self, path: str) -> dict[str, Any]:
        jobs = self.server.request("GET", f"rucio-jupyterlab/upload/jobs?namespace={NAMESPACE}").json()
        [job] = [j for j in jobs if j["path"] == path]
        return dict(job)

    def wait_for_upload_job(self, path: str, seconds: float = 30) -> dict[str, Any]:
        """The upload job of ``path`` once its child wrote it."""
        deadline = time.monotonic() + seconds
        while True:
            jobs = self.server.request("GET", f"rucio-jupyterlab/upload/jobs?namespace={NAMESPACE}").json()
            found = [j for j in jobs if j["path"] == path]
            if found:
                return dict(found[0])
            assert time.monotonic() < deadline, f"no upload job for {path}"
            time.sleep(0.05)

    def error_details(self, did: str) -> dict[str, Any]:
        """The extension's own error.json of a failed download (in its folder for the DID, base32 named)."""
        folder = base64.b32encode(did.encode()).decode().lower().replace("=", "")
        path = self.server.root / "home" / "rucio" / NAMESPACE / "downloads" / folder / "error.json"
        return dict(json.loads(path.read_text()))


def ended(direction: str, outcome: str, reason: str | None = None, moved: int = 0,
          fault: str = "service") -> dict[Any, float]:
    """The changes one transfer that ended so makes (a failed one counts once by ``fault`` too)."""
    labels = {"rucio_instance": NAMESPACE, "direction": direction}
    expected = {
        ("rucio_jupyterlab_transfers_started_total", frozenset(labels.items())): 1.0,
        ("rucio_jupyterlab_transfers_ended_total", frozenset({**labels, "outcome": outcome}.items())): 1.0,
        ("rucio_jupyterlab_transfer_duration_seconds_count", frozenset({**labels, "outcome": outcome}.items())): 1.0,
    }
    if reason is not None:
        expected[("rucio_jupyterlab_transfer_failures_total", frozenset({**labels, "reason": reason}.items()))] = 1.0
        expected[("rucio_jupyterlab_transfer_failures_by_fault_total", frozenset({**labels, "fault": fault}.items()))] \
            = 1.0
    if moved:
        expected[("rucio_jupyterlab_transfer_bytes_total", frozenset(labels.items()))] = float(moved)
    return expected


@pytest.fixture(scope="module", params=["fork", "spawn"])
def transfers(request: pytest.FixtureRequest, rucio: RucioServer) -> Iterator[Transfers]:
    method = request.param
    with JupyterServerProcess(rucio_instances=[rucio.instance_config(NAMESPACE, mode="download")],
                              python_config=start_method_config(method)) as server:
        assert server.request("PUT", "rucio-jupyterlab/instances",
                              json={"instance": NAMESPACE, "auth": "userpass"}).ok
        assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials(NAMESPACE)).ok
        yield Transfers(server, rucio, method)


def test_a_download_that_succeeds_counts_the_bytes_of_its_files(transfers: Transfers) -> None:
    did = f"user.alice:ok-{transfers.method}.root"
    content = b"rucio" * 4321
    transfers.rucio.add_file("SITE_DISK", did, content)
    before = transfers.samples()
    transfers.make_available(did)
    after = transfers.wait_until_ended(before, "download")
    assert transfers.changes(before, after) == ended("download", "succeeded", moved=len(content))
    [status] = transfers.did_status(did)
    assert status["status"] == "OK"
    assert open(status["path"], "rb").read() == content


def test_promtool_finds_nothing_in_the_transfer_families_after_transfers(transfers: Transfers) -> None:
    from .support.deploy_files import our_families_only, promtool

    text = "".join(line + "\n" for line in our_families_only(transfers.server.metrics_text()).splitlines()
                   if "transfer" in line)
    assert "rucio_jupyterlab_transfers_ended_total{" in text
    result = promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_a_download_whose_replica_is_missing_on_disk_fails(transfers: Transfers) -> None:
    did = f"user.alice:missing-{transfers.method}.root"
    transfers.rucio.add_file("SITE_DISK", did, b"m" * 1000).unlink()
    before = transfers.samples()
    transfers.make_available(did)
    after = transfers.wait_until_ended(before, "download")
    details = transfers.error_details(did)
    assert transfers.changes(before, after) == ended("download", "failed", details["exception_class"])
    assert details["exception_class"] == "NoFilesDownloaded"
    assert [s["status"] for s in transfers.did_status(did)] == ["FAILED"]


def test_a_download_with_a_wrong_checksum_fails(transfers: Transfers) -> None:
    did = f"user.alice:corrupt-{transfers.method}.root"
    transfers.rucio.add_file("SITE_DISK", did, b"a" * 2000, on_disk=b"b" * 2000)
    before = transfers.samples()
    transfers.make_available(did)
    after = transfers.wait_until_ended(before, "download")
    details = transfers.error_details(did)
    assert transfers.changes(before, after) == ended("download", "failed", details["exception_class"])
    assert [s["status"] for s in transfers.did_status(did)] == ["FAILED"]


def test_an_upload_that_succeeds_is_in_rucio_with_its_size(transfers: Transfers) -> None:
    name = f"up-{transfers.method}.txt"
    before = transfers.samples()
    path = transfers.upload(name, b"u" * 777, "SITE_DISK")
    after = transfers.wait_until_ended(before, "upload")
    assert transfers.changes(before, after) == ended("upload", "succeeded", moved=777)
    assert transfers.upload_job(path)["status"] == "OK"
    assert transfers.rucio.did_bytes(f"user.alice:{name}") == 777


def test_an_upload_to_an_rse_without_quota_fails(transfers: Transfers) -> None:
    # Rucio holds an admin account to no quota, and the seed makes the user one (for an upload's last
    # step, which a rule refused never reaches).
    transfers.rucio.set_limit("SITE_SCRATCHDISK", 0)
    transfers.rucio.set_admin(False)
    try:
        name = f"noquota-{transfers.method}.txt"
        before = transfers.samples()
        path = transfers.upload(name, b"q" * 500, "SITE_SCRATCHDISK")
        after = transfers.wait_until_ended(before, "upload")
    finally:
        transfers.rucio.set_admin(True)
        transfers.rucio.set_limit("SITE_SCRATCHDISK", 10**12)
    job = transfers.upload_job(path)
    assert job["status"] == "FAILED"
    log = transfers.server.request("GET", f"rucio-jupyterlab/upload/jobs/log?namespace={NAMESPACE}&id={job['id']}")
    # The child's log names Rucio's refusal: the user's reason, which spends no budget.
    assert log.status_code == 200 and "InsufficientAccountLimit" in log.text
    assert transfers.changes(before, after) == ended("upload", "failed", "InsufficientAccountLimit", fault="user")


def test_an_upload_child_killed_with_sigkill_after_writing_its_job_ends_killed(transfers: Transfers) -> None:
    # Its job row is there and not marked uploaded, as for a failure: only the exit code (a signal) tells.
    rucio = transfers.rucio.process
    assert rucio is not None
    before = transfers.samples()
    os.kill(rucio.pid, signal.SIGSTOP)  # the child, its job written, then waits for Rucio's answer
    try:
        path = transfers.upload(f"killed-{transfers.method}.txt", b"k" * 300, "SITE_DISK")
        pid = transfers.wait_for_upload_job(path)["pid"]
        [child] = [p for p in descendants(transfers.server) if p.pid == pid]
        child.kill()
    finally:
        os.kill(rucio.pid, signal.SIGCONT)
    after = transfers.wait_until_ended(before, "upload")
    assert transfers.changes(before, after) == ended("upload", "killed")
    assert transfers.upload_job(path)["status"] == "FAILED"


def test_an_upload_child_that_exits_with_code_1_after_writing_its_job_fails(transfers: Transfers) -> None:
    # An exception out of the child's target makes multiprocessing exit with code 1. Here: creating its
    # log folder, where a file stands, right after it wrote its job row.
    logs = transfers.server.root / "home" / ".rucio_jupyterlab" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    folder, aside = logs / "upload", logs / "upload-aside"
    if folder.exists():
        folder.rename(aside)
    folder.write_text("not a folder")
    logged = len(transfers.server.log())
    try:
        before = transfers.samples()
        path = transfers.upload(f"exit1-{transfers.method}.txt", b"e" * 200, "SITE_DISK")
        after = transfers.wait_until_ended(before, "upload")
    finally:
        folder.unlink()
        if aside.exists():
            aside.rename(folder)
    assert "FileExistsError" in transfers.server.log()[logged:]  # multiprocessing's report of the child's exception
    assert transfers.upload_job(path)["status"] == "FAILED"
    assert transfers.changes(before, after) == ended("upload", "failed", "other")


def descendants(server: JupyterServerProcess) -> list[psutil.Process]:
    """The server's transfer processes (under forkserver the fork server's children); no helper processes."""
    assert server.process is not None
    return running_descendants(server.process.pid)


def running_descendants(pid: int) -> list[psutil.Process]:
    """The running processes below ``pid``, but multiprocessing's helpers; an ended child not yet reaped
    (a zombie) or one gone meanwhile is not running."""
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            command = " ".join(p.cmdline())
            helper = "resource_tracker" in command or ("forkserver" in command and p.ppid() == pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
        if not helper:
            found.append(p)
    return found


def test_an_ended_child_not_yet_reaped_is_not_a_transfer_process() -> None:
    # A transfer child that ended stays a zombie until its parent reaps it; reading its command line
    # raised ZombieProcess and failed the test that looked for the next child.
    parent = subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0: os._exit(0)\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while not [c for c in psutil.Process(parent.pid).children() if c.status() == psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < deadline, "no zombie child"
            time.sleep(0.01)
        assert running_descendants(parent.pid) == []
    finally:
        parent.kill()
        parent.wait(10)


def new_child(server: JupyterServerProcess, known: set[int]) -> psutil.Process:
    """The one process below the server that is not in ``known``, once it appeared."""
    deadline = time.monotonic() + 5
    while True:
        new = [p for p in descendants(server) if p.pid not in known]
        if len(new) == 1:
            return new[0]
        assert time.monotonic() < deadline, [p.cmdline() for p in new]
        time.sleep(0.005)


def test_a_transfer_child_killed_with_sigkill_ends_killed(transfers: Transfers) -> None:
    did = f"user.alice:killed-{transfers.method}.root"
    transfers.rucio.add_file("SITE_DISK", did, b"k" * 3000)
    known = {p.pid for p in descendants(transfers.server)}
    before = transfers.samples()
    transfers.make_available(did)
    new_child(transfers.server, known).kill()
    after = transfers.wait_until_ended(before, "download")
    assert transfers.changes(before, after) == ended("download", "killed")
    # Upstream shows the DID as still on its way (its lock file holds the server's pid); the gauge does not.
    assert [s["status"] for s in transfers.did_status(did)] == ["REPLICATING"]


def test_a_download_while_rucio_is_stopped_fails(transfers: Transfers) -> None:
    did = f"user.alice:stopped-{transfers.method}.root"
    transfers.rucio.add_file("SITE_DISK", did, b"s" * 1500)
    transfers.rucio.halt()
    try:
        before = transfers.samples()
        transfers.make_available(did)
        after = transfers.wait_until_ended(before, "download")
    finally:
        transfers.rucio.serve()
    details = transfers.error_details(did)
    reason = reason_label(details["exception_class"], rucio_exception_names())
    assert transfers.changes(before, after) == ended("download", "failed", reason)
    assert [s["status"] for s in transfers.did_status(did)] == ["FAILED"]


def test_a_restarted_server_does_not_count_old_results_again(transfers: Transfers) -> None:
    # Last for each start method: it restarts the server (its HOME, with the results, is kept).
    server = transfers.server
    server.terminate()
    server.start()
    assert server.request("PUT", "rucio-jupyterlab/auth", json=transfers.rucio.userpass_credentials(NAMESPACE)).ok
    samples = transfers.samples()
    assert {k: v for k, v in samples.items() if v and not k[0].endswith("_created")} == {}
    did = f"user.alice:ok-{transfers.method}.root"
    assert [s["status"] for s in transfers.did_status(did)] == ["OK"]  # the old result is still there


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_that_cannot_start_is_counted_failed_though_upstream_says_success(
    rucio: RucioServer, method: str,
) -> None:
    # No free file descriptor: Process.start() raises (no pipe for the child); the upload route answers success.
    with JupyterServerProcess(rucio_instances=[rucio.instance_config(NAMESPACE, mode="download")],
                              python_config=start_method_config(method),
                              extensions={"tests.support.extra_routes_extension": True}) as server:
        assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials(NAMESPACE)).ok
        transfers = Transfers(server, rucio, method)
        before = transfers.samples()
        # One connection for both requests: a new one could not be accepted meanwhile.
        assert server.request("POST", "rucio-metrics-test/no-file-descriptors?seconds=1").json()["held"] >= 0
        transfers.upload("never.txt", b"n" * 10, "SITE_DISK")
        time.sleep(1.5)
        after = transfers.wait_until_ended(before, "upload")
        # The route said success; no job exists, so the UI shows nothing either.
        assert server.request("GET", f"rucio-jupyterlab/upload/jobs?namespace={NAMESPACE}").json() == []
    assert transfers.changes(before, after) == ended("upload", "failed", "not_started")


def test_under_forkserver_a_download_and_a_killed_one_end_as_they_did(rucio: RucioServer) -> None:
    # The fork server, not the Jupyter server, is the children's parent: their sentinels still tell.
    with JupyterServerProcess(rucio_instances=[rucio.instance_config(NAMESPACE, mode="download")],
                              python_config=start_method_config("forkserver")) as server:
        assert server.request("PUT", "rucio-jupyterlab/instances",
                              json={"instance": NAMESPACE, "auth": "userpass"}).ok
        assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials(NAMESPACE)).ok
        transfers = Transfers(server, rucio, "forkserver")
        test_a_download_that_succeeds_counts_the_bytes_of_its_files(transfers)
        test_a_transfer_child_killed_with_sigkill_ends_killed(transfers)


def test_after_a_second_load_on_another_registry_transfers_count_there(monkeypatch: pytest.MonkeyPatch) -> None:
    # In this process, with rucio-jupyterlab's own modules and handler. The transfer's process is never
    # started, so it ends at once (failed, not_started): no child and no Rucio needed.
    from rucio_jupyterlab.handlers import upload
    from rucio_jupyterlab.mode_handlers import download

    for module in (download, upload):
        monkeypatch.setattr(module, "mp", multiprocessing)  # watched afresh here; as it was afterwards
    first, second = CollectorRegistry(), CollectorRegistry()
    config = {"RucioConfig": {"instances": [{"name": NAMESPACE}]}}
    for registry in (first, second):
        assert load_transfers(registry, "summary", config, logging.getLogger("test")) is not None
    labels = {"rucio_instance": NAMESPACE, "direction": "download"}

    def ended_on(registry: CollectorRegistry) -> float:
        return registry.get_sample_value("rucio_jupyterlab_transfers_ended_total", {**labels, "outcome": "failed"}) \
            or 0.0

    async def make_a_transfer() -> None:
        handler = download.DownloadModeHandler(NAMESPACE, None)
        download.mp.Process(target=download.DownloadModeHandler.background_worker, args=(handler, None, "user.a:x"))
        while not (ended_on(first) or ended_on(second)):
            await asyncio.sleep(0.01)

    start = time.monotonic()
    run_on_own_loop(make_a_transfer, timeout=10)
    wall = time.monotonic() - start
    assert (ended_on(first), ended_on(second)) == (0.0, 1.0)
    seconds = second.get_sample_value("rucio_jupyterlab_transfer_duration_seconds_sum", {**labels, "outcome": "failed"})
    assert seconds is not None and 0 < seconds < wall
    assert second.get_sample_value("rucio_jupyterlab_transfers_started_total", labels) == 1.0
    assert second.get_sample_value("rucio_jupyterlab_transfer_failures_total", {**labels, "reason": "not_started"}) \
        == 1.0
    assert second.get_sample_value("rucio_jupyterlab_transfers_in_progress", labels) == 0.0
    assert first.get_sample_value("rucio_jupyterlab_transfers_started_total", labels) == 0.0


@pytest.mark.parametrize(("result", "fault"), [
    (Result("failed", "ScopeAccessDenied"), "user"),
    (Result("failed", "InsufficientAccountLimit"), "user"),
    (Result("failed", "DataIdentifierNotFound"), "user"),
    (Result("failed", "NoFilesDownloaded"), "service"),
    (Result("failed", "ServiceUnavailable"), "service"),
    (Result("failed", "other"), "service"),
    (Result("failed", "not_started"), "service"),
    (Result("failed"), "service"),
    (Result("failed", "other", cause_known=False), "unknown"),  # an upload that left no log
    (Result("failed", "NoFilesUploaded", cause_known=False), "unknown"),
    (Result("killed"), None),
    (Result("succeeded", bytes=10), None),
])
def test_a_failed_transfer_counts_once_by_whose_fault_it_was(result: Result, fault: str | None) -> None:
    registry = CollectorRegistry()
    metrics = TransferMetrics.on(registry)
    metrics.precreate([NAMESPACE])
    metrics.start(NAMESPACE, "upload")
    metrics.end(NAMESPACE, "upload", result, 1.0)
    counted = {
        (each, direction): registry.get_sample_value("rucio_jupyterlab_transfer_failures_by_fault_total",
                                        {"rucio_instance": NAMESPACE, "direction": direction, "fault": each})
        for each in ("user", "service", "unknown") for direction in ("upload", "download")
    }
    # user and service exist at 0 from the start; unknown only once counted.
    assert counted == {(each, direction): 1.0 if (each, direction) == (fault, "upload")
                       else None if each == "unknown" else 0.0
                       for each in ("user", "service", "unknown") for direction in ("upload", "download")}
    failed = registry.get_sample_value("rucio_jupyterlab_transfer_failures_total",
                                       {"rucio_instance": NAMESPACE, "direction": "upload",
                                        "reason": result.reason or "other"})
    assert failed == (1.0 if fault else None)
