"""Past one Prometheus: what the sharded shape costs each of its parts, per scrape interval.

    .venv/bin/python -m benchmarks.fleet_sharded [--quick] [--servers 2000] [--intervals 60,30] [--window 300]

(``benchmarks/run fleet --sharded`` does the same after the set-up.) Progress
goes to stderr, the markdown report to stdout.

The shape docs/past-one-prometheus.md ships: the simulated fleet of the fleet
benchmark (one real server's ``/metrics`` after the full route mix, served as N
servers whose counters advance), two Prometheus agents running the shipped
``jupyterhub-fleet-shard.yml`` (each keeping its ``hashmod`` share of one
targets file), remote-writing into one VictoriaMetrics, where ``vmalert``
evaluates the shipped recording and alert rules. For each scrape interval (the
rules' evaluation interval alike), once every target is in the store, for
``window`` seconds: each part's share of a core and resident memory, the
series in the store, and each rule group's evaluation time against the
interval, with the rule errors and missed evaluations that say the store is
saturated. Then, without a run: the largest family's series at N servers
against VictoriaMetrics' ``-search.maxUniqueTimeseries``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.fleet import RUCIO_METRICS, Payload, SimulatedFleet, capture, progress, select
from tests.servers.child_process import ChildProcess
from tests.servers.jupyter_server_process import TOKEN
from tests.servers.prometheus_process import PrometheusProcess
from tests.servers.victoria_metrics_process import VictoriaMetricsProcess, point_remote_write_at
from tests.servers.vmalert_process import VMAlertProcess
from tests.support.deploy_files import RULE_FILES, deploy_config
from tests.support.json_http_server import JSONHTTPServer

SHARD_CONFIG = "jupyterhub-fleet-shard.yml"
SHARDS = 2
SHARD_LABEL = "prometheus_shard"
# VictoriaMetrics' default: a query that would read more series than this fails.
MAX_UNIQUE_TIMESERIES = 300_000


@dataclass(frozen=True)
class Settings:
    servers: int
    intervals_s: tuple[float, ...]
    window_s: float


FULL = Settings(2000, (60.0, 30.0), 300)
QUICK = Settings(6, (2.0,), 6)


@dataclass
class PartUse:
    """A process's share of a core over the window, and its largest resident memory."""

    name: str
    cpu_percent: float = 0.0
    rss_mib: float = 0.0


@dataclass
class IntervalResult:
    interval_s: float
    servers: int
    store_series: int
    parts: list[PartUse]
    rule_ms: dict[str, float]  # each group's mean evaluation time over the window
    rule_errors: int
    missed: int
    evaluations: int
    notes: list[str] = field(default_factory=list)

    @property
    def rules_ms(self) -> float:
        return sum(self.rule_ms.values())


def shard_config(number: int, token_file: Path, targets_file: Path, victoria: VictoriaMetricsProcess,
                 interval_s: float) -> dict[str, Any]:
    """The shipped shard config, shard ``number`` of ``SHARDS``, at ``interval_s``, writing to ``victoria``."""
    config = deploy_config(SHARD_CONFIG, token_file, file_sd=targets_file)
    config["global"].pop("evaluation_interval", None)
    # The interval measured, not the tests' 1 s; the timeout Prometheus' default (10 s), never past it.
    config["global"].update(scrape_interval=f"{interval_s:g}s", scrape_timeout=f"{min(interval_s, 10.0):g}s")
    config["global"]["external_labels"][SHARD_LABEL] = str(number)
    [job] = config["scrape_configs"]
    job.pop("scrape_interval"), job.pop("scrape_timeout")
    hashmod, keep = job["relabel_configs"][-2:]
    hashmod["modulus"], keep["regex"] = SHARDS, str(number)
    point_remote_write_at(config, victoria)
    return config


def own_metrics(url: str) -> dict[str, float]:
    """A process's own ``/metrics``, summed by name and the labels kept in ``key``."""
    text = requests.get(url + "metrics", timeout=30).text
    sums: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            group = sample.labels.get("group", "")
            sums[f"{sample.name}|{group}"] += sample.value
    return dict(sums)


