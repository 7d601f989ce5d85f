"""The transfer watcher reads a child's result once the child has exited, not when its sentinel closes.

A child's sentinel (a pipe) closes with its files, a moment before the kernel
has its exit status, and earlier still if the child closes its files itself.
Read then, a child killed by a signal has no exit code yet and would count as
a failure. Here a real child closes its files, lives on a little, then dies by
SIGKILL: the watcher must count it killed. (The suite's real uploads killed
with SIGKILL met the same race now and then on a loaded machine.)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

from prometheus_client import CollectorRegistry

from rucio_metrics.transfer_results import FAILED, KILLED, Result
from rucio_metrics.transfers import UPLOAD, Transfer, TransferMetrics, TransferWatcher

from .support.own_loop import run_on_own_loop

LIVES_ON_SECONDS = 0.5


def closes_its_files_then_dies_by_a_signal() -> None:
    os.closerange(3, 65536)  # the sentinel's write end among them: the parent sees it close now
    time.sleep(LIVES_ON_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


def as_an_upload_reads_it(process: multiprocessing.process.BaseProcess) -> Result:
    # What the upload reader concludes from a job row left unmarked: the exit code decides.
    exitcode = process.exitcode
    return Result(KILLED) if exitcode is not None and exitcode < 0 else Result(FAILED, "other")


def test_a_child_is_read_once_it_has_exited_not_when_its_sentinel_closed() -> None:
    registry = CollectorRegistry()
    watcher = TransferWatcher(TransferMetrics.on(registry))
    labels = {"rucio_instance": "atlas", "direction": UPLOAD}

    def ended(outcome: str) -> float:
        return registry.get_sample_value("rucio_jupyterlab_transfers_ended_total", {**labels, "outcome": outcome}) \
            or 0.0

    async def watch_a_child() -> None:
        process = multiprocessing.get_context("fork").Process(target=closes_its_files_then_dies_by_a_signal)
        process.start()
        transfer = Transfer("atlas", UPLOAD, as_an_upload_reads_it, start=time.perf_counter())
        watcher.metrics.start("atlas", UPLOAD)
        watcher._watch(process, transfer)
        while not (ended("killed") or ended("failed")):
            await asyncio.sleep(0.01)

    run_on_own_loop(watch_a_child, timeout=30)
    assert (ended("killed"), ended("failed")) == (1.0, 0.0)
    assert registry.get_sample_value("rucio_jupyterlab_transfers_in_progress", labels) == 0.0
