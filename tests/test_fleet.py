"""A real JupyterHub fleet: two users' servers scraped by one Prometheus through the hub's proxy.

JupyterHub (configurable-http-proxy, dummy authenticator, local processes)
spawns alice's and bob's servers with rucio-jupyterlab and rucio_metrics;
carol exists but has no server. ``python -m rucio_metrics.fleet`` writes the
file-SD targets from the Hub REST API with the fleet helper's token (scopes
list:users, read:servers), and Prometheus runs
deploy/prometheus/jupyterhub-fleet.yml with that file and the scrape token,
a second token whose only scope is the custom scope rucio_metrics admits.
The test's requests go through the hub to each user's Rucio routes.

The scrape token reads every server's metrics and opens nothing else of any
server: it is refused on the user's Rucio credentials, kernels, files,
sessions and terminals, through the proxy and straight at the server's own
port, and on the hub's API. The servers run rucio_metrics' default options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .servers.jupyter_server_process import REPO
from .servers.jupyterhub_process import (
    ADMIN_TOKEN,
    FLEET_TOKEN,
    HUB_METRICS_TOKEN,
    METRICS_SCOPE,
    SCRAPE_TOKEN,
    JupyterHubProcess,
    write_token_files,
)
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import deploy_config

# (user, route, status the client gets, times)
TRAFFIC = [
    ("alice", "rucio-jupyterlab/instances", 200, 3),
    ("alice", "rucio-jupyterlab/files", 400, 2),  # no ?namespace=
    ("bob", "rucio-jupyterlab/instances", 200, 1),
    ("bob", "rucio-jupyterlab/files", 400, 4),
]


@dataclass
class HubFleet:
    hub: JupyterHubProcess
    prometheus: PrometheusProcess
    fleet_token_file: Path
    scrape_token_file: Path
    targets_file: Path
    helper_report: str


def run_fleet_helper(hub: JupyterHubProcess, token_file: Path, output: Path) -> subprocess.CompletedProcess[str]:
    """``python -m rucio_metrics.fleet`` from this checkout, as an operator runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "rucio_metrics.fleet",
               "--hub-url", hub.url, "--token-file", str(token_file), "--output", str(output)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def hub_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubFleet]:
    root = tmp_path_factory.mktemp("fleet")
    fleet_token_file, scrape_token_file = write_token_files(root)
    targets_file = root / "jupyterhub.json"
    with JupyterHubProcess(metrics_readers=["reader"]) as hub:
        hub.start_servers(["alice", "bob"])
        hub.create_users(["carol"])  # a user without a server is no target
        helper = run_fleet_helper(hub, fleet_token_file, targets_file)
        assert helper.returncode == 0, helper.stderr
        config = deploy_config("jupyterhub-fleet.yml", scrape_token_file, file_sd=targets_file)
        with PrometheusProcess(config) as prometheus:
            prometheus.wait_for_targets(2)
            for user, route, status, times in TRAFFIC:
                for _ in range(times):
                    got = hub.request("GET", f"/user/{user}/{route}").status_code
                    assert got == status, f"GET /user/{user}/{route} through the hub: {got}, expected {status}"
            prometheus.wait_for_scrapes_after(time.time())
            yield HubFleet(hub, prometheus, fleet_token_file, scrape_token_file, targets_file, helper.stderr.strip())


def test_helper_lists_the_running_servers_from_the_hub_api(hub_fleet: HubFleet) -> None:
    address = f"127.0.0.1:{hub_fleet.hub.port}"
    assert json.loads(hub_fleet.targets_file.read_text()) == [
        {"targets": [address], "labels": {"__scheme__": "http", "__metrics_path__": f"/user/{user}/metrics",
                                          "instance": user, "user": user}}
        for user in ("alice", "bob")
    ]
    assert hub_fleet.helper_report == f"rucio_metrics.fleet: 2 ready servers -> {hub_fleet.targets_file}"


def test_prometheus_scrapes_both_servers_through_the_proxy_with_the_hub_token(hub_fleet: HubFleet) -> None:
    targets = hub_fleet.prometheus.targets()
    assert sorted((t["scrapeUrl"], t["health"], t["lastError"]) for t in targets) == [
        (f"{hub_fleet.hub.url}user/{user}/metrics", "up", "") for user in ("alice", "bob")
    ]
    assert {t["labels"]["job"] for t in targets} == {"jupyterhub-singleuser"}


