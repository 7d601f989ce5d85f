"""Remote write to a distributed store, for real: the shipped ``jupyterhub-fleet-remote-write.yml``
in a real Prometheus scraping real Jupyter servers, remote-writing into a real VictoriaMetrics.

The dashboard's fleet panels and the alerts' expressions, evaluated at the
same instant against both, give the same answers; VictoriaMetrics holds only
the series those need. Only what is specific to this machine changes in the
config: 1 s intervals, the targets and token files, the store's URL (and a 1 s
send deadline).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .servers.jupyter_server_process import TOKEN, JupyterServerProcess, wait_for_transfers_to_end
from .servers.prometheus_process import PrometheusProcess, PromQLAPI
from .servers.victoria_metrics_process import VictoriaMetricsProcess, point_remote_write_at
from .support.deploy_files import (
    PROMETHEUS_DIR,
    dashboard_expressions,
    dashboard_panels,
    dashboard_variable_selectors,
    deploy_config,
    load_yaml,
    metric_names,
    our_series_names,
    recorded_names,
    rule_expressions,
    rules,
)
from .support.durations import (
    HTTP_DURATION,
    RUCIO_DURATION,
    TRANSFER_DURATION,
    Stopwatch,
    assert_plausible_durations,
    prometheus_samples,
)
from .support.rucio_standin import RucioStandIn, userpass_credentials
from .test_prometheus import start_all

REMOTE_WRITE = "jupyterhub-fleet-remote-write.yml"
# The per-server gauges the fleet panels and alerts read, besides the recording rules.
GAUGES = {"up", "rucio_metrics_build_info", "rucio_jupyterlab_http_instrumented_routes",
          "rucio_jupyterlab_http_requests_in_progress"}
# The downloads drive() starts.
DOWNLOADS = 2
# Recorded but not shipped: the alerts' annotations read it in the Prometheus that evaluates them.
NOT_SHIPPED = {"runbook:rucio_jupyterlab_alerts:info"}
# The dashboard's fleet panels: those with "(fleet, recording rule)" in the title, and these, which read gauges.
FLEET_PANELS = {"Servers running rucio_metrics", "Servers without Rucio routes", "Servers by version",
                "Requests in progress", "Requests in progress by route"}


@functools.cache
def keep_regex() -> str:
    [target] = load_yaml(PROMETHEUS_DIR / REMOTE_WRITE)["remote_write"]
    [keep] = target["write_relabel_configs"]
    assert (keep["source_labels"], keep["action"]) == (["__name__"], "keep")
    return str(keep["regex"])


def shipped(name: str) -> bool:
    return re.fullmatch(keep_regex(), name) is not None  # Prometheus anchors relabel regexes


def fleet_panels() -> list[tuple[str, str]]:
    """(title, expr) of the panels that read only shipped series."""
    return [(title, expr) for title, expr in dashboard_expressions() if all(map(shipped, metric_names(expr)))]


def alert_expressions() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in rules() if "alert" in rule]


def test_the_remote_write_config_scrapes_as_the_fleet_config() -> None:
    # One source of truth: everything but remote_write is jupyterhub-fleet.yml's.
    remote, fleet = load_yaml(PROMETHEUS_DIR / REMOTE_WRITE), load_yaml(PROMETHEUS_DIR / "jupyterhub-fleet.yml")
    assert {k: v for k, v in remote.items() if k != "remote_write"} == fleet


def test_it_ships_exactly_what_the_fleet_panels_and_alerts_read() -> None:
    recorded = recorded_names() - NOT_SHIPPED
    candidates = our_series_names() | {"up", "scrape_duration_seconds", "ALERTS"}
    assert {name for name in candidates if shipped(name)} == recorded | GAUGES
    # ... and nothing more: every shipped name is read by a fleet panel or an
    # alert, or is a recorded part of one (few series, however many servers).
    read = {name for _, expr in fleet_panels() + alert_expressions() for name in metric_names(expr)}
    parts = {name for _, expr in rule_expressions() for name in metric_names(expr)} & recorded
    assert read | parts == recorded | GAUGES
    titles = {title for title, _ in fleet_panels()}
    recording_rule_panels = {p["title"] for p in dashboard_panels() if "(fleet, recording rule)" in p["title"]}
    assert recording_rule_panels and titles == recording_rule_panels | FLEET_PANELS
    # The raw per-route counters and durations stay in Prometheus.
    assert not shipped("rucio_jupyterlab_http_requests_total")
    assert not shipped("rucio_jupyterlab_http_request_duration_seconds_sum")


class Stores:
    def __init__(self, prometheus: PrometheusProcess, victoria: VictoriaMetricsProcess) -> None:
        self.prometheus, self.victoria = prometheus, victoria
        self.at = 0.0  # an instant both stores have every sample of
        self.drive_seconds = 0.0  # what drive() took: no request, call to Rucio or transfer of it took longer
        self.requests_sent = 0  # by drive()

    def both(self, expr: str) -> tuple[dict[tuple[tuple[str, str], ...], float], ...]:
        """``expr`` at ``at`` on Prometheus and on VictoriaMetrics, NaN left out (MetricsQL drops NaN)."""
        return tuple(_answer(store, expr, self.at) for store in (self.prometheus, self.victoria))


def _answer(store: PromQLAPI, expr: str, at: float) -> dict[tuple[tuple[str, str], ...], float]:
    results = {}
    for r in store.query(expr, at):
        value = float(r["value"][1])
        if not math.isnan(value):
            results[tuple(sorted(r.get("metric", {}).items()))] = value
    return results


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    tmp = tmp_path_factory.mktemp("remote-write")
    with RucioStandIn() as rucio:
        servers = {
            # A histogram, so the p95 panel has data too.
            "alice": JupyterServerProcess(base_url="/user/alice/",
                                          rucio_instances=[rucio.instance_config("atlas"),
                                                           rucio.instance_config("cms", mode="download")],
                                          extra_config={"RucioMetrics": {"latency_metric": "histogram"}}),
            # A server whose Rucio extension is not loaded: a routes-not-instrumented alert and panel.
            "bob": JupyterServerProcess(base_url="/user/bob/", extensions={"rucio_jupyterlab.server": False}),
        }
        try:
            start_all(list(servers.values()))
            with VictoriaMetricsProcess() as victoria:
                token_file, targets_file = tmp / "token", tmp / "targets.json"
                token_file.write_text(TOKEN)
                targets_file.write_text(json.dumps([
                    {"targets": [f"127.0.0.1:{s.port}"],
                     "labels": {"__metrics_path__": f"{s.base_url}metrics", "instance": name, "user": name}}
                    for name, s in servers.items()
                ]))
                config = deploy_config(REMOTE_WRITE, token_file, file_sd=targets_file)
                point_remote_write_at(config, victoria)
                with PrometheusProcess(config) as prometheus:
                    prometheus.wait_for_targets(len(servers))
                    with Stopwatch() as wall:
                        sent = drive(servers["alice"], rucio, prometheus)
                    for _ in range(2):  # the recording group, then the alert group reading it
                        prometheus.wait_for_rule_evaluation_after(time.time())
                    found = Stores(prometheus, victoria)
                    found.drive_seconds, found.requests_sent = wall.seconds, sent
                    found.at = time.time() - 0.5
                    wait_for_samples_after(victoria, prometheus, found.at)
                    yield found
        finally:
            for server in servers.values():
                server.stop()


def drive(server: JupyterServerProcess, rucio: RucioStandIn, prometheus: PrometheusProcess) -> int:
    """Successes, 4xx, 5xx, an exception and failing Rucio calls, over two scrapes (so rates exist); how many."""
    sent = 0

    def call(method: str, path: str, status: int, **kwargs: Any) -> None:
        nonlocal sent
        sent += 1
        assert server.request(method, path, **kwargs).status_code == status

    call("PUT", "rucio-jupyterlab/instances", 200, json={"instance": "atlas", "auth": "userpass"})
    call("PUT", "rucio-jupyterlab/auth", 200, json=userpass_credentials("atlas"))
    call("PUT", "rucio-jupyterlab/auth", 200, json=userpass_credentials("cms"))
    for ended in range(1, DOWNLOADS + 1):
        # A download the stand-in cannot serve: a failed transfer, with its reason and duration; two, a
        # scrape apart, as a series that appears at 1 gives rate() nothing until it changes.
        call("POST", "rucio-jupyterlab/did/make-available?namespace=cms", 200, json={"did": "user.alice:f"})
        # A replica-mode wait that ends with the data there (the stand-in's replicas are all available)
        # at the panel's next look: the time-to-data percentiles have something to compare.
        call("POST", "rucio-jupyterlab/did/make-available?namespace=atlas", 200, json={"did": "data18:AOD.dataset"})
        call("GET", "rucio-jupyterlab/did?namespace=atlas&did=data18:AOD.dataset", 200)
        wait_for_transfers_to_end(server, ended)
        prometheus.wait_for_scrapes_after(time.time())
    for _ in range(2):
        for _ in range(3):
            call("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 200)
            call("GET", "rucio-jupyterlab/instances", 200)
        call("GET", "rucio-jupyterlab/files", 400)
        call("GET", "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope", 500)
        rucio.fail("GET /scopes/", 500)
        call("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 500)
        rucio.reset()
        prometheus.wait_for_scrapes_after(time.time())
    return sent


def test_what_drive_sent_took_plausible_times(stores: Stores) -> None:
    # Prometheus keeps the raw series the store does not get: every request, call to Rucio and download.
    samples = prometheus_samples(stores.prometheus.query('{__name__=~"rucio_jupyterlab_.+"}'))
    families = [HTTP_DURATION, RUCIO_DURATION, TRANSFER_DURATION]
    grown = assert_plausible_durations({}, samples, stores.drive_seconds, families=families)
    assert (grown[HTTP_DURATION][0], grown[TRANSFER_DURATION][0]) == (stores.requests_sent, DOWNLOADS)
    assert grown[RUCIO_DURATION][0] > 0


def wait_for_samples_after(victoria: VictoriaMetricsProcess, prometheus: PrometheusProcess, at: float,
                           seconds: float = 30) -> None:
    """Until VictoriaMetrics has every series Prometheus ships at ``at``, each with a sample later than ``at``.

    Per series, not per name: a name already there can still miss a series that appeared since.
    """
    wanted: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for r in prometheus.query(f'{{__name__=~"{keep_regex()}"}}', at):
        if math.isnan(float(r["value"][1])):
            continue  # VictoriaMetrics drops NaN samples
        labels = dict(r["metric"])
        wanted.setdefault(labels.pop("__name__"), set()).add(tuple(sorted(labels.items())))
    deadline = time.monotonic() + seconds
    while True:
        late = []
        for name, label_sets in wanted.items():
            latest = {tuple(sorted(r["metric"].items())): float(r["value"][1])
                      for r in victoria.query(f"timestamp({name})")}
            late += [(name, labels) for labels in label_sets if latest.get(labels, 0.0) <= at]
        if wanted and not late:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"VictoriaMetrics has no sample after {at} of: {late[:5]}")
        time.sleep(0.5)


@pytest.mark.parametrize(("title", "expr"), fleet_panels(), ids=[title for title, _ in fleet_panels()])
def test_fleet_panels_answer_the_same_on_both(stores: Stores, title: str, expr: str) -> None:
    on_prometheus, on_victoria = stores.both(expr)
    assert on_prometheus, f"{title}: no data to compare"
    assert on_victoria == pytest.approx(on_prometheus, rel=1e-9)


@pytest.mark.parametrize(("alert", "expr"), alert_expressions(), ids=[alert for alert, _ in alert_expressions()])
def test_alert_expressions_answer_the_same_on_both(stores: Stores, alert: str, expr: str) -> None:
    on_prometheus, on_victoria = stores.both(expr)
    assert on_victoria == pytest.approx(on_prometheus, rel=1e-9)


def test_the_alerts_have_something_to_say(stores: Stores) -> None:
    # The comparisons above are not all of empty answers.
    firing_now = {alert for alert, expr in alert_expressions() if _answer(stores.victoria, expr, stores.at)}
    # The burn-rate alerts join them or not by how the hub's traffic compares to their floor at that instant.
    assert {"RucioJupyterLabHighErrorRatio", "RucioJupyterLabRoutesNotInstrumented",
            "RucioJupyterLabRucioCallsFailing"} <= firing_now
    assert firing_now - {"RucioJupyterLabHighErrorRatio", "RucioJupyterLabRoutesNotInstrumented",
                         "RucioJupyterLabRucioCallsFailing"} <= {alert for alert, _ in alert_expressions()
                                                                 if "ErrorBudget" in alert}


def test_dashboard_variables_list_the_same_on_both(stores: Stores) -> None:
    compared = []
    for name, selector in dashboard_variable_selectors().items():
        if all(map(shipped, metric_names(selector))):
            on_prometheus, on_victoria = stores.both(selector)
            assert on_prometheus, f"${name}: no values to compare"
            assert {dict(k).get(name) for k in on_victoria} == {dict(k).get(name) for k in on_prometheus}, name
            compared.append(name)
    assert sorted(compared) == ["instance", "job"]  # $handler reads a series that is not shipped


def test_the_store_holds_only_the_shipped_series(stores: Stores) -> None:
    names = {r["metric"]["__name__"] for r in stores.victoria.query('count by (__name__) ({__name__=~".+"})')}
    assert names and all(map(shipped, names))
    assert "rucio_jupyterlab_http_requests_total" not in names
    [(_, kept)] = stores.prometheus.values('count({__name__=~".+"})', at=stores.at).items()
    [(_, sent)] = stores.victoria.values('count({__name__=~".+"})', at=stores.at).items()
    assert sent < kept / 3
