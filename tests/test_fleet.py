"""A real JupyterHub fleet: two users' servers scraped by one Prometheus through the hub's proxy.

JupyterHub (configurable-http-proxy, dummy authenticator, local processes)
spawns alice's and bob's servers with rucio-jupyterlab and rucio_metrics;
carol exists but has no server. ``python -m rucio_metrics.fleet`` writes the
file-SD targets from the Hub REST API with the Prometheus service's token
(scopes list:users, read:servers, access:servers only), and Prometheus runs
deploy/prometheus/jupyterhub-fleet.yml with that token and that file. The
test's requests go through the hub to each user's Rucio routes.
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

import pytest

from .deploy_files import deploy_config
from .jupyter_server_process import REPO
from .jupyterhub_process import PROMETHEUS_TOKEN, JupyterHubProcess
from .prometheus_process import PrometheusProcess

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
    token_file: Path
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
    token_file = root / "jupyterhub-token"
    token_file.write_text(PROMETHEUS_TOKEN + "\n")
    targets_file = root / "jupyterhub.json"
    with JupyterHubProcess() as hub:
        hub.start_servers(["alice", "bob"])
        hub.create_users(["carol"])  # a user without a server is no target
        helper = run_fleet_helper(hub, token_file, targets_file)
        assert helper.returncode == 0, helper.stderr
        config = deploy_config("jupyterhub-fleet.yml", token_file, file_sd=targets_file)
        with PrometheusProcess(config) as prometheus:
            prometheus.wait_for_targets(2)
            for user, route, status, times in TRAFFIC:
                for _ in range(times):
                    got = hub.request("GET", f"/user/{user}/{route}").status_code
                    assert got == status, f"GET /user/{user}/{route} through the hub: {got}, expected {status}"
            prometheus.wait_for_scrapes_after(time.time())
            yield HubFleet(hub, prometheus, token_file, targets_file, helper.stderr.strip())


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


# Names the hub URL-escapes in its paths: a space, a non-ASCII letter, "+" and "@".
ESCAPED_USERS = ["a b", "jürgen", "first+last@example.org"]


def test_servers_of_users_whose_names_need_escaping_are_scraped(hub_fleet: HubFleet) -> None:
    hub, prometheus = hub_fleet.hub, hub_fleet.prometheus
    hub.start_servers(ESCAPED_USERS)
    try:
        helper = run_fleet_helper(hub, hub_fleet.token_file, hub_fleet.targets_file)
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
    finally:
        for user in ESCAPED_USERS:
            hub.stop_server(user)
        helper = run_fleet_helper(hub, hub_fleet.token_file, hub_fleet.targets_file)
        assert helper.returncode == 0, helper.stderr


def test_a_stopped_server_leaves_the_targets(hub_fleet: HubFleet) -> None:
    # Last in this module: it stops bob's server.
    hub = hub_fleet.hub
    hub.stop_server("bob")
    helper = run_fleet_helper(hub, hub_fleet.token_file, hub_fleet.targets_file)
    assert helper.returncode == 0, helper.stderr
    assert [g["labels"]["instance"] for g in json.loads(hub_fleet.targets_file.read_text())] == ["alice"]