def test_sum_by_handler_over_both_servers_is_the_total_sent(hub_fleet: HubFleet) -> None:
    sent: Counter[str] = Counter()
    for _, route, _, times in TRAFFIC:
        sent["/" + route] += times
    by_handler = hub_fleet.prometheus.values("sum by (handler) (rucio_jupyterlab_http_requests_total)", "handler")
    print("\nsum by (handler) (rucio_jupyterlab_http_requests_total):", by_handler)
    assert by_handler == {(handler,): float(n) for handler, n in sent.items()}

    per_server = hub_fleet.prometheus.values(
        "sum by (instance, handler, status_code) (rucio_jupyterlab_http_requests_total)",
        "instance", "handler", "status_code",
    )
    print("sum by (instance, handler, status_code) (rucio_jupyterlab_http_requests_total):", per_server)
    assert per_server == {(user, "/" + route, str(status)): float(n) for user, route, status, n in TRAFFIC}


def test_count_by_instance_shows_two_targets(hub_fleet: HubFleet) -> None:
    count = hub_fleet.prometheus.values("count by (instance) (rucio_jupyterlab_http_instrumented_routes)", "instance")
    print("\ncount by (instance) (rucio_jupyterlab_http_instrumented_routes):", count)
    assert count == {("alice",): 1.0, ("bob",): 1.0}
    routes = hub_fleet.prometheus.values("rucio_jupyterlab_http_instrumented_routes", "instance", "user")
    print("rucio_jupyterlab_http_instrumented_routes:", routes)
    assert routes == {("alice", "alice"): 16.0, ("bob", "bob"): 16.0}


def test_fleet_rules_aggregate_over_the_servers(hub_fleet: HubFleet) -> None:
    prometheus = hub_fleet.prometheus
    prometheus.wait_for_rule_evaluation_after(time.time())
    means = prometheus.values(
        'job_handler:rucio_jupyterlab_http_request_duration_seconds:mean5m{handler="/rucio-jupyterlab/files"}', "job"
    )
    assert list(means) == [("jupyterhub-singleuser",)]
    assert 0 < means[("jupyterhub-singleuser",)] < 30


# What the metrics credential must not open on a user's server: (method, path under the server, body).
NOT_FOR_METRICS = [
    ("GET", "rucio-jupyterlab/auth?namespace=atlas&type=userpass", None),  # the stored Rucio password
    ("GET", "rucio-jupyterlab/instances", None),
    ("PUT", "rucio-jupyterlab/instances", {"instance": "atlas", "auth": "userpass"}),
    ("POST", "api/kernels", {}),
    ("POST", "api/contents", {"type": "file", "ext": ".txt"}),
    ("GET", "api/sessions", None),
    ("POST", "api/terminals", {}),
]


def server_url(hub: JupyterHubProcess, user: str, path: str) -> str:
    """``path`` under ``user``'s default server, through the proxy, spelt as the hub spells the server's URL."""
    return hub.url + hub.user(user)["servers"][""]["url"].lstrip("/") + path


def check_metrics_only(base: str, token: str = SCRAPE_TOKEN) -> None:
    """``token`` reads ``<base>metrics`` with every family, is refused everywhere else; no token reads nothing."""
    auth = {"Authorization": f"Bearer {token}"}
    metrics = requests.get(base + "metrics", headers=auth, timeout=30)
    assert metrics.status_code == 200, (base, metrics.status_code)
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"http_request_duration_seconds", "rucio_jupyterlab_http_requests",
            "rucio_jupyterlab_http_instrumented_routes", "rucio_jupyterlab_http_request_duration_seconds"} <= families
    for method, path, body in NOT_FOR_METRICS:
        got = requests.request(method, base + path, headers=auth, json=body, timeout=30, allow_redirects=False)
        assert got.status_code == 403, f"{method} {base}{path} with the metrics credential: {got.status_code}"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        refused = requests.get(base + "metrics", headers=headers, timeout=30, allow_redirects=False)
        assert refused.status_code == 403, (base, headers, refused.status_code)


