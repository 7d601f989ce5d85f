"""Fleet scale: what rucio_metrics costs one Prometheus scraping N single-user servers.

    .venv/bin/python -m benchmarks.fleet [--quick] [--servers 250,1000] [--window 300]
        [--variants rules,churn,jupyter] [--no-remote-write]

(``benchmarks/run fleet`` does the same after the set-up.) Progress goes to
stderr, the markdown report to stdout.

1. Capture: a real Jupyter server with rucio-jupyterlab and rucio_metrics, its
   two Rucio instances pointed at the tests' Rucio stand-in, takes the full
   route mix (all 16 routes, their usual statuses, calls to Rucio); its
   ``/metrics`` is kept.
2. Simulate: one Tornado process serves N targets at ``/user/server-<i>/metrics``
   on one port, each answering one family set of that payload, whose counters
   (``_total``, ``_count``, ``_sum``, ``_bucket``) advance as if the server
   ran the whole mix again every minute (each target with its own phase).
3. Measure: a real Prometheus with the shipped ``jupyterhub-fleet.yml`` (file
   discovery, token, relabelling) and the shipped recording and alert rules,
   at a 15 s scrape and evaluation interval, for ``window`` seconds once
   every target is up. Per N: head series, resident memory, samples
   ingested per second, scrape duration p50/p99, each rule group's
   evaluation time; then the growth per 100 servers.

The runs, each in its own Prometheus, one after the other for each N, so they
are measured side by side: rucio_metrics' series with the shipped rules and with
the rules before they read each raw family once (``tests/data/rules-before``),
each without and with churn (a share of the servers replaced by new ones, each
a new ``instance``, every churn period: a hub culling and spawning); and
jupyter_server's own ``http_request_duration_seconds`` for the Rucio handler
classes of the same traffic (``--variants jupyter``). A last run at the smallest
N adds the shipped remote-write config and a real VictoriaMetrics: the series
Prometheus keeps against the series it ships.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests
import tornado.httpserver
import tornado.web
from prometheus_client.parser import text_string_to_metric_families

from rucio_metrics.fleet import write_if_changed
from tests.servers.jupyter_server_process import TOKEN, JupyterServerProcess
from tests.servers.prometheus_process import PrometheusProcess, PromQLAPI
from tests.servers.victoria_metrics_process import VictoriaMetricsProcess, point_remote_write_at
from tests.support.deploy_files import deploy_config, our_families_only
from tests.support.rucio_standin import RucioStandIn, userpass_credentials
from tests.support.tornado_thread import TornadoThread

from .run import machine, progress, table

# rucio_metrics' series per server after the full route mix, without _created, at most: 150 until the
# failures by fault (a service series per route and verb from start-up, a user one on first use: about 30)
# and time to data (per configured instance its waiting gauge and the histograms the rules rate from
# zero: about 56) came, 234 with both; still far below jupyter_server's own histogram of the same routes (493).
SERIES_TARGET = 250
JUPYTER_HISTOGRAM = "http_request_duration_seconds"
# jupyter_server labels its histogram by handler class: module.Class.
RUCIO_HANDLER = re.compile(r'handler="rucio_jupyterlab\.')
RUCIO_METRICS, JUPYTER_SERVER = "rucio_metrics", "jupyter_server histogram"
SHIPPED, BEFORE = "shipped", "before"
# The rules as they were before each raw family was read by one rule only.
RULES_BEFORE = Path(__file__).resolve().parent.parent / "tests" / "data" / "rules-before"
# One full mix per simulated server and minute: counters step once a minute.
MIX_PERIOD_S = 60.0
JOB = "jupyterhub-singleuser"  # the shipped jupyterhub-fleet.yml's job

# The full route mix: (method, path relative to base_url, status the client gets, request kwargs).
# After it, every route has its success status and the usual failures: 400
# (no namespace), 401 (no credentials yet), 403 (no token), 404, 500 from
# Rucio and from upstream bugs, 503 when Rucio drops the connection.
Call = tuple[str, str, int, dict[str, Any]]
BEFORE_LOGIN: list[Call] = [
    ("GET", "rucio-jupyterlab/instances", 200, {}),
    ("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 401, {}),
    ("GET", "rucio-jupyterlab/file-browser", 400, {}),
    ("GET", "rucio-jupyterlab/instances", 403, {"anonymous": True}),
    ("PUT", "rucio-jupyterlab/instances", 200, {"json": {"instance": "atlas", "auth": "userpass"}}),
    ("GET", "rucio-jupyterlab/auth?namespace=atlas&type=userpass", 404, {}),
    ("PUT", "rucio-jupyterlab/auth", 200, {"json": userpass_credentials("atlas")}),
    ("PUT", "rucio-jupyterlab/auth", 200, {"json": userpass_credentials("cms")}),
]
AFTER_LOGIN: list[Call] = [
    ("GET", "rucio-jupyterlab/auth?namespace=atlas&type=userpass", 200, {}),
    ("GET", "rucio-jupyterlab/oidc-auth-check?namespace=atlas", 403, {}),
    ("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 200, {}),
    ("GET", "rucio-jupyterlab/list-rses?namespace=cms&expression=SITE_*", 200, {}),
    ("GET", "rucio-jupyterlab/did-search?namespace=atlas&did=data18:*&type=collection", 200, {}),
    ("GET", "rucio-jupyterlab/files?namespace=atlas&did=data18:AOD.dataset&poll=1", 200, {}),
    ("GET", "rucio-jupyterlab/did?namespace=atlas&did=data18:AOD.dataset&force=1", 200, {}),
    ("GET", "rucio-jupyterlab/did?namespace=cms&did=data18:AOD.container&force=1", 200, {}),
    ("GET", "rucio-jupyterlab/did?namespace=cms&did=data18:no-such-dataset&force=1", 404, {}),
    ("POST", "rucio-jupyterlab/did/make-available?namespace=atlas", 200, {"json": {"did": "data18:AOD.dataset"}}),
    ("GET", "rucio-jupyterlab/open-replication-rule?namespace=atlas&did=data18:file1.root", 302, {}),
    ("GET", "rucio-jupyterlab/file-browser?namespace=atlas&path=", 200, {}),
    ("POST", "rucio-jupyterlab/purge-cache?namespace=atlas", 200, {}),
    ("GET", "rucio-jupyterlab/upload/jobs?namespace=atlas", 200, {}),
    ("GET", "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope", 500, {}),
    ("DELETE", "rucio-jupyterlab/upload/jobs/details?namespace=atlas&id=nope", 200, {}),
    ("GET", "rucio-jupyterlab/upload/jobs/log?namespace=atlas&id=nope", 404, {}),
    ("POST", "rucio-jupyterlab/upload?namespace=atlas", 400, {"json": {}}),
    ("GET", "rucio-jupyterlab/upload/jobs", 400, {}),
]
# Rucio failing: (stand-in knob, pattern, call).
RUCIO_FAILURES: list[tuple[str, str, Call]] = [
    ("fail", "GET /scopes/", ("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 500, {})),
    ("drop", "GET /scopes/", ("GET", "rucio-jupyterlab/list-scopes?namespace=atlas", 503, {})),
    ("fail", "GET /rses", ("GET", "rucio-jupyterlab/list-rses?namespace=cms", 500, {})),
    ("fail", "GET /dids/data18/dids/search",
     ("GET", "rucio-jupyterlab/did-search?namespace=atlas&did=data18:AOD.*", 500, {})),
]


def capture() -> str:
    """The whole ``/metrics`` of a real instrumented server after the full route mix."""
    with RucioStandIn() as rucio:
        instances = [rucio.instance_config("atlas"), rucio.instance_config("cms", mode="download")]
        with JupyterServerProcess(base_url="/user/alice/", rucio_instances=instances,
                                  other_extensions=True) as server:
            try:
                for call in BEFORE_LOGIN + AFTER_LOGIN:
                    send(server, call)
                for knob, pattern, call in RUCIO_FAILURES:
                    getattr(rucio, knob)(pattern)
                    send(server, call)
                    rucio.reset()
                # rucio-jupyterlab fetches replicas in the background on a first look; let those calls end.
                time.sleep(1)
                return server.metrics_text()
            finally:
                shutil.rmtree(server.root, ignore_errors=True)


def send(server: JupyterServerProcess, call: Call) -> None:
    """Send one call of the mix; raise when its status is not the one expected."""
    method, path, status, kwargs = call
    if kwargs.get("anonymous"):  # no token, no cookie
        with requests.Session() as session:
            session.trust_env = False
            got = session.request(method, server.url(path), timeout=30).status_code
    else:
        got = server.request(method, path, allow_redirects=False, **kwargs).status_code
    if got != status:
        raise RuntimeError(f"{method} {path} answered {got}, expected {status}: the capture would not be the mix")


# -- the payload ----------------------------------------------------------------------------------------


def select(exposition: str, variant: str) -> str:
    """One family set of a ``/metrics`` text, with its HELP and TYPE lines."""
    if variant == RUCIO_METRICS:
        return our_families_only(exposition)
    kept = []
    for line in exposition.splitlines():
        name = line.split()[2] if line.startswith("#") else re.split(r"[{ ]", line, maxsplit=1)[0]
        if name.startswith(JUPYTER_HISTOGRAM) and (line.startswith("#") or RUCIO_HANDLER.search(line)):
            kept.append(line)
    return "\n".join(kept) + "\n"


def split_transfers(families: str) -> tuple[str, str]:
    """rucio_metrics' families as (requests and Rucio calls, transfers)."""
    requests_and_calls, transfers = [], []
    for line in families.splitlines():
        name = line.split()[2] if line.startswith("#") else line
        (transfers if name.startswith("rucio_jupyterlab_transfer") else requests_and_calls).append(line)
    return "\n".join(requests_and_calls) + "\n", "\n".join(transfers) + "\n"


