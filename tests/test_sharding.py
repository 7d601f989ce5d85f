"""Past one Prometheus, for real: two scraping shards, one store, one rule engine.

The shipped ``jupyterhub-fleet-shard.yml`` in two Prometheus agents, each
keeping its share of one targets file by ``hashmod``, remote-writing into a
real VictoriaMetrics, where ``vmalert`` evaluates the shipped recording and
alert rules once over the whole fleet. Beside them, one Prometheus with the
shipped ``jupyterhub-fleet.yml`` and the same rules scrapes the same targets.
Every target is scraped by exactly one shard, and the recorded series, the
dashboard's fleet panels and variables, the alerts' expressions and the
alerts themselves give the same answers on both.

The targets are one process serving a real server's ``/metrics`` (after the
fleet benchmark's route mix) as twelve servers whose counters grow in a
straight line, each sample stamped with its time, so a rate is the same number
whatever instant an engine evaluates it at. Prometheus extrapolates a rate
to its window's edges and MetricsQL does not: they agree once the windows
hold only steady data, so the rules here are the shipped ones with every
range shortened to 10 s (the timing, nothing else, changes; the floor's
window lengths with them).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fleet import RUCIO_METRICS as FAMILY_SET
from benchmarks.fleet import Payload, SimulatedFleet, capture, select

from .servers.jupyter_server_process import TOKEN
from .servers.prometheus_process import PrometheusProcess, PromQLAPI
from .servers.victoria_metrics_process import VictoriaMetricsProcess, point_remote_write_at
from .servers.vmalert_process import VMAlertProcess
from .support.deploy_files import (
    PROMETHEUS_DIR,
    RULE_FILES,
    dashboard_expressions,
    dashboard_variable_selectors,
    deploy_config,
    load_yaml,
    recorded_names,
    rules,
)
from .support.json_http_server import JSONHTTPServer
from .test_remote_write import FLEET_PANELS

SHARD = "jupyterhub-fleet-shard.yml"
SERVERS = 12
SHARDS = 2
PERIOD_S = 60.0  # one route mix a minute, as in the fleet benchmark
WINDOW = "10s"
SHARD_LABEL = "prometheus_shard"
# vmalert labels its ALERTS series with the rule group; Prometheus does not.
NOT_COMPARED = {SHARD_LABEL, "alertgroup"}


# -- the targets ------------------------------------------------------------------------------------------


class LinearFleet(SimulatedFleet):
    """``SERVERS`` simulated servers whose counters grow in a straight line, ``base * (1 + age / PERIOD_S)``,
    each sample stamped with its time (so a rate is the same whenever it is evaluated)."""

    def __init__(self, payload: Payload) -> None:
        super().__init__(payload, SERVERS, PERIOD_S)
        # The wall clock, not the monotonic one: samples carry Unix times.
        self.started = {i: time.time() - PERIOD_S * i / SERVERS for i in range(SERVERS)}

    def render(self, index: int) -> bytes:
        stamp = int(time.time() * 1000)
        factor = 1 + (stamp / 1000 - self.started[index]) / PERIOD_S
        lines = []
        for text, base in self.payload.parts:
            if text.startswith("#") or not text:
                lines.append(text)
            elif base is None:
                lines.append(f"{text} {stamp}")
            else:
                lines.append(f"{text} {base * factor!r} {stamp}")
        return ("\n".join(lines) + "\n").encode()


# -- the configs ------------------------------------------------------------------------------------------


def short_windows(tmp: Path) -> list[Path]:
    """The shipped rule files with every range at ``WINDOW``; expressions, labels and annotations as shipped.

    The floor's rates count a window's missing history as no traffic: they scale by the history a subquery
    finds, over the window's length in seconds, which goes to ``WINDOW`` too (with the shipped windows they
    would still grow when the test ends). Their subqueries look back twice as far, by 1 s steps, so a full
    window scales by exactly 1 on both engines: Prometheus 2 closes a subquery's range at its start and
    MetricsQL does not, which finds the first sample a step later (up to 1/60 of the window, with the
    shipped steps).
    """
    seconds = int(WINDOW.removesuffix("s"))
    copies = []
    for path in RULE_FILES:
        text = re.sub(r"\[\d+[smhd]\]", f"[{WINDOW}]", path.read_text())
        text, subqueries = re.subn(r"\[\d+[smhd]:\d+[smhd]\]", f"[{2 * seconds}s:1s]", text)
        text, lengths = re.subn(r"\) / \d+, 1\)", f") / {seconds}, 1)", text)
        assert subqueries == lengths, path.name
        copy = tmp / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def shard_config(number: int, token_file: Path, targets_file: Path, victoria: VictoriaMetricsProcess
                 ) -> dict[str, Any]:
    """The shipped shard config as shard ``number`` of ``SHARDS`` runs it here."""
    config = deploy_config(SHARD, token_file, file_sd=targets_file)
    config["global"].pop("evaluation_interval")  # an agent evaluates nothing
    config["global"]["external_labels"][SHARD_LABEL] = str(number)
    [job] = config["scrape_configs"]
    hashmod, keep = job["relabel_configs"][-2:]
    assert (hashmod["action"], keep["action"]) == ("hashmod", "keep")
    hashmod["modulus"], keep["regex"] = SHARDS, str(number)
    point_remote_write_at(config, victoria)
    return config


def test_the_shard_config_scrapes_as_the_fleet_config() -> None:
    # One source of truth: the scrape config is jupyterhub-fleet.yml's, plus the two shard rules at the end.
    shard, fleet = load_yaml(PROMETHEUS_DIR / SHARD), load_yaml(PROMETHEUS_DIR / "jupyterhub-fleet.yml")
    [shard_job], [fleet_job] = shard["scrape_configs"], fleet["scrape_configs"]
    relabel = shard_job.pop("relabel_configs")
    assert shard_job == fleet_job
    assert relabel[:-2] == fleet_job.get("relabel_configs", [])
    hashmod, keep = relabel[-2:]
    # All of a hub's servers share the proxy's address: the path tells them apart.
    assert hashmod["source_labels"] == ["__address__", "__metrics_path__"]
    assert keep["source_labels"] == [hashmod["target_label"]] and hashmod["target_label"].startswith("__tmp")
    assert keep["regex"] == shard["global"]["external_labels"][SHARD_LABEL]
    # An agent has no rules; everything it scrapes goes to the store.
    assert "rule_files" not in shard and "write_relabel_configs" not in shard["remote_write"][0]


# -- the run ------------------------------------------------------------------------------------------------


class Engines:
    def __init__(self, prometheus: PrometheusProcess, victoria: VictoriaMetricsProcess) -> None:
        self.prometheus, self.victoria = prometheus, victoria

    def both(self, expr: str, at: float) -> tuple[dict[tuple[tuple[str, str], ...], float], ...]:
        """``expr`` at ``at`` on each, NaN left out (MetricsQL drops NaN), the shard and alert group labels too."""
        return tuple(_answer(store, expr, at) for store in (self.prometheus, self.victoria))


def _answer(store: PromQLAPI, expr: str, at: float) -> dict[tuple[tuple[str, str], ...], float]:
    results = {}
    for r in store.query(expr, at):
        value = float(r["value"][1])
        if not math.isnan(value):
            labels = {k: v for k, v in r.get("metric", {}).items() if k not in NOT_COMPARED}
            results[tuple(sorted(labels.items()))] = value
    return results


def _same(left: dict[Any, float], right: dict[Any, float]) -> bool:
    return left.keys() == right.keys() and all(math.isclose(left[k], right[k], rel_tol=1e-6, abs_tol=1e-9)
                                               for k in left)


def _difference(left: dict[Any, float], right: dict[Any, float]) -> dict[str, Any]:
    """What only Prometheus has, what only VictoriaMetrics has, and the values that differ."""
    return {"only on Prometheus": sorted(left.keys() - right.keys()),
            "only on VictoriaMetrics": sorted(right.keys() - left.keys()),
            "values": {k: (left[k], right[k]) for k in left.keys() & right.keys()
                       if not _same({0: left[k]}, {0: right[k]})}}


def compared_expressions() -> list[tuple[str, str]]:
    """(what, expr): every recorded series, the fleet panels, the variables, the alerts' expressions, the alerts."""
    exprs = [(f"recorded {name}", name) for name in sorted(recorded_names())]
    exprs += [(f"panel {title}", expr) for title, expr in dashboard_expressions()
              if "(fleet, recording rule)" in title or title in FLEET_PANELS]
    exprs += [(f"variable ${name}", selector) for name, selector in dashboard_variable_selectors().items()
              if name != "handler"]  # $handler lists a raw counter by server: not a fleet view
    exprs += [(f"alert expression {rule['alert']}", rule["expr"]) for rule in rules() if "alert" in rule]
    exprs += [("alerts", 'ALERTS{alertstate=~"pending|firing"}')]
    return exprs


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    tmp = tmp_path_factory.mktemp("sharding")
    with LinearFleet(Payload(select(capture(), FAMILY_SET))) as fleet:
        token_file, targets_file = tmp / "token", tmp / "targets.json"
        token_file.write_text(TOKEN)
        targets_file.write_text(json.dumps(fleet.targets()))
        rule_files = [str(path) for path in short_windows(tmp)]
        with VictoriaMetricsProcess() as victoria, JSONHTTPServer() as receiver:
            reference = deploy_config("jupyterhub-fleet.yml", token_file, file_sd=targets_file)
            reference["rule_files"] = rule_files
            shards = [PrometheusProcess(shard_config(n, token_file, targets_file, victoria), agent=True)
                      for n in range(SHARDS)]
            with PrometheusProcess(reference) as prometheus, shards[0], shards[1], \
                    VMAlertProcess([Path(f) for f in rule_files], victoria, receiver.url.rstrip("/")):
                prometheus.wait_for_targets(SERVERS)
                found = Engines(prometheus, victoria)
                found.victoria.wait_until(lambda: _answer(victoria, "count(up)", time.time()) == {(): SERVERS}, 30,
                                          "the shards' up in VictoriaMetrics")
                yield found


