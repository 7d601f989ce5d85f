"""What rucio_metrics costs: run every benchmark and print a markdown report.

    scripts/bootstrap && .venv/bin/python -m benchmarks.run [--quick] [--in-process-only]

(``benchmarks/run`` does the same and installs ``wrk`` when it is missing.)
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from . import hot_path, scrape, time_to_data, transfers

if TYPE_CHECKING:  # end_to_end needs the test helpers; imported only when run
    from .end_to_end import EndToEndResult, ServerScrape

# The targets; the report prints each next to its measurement.
ADDED_US_TARGET = 3.0
TIME_TO_DATA_US_TARGET = 2.0  # per `did` poll and per make-available
TIME_TO_DATA_BYTES_TARGET = 1024  # per tracked wait
THROUGHPUT_RATIO_TARGET = 0.98
# Resident memory moves by a fraction of a MiB on its own (allocator arenas,
# caches of jupyter_server); growth beyond the plain server's by more than
# this, or any new series, would be memory that follows the request count.
MEMORY_SLACK_MIB = 1.0


@dataclass
class Settings:
    hot_rounds: int
    hot_requests: int
    profiled_requests: int
    renders: int
    e2e_rounds: int
    e2e_seconds: float
    memory_requests: int
    memory_steps: int
    time_to_data_calls: int


FULL = Settings(30, 1000, 500, 200, 40, 1, 100_000, 4, 20_000)
QUICK = Settings(5, 200, 100, 20, 2, 1, 4_000, 2, 2_000)


def progress(message: str) -> None:
    print(f"[benchmarks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    packages = ", ".join(
        f"{name} {_version(name)}"
        for name in ("tornado", "prometheus_client", "jupyter_server", "rucio-jupyterlab")
    )
    return (
        f"{os.cpu_count()} x {model}, Linux {platform.release()}, Python {platform.python_version()}; {packages}; "
        f"load average at the start {os.getloadavg()[0]:.1f}"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def holds(ok: bool) -> str:
    return "yes" if ok else "**no**"


def hot_path_section(results: list[hot_path.HotPathResult], settings: Settings) -> str:
    rows = [
        [r.name, f"{r.us_per_request:.1f}", f"{r.added_us:+.1f}", f"{r.ratio:.3f}",
         f"{r.calls_per_request:.0f}", f"{r.added_calls:+.0f}"]
        for r in results
    ]
    return (
        f"### In-process hot path\n\nGET on a plain Tornado handler through Tornado's server path, no sockets; "
        f"{settings.hot_rounds} alternating rounds x {settings.hot_requests} requests per variant, CPU time, "
        f"medians; \"added\" is the median of each round's difference to plain; calls are the profiler's "
        f"call + c_call events per request (deterministic).\n\n"
        + table(["variant", "CPU µs/request", "added µs", "x plain", "calls/request", "added calls"], rows)
    )


def scrape_section(results: list[scrape.ScrapeResult], server_scrapes: list[ServerScrape]) -> str:
    rows = [
        [f"rucio_metrics families only, {r.latency_metric}", str(r.series), f"{r.bytes:,}", f"{r.ms_per_render:.2f}"]
        for r in results
    ]
    rows += [
        [f"whole `/metrics` over HTTP, server {s.server}", str(s.series), f"{s.bytes:,}", f"{s.ms_per_scrape:.2f}"]
        for s in server_scrapes
    ]
    return (
        f"### Scrape cost\n\n`generate_latest` on a registry with all {len(scrape.ROUTES)} routes x their verbs x "
        f"{len(scrape.STATUSES)} statuses populated (median ms); then the real servers' whole endpoint after the "
        f"end-to-end runs (their series are only those traffic created).\n\n"
        + table(["what is rendered", "series", "bytes", "ms per render"], rows)
    )


def transfers_section(cost: transfers.TransferCost) -> str:
    rows = [
        ["render the transfer families (3 instances, every outcome and reason, histogram)",
         f"{cost.ms_per_render:.2f} ms, {cost.series} series, {cost.opens_during_renders} files opened"],
        [f"read one finished download's result ({cost.files_per_result:,} files, each stat-ed)",
         f"{cost.ms_per_result:.2f} ms, on the worker thread"],
        ["1 ms timer on the IOLoop, no reads: lateness median / max",
         f"{cost.lag_idle_ms[0]:.2f} / {cost.lag_idle_ms[1]:.2f} ms"],
        [f"the same while {cost.results_read} results are read back to back",
         f"{cost.lag_reading_ms[0]:.2f} / {cost.lag_reading_ms[1]:.2f} ms"],
    ]
    return (
        "### Transfers\n\nA scrape renders numbers held in memory; the files and the database a finished child "
        "left are read once per transfer, on a worker thread. Medians unless said.\n\n"
        + table(["what", "measured"], rows)
    )


def time_to_data_section(costs: list[time_to_data.TimeToDataCost], memory: time_to_data.MemoryCost,
                         settings: Settings) -> str:
    rows = [[c.operation, f"{c.plain_us:.2f}", f"{c.added_us:+.2f}", f"{c.added_calls:+.0f}"] for c in costs]
    return (
        f"### Time to data\n\nThe replica-mode handler's methods called directly, plain and wrapped, alternating; "
        f"{settings.hot_rounds} rounds x {settings.time_to_data_calls:,} calls, CPU time, medians; \"added\" is the "
        f"median of each round's difference to plain; calls are the profiler's call + c_call events. Memory: "
        f"{memory.bytes_per_wait:.0f} bytes per open wait with {memory.waits:,} open (tracemalloc, the DIDs' "
        f"names included).\n\n"
        + table(["operation", "plain µs/call", "added µs", "added calls"], rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (well under a minute)")
    parser.add_argument("--in-process-only", action="store_true", help="skip the real servers (no wrk needed)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    started = time.monotonic()
    sections = [
        "## rucio_metrics benchmarks" + (" (--quick: numbers are rough)" if args.quick else ""),
        f"Machine: {machine()}.",
    ]
    targets: list[list[str]] = []

    progress("in-process hot path")
    hot = hot_path.run(settings.hot_rounds, settings.hot_requests, settings.profiled_requests)
    sections.append(hot_path_section(hot, settings))
    by_name = {r.name: r for r in hot}
    ours, floor = by_name["rucio_metrics (summary)"], by_name["prometheus_client floor"]
    targets.append([
        f"added CPU per request in-process ≤ {ADDED_US_TARGET:g} µs",
        f"{ours.added_us:.1f} µs ({ours.added_calls:+.0f} calls); prometheus_client's own floor for count + "
        f"latency {floor.added_us:.1f} µs ({floor.added_calls:+.0f} calls)",
        holds(ours.added_us <= ADDED_US_TARGET),
    ])

    progress("scrape cost")
    scrapes = scrape.measure(settings.renders)
    progress("transfers: a scrape of their families, reading a finished child's result, the IOLoop meanwhile")
    transfer_cost = transfers.measure(settings.renders, reads=20, seconds=1.0 if settings is QUICK else 3.0)
    targets.append([
        "a scrape never blocks on disk or database I/O",
        f"files opened during {settings.renders} renders of the transfer families: "
        f"{transfer_cost.opens_during_renders}; a result is read off the IOLoop "
        f"({transfer_cost.ms_per_result:.1f} ms for {transfer_cost.files_per_result:,} files)",
        holds(transfer_cost.opens_during_renders == 0),
    ])
    progress("time to data: a did poll and a make-available with and without it, memory per wait")
    waits, wait_memory = time_to_data.run(settings.hot_rounds, settings.time_to_data_calls)
    worst = max(waits, key=lambda c: c.added_us)
    targets.append([
        f"time to data: added CPU per `did` poll and per make-available ≤ {TIME_TO_DATA_US_TARGET:g} µs",
        f"at most {worst.added_us:.2f} µs ({worst.operation}, {worst.added_calls:+.0f} calls)",
        holds(worst.added_us <= TIME_TO_DATA_US_TARGET),
    ])
    targets.append([
        f"time to data: memory per tracked wait ≤ {TIME_TO_DATA_BYTES_TARGET:,} bytes",
        f"{wait_memory.bytes_per_wait:.0f} bytes with {wait_memory.waits:,} open",
        holds(wait_memory.bytes_per_wait <= TIME_TO_DATA_BYTES_TARGET),
    ])
    server_scrapes: list[ServerScrape] = []

    if not args.in_process_only:
        from . import end_to_end

        # One hash seed for both servers: their dicts and sets then lay out alike.
        os.environ.setdefault("PYTHONHASHSEED", "0")
        progress("end to end: two Jupyter servers, wrk, then the memory load (the longest part)")
        e2e = end_to_end.run(settings.e2e_rounds, settings.e2e_seconds, settings.memory_requests, settings.memory_steps)
        server_scrapes = list(e2e.scrapes)
        sections.append(end_to_end_section(e2e, settings))
        with_ = [t for t in e2e.throughput if t.server == end_to_end.WITH]
        worst = min(with_, key=lambda t: t.ratio)
        targets.append([
            f"end-to-end throughput with rucio_metrics ≥ {THROUGHPUT_RATIO_TARGET:.0%} of without",
            "; ".join(f"{t.target.split()[1]}: {t.ratio:.1%} (server CPU/request {t.cpu_ratio:.1%})" for t in with_),
            holds(worst.ratio >= THROUGHPUT_RATIO_TARGET),
        ])
        mem = {m.server: m for m in e2e.memory}
        w, wo = mem[end_to_end.WITH], mem[end_to_end.WITHOUT]
        flat = w.growth_mib - wo.growth_mib <= MEMORY_SLACK_MIB and len(set(w.our_series)) == 1
        targets.append([
            "memory flat in the request count after warm-up",
            f"{w.growth_mib:+.1f} MiB over {w.requests[-1]:,} requests (without rucio_metrics "
            f"{wo.growth_mib:+.1f} MiB); rucio_metrics series {w.our_series[0]} → {w.our_series[-1]}",
            holds(flat),
        ])
    sections.append(scrape_section(scrapes, server_scrapes))
    sections.append(transfers_section(transfer_cost))
    sections.append(time_to_data_section(waits, wait_memory, settings))
    sections.append("### Targets\n\n" + table(["target", "measured", "holds"], targets))
    sections.append(
        f"Run time: {time.monotonic() - started:.0f} s; load average at the end {os.getloadavg()[0]:.1f} "
        f"(other processes on the machine add noise to the end-to-end numbers)."
    )
    print("\n\n".join(sections))
    return 0


def end_to_end_section(e2e: EndToEndResult, settings: Settings) -> str:
    rows = [
        [t.target, t.server, f"{t.rps:.0f}", f"{t.p50_ms:.1f}", f"{t.p99_ms:.1f}", f"{t.cpu_ms_per_request:.2f}",
         f"{t.ratio:.1%} ({t.ratio_iqr[0]:.0%}-{t.ratio_iqr[1]:.0%})", f"{t.cpu_ratio:.1%}"]
        for t in e2e.throughput
    ]
    memory_rows = [
        [m.server, f"{m.rss_mib[0]:.1f}", " → ".join(f"{r:.1f}" for r in m.rss_mib[1:]), f"{m.growth_mib:+.1f}",
         f"{m.requests[-1]:,}", " → ".join(str(n) for n in sorted(set(m.series), key=m.series.index)),
         str(m.our_series[-1])]
        for m in e2e.memory
    ]
    return (
        f"### End to end\n\nTwo `jupyter server` processes with rucio-jupyterlab (one with rucio_metrics), a "
        f"stand-in Rucio server for the async route, `wrk -t1 -c8` on loopback; {e2e.rounds} alternating rounds of "
        f"{e2e.seconds_per_run:g} s per route and server; medians. Ratios are with / without in the same round: "
        f"throughput, and the server's own CPU per request (from /proc), which does not depend on how much CPU the "
        f"server got.\n\n"
        + table(["route", "server", "req/s", "p50 ms", "p99 ms", "server CPU ms/request", "req/s ratio (IQR)",
                 "CPU/request ratio"], rows)
        + f"\n\n### Memory\n\nBoth servers at once under a mixed load (200, 400 from `prepare()`, GET and POST, "
        f"unknown routes; every URL different), resident memory (VmRSS) after a warm-up and after each of "
        f"{settings.memory_steps} steps.\n\n"
        + table(["server", "RSS after warm-up MiB", "RSS after each step MiB", "growth MiB", "requests",
                 "series on /metrics", "rucio_metrics series"], memory_rows)
    )


if __name__ == "__main__":
    sys.exit(main())