def series(exposition: str, created: bool = True) -> int:
    """Sample lines, optionally without the ``_created`` ones."""
    lines = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    return sum(1 for line in lines if created or not re.match(r"\w+_created[{ ]", line))


class Payload:
    """An exposition whose counters can be advanced: ``render(k)`` is the payload after ``k`` more mixes."""

    def __init__(self, exposition: str) -> None:
        advancing = set()
        for family in text_string_to_metric_families(exposition):
            if family.type == "counter":
                advancing.add(family.name + "_total")
            elif family.type in ("summary", "histogram"):
                advancing.update(family.name + suffix for suffix in ("_count", "_sum", "_bucket"))
        # (text before the value, base value or None for a line served as it is)
        self.parts: list[tuple[str, float | None]] = []
        for line in exposition.splitlines():
            if line.startswith("#") or not line:
                self.parts.append((line, None))
                continue
            head, value = line.rsplit(" ", 1)
            name = re.split(r"[{ ]", head, maxsplit=1)[0]
            self.parts.append((head, float(value)) if name in advancing else (line, None))
        # Rendered once per mix count: a run sees a few (window / mix period + 2).
        self._rendered: dict[int, bytes] = {}

    def render(self, mixes: int) -> bytes:
        if mixes not in self._rendered:
            factor = 1 + mixes
            self._rendered[mixes] = ("\n".join(
                text if base is None else f"{text} {base * factor!r}" for text, base in self.parts
            ) + "\n").encode()
        return self._rendered[mixes]


