"""A real Prometheus scraping real Jupyter servers with the shipped config, rules and dashboard.

Three servers, each with rucio_metrics: alice (the default summary), bob
(latency_metric = "histogram") and one without the Rucio extension. One
Prometheus runs deploy/prometheus/jupyter-server.yml (targets and token file
swapped in) with the shipped rules, scraping every second with the token.
The test sends a known table of requests in two rounds, waits for a scrape
after each, and then reads everything back through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import math
import platform
import threading
import time
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import rucio_metrics

from .servers.jupyter_server_process import (
    METRICS_TOKEN,
    TOKEN,
    JupyterServerProcess,
    unreachable_rucio_instance,
    wait_for_transfers_to_end,
)
from .servers.prometheus_process import PrometheusProcess
from .support.deploy_files import (
    HTTP_FAMILIES,
    OUTBOUND_FAMILIES,
    dashboard_expressions,
    dashboard_panels,
    dashboard_variable_selectors,
    deploy_config,
    fill_variables,
    our_families_only,
    promtool,
    rule_expressions,
)
from .support.durations import (
    TRANSFER_DURATION,
    Samples,
    Stopwatch,
    assert_plausible_durations,
    prometheus_samples,
)

CREDENTIALS = {"namespace": "atlas", "type": "userpass", "params": {"username": "u", "password": "p", "account": "a"}}
DETAILS = "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope"

# (server, method, path, status the client gets, times); the setup once, the rounds twice.
SETUP = [
    ("alice", "PUT", "rucio-jupyterlab/instances", 200, 1, {"json": {"instance": "atlas", "auth": "userpass"}}),
    ("alice", "PUT", "rucio-jupyterlab/auth", 401, 1, {"json": CREDENTIALS}),  # stored; the Rucio login fails
    ("alice", "PUT", "rucio-jupyterlab/auth", 401, 1, {"json": {**CREDENTIALS, "namespace": "cms"}}),
    # A download (cms is in download mode): its child cannot reach Rucio, so the transfer fails.
    ("alice", "POST", "rucio-jupyterlab/did/make-available?namespace=cms", 200, 1, {"json": {"did": "user.alice:f"}}),
]
ROUND = [
    ("alice", "GET", "rucio-jupyterlab/instances", 200, 3, {}),
    ("alice", "GET", "rucio-jupyterlab/files", 400, 2, {}),  # no ?namespace=
    ("alice", "GET", DETAILS, 500, 1, {}),  # upstream IndexError for an unknown job id: the user's
    ("bob", "GET", "rucio-jupyterlab/instances", 200, 2, {}),
    ("bob", "GET", "rucio-jupyterlab/did-search", 400, 1, {}),
]
ROUNDS = 2


def expected_requests() -> Counter[tuple[str, str, str, str]]:
    """``{(server, handler, method, status_code): count}`` for everything the test sends."""
    expected: Counter[tuple[str, str, str, str]] = Counter()
    for calls, times in ((SETUP, 1), (ROUND, ROUNDS)):
        for server, method, path, status, n, _ in calls:
            handler = "/" + path.split("?")[0]
            expected[(server, handler, method, str(status))] += n * times
    return expected


class Fleet:
    """The servers, the Prometheus scraping them, and what the test sent."""

    def __init__(self, servers: dict[str, JupyterServerProcess], prometheus: PrometheusProcess) -> None:
        self.servers = servers
        self.prometheus = prometheus
        # Prometheus' instance label of each server: its metrics listener's host:port.
        self.instance = {name: f"127.0.0.1:{server.metrics_port}" for name, server in servers.items()}
        self.name = {instance: name for name, instance in self.instance.items()}
        self.after_traffic = 0.0
        # Seconds spent in send(), one request at a time: no request, nor a call to Rucio inside one, took longer.
        self.sending_seconds = 0.0
        # Seconds from before the download's request to after its end was counted.
        self.transfer_seconds = 0.0

    def send(self, calls: list[tuple[str, str, str, int, int, dict[str, Any]]]) -> None:
        with Stopwatch() as wall:
            for server, method, path, status, n, kwargs in calls:
                for _ in range(n):
                    got = self.servers[server].request(method, path, **kwargs).status_code
                    assert got == status, f"{method} {server} {path}: {got}, expected {status}"
        self.sending_seconds += wall.seconds

    def our_samples(self) -> Samples:
        """Every series of ours as Prometheus scraped it last, keyed as ``JupyterServerProcess.samples`` keys them."""
        return prometheus_samples(self.prometheus.query('{__name__=~"rucio_jupyterlab_.+"}'))

    def values(self, expr: str, *by: str) -> dict[tuple[str, ...], float]:
        """Like ``PrometheusProcess.values``, with instance labels given as server names."""
        results = {}
        for key, value in self.prometheus.values(expr, *by).items():
            results[tuple(self.name.get(v, v) if label == "instance" else v for label, v in zip(by, key))] = value
        return results


def start_all(servers: list[JupyterServerProcess]) -> None:
    """Start the servers side by side (each takes a few seconds); raise the first failure."""
    errors: list[BaseException] = []

    def start(server: JupyterServerProcess) -> None:
        try:
            server.start()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    servers = {
        "alice": JupyterServerProcess(
            base_url="/user/alice/", metrics_listener=True,
            rucio_instances=[unreachable_rucio_instance(), unreachable_rucio_instance("cms", mode="download")],
        ),
        "bob": JupyterServerProcess(
            base_url="/user/bob/", extra_config={"RucioMetrics": {"latency_metric": "histogram"}},
            metrics_listener=True,
        ),
        # A named server's base_url, without the Rucio extension.
        "norucio": JupyterServerProcess(base_url="/user/carol/gpu/", extensions={"rucio_jupyterlab.server": False},
                                        metrics_listener=True),
    }
    token_file = tmp_path_factory.mktemp("prometheus") / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    try:
        start_all(list(servers.values()))
        targets = [{"targets": [f"127.0.0.1:{s.metrics_port}"]} for s in servers.values()]
        with PrometheusProcess(deploy_config("jupyter-server.yml", token_file, static_configs=targets)) as prometheus:
            fleet = Fleet(servers, prometheus)
            prometheus.wait_for_targets(len(servers))
            with Stopwatch() as transfer:
                fleet.send(SETUP)
                wait_for_transfers_to_end(servers["alice"], 1)
            fleet.transfer_seconds = transfer.seconds
            for _ in range(ROUNDS):
                fleet.send(ROUND)
                fleet.after_traffic = time.time()
                prometheus.wait_for_scrapes_after(fleet.after_traffic)
            # Rules read the scrape above once evaluated after it; twice, because the
            # alert group may run just before the recording group it reads.
            for _ in range(2):
                prometheus.wait_for_rule_evaluation_after(time.time())
            yield fleet
    finally:
        for server in servers.values():
            server.stop()


def test_the_shipped_config_scrapes_every_servers_metrics_listener_with_its_token(fleet: Fleet) -> None:
    targets = fleet.prometheus.targets()
    assert {(t["labels"]["job"], t["health"], t["lastError"]) for t in targets} == {("jupyter", "up", "")}
    assert sorted(t["scrapeUrl"] for t in targets) == sorted(s.metrics_listener_url() for s in fleet.servers.values())
    assert fleet.values("up", "instance") == {("alice",): 1, ("bob",): 1, ("norucio",): 1}


def test_promql_counts_exactly_the_requests_sent(fleet: Fleet) -> None:
    got = fleet.values(
        "sum by (instance, handler, method, status_code) (rucio_jupyterlab_http_requests_total)",
        "instance", "handler", "method", "status_code",
    )
    assert got == {key: float(n) for key, n in expected_requests().items()}


def test_promql_durations_and_exceptions_match_the_requests(fleet: Fleet) -> None:
    per_route: Counter[tuple[str, str]] = Counter()
    for (server, handler, _, _), n in expected_requests().items():
        per_route[(server, handler)] += n
    counts = fleet.values(
        "sum by (instance, handler) (rucio_jupyterlab_http_request_duration_seconds_count) > 0", "instance", "handler"
    )
    assert counts == {key: float(n) for key, n in per_route.items()}
    # Only bob's histogram has buckets; its +Inf bucket holds every request.
    buckets = fleet.values(
        'sum by (instance, handler) (rucio_jupyterlab_http_request_duration_seconds_bucket{le="+Inf"}) > 0',
        "instance", "handler",
    )
    assert buckets == {key: n for key, n in counts.items() if key[0] == "bob"}
    assert fleet.values("rucio_jupyterlab_http_exceptions_total", "instance", "handler", "exception") == {
        ("alice", "/rucio-jupyterlab/upload/jobs/details", "IndexError"): float(ROUNDS),
    }
    assert fleet.values("sum(rucio_jupyterlab_http_requests_in_progress)") == {(): 0.0}
    # Each request, and each call to Rucio in one, took some time, and less than sending them all did.
    grown = assert_plausible_durations({}, fleet.our_samples(), fleet.sending_seconds)
    assert {family: events for family, (events, _) in grown.items()} == {
        "rucio_jupyterlab_http_request_duration_seconds": sum(per_route.values()),
        "rucio_jupyterlab_rucio_request_duration_seconds": 2,  # the two log-ins
    }


def test_outbound_series_name_the_rucio_instance_rucio_instance(fleet: Fleet) -> None:
    # The series label the Rucio instance "instance"; Prometheus renames it
    # exported_instance, and the shipped metric_relabel_configs make that rucio_instance.
    calls = fleet.values(
        "sum by (instance, rucio_instance, operation, outcome) (rucio_jupyterlab_rucio_requests_total)",
        "instance", "rucio_instance", "operation", "outcome",
    )
    # PUT auth stores the credentials and logs in to Rucio, which is unreachable here.
    assert calls == {("alice", "atlas", "authenticate", "connection_error"): 1.0,
                     ("alice", "cms", "authenticate", "connection_error"): 1.0}
    durations = fleet.values(
        "count by (instance, rucio_instance) (rucio_jupyterlab_rucio_request_duration_seconds_count)",
        "instance", "rucio_instance",
    )
    assert durations == {("alice", "atlas"): 11.0, ("alice", "cms"): 11.0}  # every operation, from start-up
    assert fleet.prometheus.query('{exported_instance!=""}') == []


def test_transfer_series_carry_the_rucio_instance_themselves(fleet: Fleet) -> None:
    # The download alice started failed: its child could not reach Rucio.
    ended = fleet.values("rucio_jupyterlab_transfers_ended_total > 0", "instance", "rucio_instance", "direction",
                         "outcome")
    assert ended == {("alice", "cms", "download", "failed"): 1.0}
    assert fleet.values("sum(rucio_jupyterlab_transfers_in_progress)") == {(): 0.0}
    assert assert_plausible_durations({}, fleet.our_samples(), fleet.transfer_seconds,
                                      families=[TRANSFER_DURATION])[TRANSFER_DURATION][0] == 1
    # NaN (0/0) where nothing ended; ">= 0" leaves those out.
    ratio = fleet.values("job_rucio_instance_direction:rucio_jupyterlab_transfer_failures:ratio_rate1h >= 0",
                         "rucio_instance", "direction")
    assert ratio == {("cms", "download"): 1.0}


def test_instrumented_routes_per_server(fleet: Fleet) -> None:
    assert fleet.values("rucio_jupyterlab_http_instrumented_routes", "instance") == {
        ("alice",): 16.0, ("bob",): 16.0, ("norucio",): 0.0,
    }


@pytest.mark.parametrize("server", ["alice", "bob", "norucio"])
def test_promtool_check_metrics_finds_nothing_in_our_families(fleet: Fleet, server: str) -> None:
    exposition = our_families_only(fleet.servers[server].metrics_text())
    families = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    assert set(HTTP_FAMILIES) <= families
    if server == "alice":  # the one with a Rucio instance configured
        assert set(OUTBOUND_FAMILIES) <= families
    result = promtool("check", "metrics", stdin=exposition)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_promtool_check_metrics_would_find_a_problem(fleet: Fleet) -> None:
    # The lint is real: jupyter_server's own gauge named *_total is flagged.
    exposition = fleet.servers["alice"].metrics_text()
    result = promtool("check", "metrics", stdin=exposition)
    assert result.returncode != 0
    assert "terminal_currently_running_total" in result.stdout + result.stderr
    assert "rucio_jupyterlab_http" not in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "expr"), rule_expressions(), ids=[name for name, _ in rule_expressions()])
def test_every_rule_expression_evaluates(fleet: Fleet, name: str, expr: str) -> None:
    fleet.prometheus.query(expr)  # raises PrometheusError with Prometheus' message


def test_every_rule_is_loaded_and_healthy(fleet: Fleet) -> None:
    groups = fleet.prometheus.api("rules")["groups"]
    loaded = [(r["name"], r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]]
    assert loaded == [(name, "ok", "") for name, _ in sorted(rule_expressions(), key=_rule_file_order(groups))]


def _rule_file_order(groups: list[dict[str, Any]]) -> Any:
    order = [r["name"] for g in groups for r in g["rules"]]
    return lambda item: order.index(item[0]) if item[0] in order else len(order)


def test_recording_rules_record_the_traffic(fleet: Fleet) -> None:
    routes_with_traffic = {handler for (_, handler, _, _) in expected_requests()}
    # A {status_code} series is born at its first request, so rate() sees its
    # increase only from the second scrape on: every route of the rounds, and
    # a setup route only when a scrape fell between two of its requests (the
    # duration series exist at zero from start-up: all routes).
    routes_in_rounds = {"/" + path.split("?")[0] for (_, _, path, _, _, _) in ROUND}
    routes_in_setup = {"/" + path.split("?")[0] for (_, _, path, _, _, _) in SETUP}
    rates = fleet.values("job_handler:rucio_jupyterlab_http_requests:rate5m > 0", "job", "handler")
    assert routes_in_rounds <= {handler for (job, handler) in rates} <= routes_in_rounds | routes_in_setup
    assert {job for (job, _) in rates} == {"jupyter"}
    means = fleet.values("job_handler:rucio_jupyterlab_http_request_duration_seconds:mean5m", "handler")
    assert {h for (h,), v in means.items() if not math.isnan(v)} == routes_with_traffic
    assert all(0 < v < 30 for v in means.values() if not math.isnan(v))
    # p95 exists only where the histogram (bob) saw requests.
    p95 = fleet.values("job_handler:rucio_jupyterlab_http_request_duration_seconds:p95_5m", "handler")
    bob_routes = {handler for (server, handler, _, _) in expected_requests() if server == "bob"}
    assert {h for (h,), v in p95.items() if not math.isnan(v)} == bob_routes
    # The service's failures: the logins that could not reach the (unreachable) Rucio instances,
    # though the route answered them 401.
    errors = fleet.values("job_handler:rucio_jupyterlab_http_request_errors:ratio_rate5m > 0", "handler")
    assert errors == {("/rucio-jupyterlab/auth",): 1.0}
    # The users' mistakes: the calls without a namespace, a route's refusal (400), and a job id that
    # does not exist (upstream's IndexError, a 500).
    mistakes = fleet.values("job_handler:rucio_jupyterlab_http_user_mistakes:rate5m > 0", "handler")
    assert set(mistakes) == {("/rucio-jupyterlab/files",), ("/rucio-jupyterlab/did-search",),
                             ("/rucio-jupyterlab/upload/jobs/details",)}
    exceptions = fleet.values(
        "job_handler_exception:rucio_jupyterlab_http_exceptions:rate5m > 0", "handler", "exception"
    )
    assert set(exceptions) == {("/rucio-jupyterlab/upload/jobs/details", "IndexError")}


def test_alerts_pending_for_exactly_the_broken_things(fleet: Fleet) -> None:
    alerts = fleet.values("ALERTS", "alertname", "alertstate", "instance", "handler")
    assert alerts == {
        ("RucioJupyterLabRoutesNotInstrumented", "pending", "norucio", ""): 1.0,
        ("RucioJupyterLabHighErrorRatio", "pending", "", "/rucio-jupyterlab/auth"): 1.0,
        # The budgets burn far faster than allowed, but this Prometheus is seconds old and has seen a
        # few dozen requests: the floor counts the rest of the long windows as no traffic, so no page.
    }


@pytest.mark.parametrize(("title", "expr"), dashboard_expressions(), ids=[t for t, _ in dashboard_expressions()])
def test_every_dashboard_expression_evaluates(fleet: Fleet, title: str, expr: str) -> None:
    # Every panel has data after the traffic (a ratio or mean of no traffic is NaN, but there).
    assert fleet.prometheus.query(expr), f"{title}: {expr} returned nothing"


def test_dashboard_variables_list_the_servers_and_routes(fleet: Fleet) -> None:
    selectors = dashboard_variable_selectors()
    assert set(selectors) == {"job", "instance", "handler"}
    label_values = {
        name: {r["metric"][name] for r in fleet.prometheus.query(selector)} for name, selector in selectors.items()
    }
    assert label_values["job"] == {"jupyter"}
    assert {fleet.name[i] for i in label_values["instance"]} == {"alice", "bob", "norucio"}
    assert len(label_values["handler"]) == 16 and "/rucio-jupyterlab/did/make-available" in label_values["handler"]


def test_the_version_panel_counts_the_servers_per_version(fleet: Fleet) -> None:
    # All three run this environment's versions (norucio has rucio-jupyterlab installed, not enabled).
    [panel] = [p for p in dashboard_panels() if p["title"] == "Servers by version"]
    labels = ("version", "rucio_jupyterlab_version", "jupyter_server_version", "python_version")
    versions = (rucio_metrics.__version__, version("rucio-jupyterlab"), version("jupyter_server"),
                platform.python_version())
    assert fleet.values(fill_variables(panel["targets"][0]["expr"]), *labels) == {versions: 3.0}


def test_dashboard_panels_filter_by_instance_and_handler(fleet: Fleet) -> None:
    [panel] = [p for p in dashboard_panels() if p["title"] == "Request rate by route"]
    expr = panel["targets"][0]["expr"].replace("$instance", fleet.instance["bob"])
    rates = fleet.values(fill_variables(expr.replace("$handler", "/rucio-jupyterlab/instances")), "handler")
    assert set(rates) == {("/rucio-jupyterlab/instances",)}


def test_token_file_is_what_authenticates(fleet: Fleet, tmp_path: Path) -> None:
    # Without the listener's token, the same config's scrape of the same server is refused, even with
    # the server's own token, which opens all of <base_url>metrics and the rest of the server.
    wrong = tmp_path / "wrong-token"
    wrong.write_text(TOKEN)
    server = fleet.servers["alice"]
    assert server.request("GET", "metrics").status_code == 200  # with that same token
    targets = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
    with PrometheusProcess(deploy_config("jupyter-server.yml", wrong, static_configs=targets)) as prometheus:
        [target] = prometheus.wait_for_targets(1)
    assert target["health"] == "down"
    assert "403" in target["lastError"]


def test_the_hub_scrape_config_names_the_rucio_instance_rucio_instance(fleet: Fleet, tmp_path: Path) -> None:
    # As jupyter-server.yml does above: the config's own metric_relabel_configs turn the
    # exported_instance of the outbound series into rucio_instance. (The remote-write and shard
    # configs scrape as jupyterhub-fleet.yml does; tests keep them equal. The Kubernetes ones:
    # test_zero_to_jupyterhub.py.)
    alice = fleet.servers["alice"]
    # A target as the fleet helper writes it: the proxy's address, the server's path, its name.
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{alice.port}"],
                                    "labels": {"__metrics_path__": "/user/alice/metrics", "instance": "alice"}}]))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = deploy_config("jupyterhub-fleet.yml", token_file, file_sd=targets)
    with PrometheusProcess(config) as prometheus:
        [target] = prometheus.wait_for_targets(1)
        assert (target["labels"]["instance"], target["health"]) == ("alice", "up")
        durations = prometheus.values(
            "count by (instance, rucio_instance) (rucio_jupyterlab_rucio_request_duration_seconds_count)",
            "instance", "rucio_instance",
        )
        assert durations == {("alice", "atlas"): 11.0, ("alice", "cms"): 11.0}
        assert prometheus.query('{exported_instance!=""}') == []


