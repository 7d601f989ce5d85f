"""End to end with faults a real Rucio server cannot produce on demand: the Rucio stand-in.

tests/test_rucio_routes.py drives every route against a real Rucio server. What
it cannot make that server do, these tests make the stand-in
(tests/support/rucio_standin.py) do: answer an arbitrary 5xx, drop the connection
without an answer, answer slowly, fail one token request; and accept an OIDC
token, which a real Rucio only does with an identity provider behind it. Each
test asserts exactly which ``rucio_jupyterlab_http_*`` and
``rucio_jupyterlab_rucio_*`` counters changed, and by how much.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.jupyter_server_process import JupyterServerProcess
from tests.support.durations import Stopwatch, assert_plausible_durations
from tests.support.route_samples import (
    HTTP,
    RUCIO,
    Samples,
    Session,
    changes,
    expect,
    inbound,
    logged_in_server,
    outbound,
    seconds,
)
from tests.support.rucio_standin import RucioStandIn, userpass_credentials


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioStandIn]:
    with RucioStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def server(rucio: RucioStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServerProcess]:
    with logged_in_server(rucio.instance_config, userpass_credentials, tmp_path_factory.mktemp("oidc")) as server:
        yield server


class FaultSession(Session):
    def __init__(self, server: JupyterServerProcess, rucio: RucioStandIn) -> None:
        self.wall = Stopwatch()  # started before the first scrape: whatever is counted after it took less
        super().__init__(server)
        self.rucio = rucio

    def changes(self) -> Samples:
        """The counters' changes since the test started, once the durations of what they counted are plausible."""
        after = self.server.samples()
        assert_plausible_durations(self.before, after, self.wall.seconds)
        return changes(self.before, after)


@pytest.fixture
def rj(server: JupyterServerProcess, rucio: RucioStandIn) -> FaultSession:
    """A session whose Rucio tokens are cached, so each test sees only its own calls."""
    rucio.reset()
    for route, namespace in (("list-scopes", "atlas"), ("list-rses", "cms")):
        assert server.request("GET", f"rucio-jupyterlab/{route}", params={"namespace": namespace}).ok
    rucio.reset()
    return FaultSession(server, rucio)


def test_oidc_auth_check(rj: FaultSession) -> None:
    response = rj.call("GET", "oidc-auth-check", namespace="atlas")
    assert response.status_code == 200 and response.json()["success"] is True
    # This route calls Rucio's /auth/validate through a module function, not RucioAPI: no outbound sample.
    assert rj.changes() == inbound("GET", "oidc-auth-check", 200)
    assert rj.rucio.requests() == ["GET /auth/validate"]


def test_rucio_error_answer(rj: FaultSession) -> None:
    rj.rucio.fail("GET /scopes/", 500)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 500, fault="service"), outbound("atlas", "get_scopes", "5xx")
    )


def test_rucio_drops_the_connection(rj: FaultSession) -> None:
    rj.rucio.drop("GET /scopes/")
    # rucio-jupyterlab turns a failed connection into a 503.
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 503
    assert rj.changes() == expect(
        inbound("GET", "list-scopes", 503, fault="service"), outbound("atlas", "get_scopes", "connection_error")
    )


def test_rucio_server_error_uncaught_by_the_route(rj: FaultSession) -> None:
    # list-rses catches only authentication errors: the Rucio error escapes as a 500.
    rj.rucio.fail("GET /rses", 500)
    assert rj.call("GET", "list-rses", namespace="cms").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "list-rses", 500, exception="RucioHTTPException", fault="service"),
        outbound("cms", "get_rses", "5xx"),
    )


def test_rucio_error_passed_on_by_the_route(rj: FaultSession) -> None:
    rj.rucio.fail("GET /dids/data18/dids/search", 502)
    assert rj.call("GET", "did-search", namespace="atlas", did="data18:AOD.*").status_code == 502
    assert rj.changes() == expect(
        inbound("GET", "did-search", 502, fault="service"), outbound("atlas", "search_did", "5xx")
    )


def test_files_when_rucio_drops_the_connection(rj: FaultSession) -> None:
    rj.rucio.drop("GET /replicas/")
    assert rj.call("GET", "files", namespace="atlas", did="data18:AOD.dataset", poll="1").status_code == 500
    assert rj.changes() == expect(
        inbound("GET", "files", 500, fault="service"), outbound("atlas", "get_replicas", "connection_error")
    )


def test_open_replication_rule_hides_rucio_errors(rj: FaultSession) -> None:
    # The route swallows Rucio's errors and answers "no rule found": only outbound shows why.
    rj.rucio.fail("GET /dids/.*/rules", 500)
    response = rj.call("GET", "open-replication-rule", namespace="atlas", did="data18:file1.root")
    assert response.status_code == 404
    assert rj.changes() == expect(
        # The route answers "no rule" (404), but its Rucio calls failed: the service's.
        inbound("GET", "open-replication-rule", 404, fault="service"),
        outbound("atlas", "get_rules", "5xx", times=2),
        outbound("atlas", "get_parents"),
    )


def test_make_available_when_rucio_fails_the_rule(rj: FaultSession) -> None:
    # rucio-jupyterlab does not check this answer's status: the route says 200 with Rucio's error.
    rj.rucio.fail("POST /rules/", 500)
    response = rj.call("POST", "did/make-available", json={"did": "data18:AOD.dataset"}, namespace="atlas")
    assert response.status_code == 200 and response.json()["ExceptionClass"] == "RucioException"
    assert rj.changes() == expect(
        # Rucio's generic 500 for a RucioException, which upstream hands on as the body.
        inbound("POST", "did/make-available", 200), outbound("atlas", "add_replication_rule", "5xx")
    )


def test_token_request_fails_inside_a_call(rj: FaultSession) -> None:
    assert rj.call("PUT", "instances", json={"instance": "atlas", "auth": "userpass"}).ok  # forgets tokens
    rj.rucio.fail("GET /auth/userpass", 500, times=1)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 500
    assert rj.changes() == expect(
        inbound("PUT", "instances", 200),
        inbound("GET", "list-scopes", 500, fault="service"),
        outbound("atlas", "authenticate", "5xx"),
        outbound("atlas", "get_scopes", "5xx"),
    )
    assert rj.rucio.requests() == ["GET /auth/userpass"]


def test_slow_rucio_shows_on_both_sides(rj: FaultSession) -> None:
    rj.rucio.delay("GET /scopes/", 0.5)
    assert rj.call("GET", "list-scopes", namespace="atlas").status_code == 200
    durations = rj.durations()
    route = seconds(durations, HTTP + "request_duration_seconds_sum", handler="/rucio-jupyterlab/list-scopes",
                    method="GET")
    rucio = seconds(durations, RUCIO + "request_duration_seconds_sum", instance="atlas", operation="get_scopes")
    # The route took as long as Rucio, plus the extension's own (small) share.
    assert 0.5 <= rucio <= route < rucio * 1.5
    assert rj.changes() == expect(inbound("GET", "list-scopes", 200), outbound("atlas", "get_scopes"))