def test_the_metrics_credential_opens_nothing_else_through_the_proxy(hub_fleet: HubFleet) -> None:
    hub = hub_fleet.hub
    for user in ("alice", "bob"):
        check_metrics_only(server_url(hub, user, ""))
    # The same requests with a token that has access:servers do get in: the 403s above are the credential's.
    admin = {"Authorization": f"token {ADMIN_TOKEN}"}
    assert requests.get(server_url(hub, "alice", "api/sessions"), headers=admin, timeout=30).status_code == 200
    auth = requests.get(server_url(hub, "alice", "rucio-jupyterlab/instances"), headers=admin, timeout=30)
    assert auth.status_code == 200
    # On the hub's own API the scrape token reads nothing; the fleet helper's lists, and changes nothing.
    hub_api = [("GET", "users"), ("GET", "users/alice"), ("POST", "users/carol/server"),
               ("DELETE", "users/alice/server"), ("POST", "users/alice/tokens"), ("POST", "users"),
               ("GET", "users/alice/tokens")]
    for token, allowed in ((SCRAPE_TOKEN, set()), (FLEET_TOKEN, {("GET", "users"), ("GET", "users/alice")})):
        for method, path in hub_api:
            got = requests.request(method, f"{hub.url}hub/api/{path}", headers={"Authorization": f"token {token}"},
                                   json={}, timeout=30)
            expected = {200} if (method, path) in allowed else {403, 404}
            assert got.status_code in expected, f"{method} /hub/api/{path} with {token}: {got.status_code}"
    assert requests.get(f"{hub.url}hub/metrics", headers={"Authorization": f"token {SCRAPE_TOKEN}"},
                        timeout=30).status_code == 403


def test_the_fleet_helpers_token_reads_no_servers_metrics(hub_fleet: HubFleet) -> None:
    # It is never sent to the servers, and would open nothing there if it were.
    got = requests.get(server_url(hub_fleet.hub, "alice", "metrics"),
                       headers={"Authorization": f"Bearer {FLEET_TOKEN}"}, timeout=30)
    assert got.status_code == 403


def test_a_read_metrics_token_issued_before_is_refused_by_the_servers(hub_fleet: HubFleet) -> None:
    # A token a hub gave out for its own /hub/metrics (a Grafana's, say) reads no user's server
    # once rucio_metrics is installed with its default options: installing it widens nothing.
    hub = hub_fleet.hub
    auth = {"Authorization": f"Bearer {HUB_METRICS_TOKEN}"}
    assert requests.get(f"{hub.url}hub/metrics", headers=auth, timeout=30).status_code == 200
    for user in ("alice", "bob"):
        got = requests.get(server_url(hub, user, "metrics"), headers=auth, timeout=30)
        assert got.status_code == 403, (user, got.status_code)


def test_a_users_own_token_does_not_read_another_users_metrics(hub_fleet: HubFleet) -> None:
    # A valid hub token without the metrics scope: bob's own opens his server, not alice's metrics.
    hub = hub_fleet.hub
    _, bobs = hub.create_token("bob")
    auth = {"Authorization": f"Bearer {bobs}"}
    assert requests.get(server_url(hub, "bob", "metrics"), headers=auth, timeout=30).status_code == 200
    assert requests.get(server_url(hub, "alice", "metrics"), headers=auth, timeout=30).status_code == 403


def test_the_metrics_credential_opens_nothing_else_at_the_servers_own_port(hub_fleet: HubFleet) -> None:
    # Straight at the server's own port, as anyone who reaches it without the proxy would.
    hub = hub_fleet.hub
    check_metrics_only(f"http://{hub.server_address('alice')}/user/alice/")


def hub_lookups_of_tokens(hub: JupyterHubProcess) -> float:
    """How many times the single-user servers asked the hub whom a token belongs to (GET /hub/api/user)."""
    text = requests.get(f"{hub.url}hub/metrics", headers={"Authorization": f"token {HUB_METRICS_TOKEN}"}, timeout=30)
    text.raise_for_status()
    return sum(
        s.value for f in text_string_to_metric_families(text.text) for s in f.samples
        if s.name == "jupyterhub_request_duration_seconds_count"
        and s.labels.get("handler", "").endswith("SelfAPIHandler")
    )


def test_scrapes_ask_the_hub_once_per_token_and_cache_period(hub_fleet: HubFleet) -> None:
    hub = hub_fleet.hub
    url = server_url(hub, "alice", "metrics")
    auth = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    assert requests.get(url, headers=auth, timeout=30).status_code == 200  # cached from here on
    before = hub_lookups_of_tokens(hub)
    for _ in range(10):
        assert requests.get(url, headers=auth, timeout=30).status_code == 200
    assert hub_lookups_of_tokens(hub) == before


