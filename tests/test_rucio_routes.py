"""End to end against a real Rucio server: a real Jupyter server whose Rucio instances are served by it.

The Rucio server is PyPI's ``rucio`` (tests/servers/rucio_server.py: SQLite, Flask's
server, fixture data seeded with Rucio's own client). Every one of the 16
routes is driven on its success path (oidc-auth-check's needs an identity
provider behind Rucio: that one is in tests/test_rucio_faults.py, on the
stand-in), then on the failures a real Rucio gives, and each test asserts
exactly which ``rucio_jupyterlab_http_*`` and ``rucio_jupyterlab_rucio_*``
counters changed over HTTP ``/metrics``, and by how much. One Rucio server and
one Jupyter server serve the module; each test compares against a snapshot
taken at its start.

After every test, the ``rj`` fixture checks the outbound counts against the
Rucio server's own access log: every call Rucio logged during the test is
counted once, under its operation and status class.

Two instances: ``atlas`` in replica mode (with an OIDC token file for the
OIDC check) and ``cms`` in download mode, so every RucioAPI method that a
route uses is reached.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rucio_metrics.outbound import OPERATIONS
from tests.servers.jupyter_server_process import JupyterServerProcess
from tests.servers.rucio_server import RucioServer
from tests.servers.rucio_server_setup import DATASETS
from tests.support.durations import Stopwatch, assert_plausible_durations
from tests.support.route_samples import (
    RUCIO,
    Samples,
    Session,
    changes,
    counters,
    expect,
    inbound,
    key,
    logged_calls,
    logged_in_server,
    outbound,
    outbound_calls,
)


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioServer]:
    with RucioServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(rucio: RucioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServerProcess]:
    with logged_in_server(rucio.instance_config, rucio.userpass_credentials, tmp_path_factory.mktemp("oidc")) \
            as server:
        yield server


class RucioSession(Session):
    """The module's servers, the counters and Rucio's access log as they were when the test started."""

    def __init__(self, server: JupyterServerProcess, rucio: RucioServer) -> None:
        self.wall = Stopwatch()  # started before the first scrape: whatever is counted after it took less
        super().__init__(server)
        self.rucio = rucio
        self.log_start = len(rucio.access_log())
        # Requests to Rucio the test expects from elsewhere than RucioAPI (regexes on the path).
        self.not_from_rucio_api: list[str] = []
        # How many requests the test sends at a time at most.
        self.concurrency = 1

    def changes(self) -> Samples:
        """The counters' changes since the test started, once the durations of what they counted are plausible."""
        after = self.server.samples()
        assert_plausible_durations(self.before, after, self.wall.seconds, concurrency=self.concurrency)
        return changes(self.before, after)

    def rucio_log(self) -> list[tuple[str, str, int]]:
        """What Rucio logged since the test started: ``(method, path, status)``."""
        return self.rucio.access_log()[self.log_start:]

    def wait_for_changes(self, want: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        """Wait for work a route left running in the background to be counted."""
        deadline = time.monotonic() + 10
        # Without the durations' check: a call may be counted in one family and not yet in the other.
        while changes(self.before, self.server.samples()) != want and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def rj(server: JupyterServerProcess, rucio: RucioServer) -> Iterator[RucioSession]:
    """A session whose Rucio tokens are cached, so each test sees only its own calls.

    After the test: every call in Rucio's access log is counted once, under its
    operation and status class (calls that got no answer, or never left, are not in that log).
    """
    for route, namespace in (("list-scopes", "atlas"), ("list-rses", "cms")):
        assert server.request("GET", f"rucio-jupyterlab/{route}", params={"namespace": namespace}).ok
    session = RucioSession(server, rucio)
    yield session
    logged = [e for e in session.rucio_log()
              if not any(re.fullmatch(pattern, e[1]) for pattern in session.not_from_rucio_api)]
    counted = {call: n for call, n in outbound_calls(session.changes()).items()
               if call[1] not in ("connection_error", "timeout", "invalid_input")}  # none reached Rucio
    assert counted == dict(logged_calls(logged))


# -- every route on a success path -----------------------------------------------------------------


def test_outbound_series_of_configured_instances_exist_from_start(rj: RucioSession) -> None:
    counts = {
        (dict(labels)["instance"], dict(labels)["operation"]) for name, labels in rj.before
        if name == RUCIO + "request_duration_seconds_count"
    }
    assert counts == {(instance, operation) for instance in ("atlas", "cms") for operation in OPERATIONS}
    # No route calls get_rule_details, yet its series is there, at zero.
    assert rj.before[key(RUCIO + "request_duration_seconds_count", instance="cms", operation="get_rule_details")] == 0


def test_instances(rj: RucioSession) -> None:
    response = rj.call("GET", "instances")
    assert response.status_code == 200
    assert [i["name"] for i in response.json()["instances"]] == ["atlas", "cms"]
    assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).status_code == 200
    assert rj.changes() == expect(inbound("GET", "instances", 200), inbound("PUT", "instances", 200))
    assert rj.rucio_log() == []


