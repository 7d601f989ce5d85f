"""End to end: a real Jupyter server whose Rucio instances point at the Rucio stand-in.

Every one of the 16 routes is driven on a success path, then on Rucio
failures, and each test asserts exactly which ``rucio_jupyterlab_http_*``
and ``rucio_jupyterlab_rucio_*`` counters changed over HTTP ``/metrics``,
and by how much (every ``_total`` and ``_count`` sample; durations are
checked where a test controls them). One server serves the module; each
test compares against a snapshot taken at its start.

Two instances: ``atlas`` in replica mode (with an OIDC token file for the
OIDC check) and ``cms`` in download mode, so every RucioAPI method that a
route uses is reached.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from rucio_metrics.outbound import OPERATIONS
from tests.jupyter_server_process import JupyterServerProcess
from tests.rucio_standin import RULES, RucioStandIn, userpass_credentials

HTTP = "rucio_jupyterlab_http_"
RUCIO = "rucio_jupyterlab_rucio_"

Key = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Key, float]


def counters(samples: Samples) -> Samples:
    """Our counters and duration counts; sums and timestamps vary from run to run."""
    return {k: v for k, v in samples.items() if k[0].startswith((HTTP, RUCIO)) and k[0].endswith(("_total", "_count"))}


def changes(before: Samples, after: Samples) -> Samples:
    before, after = counters(before), counters(after)
    diff = {k: after[k] - before.get(k, 0.0) for k in after}
    return {k: v for k, v in diff.items() if v}


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def inbound(method: str, route: str, status: int, times: int = 1, exception: str | None = None) -> Samples:
    """The inbound samples one request (or ``times``) to ``route`` adds."""
    handler = f"/rucio-jupyterlab/{route}"
    out = {
        key(HTTP + "requests_total", handler=handler, method=method, status_code=str(status)): float(times),
        key(HTTP + "request_duration_seconds_count", handler=handler, method=method): float(times),
    }
    if exception:
        out[key(HTTP + "exceptions_total", handler=handler, method=method, exception=exception)] = float(times)
    return out


def outbound(instance: str, operation: str, outcome: str = "2xx", times: int = 1) -> Samples:
    """The outbound samples ``times`` calls of one RucioAPI method add."""
    return {
        key(RUCIO + "requests_total", instance=instance, operation=operation, outcome=outcome): float(times),
        key(RUCIO + "request_duration_seconds_count", instance=instance, operation=operation): float(times),
    }


def expect(*parts: Samples) -> Samples:
    total: Counter[Key] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


def seconds(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(key(name, **labels), 0.0)


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioStandIn]:
    with RucioStandIn() as standin:
        yield standin


def oidc_token_file(directory: Path) -> Path:
    """A JWT like an identity provider's: rucio-jupyterlab reads its expiry without checking the signature."""
    path = directory / "oidc-token"
    claims = {"sub": "alice", "exp": int(time.time()) + 3600}
    path.write_text(jwt.encode(claims, "a-test-signing-key-of-32-bytes!!", algorithm="HS256"))
    return path


def log_in(server: JupyterServerProcess) -> None:
    assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
    for namespace in ("atlas", "cms"):
        assert server.request("PUT", "rucio-jupyterlab/auth", json=userpass_credentials(namespace)).ok


@pytest.fixture(scope="module")
def server(rucio: RucioStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServerProcess]:
    token = oidc_token_file(tmp_path_factory.mktemp("oidc"))
    instances = [
        rucio.instance_config("atlas", oidc_auth="file", oidc_file_name=str(token)),
        rucio.instance_config("cms", mode="download"),
    ]
    with JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances) as server:
        log_in(server)
        yield server


class Session:
    """The module's server, with the counters as they were when the test started."""

    def __init__(self, server: JupyterServerProcess, rucio: RucioStandIn) -> None:
        self.server = server
        self.rucio = rucio
        self.before = server.samples()

    def call(self, method: str, route: str, json: Any = None, **params: str) -> requests.Response:
        return self.server.request(
            method, f"rucio-jupyterlab/{route}", params=params, json=json, allow_redirects=False
        )

    def changes(self) -> Samples:
        return changes(self.before, self.server.samples())

    def durations(self) -> Samples:
        after = self.server.samples()
        return {k: v - self.before.get(k, 0.0) for k, v in after.items() if k[0].endswith("_sum")}