class _TargetHandler(tornado.web.RequestHandler):
    def initialize(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    def get(self, number: str) -> None:
        index = int(number)
        if index not in self.fleet.started:
            raise tornado.web.HTTPError(404)
        if self.request.headers.get("Authorization") != f"token {TOKEN}":
            raise tornado.web.HTTPError(403)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.fleet.render(index))


class SimulatedFleet:
    """``size`` single-user servers' ``/metrics`` from one Tornado server thread on 127.0.0.1."""

    def __init__(self, payload: Payload, size: int, mix_period: float = MIX_PERIOD_S) -> None:
        self.payload = payload
        self.size = size
        self.mix_period = mix_period
        now = time.monotonic()
        # Server number -> when it started (the first ones spread over one mix period), and when a
        # replaced one stopped: it still answers, frozen, until Prometheus has read the new targets.
        self.started = {i: now - mix_period * i / size for i in range(size)}
        self.stopped: dict[int, float] = {}
        self.port = 0

    @property
    def replaced(self) -> int:
        return len(self.stopped)

    def running(self) -> list[int]:
        return [i for i in sorted(self.started) if i not in self.stopped]

    def mixes(self, index: int) -> int:
        """Mixes server ``index`` has run since it started (until it stopped)."""
        return int((self.stopped.get(index, time.monotonic()) - self.started[index]) // self.mix_period)

    def render(self, index: int) -> bytes:
        """What server ``index`` answers now."""
        return self.payload.render(self.mixes(index))

    def churn(self, fraction: float) -> None:
        """Replace the oldest ``fraction`` of the servers by new ones (new numbers, so new ``instance``s)."""
        oldest = sorted(self.running(), key=self.started.__getitem__)[:round(self.size * fraction)]
        newest = max(self.started) + 1
        now = time.monotonic()
        for offset, index in enumerate(oldest):
            self.stopped[index] = now
            self.started[newest + offset] = now

    def targets(self) -> list[dict[str, Any]]:
        """File-SD targets the way ``python -m rucio_metrics.fleet`` writes them for a hub."""
        return [
            {"targets": [f"127.0.0.1:{self.port}"],
             "labels": {"__metrics_path__": f"/user/server-{i}/metrics", "instance": f"server-{i}",
                        "user": f"server-{i}"}}
            for i in self.running()
        ]

    def __enter__(self) -> SimulatedFleet:
        app = tornado.web.Application([(r"/user/server-(\d+)/metrics", _TargetHandler, {"fleet": self})],
                                      log_function=lambda handler: None)
        self._served = TornadoThread(app, "simulated-fleet", backlog=1024)
        self.port = self._served.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()


# -- measuring Prometheus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    servers: tuple[int, ...]
    window_s: float
    interval_s: float
    mix_period_s: float = MIX_PERIOD_S
    # A tenth of the servers replaced every minute: five times "a tenth every
    # five minutes", so the 5-minute window sees the churn of 25 minutes.
    churn_fraction: float = 0.1
    churn_period_s: float = 60


FULL = Settings((250, 1000), 300, 15)  # 5 minutes: the rules' [5m] ranges are full
QUICK = Settings((2, 4), 3, 1, 4, churn_fraction=0.5, churn_period_s=2)


@dataclass(frozen=True)
class Run:
    """What one Prometheus of the benchmark runs: a family set, a rule set, churn or not."""

    family_set: str = RUCIO_METRICS
    rules: str = SHIPPED
    churn: bool = False

    def __str__(self) -> str:
        if self.family_set != RUCIO_METRICS:
            return self.family_set
        return f"{self.rules} rules" + (", churn" if self.churn else "")


RUNS = {
    "rules": [Run(rules=BEFORE), Run(rules=SHIPPED)],
    "churn": [Run(rules=BEFORE, churn=True), Run(rules=SHIPPED, churn=True)],
    "shipped": [Run(rules=SHIPPED)],
    "shipped-churn": [Run(rules=SHIPPED, churn=True)],
    "jupyter": [Run(family_set=JUPYTER_SERVER, rules=SHIPPED)],
}


@dataclass
class FleetResult:
    variant: Run
    servers: int
    head_series: int
    rss_mib: float
    cpu_percent: float  # of one core, over the window
    samples_per_s: float
    scrape_p50_ms: float
    scrape_p99_ms: float
    rule_ms: dict[str, float]  # median evaluation time per rule group over the window
    scrapes: int  # scrapes per target in the window
    up: int  # targets up at every scrape of the window
    replaced: int = 0  # servers replaced by churn during the window

    @property
    def all_rules_ms(self) -> float:
        return sum(self.rule_ms.values())


@dataclass
class RemoteWriteResult:
    servers: int
    prometheus_series: int
    shipped_series: int
    appended_per_s: float
    shipped_per_s: float
    shipped_names: list[str]


def prometheus_config(name: str, token_file: Path, targets_file: Path, interval_s: float,
                      rules: str = SHIPPED) -> dict[str, Any]:
    """A shipped fleet config as a fleet would run it: its rules, one interval for scrapes and rules."""
    config = deploy_config(name, token_file, file_sd=targets_file)
    if rules == BEFORE:
        config["rule_files"] = [str(RULES_BEFORE / Path(f).name) for f in config["rule_files"]]
        assert all(Path(f).is_file() for f in config["rule_files"]), config["rule_files"]
    interval = f"{interval_s:g}s"
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    for job in config["scrape_configs"]:
        job["scrape_interval"] = interval
        job["scrape_timeout"] = f"{min(10.0, interval_s):g}s"
    return config


def own_metrics(prometheus: PrometheusProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus' own ``/metrics``, keyed by (sample name, labels)."""
    text = prometheus.session.get(prometheus.url + "metrics", timeout=30).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def _rule_durations(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {
        dict(labels)["rule_group"].rsplit(";", 1)[1]: value
        for (name, labels), value in samples.items() if name == "prometheus_rule_group_last_duration_seconds"
    }


def _count(prometheus: PromQLAPI, expr: str) -> int:
    return int(sum(prometheus.values(expr).values()))


@dataclass
class FleetUnderTest:
    fleet: SimulatedFleet
    targets_file: Path

    def churn(self, fraction: float) -> None:
        """Replace servers and tell Prometheus, as the fleet helper rewrites a hub's targets file."""
        self.fleet.churn(fraction)
        write_if_changed(self.targets_file, json.dumps(self.fleet.targets()))


@contextmanager
def fleet_prometheus(payload: Payload, size: int, settings: Settings, config_name: str,
                     change: Callable[[dict[str, Any]], None] | None = None,
                     rules: str = SHIPPED) -> Iterator[tuple[PrometheusProcess, FleetUnderTest]]:
    """A simulated fleet of ``size`` and a Prometheus scraping it, once every target is up."""
    workdir = Path(tempfile.mkdtemp(prefix="rucio-metrics-fleet-"))
    try:
        with SimulatedFleet(payload, size, settings.mix_period_s) as fleet:
            token_file, targets_file = workdir / "token", workdir / "targets.json"
            token_file.write_text(TOKEN)
            targets_file.write_text(json.dumps(fleet.targets()))
            config = prometheus_config(config_name, token_file, targets_file, settings.interval_s, rules)
            if change is not None:
                change(config)
            with PrometheusProcess(config) as prometheus:
                prometheus.wait_until(lambda: _count(prometheus, f'count(up{{job="{JOB}"}} == 1)') == size,
                                      3 * settings.interval_s + 60, f"not all {size} targets were up", every=1.0)
                yield prometheus, FleetUnderTest(fleet, targets_file)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(payload: Payload, variant: Run, size: int, settings: Settings) -> FleetResult:
    with fleet_prometheus(payload, size, settings, "jupyterhub-fleet.yml", rules=variant.rules) as (prometheus, fleet):
        start = time.time()
        first = own_metrics(prometheus)
        first_at = time.time()
        rules: dict[str, list[float]] = {}
        next_churn = start + settings.churn_period_s
        while time.time() - start < settings.window_s:
            time.sleep(min(settings.interval_s, max(0.0, settings.window_s - (time.time() - start))))
            if variant.churn and time.time() >= next_churn:
                fleet.churn(settings.churn_fraction)
                next_churn += settings.churn_period_s
            for group, seconds in _rule_durations(own_metrics(prometheus)).items():
                rules.setdefault(group, []).append(seconds)
        end = time.time()
        last = own_metrics(prometheus)
        elapsed = time.time() - first_at
        appended = _total(last, "prometheus_tsdb_head_samples_appended_total") - _total(
            first, "prometheus_tsdb_head_samples_appended_total")
        cpu = _total(last, "process_cpu_seconds_total") - _total(first, "process_cpu_seconds_total")
        window = f"{max(1, round(end - start))}s"
        durations = [
            float(value) for r in prometheus.query(f'scrape_duration_seconds{{job="{JOB}"}}[{window}]')
            for _, value in r["values"]
        ]
        # Targets up at every scrape of the window they were in (a replaced server is not down).
        up = _count(prometheus, f'count(min_over_time(up{{job="{JOB}"}}[{window}]) == 1)')
    return FleetResult(
        variant=variant,
        servers=size,
        head_series=int(_total(last, "prometheus_tsdb_head_series")),
        rss_mib=_total(last, "process_resident_memory_bytes") / 2**20,
        cpu_percent=100 * cpu / elapsed,
        samples_per_s=appended / elapsed,
        scrape_p50_ms=percentile(durations, 50) * 1e3,
        scrape_p99_ms=percentile(durations, 99) * 1e3,
        rule_ms={group: statistics.median(values) * 1e3 for group, values in sorted(rules.items())},
        scrapes=round(len(durations) / size),
        up=up,
        replaced=fleet.fleet.replaced,
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def measure_remote_write(payload: Payload, size: int, settings: Settings) -> RemoteWriteResult:
    """The shipped remote-write config into a real VictoriaMetrics: series and samples kept against shipped."""
    with VictoriaMetricsProcess() as victoria:
        with fleet_prometheus(payload, size, settings, "jupyterhub-fleet-remote-write.yml",
                              lambda config: point_remote_write_at(config, victoria)) as (prometheus, _):
            first, first_at = own_metrics(prometheus), time.time()
            # Rules evaluated a few times, every series shipped at least once.
            time.sleep(4 * settings.interval_s + 5)
            last, elapsed = own_metrics(prometheus), time.time() - first_at
            kept = _count(prometheus, 'count({__name__=~".+"})')
            victoria.wait_until(lambda: _count(victoria, "count(up)") == size, 60,
                                "VictoriaMetrics did not get every up", every=1.0)
            shipped = _count(victoria, 'count({__name__=~".+"})')
            names = sorted({r["metric"]["__name__"] for r in victoria.query('count by (__name__) ({__name__=~".+"})')})

    def rate(name: str) -> float:
        return (_total(last, name) - _total(first, name)) / elapsed

    return RemoteWriteResult(size, kept, shipped, rate("prometheus_tsdb_head_samples_appended_total"),
                             rate("prometheus_remote_storage_samples_total"), names)


# -- the report -------------------------------------------------------------------------------------------


def slope_per_100(results: list[FleetResult], value: Callable[[FleetResult], float]) -> float:
    """Least-squares growth of ``value`` per 100 servers."""
    xs = [r.servers for r in results]
    ys = [value(r) for r in results]
    if len(xs) < 2:
        return math.nan
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return 100 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def fleet_table(results: list[FleetResult], interval_s: float) -> str:
    groups = sorted({g for r in results for g in r.rule_ms})
    header = ["run", "servers", "up", "replaced", "head series", "RSS MiB", "CPU % of a core", "samples/s",
              "scrape p99 ms", "all rule groups ms", "% of the interval", *[f"`{g}` ms" for g in groups]]
    rows = []
    variants = list(dict.fromkeys(r.variant for r in results))
    for variant in variants:
        own = [r for r in results if r.variant == variant]
        for r in own:
            rows.append([str(variant), f"{r.servers:,}", f"{r.up:,}", f"{r.replaced:,}", f"{r.head_series:,}",
                         f"{r.rss_mib:,.0f}", f"{r.cpu_percent:.0f}", f"{r.samples_per_s:,.0f}",
                         f"{r.scrape_p99_ms:.1f}", f"{r.all_rules_ms:.1f}",
                         f"{r.all_rules_ms / 10 / interval_s:.1f}",
                         *[f"{r.rule_ms[g]:.1f}" if g in r.rule_ms else "" for g in groups]])
        if len(own) > 1:
            rows.append([f"{variant}: growth per 100 servers", "", "", "",
                         f"{slope_per_100(own, lambda r: r.head_series):+,.0f}",
                         f"{slope_per_100(own, lambda r: r.rss_mib):+,.0f}",
                         f"{slope_per_100(own, lambda r: r.cpu_percent):+.1f}",
                         f"{slope_per_100(own, lambda r: r.samples_per_s):+,.0f}",
                         f"{slope_per_100(own, lambda r: r.scrape_p99_ms):+.2f}",
                         f"{slope_per_100(own, lambda r: r.all_rules_ms):+.2f}", "",
                         *[f"{slope_per_100(own, lambda r, g=g: r.rule_ms[g]):+.2f}" if g in own[0].rule_ms else ""
                           for g in groups]])
    return table(header, rows)


def rules_verdict(results: list[FleetResult], interval_s: float) -> str:
    """The targets: all groups at most 10% of the interval at the largest N, growth at most a quarter of before."""
    def of(rules: str, churn: bool) -> list[FleetResult]:
        return [r for r in results if r.variant == Run(rules=rules, churn=churn)]

    lines = []
    for churn in (False, True):
        before, shipped = of(BEFORE, churn), of(SHIPPED, churn)
        if not before or not shipped:
            continue
        largest = max(shipped, key=lambda r: r.servers)
        share = largest.all_rules_ms / 1e3 / interval_s
        growth = slope_per_100(shipped, lambda r: r.all_rules_ms) / slope_per_100(before, lambda r: r.all_rules_ms)
        lines.append(
            f"- {'With' if churn else 'Without'} churn: at {largest.servers:,} servers the shipped rules take "
            f"{largest.all_rules_ms:,.0f} ms of every {interval_s:g} s ({share:.1%}; target at most 10%: "
            f"{'holds' if share <= 0.10 else '**missed**'}); their growth per 100 servers is {growth:.0%} of the "
            f"rules' before (target at most 25%: {'holds' if growth <= 0.25 else '**missed**'})."
        )
    return "\n".join(lines)


def budget_table(exposition: str) -> str:
    ours, jupyter = select(exposition, RUCIO_METRICS), select(exposition, JUPYTER_SERVER)
    calls, transfers = split_transfers(ours)
    rows = [
        ["rucio_metrics (`rucio_jupyterlab_http_*`, `rucio_jupyterlab_rucio_*`)", str(series(calls)),
         str(series(calls, created=False)), f"{len(calls.encode()):,}"],
        ["rucio_metrics' transfer families (`rucio_jupyterlab_transfer*`, no transfer run)", str(series(transfers)),
         str(series(transfers, created=False)), f"{len(transfers.encode()):,}"],
        ["jupyter_server's `http_request_duration_seconds`, Rucio handler classes", str(series(jupyter)),
         str(series(jupyter, created=False)), f"{len(jupyter.encode()):,}"],
        ["the whole `/metrics`", str(series(exposition)), str(series(exposition, created=False)),
         f"{len(exposition.encode()):,}"],
    ]
    return table(["series per server after the full mix", "with `_created`", "without `_created`", "bytes"], rows)


def report(exposition: str, results: list[FleetResult], remote: RemoteWriteResult | None,
           settings: Settings, quick: bool, seconds: float) -> str:
    ours, _ = split_transfers(select(exposition, RUCIO_METRICS))
    sections = [
        "## Fleet scale" + (" (--quick: numbers are rough)" if quick else ""),
        f"Machine: {machine()}.",
        "### Series per server\n\nCaptured from a real Jupyter server with rucio-jupyterlab and rucio_metrics after "
        f"the full route mix ({len(BEFORE_LOGIN) + len(AFTER_LOGIN) + len(RUCIO_FAILURES)} requests on all 16 "
        "routes, two Rucio instances, Rucio failures).\n\n" + budget_table(exposition)
        + f"\n\nTarget: at most {SERIES_TARGET} series per server without `_created`: {series(ours, created=False)} "
        + ("(holds)." if series(ours, created=False) <= SERIES_TARGET else "(**missed**)."),
        f"### One Prometheus, N servers\n\nOne process serves N targets; a real Prometheus scrapes them with the "
        f"shipped `jupyterhub-fleet.yml` every {settings.interval_s:g} s (rules too), for "
        f"{settings.window_s:g} s once every target is up; each run in its own Prometheus, one after the other "
        f"for each N. Churn: {settings.churn_fraction:.0%} of the servers replaced by new ones every "
        f"{settings.churn_period_s:g} s. Samples/s include Prometheus' 5 synthetic series per target and the "
        f"rules' output; rule times are medians over the window.\n\n" + fleet_table(results, settings.interval_s)
        + "\n\n" + rules_verdict(results, settings.interval_s),
    ]
    if remote is not None:
        reduction = 1 - remote.shipped_series / remote.prometheus_series
        sections.append(
            f"### Remote write\n\nThe shipped `jupyterhub-fleet-remote-write.yml` at {remote.servers} servers "
            f"(rucio_metrics' family set) into a real VictoriaMetrics: Prometheus holds "
            f"{remote.prometheus_series:,} series, VictoriaMetrics received {remote.shipped_series:,} "
            f"({reduction:.1%} fewer); samples {remote.appended_per_s:,.0f}/s ingested, {remote.shipped_per_s:,.0f}/s "
            f"shipped. Shipped: {', '.join(f'`{n}`' for n in remote.shipped_names)}."
        )
    sections.append(f"Run time: {seconds:.0f} s; load average at the end {os.getloadavg()[0]:.1f}.")
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few servers, 1 s intervals (a smoke run)")
    parser.add_argument("--servers", help="comma-separated fleet sizes (default 250,1000; 2,4 with --quick)")
    parser.add_argument("--variants", default="rules,churn",
                        help=f"comma-separated runs for each size, of {', '.join(RUNS)} (default rules,churn)")
    parser.add_argument("--window", type=float, help="seconds measured per run once every target is up")
    parser.add_argument("--no-remote-write", action="store_true", help="skip the remote-write run")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.servers:
        settings = replace(settings, servers=tuple(int(n) for n in args.servers.split(",")))
    if args.window:
        settings = replace(settings, window_s=args.window)
    started = time.monotonic()
    progress("fleet: capturing /metrics of a real server after the full route mix")
    exposition = capture()
    runs = [run for name in args.variants.split(",") for run in RUNS[name]]
    payloads = {family_set: Payload(select(exposition, family_set)) for family_set in {r.family_set for r in runs}}
    results = []
    for size in settings.servers:
        for run in runs:
            progress(f"fleet: {run}, {size} servers, {settings.window_s:g} s")
            results.append(measure(payloads[run.family_set], run, size, settings))
            progress(f"fleet: {results[-1]}")
    remote = None
    if not args.no_remote_write:
        progress(f"fleet: remote write to VictoriaMetrics, {settings.servers[0]} servers")
        remote = measure_remote_write(Payload(select(exposition, RUCIO_METRICS)), settings.servers[0], settings)
    print(report(exposition, results, remote, settings, args.quick, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