def test_auth(rj: RucioSession) -> None:
    response = rj.call("GET", "auth", namespace="atlas", type="userpass")
    # The route gives the stored password back: compare it, never show it.
    stored = response.json()
    password = stored.pop("password")
    assert response.status_code == 200 and stored == {"username": "alice", "account": "alice"}
    same = password == rj.rucio.password  # a bool: pytest would print both strings on failure
    assert same, "GET auth gave back another password than the one stored"
    # Storing credentials tries them on Rucio at once.
    assert rj.call("PUT", "auth", json=rj.rucio.userpass_credentials("atlas")).json() == {"success": True}
    assert rj.changes() == expect(
        inbound("GET", "auth", 200), inbound("PUT", "auth", 200), outbound("atlas", "authenticate")
    )
    assert rj.rucio_log() == [("GET", "/auth/userpass", 200)]


def test_list_scopes(rj: RucioSession) -> None:
    response = rj.call("GET", "list-scopes", namespace="atlas")
    assert response.json() == {"success": True, "scopes": ["user.alice", "data18", "mc16"]}
    assert rj.changes() == expect(inbound("GET", "list-scopes", 200), outbound("atlas", "get_scopes"))
    assert rj.rucio_log() == [("GET", "/scopes/", 200)]


def test_list_rses(rj: RucioSession) -> None:
    response = rj.call("GET", "list-rses", namespace="cms", expression="SITE_DISK|SITE_TAPE")
    assert sorted(r["rse"] for r in response.json()) == ["SITE_DISK", "SITE_TAPE"]
    assert rj.changes() == expect(inbound("GET", "list-rses", 200), outbound("cms", "get_rses"))
    # Rucio redirects /rses to /rses/: one call, two HTTP requests.
    assert [(path, status) for _, path, status in rj.rucio_log()] == [
        ("/rses?expression=SITE_DISK|SITE_TAPE", 308), ("/rses/?expression=SITE_DISK|SITE_TAPE", 200),
    ]


def test_did_search(rj: RucioSession) -> None:
    response = rj.call("GET", "did-search", namespace="atlas", did="data18:*", type="collection")
    assert [(d["did"], d["type"]) for d in response.json()] == [
        ("data18:AOD.container", "container"), *((f"data18:{name}", "dataset") for name in sorted(DATASETS)),
    ]
    # Real Rucio gives every record its type: no metadata is asked for.
    assert rj.changes() == expect(inbound("GET", "did-search", 200), outbound("atlas", "search_did"))


def test_files(rj: RucioSession) -> None:
    response = rj.call("GET", "files", namespace="atlas", did="data18:AOD.dataset", poll="1")
    assert response.json() == [{"did": "data18:file1.root", "size": 1000}, {"did": "data18:file2.root", "size": 2000}]
    assert rj.changes() == expect(inbound("GET", "files", 200), outbound("atlas", "get_replicas"))