@pytest.fixture
def rj(server: JupyterServerProcess, rucio: RucioStandIn) -> Session:
    """A session whose Rucio tokens are cached, so each test sees only its own calls."""
    rucio.reset()
    for route, namespace in (("list-scopes", "atlas"), ("list-rses", "cms")):
        assert server.request("GET", f"rucio-jupyterlab/{route}", params={"namespace": namespace}).ok
    rucio.reset()
    return Session(server, rucio)


# -- every route on a success path -----------------------------------------------------------------


def test_outbound_series_of_configured_instances_exist_from_start(rj: Session) -> None:
    counts = {
        (dict(labels)["instance"], dict(labels)["operation"]) for name, labels in rj.before
        if name == RUCIO + "request_duration_seconds_count"
    }
    assert counts == {(instance, operation) for instance in ("atlas", "cms") for operation in OPERATIONS}
    # No route calls get_rule_details, yet its series is there, at zero.
    assert rj.before[key(RUCIO + "request_duration_seconds_count", instance="cms", operation="get_rule_details")] == 0


def test_instances(rj: Session) -> None:
    response = rj.call("GET", "instances")
    assert response.status_code == 200
    assert [i["name"] for i in response.json()["instances"]] == ["atlas", "cms"]
    assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).status_code == 200
    assert rj.changes() == expect(inbound("GET", "instances", 200), inbound("PUT", "instances", 200))
    assert rj.rucio.requests() == []


def test_auth(rj: Session) -> None:
    response = rj.call("GET", "auth", namespace="atlas", type="userpass")
    assert response.status_code == 200 and response.json()["username"] == "alice"
    # Storing credentials tries them on Rucio at once.
    assert rj.call("PUT", "auth", json=userpass_credentials("atlas")).json() == {"success": True}
    assert rj.changes() == expect(
        inbound("GET", "auth", 200), inbound("PUT", "auth", 200), outbound("atlas", "authenticate")
    )
    assert rj.rucio.requests() == ["GET /auth/userpass"]


def test_list_scopes(rj: Session) -> None:
    response = rj.call("GET", "list-scopes", namespace="atlas")
    assert response.json() == {"success": True, "scopes": ["user.alice", "data18", "mc16"]}
    assert rj.changes() == expect(inbound("GET", "list-scopes", 200), outbound("atlas", "get_scopes"))


def test_list_rses(rj: Session) -> None:
    response = rj.call("GET", "list-rses", namespace="cms", expression="SITE_*")
    assert [r["rse"] for r in response.json()] == ["SITE_DISK", "SITE_TAPE"]
    assert rj.changes() == expect(inbound("GET", "list-rses", 200), outbound("cms", "get_rses"))
    assert rj.rucio.requests() == ["GET /rses"]


def test_did_search(rj: Session) -> None:
    response = rj.call("GET", "did-search", namespace="atlas", did="data18:*", type="collection")
    assert response.json() == [
        {"did": "data18:AOD.container", "size": 3000, "type": "container"},
        {"did": "data18:AOD.dataset", "size": 3000, "type": "dataset"},
        {"did": "data18:legacy.dataset", "size": 3000, "type": "dataset"},
    ]
    # legacy.dataset came without a type: its metadata was asked for.
    assert rj.changes() == expect(
        inbound("GET", "did-search", 200), outbound("atlas", "search_did"), outbound("atlas", "get_metadata")
    )


def test_files(rj: Session) -> None:
    response = rj.call("GET", "files", namespace="atlas", did="data18:AOD.dataset", poll="1")
    assert response.json() == [{"did": "data18:file1.root", "size": 1000}, {"did": "data18:file2.root", "size": 2000}]
    assert rj.changes() == expect(inbound("GET", "files", 200), outbound("atlas", "get_replicas"))


def test_did_in_replica_mode(rj: Session) -> None:
    response = rj.call("GET", "did", namespace="atlas", did="data18:AOD.dataset", force="1")
    assert [(f["status"], f["path"]) for f in response.json()] == [
        ("OK", "/eos/rucio/file1.root"), ("OK", "/eos/rucio/file2.root"),
    ]
    assert rj.changes() == expect(inbound("GET", "did", 200), outbound("atlas", "get_replicas"))


def test_did_in_download_mode(rj: Session) -> None:
    response = rj.call("GET", "did", namespace="cms", did="data18:AOD.container", force="1")
    assert [(f["did"], f["status"]) for f in response.json()] == [
        ("data18:file1.root", "NOT_AVAILABLE"), ("data18:file2.root", "NOT_AVAILABLE"),
    ]
    assert rj.changes() == expect(inbound("GET", "did", 200), outbound("cms", "get_files"))


