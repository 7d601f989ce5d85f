"""Time to data for real: a real Rucio server, the real rucio-jupyterlab in a real Jupyter server.

No Rucio daemons run: a new rule on a DID whose replicas are on tape waits
for a transfer, which the test plays with Rucio's own calls
(``finish_transfer``, or ``fail_transfer`` for a rule that gets stuck). The
test polls the ``did`` route as the panel does (``poll=1``, the extension's
cached answers) and reads the ``rucio_jupyterlab_time_to_data_*`` families
over HTTP ``/metrics``; each wait's seconds are checked against the test's own
clock. Download mode's wait is a real download of a real file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from rucio_metrics.time_to_data import BUCKETS

from .servers.jupyter_server_process import JupyterServerProcess
from .servers.rucio_server import RucioServer
from .servers.rucio_server_setup import DATASETS
from .support.route_samples import log_in

PREFIX = "rucio_jupyterlab_time_to_data"
SECONDS, WAITS, MAKE_AVAILABLE = PREFIX + "_seconds", PREFIX + "_waits", PREFIX + "_make_available_total"
REPLICA, DOWNLOAD = "atlas", "cms"  # the instances, in replica and in download mode
# seconds: a wait nobody looks at this long ends unobserved. Far longer than anything a test does between
# two polls (finish_transfer, a step of Rucio's own client), even on a 2-core machine running three workers.
HORIZON = 20.0
POLL = 0.2  # seconds between two polls of a DID, while the test polls

Key = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioServer]:
    with RucioServer() as rucio:
        yield rucio


@pytest.fixture(scope="module")
def server(rucio: RucioServer) -> Iterator[JupyterServerProcess]:
    instances = [rucio.instance_config(REPLICA), rucio.instance_config(DOWNLOAD, mode="download")]
    with JupyterServerProcess(rucio_instances=instances,
                              extra_config={"RucioMetrics": {"time_to_data_horizon_seconds": HORIZON}}) as server:
        log_in(server, rucio.userpass_credentials)
        yield server


class Look:
    """One answer of the ``did`` route, and when it was asked for and when it came (``time.monotonic()``)."""

    def __init__(self, sent: float, files: list[dict[str, Any]]) -> None:
        self.sent, self.received = sent, time.monotonic()
        self.statuses = [f["status"] for f in files]


class Waits:
    """The module's servers, as the panel and a user use them, and the time-to-data samples."""

    def __init__(self, server: JupyterServerProcess, rucio: RucioServer) -> None:
        self.server, self.rucio = server, rucio
        self.before = self.samples()

    def samples(self) -> dict[Key, float]:
        return self.server.samples(PREFIX) | self.server.samples("rucio_jupyterlab_transfer")

    def change(self, name: str, **labels: str) -> float:
        """How much one sample moved since the test started."""
        key = (name, frozenset(labels.items()))
        return self.samples().get(key, 0.0) - self.before.get(key, 0.0)

    def waiting(self, instance: str = REPLICA, mode: str = "replica") -> float:
        return self.samples()[(WAITS, frozenset({"rucio_instance": instance, "mode": mode}.items()))]

    def waited(self, outcome: str, instance: str = REPLICA, mode: str = "replica") -> tuple[float, float]:
        """(waits ended with ``outcome``, their seconds) since the test started."""
        labels = {"rucio_instance": instance, "mode": mode, "outcome": outcome}
        return self.change(SECONDS + "_count", **labels), self.change(SECONDS + "_sum", **labels)

    def make_available(self, did: str, namespace: str = REPLICA) -> Any:
        response = self.server.request("POST", f"rucio-jupyterlab/did/make-available?namespace={namespace}",
                                       json={"did": did})
        assert response.status_code == 200, response.text
        return response.json()

    def look(self, did: str) -> Look:
        sent = time.monotonic()
        response = self.server.request("GET", "rucio-jupyterlab/did", params={"namespace": REPLICA, "did": did,
                                                                               "poll": "1"})
        assert response.status_code == 200, response.text
        return Look(sent, response.json())

    def poll_until(self, did: str, status: str, seconds: float = 15) -> Look:
        """Poll as the panel does until every file of ``did`` has ``status``; the answer that said so."""
        deadline = time.monotonic() + seconds
        while True:
            look = self.look(did)
            if look.statuses and set(look.statuses) == {status}:
                return look
            assert time.monotonic() < deadline, f"{did}: {look.statuses}, not {status}"
            time.sleep(POLL)

    def until(self, done: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    def tape_file(self, name: str) -> str:
        """A new file whose one replica is on tape: a rule on the hub's RSE waits for its transfer."""
        did = f"user.alice:{name}"
        self.rucio.add_file("SITE_TAPE", did, name.encode() * 100)
        return did


@pytest.fixture
def waits(server: JupyterServerProcess, rucio: RucioServer) -> Waits:
    return Waits(server, rucio)


def test_the_configured_instances_start_at_zero_in_their_modes(waits: Waits) -> None:
    labels = [dict(labels) for name, labels in waits.before if name == SECONDS + "_count"]
    # The outcomes the rules rate exist at zero: rate() sees an instance's first stuck or failed wait.
    assert sorted(map(sorted, (each.items() for each in labels))) == sorted(map(sorted, (each.items() for each in [
        {"rucio_instance": REPLICA, "mode": "replica", "outcome": "available"},
        {"rucio_instance": REPLICA, "mode": "replica", "outcome": "stuck"},
        {"rucio_instance": DOWNLOAD, "mode": "download", "outcome": "available"},
        {"rucio_instance": DOWNLOAD, "mode": "download", "outcome": "failed"},
    ])))
    assert {dict(labels)["le"] for name, labels in waits.before if name == SECONDS + "_bucket"} == \
        {*(str(b) for b in BUCKETS), "+Inf"}
    assert waits.waiting() == waits.waiting(DOWNLOAD, "download") == 0
    assert waits.before[(PREFIX + "_waits_dropped_total", frozenset())] == 0


def test_a_dataset_made_available_waits_while_it_replicates_and_once(waits: Waits) -> None:
    did = "data18:RAW.dataset"
    start = time.monotonic()
    rules = waits.make_available(did)
    made = time.monotonic()
    assert isinstance(rules, list) and len(rules) == 1
    waits.poll_until(did, "REPLICATING")  # the first look fetches in the background: FETCHING
    for _ in range(3):
        assert waits.look(did).statuses == ["REPLICATING", "REPLICATING"]
    assert waits.waiting() == 1
    assert waits.waited("available") == (0, 0)

    transfer = time.monotonic()
    waits.rucio.finish_transfer("SITE_DISK", [f"data18:{name}" for name in DATASETS["RAW.dataset"]])
    ok = waits.poll_until(did, "OK")
    assert waits.waiting() == 0
    count, seconds = waits.waited("available")
    assert count == 1
    # From make-available to the poll that first showed every file there (the transfer ended in between).
    assert transfer - made < seconds < ok.received - start
    for _ in range(2):  # the panel's later polls count nothing more
        assert waits.look(did).statuses == ["OK", "OK"]
    assert waits.waited("available")[0] == 1
    assert waits.change(MAKE_AVAILABLE, rucio_instance=REPLICA, mode="replica", outcome="rule_created") == 1


def test_a_rule_that_gets_stuck_ends_its_wait_stuck_once(waits: Waits) -> None:
    did = "data18:SIM.dataset"
    start = time.monotonic()
    waits.make_available(did)
    waits.poll_until(did, "REPLICATING")
    assert waits.waiting() == 1
    waits.rucio.fail_transfer("SITE_DISK", [f"data18:{name}" for name in DATASETS["SIM.dataset"]])
    stuck = waits.poll_until(did, "STUCK")
    for _ in range(3):
        assert waits.look(did).statuses == ["STUCK"]
    count, seconds = waits.waited("stuck")
    assert count == 1 and 0 < seconds < stuck.received - start
    assert waits.waiting() == 0
    assert waits.waited("available") == (0, 0)


def test_two_dids_at_once_end_one_after_the_other(waits: Waits) -> None:
    first, second = waits.tape_file("first.root"), waits.tape_file("second.root")
    waits.make_available(first)
    waits.make_available(second)
    for did in (first, second):
        waits.poll_until(did, "REPLICATING")
    assert waits.waiting() == 2

    waits.rucio.finish_transfer("SITE_DISK", [first])
    waits.poll_until(first, "OK")
    assert waits.look(second).statuses == ["REPLICATING"]
    assert (waits.waiting(), waits.waited("available")[0]) == (1, 1)

    waits.rucio.finish_transfer("SITE_DISK", [second])
    waits.poll_until(second, "OK")
    assert (waits.waiting(), waits.waited("available")[0]) == (0, 2)


def test_a_did_made_available_again_while_it_waits_is_the_same_wait(waits: Waits) -> None:
    did = waits.tape_file("twice.root")
    start = time.monotonic()
    waits.make_available(did)
    waits.poll_until(did, "REPLICATING")
    again = waits.make_available(did)
    assert again["ExceptionClass"] == "DuplicateRule"
    assert waits.waiting() == 1
    waits.rucio.finish_transfer("SITE_DISK", [did])
    ok = waits.poll_until(did, "OK")
    count, seconds = waits.waited("available")
    # One wait, from the first make-available.
    assert count == 1 and ok.received - start > seconds > 0
    assert waits.waiting() == 0
    made = {outcome: waits.change(MAKE_AVAILABLE, rucio_instance=REPLICA, mode="replica", outcome=outcome)
            for outcome in ("rule_created", "rule_exists")}
    assert made == {"rule_created": 1, "rule_exists": 1}


def test_a_did_already_on_the_hubs_rse_waits_about_one_poll(waits: Waits) -> None:
    # legacy.dataset's file is on the hub's RSE already: the new rule is OK at once.
    did = "data18:legacy.dataset"
    start = time.monotonic()
    waits.make_available(did)
    ok = waits.poll_until(did, "OK")
    count, seconds = waits.waited("available")
    assert count == 1 and 0 < seconds < ok.received - start
    assert waits.waiting() == 0


def test_an_unknown_did_is_refused_and_no_wait(waits: Waits) -> None:
    answer = waits.make_available("data18:no-such-dataset")
    assert answer["ExceptionClass"] == "DataIdentifierNotFound"
    assert waits.change(MAKE_AVAILABLE, rucio_instance=REPLICA, mode="replica", outcome="refused") == 1
    assert waits.waiting() == 0


def test_a_wait_nobody_looks_at_ends_unobserved_after_the_horizon(waits: Waits) -> None:
    did = waits.tape_file("left.root")
    start = time.monotonic()
    waits.make_available(did)
    made = time.monotonic()
    last = waits.look(did)  # the panel's first look; then the user closes it
    assert waits.waiting() == 1
    # Without any traffic to the DID, the server's timer ends it (every quarter of the horizon).
    waits.until(lambda: waits.waiting() == 0, HORIZON + HORIZON / 4 + 5, "the wait did not end unobserved")
    assert time.monotonic() - last.sent > HORIZON
    count, seconds = waits.waited("unobserved")
    # Counted to its last look, not to when it expired.
    assert count == 1 and last.sent - made <= seconds <= last.received - start
    # A look after that is no wait: nothing more is counted.
    waits.look(did)
    assert waits.waited("unobserved")[0] == 1 and waits.waiting() == 0


def test_download_mode_waits_are_the_downloads_in_the_same_family(waits: Waits) -> None:
    did = "user.alice:wanted.root"
    waits.rucio.add_file("SITE_DISK", did, b"data" * 5000)
    mode = (DOWNLOAD, "download")
    labels = {"rucio_instance": DOWNLOAD, "mode": "download"}
    waits.make_available(did, DOWNLOAD)
    waits.until(lambda: waits.waited("available", *mode)[0] == 1, 60, "the download did not end")
    assert waits.waiting(*mode) == 0
    # The wait is the download, as the transfer families time it.
    transfer = {"rucio_instance": DOWNLOAD, "direction": "download", "outcome": "succeeded"}
    assert waits.waited("available", *mode)[1] == \
        waits.change("rucio_jupyterlab_transfer_duration_seconds_sum", **transfer) > 0
    # Made available again: upstream removes its record of the finished download before it looks for
    # one, so it downloads again (already_available never happens with rucio-jupyterlab 41): a second wait.
    waits.make_available(did, DOWNLOAD)
    waits.until(lambda: waits.waited("available", *mode)[0] == 2, 60, "the second download did not end")
    assert waits.change(MAKE_AVAILABLE, **labels, outcome="download_started") == 2
    assert waits.change(MAKE_AVAILABLE, **labels, outcome="already_available") == 0

    broken = "user.alice:gone.root"
    waits.rucio.add_file("SITE_DISK", broken, b"gone" * 100).unlink()  # the replica's file is missing
    waits.make_available(broken, DOWNLOAD)
    waits.until(lambda: waits.waited("failed", *mode)[0] == 1, 60, "the download did not fail")
    assert waits.waiting(*mode) == 0


def test_promtool_finds_nothing_in_the_time_to_data_families(waits: Waits) -> None:
    from .support.deploy_files import promtool

    text = "".join(line + "\n" for line in waits.server.metrics_text().splitlines() if PREFIX in line)
    assert f"{MAKE_AVAILABLE}{{" in text
    result = promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