def test_did_in_replica_mode(rj: RucioSession) -> None:
    response = rj.call("GET", "did", namespace="atlas", did="data18:AOD.dataset", force="1")
    storage = rj.rucio.storage("SITE_DISK")
    # Paths of the replicas on the destination RSE, where Rucio's hash algorithm put them.
    assert [(f["status"], f["did"]) for f in response.json()] == [
        ("OK", "data18:file1.root"), ("OK", "data18:file2.root"),
    ]
    for f in response.json():
        name = f["did"].split(":")[1]
        assert re.fullmatch(rf"{storage}/data18/[0-9a-f]{{2}}/[0-9a-f]{{2}}/{re.escape(name)}", f["path"]), f["path"]
    assert rj.changes() == expect(inbound("GET", "did", 200), outbound("atlas", "get_replicas"))


def test_did_in_download_mode(rj: RucioSession) -> None:
    response = rj.call("GET", "did", namespace="cms", did="data18:AOD.container", force="1")
    assert [(f["did"], f["status"]) for f in response.json()] == [
        ("data18:file1.root", "NOT_AVAILABLE"), ("data18:file2.root", "NOT_AVAILABLE"),
    ]
    assert rj.changes() == expect(inbound("GET", "did", 200), outbound("cms", "get_files"))


def test_did_first_look_fetches_replicas_in_the_background(rj: RucioSession) -> None:
    # Nothing cached: the route answers "FETCHING" at once and asks Rucio from another thread pool.
    response = rj.call("GET", "did", namespace="atlas", did="data18:AOD.container")
    assert [f["status"] for f in response.json()] == ["FETCHING"]
    want = expect(inbound("GET", "did", 200), outbound("atlas", "get_replicas"))
    rj.wait_for_changes(want)
    assert rj.changes() == want
    assert rj.rucio_log() == [("GET", "/replicas/data18/AOD.container", 200)]


def test_did_make_available_then_the_transfer(rj: RucioSession) -> None:
    # The transfer is played by Rucio's own client, as root: not a call of this server.
    rj.not_from_rucio_api = [r"/auth/userpass", r"/replicas"]
    # RAW.dataset is on tape only: the new rule waits for a transfer (no Rucio daemons run here).
    response = rj.call("POST", "did/make-available", json={"did": "data18:RAW.dataset"}, namespace="atlas")
    assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", response.json()[0])
    status = rj.call("GET", "did", namespace="atlas", did="data18:RAW.dataset", force="1").json()
    assert [f["status"] for f in status] == ["REPLICATING", "REPLICATING"]

    rj.rucio.finish_transfer("SITE_DISK", [f"data18:{name}" for name in DATASETS["RAW.dataset"]])
    status = rj.call("GET", "did", namespace="atlas", did="data18:RAW.dataset", force="1").json()
    assert [f["status"] for f in status] == ["OK", "OK"]
    assert rj.changes() == expect(
        inbound("POST", "did/make-available", 200),
        inbound("GET", "did", 200, times=2),
        outbound("atlas", "add_replication_rule"),
        outbound("atlas", "get_replicas", times=2),
        outbound("atlas", "get_rules"),  # only while files lack a replica there: the rule's state
    )
    assert ("PUT", "/replicas", 200) in rj.rucio_log()


def test_open_replication_rule(rj: RucioSession) -> None:
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:AOD.dataset")
    assert response.status_code == 302
    assert re.fullmatch(rf"{rj.rucio.url}/ui/rule\?rule_id=[0-9a-f]{{32}}", response.headers["Location"])
    assert rj.changes() == expect(inbound("GET", "open-replication-rule", 302), outbound("atlas", "get_rules"))