def test_did_first_look_fetches_replicas_in_the_background(rj: Session) -> None:
    # Nothing cached: the route answers "FETCHING" at once and asks Rucio from another thread pool.
    response = rj.call("GET", "did", namespace="atlas", did="data18:AOD.container")
    assert [f["status"] for f in response.json()] == ["FETCHING"]
    want = expect(inbound("GET", "did", 200), outbound("atlas", "get_replicas"))
    deadline = time.monotonic() + 10
    while rj.changes() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rj.changes() == want
    assert rj.rucio.requests() == ["GET /replicas/data18/AOD.container"]


def test_did_make_available(rj: Session) -> None:
    response = rj.call("POST", "did/make-available", json={"did": "data18:AOD.dataset"}, namespace="atlas")
    assert response.status_code == 200 and len(response.json()) == 1
    assert rj.changes() == expect(inbound("POST", "did/make-available", 200), outbound("atlas", "add_replication_rule"))
    assert rj.rucio.requests() == ["POST /rules/"]


def test_open_replication_rule(rj: Session) -> None:
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:AOD.dataset")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{rj.rucio.url}/ui/rule?rule_id={RULES[0]['id']}"
    assert rj.changes() == expect(inbound("GET", "open-replication-rule", 302), outbound("atlas", "get_rules"))


def test_open_replication_rule_of_a_parent(rj: Session) -> None:
    # file1.root has no rule of its own: its parents are asked for, and their rules.
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:file1.root")
    assert response.status_code == 302
    assert rj.changes() == expect(
        inbound("GET", "open-replication-rule", 302),
        outbound("atlas", "get_rules", times=2),
        outbound("atlas", "get_parents"),
    )


def test_oidc_auth_check(rj: Session) -> None:
    response = rj.call("GET", "oidc-auth-check", namespace="atlas")
    assert response.status_code == 200 and response.json()["success"] is True
    # This route calls Rucio's /auth/validate through a module function, not RucioAPI: no outbound sample.
    assert rj.changes() == inbound("GET", "oidc-auth-check", 200)
    assert rj.rucio.requests() == ["GET /auth/validate"]


def test_file_browser(rj: Session) -> None:
    response = rj.call("GET", "file-browser", namespace="atlas", path="")
    assert response.status_code == 200 and isinstance(response.json(), list)
    assert rj.changes() == inbound("GET", "file-browser", 200)


def test_purge_cache(rj: Session) -> None:
    assert rj.call("POST", "purge-cache", namespace="atlas").json() == {"success": True}
    assert rj.changes() == inbound("POST", "purge-cache", 200)


def test_upload_and_its_jobs(rj: Session) -> None:
    data = rj.server.root / "home" / "data.txt"
    data.write_text("hello")
    body = {"file_paths": [str(data)], "rse": "SITE_DISK", "scope": "user.alice"}
    assert rj.call("POST", "upload", json=body, namespace="atlas").json() == {"success": True}

    # The upload runs in a child process with Rucio's own client; the stand-in
    # lacks the RSE details it wants, so the job ends as FAILED with a log.
    polls, jobs = 0, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        polls += 1
        jobs = rj.call("GET", "upload/jobs", namespace="atlas").json()
        if jobs and jobs[0]["status"] != "UPLOADING":
            break
        time.sleep(0.2)
    assert [(j["did"], j["status"]) for j in jobs] == [("user.alice:data.txt", "FAILED")]
    job_id = str(jobs[0]["id"])

    details = rj.call("GET", "upload/jobs/details", namespace="atlas", id=job_id)
    assert details.status_code == 200 and details.json()["did"] == "user.alice:data.txt"
    log = rj.call("GET", "upload/jobs/log", namespace="atlas", id=job_id)
    assert log.status_code == 200 and "Upload failed" in log.json()["text"]
    assert rj.call("DELETE", "upload/jobs/details", namespace="atlas", id=job_id).json() == {"success": True}
    assert rj.call("GET", "upload/jobs", namespace="atlas").json() == []

    assert rj.changes() == expect(
        inbound("POST", "upload", 200),
        inbound("GET", "upload/jobs", 200, times=polls + 1),
        inbound("GET", "upload/jobs/details", 200),
        inbound("GET", "upload/jobs/log", 200),
        inbound("DELETE", "upload/jobs/details", 200),
    )
    # The child process did talk to Rucio, but outside this server process: not counted here.
    assert "GET /rses/SITE_DISK" in rj.rucio.requests()