class Sampler:
    """CPU seconds and the largest RSS of child processes, from the start of the window."""

    def __init__(self, parts: dict[str, ChildProcess]) -> None:
        self.processes = {}
        for name, part in parts.items():
            assert part.process is not None
            self.processes[name] = psutil.Process(part.process.pid)
        self.cpu = {name: self._cpu(p) for name, p in self.processes.items()}
        self.rss = dict.fromkeys(self.processes, 0.0)
        self.started = time.monotonic()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def sample(self) -> None:
        for name, process in self.processes.items():
            self.rss[name] = max(self.rss[name], process.memory_info().rss / 2**20)

    def uses(self) -> list[PartUse]:
        elapsed = time.monotonic() - self.started
        return [PartUse(name, 100 * (self._cpu(p) - self.cpu[name]) / elapsed, self.rss[name])
                for name, p in self.processes.items()]


@contextmanager
def sharded_stack(payload: Payload, servers: int, interval_s: float) -> Iterator[tuple[SimulatedFleet, dict[str, Any]]]:
    """The simulated fleet, two agents, VictoriaMetrics and vmalert, once the store has every target."""
    workdir = Path(tempfile.mkdtemp(prefix="rucio-metrics-sharded-"))
    try:
        with ExitStack() as stack:
            fleet = stack.enter_context(SimulatedFleet(payload, servers))
            token_file, targets_file = workdir / "token", workdir / "targets.json"
            token_file.write_text(TOKEN)
            targets_file.write_text(json.dumps(fleet.targets()))
            # Entered store first, so left last: the agents (and vmalert) stop before the store, which
            # they would otherwise queue for and retry against.
            victoria = stack.enter_context(VictoriaMetricsProcess())
            receiver = stack.enter_context(JSONHTTPServer())
            agents = [stack.enter_context(PrometheusProcess(
                shard_config(n, token_file, targets_file, victoria, interval_s), agent=True)) for n in range(SHARDS)]
            vmalert = stack.enter_context(VMAlertProcess(list(RULE_FILES), victoria, receiver.url.rstrip("/"),
                                                         interval=f"{interval_s:g}s"))
            victoria.wait_until(lambda: victoria.values("count(up == 1)") == {(): float(servers)},
                                4 * interval_s + 120, f"not all {servers} targets reached the store", every=2.0)
            parts: dict[str, ChildProcess] = {f"agent {n}": agent for n, agent in enumerate(agents)}
            parts |= {"VictoriaMetrics": victoria, "vmalert": vmalert}
            yield fleet, {"parts": parts, "victoria": victoria, "vmalert": vmalert}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(payload: Payload, servers: int, interval_s: float, window_s: float) -> IntervalResult:
    with sharded_stack(payload, servers, interval_s) as (_, stack):
        victoria, vmalert = stack["victoria"], stack["vmalert"]
        sampler = Sampler(stack["parts"])
        before = own_metrics(vmalert.url)
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            time.sleep(min(interval_s, max(0.0, end - time.monotonic())))
            sampler.sample()
        after = own_metrics(vmalert.url)
        uses = sampler.uses()
        series = int(requests.get(victoria.url + "api/v1/series/count", timeout=30).json()["data"][0])

    def delta(prefix: str) -> int:
        return int(sum(v for k, v in after.items() if k.startswith(prefix + "|"))
                   - sum(v for k, v in before.items() if k.startswith(prefix + "|")))

    def mean_ms(group: str) -> float:
        name = "vmalert_iteration_duration_seconds"
        count = after.get(f"{name}_count|{group}", 0) - before.get(f"{name}_count|{group}", 0)
        seconds = after.get(f"{name}_sum|{group}", 0) - before.get(f"{name}_sum|{group}", 0)
        return 1e3 * seconds / count if count else float("nan")

    groups = sorted({k.split("|", 1)[1] for k in after if k.startswith("vmalert_iteration_duration_seconds_count|")})

    return IntervalResult(
        interval_s=interval_s, servers=servers, store_series=series, parts=uses,
        rule_ms={group: mean_ms(group) for group in groups if group},
        rule_errors=delta("vmalert_recording_rules_errors_total") + delta("vmalert_alerting_rules_errors_total"),
        missed=delta("vmalert_iteration_missed_total"),
        evaluations=delta("vmalert_iteration_total"),
    )