def test_open_replication_rule_of_a_parent(rj: RucioSession) -> None:
    # file1.root has no rule of its own: its parents are asked for, and their rules.
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:file1.root")
    assert response.status_code == 302
    assert rj.changes() == expect(
        inbound("GET", "open-replication-rule", 302),
        outbound("atlas", "get_rules", times=2),
        outbound("atlas", "get_parents"),
    )


def test_file_browser(rj: RucioSession) -> None:
    response = rj.call("GET", "file-browser", namespace="atlas", path="")
    assert response.status_code == 200 and isinstance(response.json(), list)
    assert rj.changes() == inbound("GET", "file-browser", 200)


def test_purge_cache(rj: RucioSession) -> None:
    assert rj.call("POST", "purge-cache", namespace="atlas").json() == {"success": True}
    assert rj.changes() == inbound("POST", "purge-cache", 200)


def test_upload_and_its_jobs(rj: RucioSession) -> None:
    # Uploads run Rucio's own client in a child process: one to a real RSE, one to an RSE Rucio does not
    # know. One after the other: Rucio on SQLite fails a write that meets another (500), and two uploads
    # started together were seen to swap their jobs' records in rucio-jupyterlab 41.0.0.
    home = rj.server.root / "home"
    rj.not_from_rucio_api = [".*"]
    polls, jobs = 0, []
    for name, rse in (("ok.txt", "SITE_SCRATCHDISK"), ("refused.txt", "NO_SUCH_DISK")):
        (home / name).write_text(f"{name}\n")
        body = {"file_paths": [str(home / name)], "rse": rse, "scope": "user.alice"}
        assert rj.call("POST", "upload", json=body, namespace="atlas").json() == {"success": True}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            polls += 1
            jobs = rj.call("GET", "upload/jobs", namespace="atlas").json()
            if any(j["did"] == f"user.alice:{name}" and j["status"] != "UPLOADING" for j in jobs):
                break
            time.sleep(0.2)
    assert sorted((j["did"], j["status"]) for j in jobs) == [
        ("user.alice:ok.txt", "OK"), ("user.alice:refused.txt", "FAILED"),
    ], [rj.call("GET", "upload/jobs/log", namespace="atlas", id=str(j["id"])).text for j in jobs]
    ids = {j["did"]: str(j["id"]) for j in jobs}
    for job_id in ids.values():
        assert rj.call("GET", "upload/jobs/details", namespace="atlas", id=job_id).status_code == 200
    # A finished upload's log is gone (404); a failed one's tells why.
    log = rj.call("GET", "upload/jobs/log", namespace="atlas", id=ids["user.alice:refused.txt"])
    assert log.status_code == 200 and "Upload failed" in log.json()["text"]
    assert rj.call("GET", "upload/jobs/log", namespace="atlas", id=ids["user.alice:ok.txt"]).status_code == 404
    for job_id in ids.values():
        assert rj.call("DELETE", "upload/jobs/details", namespace="atlas", id=job_id).json() == {"success": True}
    assert rj.call("GET", "upload/jobs", namespace="atlas").json() == []

    assert rj.changes() == expect(
        inbound("POST", "upload", 200, times=2),
        inbound("GET", "upload/jobs", 200, times=polls + 1),
        inbound("GET", "upload/jobs/details", 200, times=2),
        inbound("GET", "upload/jobs/log", 200),
        inbound("GET", "upload/jobs/log", 404, fault="user"),
        inbound("DELETE", "upload/jobs/details", 200, times=2),
    )
    # The child processes did talk to Rucio, but outside this server process: not counted here.
    uploaded = list(rj.rucio.storage("SITE_SCRATCHDISK").glob("user/alice/*/*/ok.txt"))
    assert [p.read_text() for p in uploaded] == ["ok.txt\n"]
    assert {("POST", "/replicas", 201), ("PUT", "/replicas", 200)} <= set(rj.rucio_log())
    # The upload's rucio.cfg (with the password) and Rucio's token went to the server's own temp folder,
    # which goes with it, not to the machine's.
    tokens = list((rj.server.root / "home" / "tmp").glob("**/.rucio_*/auth_token_for_account_alice"))
    assert tokens, "Rucio's client kept its token outside the Jupyter server's temp folder"