# -- Rucio failures ----------------------------------------------------------------------------------


def test_rucio_error_answer(rj: Session) -> None:
    rj.rucio.fail("GET /scopes/", 500)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 500
    assert rj.changes() == expect(inbound("GET", "list-scopes", 500), outbound("atlas", "get_scopes", "5xx"))


def test_rucio_drops_the_connection(rj: Session) -> None:
    rj.rucio.drop("GET /scopes/")
    # rucio-jupyterlab turns a failed connection into a 503.
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 503
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 503), outbound("atlas", "get_scopes", "connection_error")
    )


def test_rucio_error_uncaught_by_the_route(rj: Session) -> None:
    # list-rses catches only authentication errors: the Rucio error escapes as a 500.
    rj.rucio.fail("GET /rses", 500)
    assert rj.call("GET", "list-rses", namespace="cms").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "list-rses", 500, exception="RucioHTTPException"), outbound("cms", "get_rses", "5xx")
    )


def test_rucio_error_passed_on_by_the_route(rj: Session) -> None:
    rj.rucio.fail("GET /dids/data18/dids/search", 502)
    assert rj.call("GET", "did-search", namespace="atlas", did="data18:AOD.*").status_code == 502
    assert rj.changes() == expect(inbound("GET", "did-search", 502), outbound("atlas", "search_did", "5xx"))


def test_rucio_not_found(rj: Session) -> None:
    response = rj.call("GET", "did", namespace="cms", did="data18:no-such-dataset", force="1")
    assert response.status_code == 404
    assert rj.changes() == expect(inbound("GET", "did", 404), outbound("cms", "get_files", "4xx"))


def test_files_when_rucio_is_unreachable(rj: Session) -> None:
    rj.rucio.drop("GET /replicas/")
    assert rj.call("GET", "files", namespace="atlas", did="data18:AOD.dataset", poll="1").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "files", 500), outbound("atlas", "get_replicas", "connection_error")
    )


def test_open_replication_rule_hides_rucio_errors(rj: Session) -> None:
    # The route swallows Rucio's errors and answers "no rule found": only outbound shows why.
    rj.rucio.fail("GET /dids/.*/rules", 500)
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:file1.root")
    assert response.status_code == 404
    assert rj.changes() == expect(
        inbound("GET", "open-replication-rule", 404),
        outbound("atlas", "get_rules", "5xx", times=2),
        outbound("atlas", "get_parents"),
    )


def test_make_available_when_rucio_refuses_the_rule(rj: Session) -> None:
    # rucio-jupyterlab does not check this answer's status: the route says 200 with Rucio's error.
    rj.rucio.fail("POST /rules/", 500)
    response = rj.call("POST", "did/make-available", json={"did": "data18:AOD.dataset"}, namespace="atlas")
    assert response.status_code == 200 and response.json()["ExceptionClass"] == "RucioException"
    assert rj.changes() == expect(
        inbound("POST", "did/make-available", 200), outbound("atlas", "add_replication_rule", "error")
    )


def test_make_available_when_login_fails_hits_the_upstream_bug(rj: Session) -> None:
    # Upstream bug: after answering the error, the handler finishes again with
    # an unset variable (UnboundLocalError). The client got the first answer:
    # the failed login, wrapped without a status, so 500.
    assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).ok  # forgets tokens
    rj.rucio.drop("GET /auth/userpass")
    response = rj.call("POST", "did/make-available", json={"did": "data18:AOD.dataset"}, namespace="atlas")
    assert response.status_code == 500 and "ConnectionError" in response.json()["error"]
    assert rj.changes() == expect(
        inbound("PUT", "instances", 200),
        inbound("POST", "did/make-available", 500, exception="UnboundLocalError"),
        outbound("atlas", "authenticate", "connection_error"),
        outbound("atlas", "add_replication_rule", "connection_error"),
    )


def test_token_request_fails_inside_a_call(rj: Session) -> None:
    assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).ok  # forgets tokens
    rj.rucio.fail("GET /auth/userpass", 500, times=1)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 500
    assert rj.changes() == expect(
        inbound("PUT", "instances", 200),
        inbound("GET", "list-scopes", 500),
        outbound("atlas", "authenticate", "5xx"),
        outbound("atlas", "get_scopes", "5xx"),
    )
    assert rj.rucio.requests() == ["GET /auth/userpass"]