def largest_family(exposition: str) -> tuple[str, int]:
    """The metric name (what one selector reads) with the most series on one server, and how many."""
    counts: Counter[str] = Counter()
    for line in exposition.splitlines():
        if line and not line.startswith("#") and not re.match(r"\w+_created[{ ]", line):
            counts[re.split(r"[{ ]", line, maxsplit=1)[0]] += 1
    return counts.most_common(1)[0]


def report(exposition: str, results: list[IntervalResult], settings: Settings, elapsed_s: float) -> str:
    family, per_server = largest_family(exposition)
    lines = [
        "## Past one Prometheus: two agents, VictoriaMetrics, vmalert",
        "",
        f"{settings.servers} simulated servers (one real server's `/metrics` after the full route mix), "
        f"the shipped `{SHARD_CONFIG}` in {SHARDS} Prometheus agents, VictoriaMetrics, vmalert with the shipped "
        f"rules; each interval measured for {settings.window_s:g} s once every target was in the store, "
        f"all on this machine ({psutil.cpu_count()} cores).",
        "",
        "| interval | part | CPU (% of a core) | RSS (MiB) |",
        "|---|---|---:|---:|",
    ]
    for result in results:
        for part in result.parts:
            lines.append(f"| {result.interval_s:g} s | {part.name} | {part.cpu_percent:.0f} | {part.rss_mib:.0f} |")
    lines += [
        "",
        "| interval | series in the store | rule groups, sum of means (ms) | of the interval | rule errors | "
        "missed evaluations | evaluations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        share = result.rules_ms / (result.interval_s * 1e3)
        lines.append(f"| {result.interval_s:g} s | {result.store_series} | {result.rules_ms:.0f} | {share:.0%} | "
                     f"{result.rule_errors} | {result.missed} | {result.evaluations} |")
    slowest = {}
    for result in results:
        if result.rule_ms:
            group, ms = max(result.rule_ms.items(), key=lambda item: item[1])
            slowest[result.interval_s] = f"{group} ({ms:.0f} ms)"
    lines += ["", "Slowest rule group: " + "; ".join(f"{k:g} s: {v}" for k, v in slowest.items()) + "."]
    at_limit = MAX_UNIQUE_TIMESERIES // per_server
    lines += [
        "",
        f"Largest series set one selector reads: `{family}`, {per_server} series a server, so "
        f"{per_server * settings.servers} at {settings.servers} servers; a rule reading it fails past about "
        f"{at_limit} servers under VictoriaMetrics' default `-search.maxUniqueTimeseries` ({MAX_UNIQUE_TIMESERIES}).",
        "",
        f"Whole run: {elapsed_s / 60:.1f} min.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few servers, a 2 s interval (a smoke run)")
    parser.add_argument("--servers", type=int, help=f"simulated servers (default {FULL.servers})")
    parser.add_argument("--intervals", help="comma-separated scrape and evaluation intervals in seconds "
                                            "(default 60,30)")
    parser.add_argument("--window", type=float, help="seconds measured per interval once the store has every target")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    settings = Settings(
        args.servers or settings.servers,
        tuple(float(s) for s in args.intervals.split(",")) if args.intervals else settings.intervals_s,
        args.window or settings.window_s,
    )
    started = time.monotonic()
    progress("sharded: capturing /metrics of a real server after the full route mix")
    exposition = select(capture(), RUCIO_METRICS)
    payload = Payload(exposition)
    results = []
    for interval in settings.intervals_s:
        progress(f"sharded: {settings.servers} servers, {interval:g} s interval, {settings.window_s:g} s")
        results.append(measure(payload, settings.servers, interval, settings.window_s))
    print(report(exposition, results, settings, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