# -- what a real Rucio answers when things go wrong --------------------------------------------------


def test_wrong_password(rj: RucioSession) -> None:
    wrong = rj.rucio.userpass_credentials("atlas", password="guess")
    assert rj.call("PUT", "auth", json=wrong).status_code == 401
    assert rj.call("PUT", "auth", json=rj.rucio.userpass_credentials("atlas")).status_code == 200
    assert rj.changes() == expect(
        inbound("PUT", "auth", 401, fault="user"), inbound("PUT", "auth", 200),
        outbound("atlas", "authenticate", "4xx"), outbound("atlas", "authenticate"),
    )
    assert rj.rucio_log() == [("GET", "/auth/userpass", 401), ("GET", "/auth/userpass", 200)]


def test_unknown_did(rj: RucioSession) -> None:
    # Each route meets Rucio's "not found" its own way.
    did = "data18:no-such-dataset"
    assert rj.call("GET", "did", namespace="cms", did=did, force="1").status_code == 404
    # Replicas of a missing DID: Rucio answers 200 and an empty list.
    assert rj.call("GET", "files", namespace="atlas", did=did, poll="1").json() == []
    # A rule on it: Rucio answers 404, the route passes Rucio's error body on with a 200.
    made = rj.call("POST", "did/make-available", json={"did": did}, namespace="atlas")
    assert made.status_code == 200 and made.json()["ExceptionClass"] == "DataIdentifierNotFound"
    assert rj.call("GET", "open-replication-rule", namespace="atlas", did=did).status_code == 404
    assert rj.changes() == expect(
        inbound("GET", "did", 404, fault="user"),
        inbound("GET", "files", 200),
        inbound("POST", "did/make-available", 200),
        inbound("GET", "open-replication-rule", 404, fault="user"),
        outbound("cms", "get_files", "4xx"),
        outbound("atlas", "get_replicas"),
        outbound("atlas", "add_replication_rule", "4xx"),
        outbound("atlas", "get_rules", "4xx"),
        outbound("atlas", "get_parents"),
    )


def test_make_available_twice_is_refused_but_answers_200(rj: RucioSession) -> None:
    body = {"did": "data18:SIM.dataset"}
    assert rj.call("POST", "did/make-available", json=body, namespace="atlas").status_code == 200
    again = rj.call("POST", "did/make-available", json=body, namespace="atlas")
    assert again.status_code == 200 and again.json()["ExceptionClass"] == "DuplicateRule"
    assert rj.changes() == expect(
        inbound("POST", "did/make-available", 200, times=2),
        outbound("atlas", "add_replication_rule"),
        outbound("atlas", "add_replication_rule", "4xx"),
    )
    assert [status for _, _, status in rj.rucio_log()] == [201, 409]


def test_invalid_rse_expression_escapes_as_a_500(rj: RucioSession) -> None:
    # list-rses catches only authentication errors: Rucio's 400 escapes as an uncaught exception.
    assert rj.call("GET", "list-rses", namespace="cms", expression="SITE_*").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "list-rses", 500, exception="RucioHTTPException", fault="user"),
        outbound("cms", "get_rses", "4xx"),
    )
    assert [status for _, _, status in rj.rucio_log()] == [308, 400]


def test_oidc_token_rucio_cannot_validate(rj: RucioSession) -> None:
    rj.not_from_rucio_api = [r"/auth/validate"]
    # Without an identity provider configured, Rucio answers a JWT with 500; the route says 403.
    assert rj.call("GET", "oidc-auth-check", namespace="atlas").status_code == 403
    # This route calls Rucio's /auth/validate through a module function, not RucioAPI: no outbound sample.
    # Rucio's 500 here goes through no RucioAPI call: the 403 the route answers is all rucio_metrics sees.
    assert rj.changes() == inbound("GET", "oidc-auth-check", 403, fault="user")
    assert rj.rucio_log() == [("GET", "/auth/validate", 500)]


