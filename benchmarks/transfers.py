"""What watching transfers costs: a scrape of the transfer families, and reading a finished child's result.

Three numbers, in-process:

- a scrape renders the transfer families from memory: the milliseconds per
  render with every series of three Rucio instances populated, and the files
  opened during those renders (counted by an audit hook: it must be 0);
- reading one finished download's result (``.donefile`` listing ``files``
  real files, each one ``stat``-ed for its size), in milliseconds;
- what those reads do to the IOLoop that serves requests and scrapes: the
  lateness of a 1 ms timer on it while a worker thread reads results back to
  back, against the same loop without reads (medians and maxima).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from tornado.ioloop import IOLoop, PeriodicCallback

from rucio_metrics.transfer_results import FAILED, KILLED, SUCCEEDED, Result, download_result
from rucio_metrics.transfers import DIRECTIONS, TransferMetrics

INSTANCES = ("atlas", "cms", "escape")
REASONS = ("NoFilesDownloaded", "NotAllFilesDownloaded", "InsufficientAccountLimit", "not_started", "other")


@dataclass
class TransferCost:
    series: int
    ms_per_render: float
    opens_during_renders: int
    files_per_result: int
    ms_per_result: float
    lag_idle_ms: tuple[float, float]  # median, max lateness of a 1 ms timer, no reads
    lag_reading_ms: tuple[float, float]  # the same while results are read
    results_read: int


def populated_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = TransferMetrics.on(registry, "histogram")
    metrics.precreate(INSTANCES)
    for instance in INSTANCES:
        for direction in DIRECTIONS:
            for outcome in (SUCCEEDED, FAILED, KILLED):
                metrics.start(instance, direction)
                metrics.end(instance, direction, Result(outcome, "other" if outcome == FAILED else None, 10), 42.0)
            for reason in REASONS:
                metrics.failures.labels(instance, direction, reason).inc()
    return registry


def render_cost(renders: int) -> tuple[int, float, int]:
    """(series, median ms per render, files opened during the renders)."""
    registry = populated_registry()
    series = sum(len(family.samples) for family in registry.collect())
    opens = 0
    counting = False

    def audit(event: str, args: object) -> None:
        nonlocal opens
        if counting and event == "open":
            opens += 1

    sys.addaudithook(audit)  # cannot be removed: it only counts while ``counting``
    times = []
    for _ in range(renders):
        counting = True
        start = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - start)
        counting = False
    return series, statistics.median(times) * 1000, opens


def finished_download(folder: Path, files: int) -> Path:
    """A download folder as a successful child leaves it: the files and the .donefile naming them."""
    data = folder / "user.alice"
    data.mkdir(parents=True)
    paths = {}
    for i in range(files):
        path = data / f"file{i}.root"
        path.write_bytes(b"x" * 100)
        paths[f"user.alice:file{i}.root"] = str(path)
    (folder / ".donefile").write_text(json.dumps({"paths": paths}))
    return folder


def loop_lateness(seconds: float, read: Path | None) -> tuple[tuple[float, float], int]:
    """Median and maximum lateness (ms) of a 1 ms timer on an IOLoop; results read meanwhile, with ``read``."""
    loop = IOLoop(make_current=False)
    lateness: list[float] = []
    reads = 0
    stop = threading.Event()
    expected = [0.0]

    def reader() -> None:
        nonlocal reads
        while read is not None and not stop.is_set():
            download_result(str(read), frozenset())
            reads += 1

    def tick() -> None:
        now = time.perf_counter()
        if expected[0]:
            lateness.append(max(0.0, now - expected[0]) * 1000)
        expected[0] = now + 0.001

    thread = threading.Thread(target=reader)

    async def main() -> None:
        timer = PeriodicCallback(tick, 1)
        timer.start()
        thread.start()
        await asyncio.sleep(seconds)
        timer.stop()
        stop.set()

    loop.run_sync(main)
    thread.join()
    loop.close()
    return (statistics.median(lateness), max(lateness)), reads


def measure(renders: int = 200, files: int = 1000, reads: int = 20, seconds: float = 2.0) -> TransferCost:
    series, ms_render, opens = render_cost(renders)
    with tempfile.TemporaryDirectory(prefix="rucio-metrics-bench-") as tmp:
        folder = finished_download(Path(tmp) / "download", files)
        times = []
        for _ in range(reads):
            start = time.perf_counter()
            result = download_result(str(folder), frozenset())
            times.append(time.perf_counter() - start)
        assert result == Result(SUCCEEDED, bytes=100 * files)
        idle, _ = loop_lateness(seconds, None)
        busy, read_count = loop_lateness(seconds, folder)
    return TransferCost(series, ms_render, opens, files, statistics.median(times) * 1000, idle, busy, read_count)