def test_every_target_is_scraped_by_exactly_one_shard(engines: Engines) -> None:
    victoria = engines.victoria
    per_instance = victoria.values("count by (instance) (count_over_time(up[1m]) > 0)", "instance")
    assert len(per_instance) == SERVERS
    by_shard = victoria.values(f"count by (instance) (count by (instance, {SHARD_LABEL}) (up))", "instance")
    assert set(by_shard.values()) == {1.0}, by_shard  # one shard each
    shares = victoria.values(f"count by ({SHARD_LABEL}) (up)", SHARD_LABEL)
    assert set(shares) == {(str(n),) for n in range(SHARDS)} and sum(shares.values()) == SERVERS, shares
    # The reference scraped them all itself.
    assert engines.prometheus.values("count(up == 1)") == {(): SERVERS}


def test_the_fleet_views_and_alerts_answer_the_same_as_one_prometheus(engines: Engines) -> None:
    # Both engines reach the same answers once their windows hold steady data
    # and vmalert's chained rules have seen each other's last results; wait for
    # that, bounded, then every expression must agree.
    deadline = time.monotonic() + 60
    while True:
        at = time.time() - 1
        answers = {what: engines.both(expr, at) for what, expr in compared_expressions()}
        differ = {what: pair for what, pair in answers.items() if not _same(*pair)}
        if not differ or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {what: _difference(*pair) for what, pair in differ.items()} == {}
    # Not all empty: the views have data and the mix's failures set alerts off (pending: they have a "for").
    empty = {what for what, (on_prometheus, _) in answers.items() if not on_prometheus}
    # The mix's servers run no transfer, make nothing available and have the summary (no buckets): those
    # panels have nothing yet (a quantile or a mean of no wait is NaN, which MetricsQL drops).
    nothing_yet = {f"panel {title} (fleet, recording rule)" for title in (
        "p95 latency by route", "Transfers failed by the service", "Transfer failures by reason",
        "Mean transfer duration", "Time to data, median and 95th percentile",
        "Waits ended by outcome, and their mean")}
    assert {what for what in empty if what.startswith(("panel", "variable"))} == nothing_yet
    alerts = {dict(labels)["alertname"] for labels in answers["alerts"][0]}
    assert {"RucioJupyterLabHighErrorRatio", "RucioJupyterLabRucioCallsFailing",
            "RucioJupyterLabRoutesErrorBudgetBurn", "RucioJupyterLabRucioErrorBudgetBurn"} <= alerts, alerts