def test_rucio_stopped(rj: RucioSession) -> None:
    rj.not_from_rucio_api = [r"/ping"]  # the restart's own check
    rj.rucio.halt()
    make_available = {"json": {"did": "data18:AOD.dataset"}, "namespace": "atlas"}
    try:
        # With a token: the connection error as a 503 from list-scopes; make-available lets it escape.
        assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 503
        assert rj.call("POST", "did/make-available", **make_available).status_code == 500
        # Without one, the token request fails first. Upstream bug: make-available answers that
        # error, then finishes again with an unset variable.
        assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).ok  # forgets tokens
        assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 500
        response = rj.call("POST", "did/make-available", **make_available)
        assert response.status_code == 500 and "ConnectionError" in response.json()["error"]
    finally:
        rj.rucio.serve()
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 200
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 503, fault="service"),
        inbound("POST", "did/make-available", 500, exception="ConnectionError", fault="service"),
        inbound("PUT", "instances", 200),
        inbound("GET", "list-scopes", 500, fault="service"),
        inbound("POST", "did/make-available", 500, exception="UnboundLocalError", fault="service"),
        inbound("GET", "list-scopes", 200),
        outbound("atlas", "get_scopes", "connection_error", times=2),
        outbound("atlas", "add_replication_rule", "connection_error", times=2),
        outbound("atlas", "authenticate", "connection_error", times=2),
        outbound("atlas", "authenticate"),
        outbound("atlas", "get_scopes"),
    )
    assert [(path, status) for _, path, status in rj.rucio_log()] == [
        ("/ping", 200), ("/auth/userpass", 200), ("/scopes/", 200),
    ]


def test_upload_job_details_of_an_unknown_job_hits_the_upstream_bug(rj: RucioSession) -> None:
    # Upstream answers 500 to a job id that does not exist: the client's mistake all the same.
    assert rj.call("GET", "upload/jobs/details", namespace="atlas", id="999999").status_code == 500
    assert rj.changes() == inbound("GET", "upload/jobs/details", 500, exception="IndexError", fault="user")


def test_input_refused_before_it_reaches_rucio_is_the_users(rj: RucioSession, tmp_path: Path) -> None:
    # A DID without exactly one ":" and a body without "did": the routes raise, upstream answers 500.
    assert rj.call("GET", "did", namespace="atlas", did="no-colon").status_code == 500
    assert rj.call("POST", "did/make-available", namespace="atlas", json={"dids": []}).status_code == 500
    # A search filter rucio-jupyterlab's own parser refuses: no request leaves.
    assert rj.call("GET", "did-search", namespace="atlas", did="data18:*", filters="junk").status_code == 500
    # An x509 login with a certificate path that does not exist: refused before any request too.
    missing = str(tmp_path / "no-such-cert.pem")
    x509 = {"namespace": "atlas", "type": "x509", "params": {"certificate": missing, "key": missing}}
    try:
        assert rj.call("PUT", "auth", json=x509).status_code == 401
    finally:
        assert rj.call("PUT", "auth", json=rj.rucio.userpass_credentials("atlas")).ok
    assert rj.changes() == expect(
        inbound("GET", "did", 500, exception="ValueError", fault="user"),
        inbound("POST", "did/make-available", 500, exception="KeyError", fault="user"),
        inbound("GET", "did-search", 500, fault="user"),
        outbound("atlas", "search_did", "invalid_input"),
        inbound("PUT", "auth", 401, fault="user"),
        outbound("atlas", "authenticate", "invalid_input"),
        inbound("PUT", "auth", 200),
        outbound("atlas", "authenticate"),
    )