def test_wrong_password(rj: Session) -> None:
    wrong = userpass_credentials("atlas")
    wrong["params"]["password"] = "guess"
    assert rj.call("PUT", "auth", json=wrong).status_code == 401
    assert rj.call("PUT", "auth", json=userpass_credentials("atlas")).status_code == 200
    assert rj.changes() == expect(
        inbound("PUT", "auth", 401), inbound("PUT", "auth", 200),
        outbound("atlas", "authenticate", "4xx"), outbound("atlas", "authenticate"),
    )


def test_upload_job_details_of_an_unknown_job_hits_the_upstream_bug(rj: Session) -> None:
    assert rj.call("GET", "upload/jobs/details", namespace="atlas", id="999999").status_code == 500
    assert rj.changes() == inbound("GET", "upload/jobs/details", 500, exception="IndexError")


def test_slow_rucio_shows_on_both_sides(rj: Session) -> None:
    rj.rucio.delay("GET /scopes/", 0.5)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 200
    durations = rj.durations()
    route = seconds(durations, HTTP + "request_duration_seconds_sum", handler="/rucio-jupyterlab/list-scopes",
                    method="GET")
    rucio = seconds(durations, RUCIO + "request_duration_seconds_sum", instance="atlas", operation="get_scopes")
    # The route took as long as Rucio, plus the extension's own (small) share.
    assert 0.5 <= rucio <= route < rucio * 1.5
    assert rj.changes() == expect(inbound("GET", "list-scopes", 200), outbound("atlas", "get_scopes"))


def test_concurrent_requests_are_counted_exactly(rj: Session) -> None:
    rj.rucio.delay("GET /(scopes|rses)", 0.05)
    rj.rucio.fail("GET /dids/data18/dids/search", 500)
    calls = [
        ("list-scopes", {"namespace": "atlas"}),
        ("list-rses", {"namespace": "cms"}),
        ("did-search", {"namespace": "atlas", "did": "data18:AOD.dataset"}),
    ]

    def call(i: int) -> int:
        route, params = calls[i % 3]
        return rj.call("GET", route, **params).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(call, range(60)))
    assert statuses == {200: 40, 500: 20}
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 200, times=20),
        inbound("GET", "list-rses", 200, times=20),
        inbound("GET", "did-search", 500, times=20),
        outbound("atlas", "get_scopes", times=20),
        outbound("cms", "get_rses", times=20),
        outbound("atlas", "search_did", "5xx", times=20),
    )
    assert Counter(rj.rucio.requests()) == {"GET /scopes/": 20, "GET /rses": 20, "GET /dids/data18/dids/search": 20}


# -- loading ---------------------------------------------------------------------------------------

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
    rucio: RucioStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "changed_rucio_api.py").write_text(CHANGED_API)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    instances = [rucio.instance_config("atlas")]
    with JupyterServerProcess(rucio_instances=instances, extensions={"changed_rucio_api": True}) as server:
        log_in_atlas = userpass_credentials("atlas")
        assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
        assert server.request("PUT", "rucio-jupyterlab/auth", json=log_in_atlas).ok
        before = server.samples()
        for route in ("list-rses", "list-scopes"):
            assert server.request("GET", f"rucio-jupyterlab/{route}", params={"namespace": "atlas"}).ok
        assert changes(before, server.samples()) == expect(
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


def test_outbound_can_be_turned_off(rucio: RucioStandIn) -> None:
    config = {"RucioMetrics": {"outbound_enabled": False}}
    with JupyterServerProcess(rucio_instances=[rucio.instance_config("atlas")], extra_config=config) as server:
        assert server.request("PUT", "rucio-jupyterlab/instances", json={"instance": "atlas", "auth": "userpass"}).ok
        assert server.request("PUT", "rucio-jupyterlab/auth", json=userpass_credentials("atlas")).ok
        assert server.request("GET", "rucio-jupyterlab/list-scopes", params={"namespace": "atlas"}).ok
        samples = server.samples()
        log = server.log()
    assert not [k for k in samples if k[0].startswith(RUCIO)]
    assert {k: v for k, v in counters(samples).items() if v} == expect(
        inbound("PUT", "instances", 200), inbound("PUT", "auth", 200), inbound("GET", "list-scopes", 200)
    )
    assert "measuring calls to Rucio" not in log and "rucio_metrics: calls to Rucio" not in log
