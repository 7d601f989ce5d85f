"""End to end: two real Jupyter servers with rucio-jupyterlab, one with rucio_metrics, one without.

Both run at the same time on loopback and are loaded alternately, round after
round, by ``wrk`` (one thread, a few keep-alive connections), so a change in
machine speed hits both alike. Per round and server: requests per second,
p50/p99 latency, and the server's own CPU per request (from /proc). The
throughput ratio is the median over rounds of (with / without) in the same
round.

Memory: both servers then take the same mixed load (several routes and
statuses, every URL different, unknown routes too) in steps up to the
request count, and their resident memory and exposed series are read after
each step.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rucio_metrics.metrics import HTTP_PREFIX
from rucio_metrics.outbound import OUTBOUND_PREFIX
from tests.servers.jupyter_server_process import TOKEN, JupyterServerProcess
from tests.support.rucio_standin import RucioStandIn, userpass_credentials

WITHOUT, WITH = "without rucio_metrics", "with rucio_metrics"
# rucio_metrics' own series; rucio-jupyterlab's rucio_jupyterlab_requests_total is not one of them.
OURS = (HTTP_PREFIX, OUTBOUND_PREFIX)
# (label, path relative to base_url)
TARGETS = [
    ("GET /rucio-jupyterlab/instances (sync)", "rucio-jupyterlab/instances"),
    ("GET /rucio-jupyterlab/list-scopes (async)", "rucio-jupyterlab/list-scopes?namespace=atlas"),
]
ACTIVE_INSTANCE = {"instance": "atlas", "auth": "userpass"}
CREDENTIALS = userpass_credentials("atlas")
# The memory load: 200, 400 from prepare() (GET and POST), and routes that do
# not exist. "{i}" becomes the request number, so no two URLs are the same:
# series must not follow URLs. Routes that call Rucio are left out: they cost
# several times the others, and their instrumentation is the same code.
MIXED = [
    ("GET", "rucio-jupyterlab/instances?r={i}"),
    ("GET", "rucio-jupyterlab/file-browser?r={i}"),
    ("POST", "rucio-jupyterlab/purge-cache?r={i}"),
    ("GET", "rucio-jupyterlab/no-such-route-{i}"),
]
CONNECTIONS = 8

# wrk's Lua hooks: a machine-readable summary line, and for the memory load a
# request generator.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""
_WRK_MIXED = """
local requests = {%(requests)s}
local i = 0
request = function()
  i = i + 1
  local method_path = requests[(i %% #requests) + 1]
  return wrk.format(method_path[1], (string.gsub(method_path[2], "{i}", tostring(i))))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors and timeouts
    non_2xx: int
    p50_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s / max(1, self.requests) * 1e3


@dataclass
class ThroughputResult:
    target: str
    server: str
    rps: float  # medians over rounds
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    ratio: float = 1.0  # median over rounds of this server's rps / the without-server's, same round
    ratio_iqr: tuple[float, float] = (1.0, 1.0)  # quartiles of those ratios: the noise
    cpu_ratio: float = 1.0


@dataclass
class MemoryResult:
    server: str
    requests: list[int] = field(default_factory=list)  # cumulative requests of the mixed load at each reading
    rss_mib: list[float] = field(default_factory=list)
    series: list[int] = field(default_factory=list)  # sample lines on /metrics
    our_series: list[int] = field(default_factory=list)  # rucio_jupyterlab_http_* sample lines

    @property
    def growth_mib(self) -> float:
        return self.rss_mib[-1] - self.rss_mib[0]


@dataclass
class ServerScrape:
    server: str
    series: int
    bytes: int
    ms_per_scrape: float  # median, over HTTP, whole /metrics


@dataclass
class EndToEndResult:
    throughput: list[ThroughputResult]
    memory: list[MemoryResult]
    scrapes: list[ServerScrape]
    rounds: int
    seconds_per_run: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _wrk_command(script: Path, url: str, seconds: float) -> list[str]:
    return [
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-H", f"Authorization: token {TOKEN}", "-s", str(script), url,
    ]


def _parse_wrk(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            n, duration_us, errors, non_2xx, p50_us, p99_us = (int(x) for x in line.split()[1:])
            return WrkResult(n, duration_us / 1e6, errors, non_2xx, p50_us / 1e3, p99_us / 1e3)
    raise RuntimeError(f"wrk printed no result:\n{output}")


def wrk(script: Path, server: JupyterServerProcess, path: str, seconds: float) -> WrkResult:
    """One wrk run against ``server``; also the server's CPU time during it."""
    assert server.process is not None
    before = cpu_seconds(server.process.pid)
    done = subprocess.run(
        _wrk_command(script, server.url(path), seconds), capture_output=True, text=True, timeout=seconds + 60,
    )
    result = _parse_wrk(done.stdout + done.stderr)
    result.server_cpu_s = cpu_seconds(server.process.pid) - before
    return result


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def scrape_series(server: JupyterServerProcess) -> tuple[int, int]:
    """(all sample lines, rucio_metrics' sample lines) on the server's /metrics."""
    lines = [line for line in server.metrics_text().splitlines() if line and not line.startswith("#")]
    return len(lines), sum(1 for line in lines if line.startswith(OURS))


def _check(server: JupyterServerProcess, instrumented: bool) -> None:
    """The servers are what the benchmark says they are, and the routes answer 200."""
    for path, body in (("rucio-jupyterlab/instances", ACTIVE_INSTANCE), ("rucio-jupyterlab/auth", CREDENTIALS)):
        server.request("PUT", path, json=body).raise_for_status()
    for _, path in TARGETS:
        response = server.request("GET", path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    has_ours = 'rucio_jupyterlab_http_requests_total{handler="/rucio-jupyterlab/instances"' in server.metrics_text()
    if has_ours != instrumented:
        raise RuntimeError(f"server on port {server.port}: rucio_metrics series present = {has_ours}")


@contextmanager
def servers(rucio: RucioStandIn) -> Iterator[dict[str, JupyterServerProcess]]:
    with ExitStack() as stack:
        found = {}
        instances = [rucio.instance_config("atlas")]
        for name, enabled in ((WITHOUT, False), (WITH, True)):
            server = JupyterServerProcess(rucio_instances=instances, extensions={"rucio_metrics": enabled},
                                          other_extensions=True)
            # Registered first, so it runs after the server has stopped: its log and config go too.
            stack.callback(shutil.rmtree, server.root, ignore_errors=True)
            found[name] = stack.enter_context(server)
            _check(server, enabled)
        yield found


def throughput(
    workdir: Path, found: dict[str, JupyterServerProcess], rounds: int, seconds: float
) -> list[ThroughputResult]:
    script = workdir / "plain.lua"
    script.write_text(_WRK_DONE)
    for server in found.values():  # warm-up, not counted
        for _, path in TARGETS:
            wrk(script, server, path, 1)
    runs: dict[tuple[str, str], list[WrkResult]] = {}
    order = list(found)
    for round_ in range(rounds):
        for target, path in TARGETS:
            # Swap who goes first every round: neither server always follows the other.
            for name in order if round_ % 2 == 0 else order[::-1]:
                runs.setdefault((target, name), []).append(wrk(script, found[name], path, seconds))
    results = []
    for target, _ in TARGETS:
        base = runs[(target, WITHOUT)]
        for name in order:
            own = runs[(target, name)]
            ratios = [r.rps / b.rps for r, b in zip(own, base)]
            results.append(ThroughputResult(
                target=target,
                server=name,
                rps=statistics.median(r.rps for r in own),
                p50_ms=statistics.median(r.p50_ms for r in own),
                p99_ms=statistics.median(r.p99_ms for r in own),
                cpu_ms_per_request=statistics.median(r.cpu_ms_per_request for r in own),
                ratio=statistics.median(ratios),
                ratio_iqr=quartiles(ratios),
                cpu_ratio=statistics.median(r.cpu_ms_per_request / b.cpu_ms_per_request for r, b in zip(own, base)),
            ))
    return results


def scrape_cost(found: dict[str, JupyterServerProcess], scrapes: int) -> list[ServerScrape]:
    results = []
    for name, server in found.items():
        times, text = [], ""
        for _ in range(scrapes):
            start = time.perf_counter()
            text = server.metrics_text()
            times.append(time.perf_counter() - start)
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        results.append(ServerScrape(name, series, len(text.encode()), statistics.median(times) * 1e3))
    return results


def memory(workdir: Path, found: dict[str, JupyterServerProcess], requests: int, steps: int) -> list[MemoryResult]:
    """Mixed load on both servers at once: a warm-up, then ``requests`` more in ``steps`` steps."""
    requests_lua = ", ".join(f'{{"{method}", "{found[WITH].base_url}{path}"}}' for method, path in MIXED)
    script = workdir / "mixed.lua"
    script.write_text(_WRK_MIXED % {"requests": requests_lua} + _WRK_DONE)
    results = {name: MemoryResult(name) for name in found}
    served = dict.fromkeys(found, 0)
    warm_up = _mixed_load(script, found, dict.fromkeys(found, 3))
    rate = {name: result.rps for name, result in warm_up.items()}
    for step in range(steps + 1):
        goal = requests * step // steps
        # wrk runs for a time, not a count: aim at the goal with the last rate
        # seen, and go on until it is reached.
        while behind := {name: goal - n for name, n in served.items() if n < goal}:
            ran = _mixed_load(script, found, {name: math.ceil(left / rate[name]) for name, left in behind.items()})
            for name, result in ran.items():
                rate[name] = result.rps
                served[name] += result.requests
        for name, server in found.items():
            assert server.process is not None
            series, ours = scrape_series(server)
            results[name].requests.append(served[name])
            results[name].rss_mib.append(rss_mib(server.process.pid))
            results[name].series.append(series)
            results[name].our_series.append(ours)
    return list(results.values())


def _mixed_load(script: Path, found: dict[str, JupyterServerProcess], seconds: dict[str, int]) -> dict[str, WrkResult]:
    """wrk with ``script`` against the named servers at once, each for its own time."""
    running = {
        name: subprocess.Popen(
            _wrk_command(script, found[name].url(""), max(1, s)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        for name, s in seconds.items()
    }
    results = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=seconds[name] + 60)
        results[name] = _parse_wrk(output)
        if results[name].errors:
            raise RuntimeError(f"{name}: {results[name].errors} socket errors under the mixed load")
    return results


def run(rounds: int = 40, seconds: float = 1, memory_requests: int = 100_000, steps: int = 4) -> EndToEndResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run benchmarks/run, which installs it (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="rucio-metrics-bench-"))
    try:
        with RucioStandIn() as rucio, servers(rucio) as found:
            results = throughput(workdir, found, rounds, seconds)
            scrapes = scrape_cost(found, 20)
            mem = memory(workdir, found, memory_requests, steps)
        return EndToEndResult(results, mem, scrapes, rounds, seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    print(run(rounds=2, seconds=2, memory_requests=4000, steps=2))