# Names the hub URL-escapes in its paths: a space, a non-ASCII letter, "+" and "@".
ESCAPED_USERS = ["a b", "jürgen", "first+last@example.org"]


def test_servers_of_users_whose_names_need_escaping_are_scraped(hub_fleet: HubFleet) -> None:
    hub, prometheus = hub_fleet.hub, hub_fleet.prometheus
    hub.start_servers(ESCAPED_USERS)
    try:
        helper = run_fleet_helper(hub, hub_fleet.fleet_token_file, hub_fleet.targets_file)
        assert helper.returncode == 0, helper.stderr
        paths = {g["labels"]["instance"]: g["labels"]["__metrics_path__"]
                 for g in json.loads(hub_fleet.targets_file.read_text())}
        # Decoded: Prometheus escapes the path itself when it requests it.
        assert {u: paths[u] for u in ESCAPED_USERS} == {u: f"/user/{u}/metrics" for u in ESCAPED_USERS}

        since = time.time()
        prometheus.wait_for_targets(2 + len(ESCAPED_USERS), seconds=90)
        targets = prometheus.wait_for_scrapes_after(since, seconds=60)  # raises unless every scrape succeeded
        assert sorted(t["labels"]["instance"] for t in targets) == sorted(["alice", "bob", *ESCAPED_USERS])
        routes = prometheus.values("rucio_jupyterlab_http_instrumented_routes", "instance")
        assert {user: routes.get((user,)) for user in ESCAPED_USERS} == {user: 16.0 for user in ESCAPED_USERS}
        for user in ESCAPED_USERS:
            check_metrics_only(server_url(hub, user, ""))
            # Prometheus' spelling of the path asks for the same credential as the hub's.
            spelt = f"{hub.url}user/{quote(user, safe='/$&+,:;=@')}/metrics"
            for token, status in ((SCRAPE_TOKEN, 200), (HUB_METRICS_TOKEN, 403), (FLEET_TOKEN, 403)):
                got = requests.get(spelt, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                assert got.status_code == status, (spelt, got.status_code)
    finally:
        for user in ESCAPED_USERS:
            hub.stop_server(user)
        helper = run_fleet_helper(hub, hub_fleet.fleet_token_file, hub_fleet.targets_file)
        assert helper.returncode == 0, helper.stderr


def test_a_stopped_server_leaves_the_targets(hub_fleet: HubFleet) -> None:
    # Near the end of this module: it stops bob's server.
    hub = hub_fleet.hub
    hub.stop_server("bob")
    helper = run_fleet_helper(hub, hub_fleet.fleet_token_file, hub_fleet.targets_file)
    assert helper.returncode == 0, helper.stderr
    assert [g["labels"]["instance"] for g in json.loads(hub_fleet.targets_file.read_text())] == ["alice"]


def test_a_hub_that_does_not_answer_refuses_new_tokens_and_the_server_serves(hub_fleet: HubFleet) -> None:
    # Last in this module: it kills the hub (its proxy and alice's server go on, as in a hub restart).
    hub = hub_fleet.hub
    auth = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    metrics = server_url(hub, "alice", "metrics")
    assert requests.get(metrics, headers=auth, timeout=30).status_code == 200
    # A valid token with the metrics scope that no server has seen yet.
    _, unseen = hub.create_token("reader", [METRICS_SCOPE])
    assert hub.process is not None
    hub.process.kill()
    hub.process.wait(10)
    # A token the server has not resolved yet cannot be resolved now: refused, never admitted.
    for token in (unseen, "a-token-nobody-resolved"):
        refused = requests.get(metrics, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert refused.status_code in (403, 500)
    # The token resolved before is in HubAuth's cache: Prometheus' scrapes go on while the hub is away.
    assert requests.get(metrics, headers=auth, timeout=30).status_code == 200
    log = hub.log()
    assert f"rucio_metrics: RucioMetrics.hub_metrics_scope = '{METRICS_SCOPE}': could not ask the hub" in log
    assert "a-token-nobody-resolved" not in log and SCRAPE_TOKEN not in log and unseen not in log