def test_concurrent_requests_are_counted_exactly(rj: RucioSession) -> None:
    calls = [
        ("list-scopes", {"namespace": "atlas"}),
        ("list-rses", {"namespace": "cms"}),
        ("list-rses", {"namespace": "cms", "expression": "SITE_*"}),  # Rucio: 400
    ]

    def call(i: int) -> int:
        route, params = calls[i % 3]
        return rj.call("GET", route, **params).status_code

    rj.concurrency = 16
    with ThreadPoolExecutor(max_workers=rj.concurrency) as pool:
        statuses = Counter(pool.map(call, range(60)))
    assert statuses == {200: 40, 500: 20}
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 200, times=20),
        inbound("GET", "list-rses", 200, times=20),
        # Each request's own Rucio call decides, though 16 run at once on rucio-jupyterlab's 4 threads.
        inbound("GET", "list-rses", 500, times=20, exception="RucioHTTPException", fault="user"),
        outbound("atlas", "get_scopes", times=20),
        outbound("cms", "get_rses", times=20),
        outbound("cms", "get_rses", "4xx", times=20),
    )
    assert Counter(status for _, _, status in rj.rucio_log()) == {200: 40, 308: 40, 400: 20}


# -- a user who has not picked an auth method, and loading -------------------------------------------


def test_no_active_auth_method_hits_the_upstream_bug(rucio: RucioServer) -> None:
    # Credentials stored, but no auth method picked (PUT instances): rucio-jupyterlab calls
    # RucioAuthenticationException() without its argument; the TypeError comes back wrapped, as a 500.
    with JupyterServerProcess(rucio_instances=[rucio.instance_config("atlas")]) as server:
        assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials("atlas")).ok
        with Stopwatch() as wall:
            before = server.samples()
            response = server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "atlas"})
            after = server.samples()
        assert response.status_code == 500
        assert "missing 1 required positional argument: 'response'" in response.json()["error"]
        assert_plausible_durations(before, after, wall.seconds)
        assert changes(before, after) == expect(
            inbound("GET", "list-scopes", 500, fault="service"),
            # Neither reached Rucio: the outcome says "error", not a status class.
            outbound("atlas", "authenticate", "error"),
            outbound("atlas", "get_scopes", "error"),
        )


# Imported before rucio_metrics loads (jupyter_server imports every enabled
# extension first): a RucioAPI from a future rucio-jupyterlab, with one
# method gone and one no longer a plain function.
CHANGED_API = '''
import functools
from rucio_jupyterlab.rucio.rucio import RucioAPI

del RucioAPI.get_rule_details
RucioAPI.get_rses = functools.partialmethod(RucioAPI.get_rses)


def _jupyter_server_extension_points():
    return [{"module": "changed_rucio_api"}]


def _load_jupyter_server_extension(serverapp):
    pass
'''


def test_changed_rucio_api_gives_one_warning_and_inbound_keeps_working(
    rucio: RucioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "changed_rucio_api.py").write_text(CHANGED_API)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    instances = [rucio.instance_config("atlas")]
    with JupyterServerProcess(rucio_instances=instances, extensions={"changed_rucio_api": True}) as server:
        log_in_atlas = rucio.userpass_credentials("atlas")
        assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
        assert server.request("PUT", "rucio-jupyterlab/auth", json=log_in_atlas).ok
        with Stopwatch() as wall:
            before = server.samples()
            for route in ("list-rses", "list-scopes"):
                assert server.request("GET", f"rucio-jupyterlab/{route}", params={"namespace": "atlas"}).ok
            after = server.samples()
        assert_plausible_durations(before, after, wall.seconds)
        assert changes(before, after) == expect(
            inbound("GET", "list-rses", 200),
            inbound("GET", "list-scopes", 200),
            outbound("atlas", "authenticate"),  # the first call fetched a token
            outbound("atlas", "get_scopes"),
        )
        warnings = [line for line in server.log().splitlines() if "rucio_metrics" in line and "[W" in line]
    assert len(warnings) == 1
    assert warnings[0].endswith(
        "rucio_metrics: rucio_jupyterlab.rucio.rucio.RucioAPI has changed shape: get_rses, get_rule_details not "
        "found, so not measured; measuring get_scopes, search_did, get_metadata, get_files, get_parents, get_rules, "
        "get_replicas, add_replication_rule, authenticate"
    )


def test_outbound_can_be_turned_off(rucio: RucioServer) -> None:
    config = {"RucioMetrics": {"outbound_enabled": False}}
    with JupyterServerProcess(rucio_instances=[rucio.instance_config("atlas")], extra_config=config) as server:
        with Stopwatch() as wall:
            assert server.request("PUT", "rucio-jupyterlab/instances",
                                  json={"instance": "atlas", "auth": "userpass"}).ok
            assert server.request("PUT", "rucio-jupyterlab/auth", json=rucio.userpass_credentials("atlas")).ok
            assert server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "atlas"}).ok
        samples = server.samples()
        log = server.log()
    assert not [k for k in samples if k[0].startswith(RUCIO)]
    assert_plausible_durations({}, samples, wall.seconds)
    assert {k: v for k, v in counters(samples).items() if v} == expect(
        inbound("PUT", "instances", 200), inbound("PUT", "auth", 200), inbound("GET", "list-scopes", 200)
    )
    assert "measuring calls to Rucio" not in log and "rucio_metrics: calls to Rucio" not in log


def test_a_set_up_step_that_fails_says_why_and_the_next_step_runs(rucio: RucioServer) -> None:
    # The test equipment's own: one process runs a server's set-up steps; a step's failure is the step's.
    with pytest.raises(RuntimeError, match=r"(?s)^rucio server: set-up step 'add-file' failed:\n.*RSENotFound"):
        rucio.add_file("NO_SUCH_RSE", "user.alice:nowhere.root", b"n" * 10)
    assert rucio.did_bytes("user.alice:nowhere.root") == -1
    assert rucio.did_bytes("data18:file1.root") == 1000


def test_stopping_a_server_while_a_set_up_step_hangs_ends_both() -> None:
    # A stopped (SIGSTOP) Rucio server answers nothing, so a step waits; stop() used to wait for it, forever.
    rucio = RucioServer()
    rucio.start()
    assert rucio.process is not None
    failed: list[str] = []

    def step() -> None:
        try:
            rucio.add_file("SITE_DISK", "user.alice:hangs.root", b"h" * 10)
        except RuntimeError as error:
            failed.append(str(error).splitlines()[0])

    stepping = threading.Thread(target=step, daemon=True)
    try:
        rucio.process.send_signal(signal.SIGSTOP)
        stepping.start()
        time.sleep(1)
    finally:
        stopping = threading.Thread(target=rucio.stop, daemon=True)
        stopping.start()
        stopping.join(60)
    stepping.join(10)
    assert not stopping.is_alive() and not stepping.is_alive()
    assert failed == ["rucio server: the set-up steps' process ended before 'add-file':"]
    assert not rucio.root.exists()


def test_passwords_are_in_no_log(rucio: RucioServer, server: JupyterServerProcess) -> None:
    # After every test above: neither server logged a password it was given.
    logs = {"Jupyter server": server.log(), "Rucio server": rucio.log()}
    for password in (rucio.password, rucio.root_password):
        for name, log in logs.items():
            leaked = password in log  # a bool: pytest would show the log's text on failure
            assert not leaked, f"the {name}'s log holds a password"


def test_a_rucio_server_that_cannot_start_says_why() -> None:
    # Its port is taken: Flask's server exits, and the error carries the server's log.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        rucio = RucioServer()
        rucio.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"(?s)^rucio server exited early:\n.*Address already in use"):
            rucio.start()
    assert not rucio.root.exists()
