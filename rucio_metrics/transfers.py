"""Transfers: the downloads and uploads users start from JupyterLab, watched from the server's process.

rucio-jupyterlab moves data in ``multiprocessing`` children it starts and
never joins: one per DID made available in download mode, one per uploaded
file. None of it passes the routes or ``RucioAPI``. rucio_metrics gives the
two modules that start them (``mode_handlers.download`` and
``handlers.upload``) a ``multiprocessing`` of their own whose ``Process``
makes the same standard ``Process`` and remembers it. Nothing runs in the
child and nothing is pickled with it, so ``fork``, ``spawn`` and
``forkserver`` behave alike. After the request that started it:

- a process that never started (its spawn failed, which upstream reports
  as success for uploads) ends ``failed`` with reason ``not_started``;
- otherwise the child's sentinel (a pipe that closes when it exits, for any
  start method) is watched on the IOLoop; when it fires, a worker thread
  reads what the child left (``transfer_results``) and records the end.

Each transfer is counted once, in progress always comes back down (a child
killed with SIGKILL ends ``killed``), and only children started by this
process are counted, so a restart never counts old results again.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import logging
import multiprocessing
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from tornado.ioloop import IOLoop

from .faults import FAULTS
from .metrics import OncePerRegistry
from .outbound import configured_instances
from .transfer_results import (
    FAILED,
    KILLED,
    NOT_STARTED,
    OUTCOMES,
    Result,
    download_result,
    rucio_exception_names,
    upload_result,
)

TRANSFER_PREFIX = "rucio_jupyterlab_transfer"
DOWNLOAD, UPLOAD = "download", "upload"
DIRECTIONS = (DOWNLOAD, UPLOAD)
# A transfer takes seconds to hours: buckets of their own, whatever the request buckets are.
TRANSFER_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)

# The modules of rucio-jupyterlab 41 that start transfer children, each with ``import multiprocessing as mp``.
STARTING_MODULES = ("rucio_jupyterlab.mode_handlers.download", "rucio_jupyterlab.handlers.upload")
DOWNLOAD_TARGET = "DownloadModeHandler.background_worker"
UPLOAD_TARGET = "RucioFileUploader.start_upload_target"

log = logging.getLogger("rucio_metrics")


class TransferObserver(Protocol):
    """What else a transfer's start and end are (time_to_data.py: a download is a user's wait for data)."""

    def transfer_started(self, instance: str, direction: str) -> None: ...

    def transfer_ended(self, instance: str, direction: str, outcome: str, seconds: float,
                       fault: str | None = None) -> None: ...


class TransferMetrics(OncePerRegistry):
    """The transfer families on one registry; use ``TransferMetrics.on(registry)``.

    ``observers`` are told of every start and end, after the families counted it.
    """

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        labels = ["rucio_instance", "direction"]
        self.latency_metric = latency_metric
        self.started = Counter(
            TRANSFER_PREFIX + "s_started",
            "Downloads and uploads started from JupyterLab, by Rucio instance and direction (download, upload).",
            labels, registry=registry,
        )
        self.ended = Counter(
            TRANSFER_PREFIX + "s_ended",
            "Downloads and uploads that ended, by Rucio instance, direction and outcome (succeeded, failed; "
            "killed: the child process exited without leaving a result).",
            [*labels, "outcome"], registry=registry,
        )
        self.failures = Counter(
            TRANSFER_PREFIX + "_failures",
            "Downloads and uploads that failed, by Rucio instance, direction and reason (a Rucio client "
            "exception class, not_started when the child process could not be started, or other).",
            [*labels, "reason"], registry=registry,
        )
        self.failures_by_fault = Counter(
            TRANSFER_PREFIX + "_failures_by_fault",
            "Downloads and uploads that failed, by Rucio instance, direction and whose fault: user (Rucio "
            "refused what the user asked for: no quota, no permission, no such DID, the file exists), service "
            "(any other reason) or unknown (an upload whose cause nothing tells).",
            [*labels, "fault"], registry=registry,
        )
        self.bytes = Counter(
            TRANSFER_PREFIX + "_bytes",
            "Bytes moved by the downloads and uploads that succeeded, by Rucio instance and direction.",
            labels, registry=registry,
        )
        self.in_progress = Gauge(
            TRANSFER_PREFIX + "s_in_progress",
            "Downloads and uploads running now, by Rucio instance and direction.",
            labels, registry=registry,
        )
        duration_help = "Time from a transfer's start to the end of its child process, by Rucio instance, " \
                        "direction and outcome."
        if latency_metric == "histogram":
            self.duration: Summary | Histogram = Histogram(
                TRANSFER_PREFIX + "_duration_seconds", duration_help, [*labels, "outcome"],
                buckets=TRANSFER_BUCKETS, registry=registry,
            )
        else:
            self.duration = Summary(
                TRANSFER_PREFIX + "_duration_seconds", duration_help, [*labels, "outcome"], registry=registry,
            )
        self.observers: list[TransferObserver] = []

    def precreate(self, instances: Iterable[str]) -> None:
        """The series of every configured instance and direction at zero, so rates work from the first one."""
        for instance in instances:
            for direction in DIRECTIONS:
                self.started.labels(instance, direction)
                self.bytes.labels(instance, direction)
                self.in_progress.labels(instance, direction)
                for outcome in OUTCOMES:
                    self.ended.labels(instance, direction, outcome)
                # At zero, as the inbound service failures are: rate() sees a server's first failure. Not
                # "unknown": no rule judges it, so a first one unseen by rate() costs nothing.
                for fault in FAULTS:
                    self.failures_by_fault.labels(instance, direction, fault)

    def start(self, instance: str, direction: str) -> None:
        self.started.labels(instance, direction).inc()
        self.in_progress.labels(instance, direction).inc()
        for observer in self.observers:
            observer.transfer_started(instance, direction)

    def end(self, instance: str, direction: str, result: Result, seconds: float) -> None:
        self.ended.labels(instance, direction, result.outcome).inc()
        fault = result.fault
        if fault is not None:
            self.failures.labels(instance, direction, result.reason or "other").inc()
            self.failures_by_fault.labels(instance, direction, fault).inc()
        if result.bytes:
            self.bytes.labels(instance, direction).inc(result.bytes)
        self.duration.labels(instance, direction, result.outcome).observe(seconds)
        self.in_progress.labels(instance, direction).dec()
        for observer in self.observers:
            observer.transfer_ended(instance, direction, result.outcome, seconds, fault)


@dataclass
class Transfer:
    """One child process rucio-jupyterlab started, and how to read its result once it exited."""

    instance: str
    direction: str
    read_result: Callable[[multiprocessing.process.BaseProcess], Result]
    start: float = 0.0


def describe(target: object, args: Sequence[Any], kwargs: dict[str, Any]) -> Transfer | None:
    """The transfer a ``Process(target=..., args=...)`` of rucio-jupyterlab 41 is, or None for another child."""
    name = getattr(target, "__qualname__", "")
    if name not in (DOWNLOAD_TARGET, UPLOAD_TARGET):
        return None
    call = inspect.signature(target).bind_partial(*args, **kwargs).arguments  # type: ignore[arg-type]
    known = _exception_names()
    if name == DOWNLOAD_TARGET:
        from rucio_jupyterlab.rucio.download import RucioFileDownloader

        namespace = str(call["self"].namespace)
        dest_folder = RucioFileDownloader.get_dest_folder(namespace, call["did"])
        return Transfer(namespace, DOWNLOAD, lambda process: download_result(dest_folder, known))
    namespace = str(call["namespace"])

    def read_upload(process: multiprocessing.process.BaseProcess) -> Result:
        from rucio_jupyterlab.db import get_db
        from rucio_jupyterlab.rucio.upload import LOGFILE_DIR

        jobs = [dict(j) for j in get_db().get_upload_jobs(namespace) if j.get("pid") == process.pid]
        job = max(jobs, key=lambda j: j.get("id") or 0) if jobs else None
        exitcode = process.exitcode
        return upload_result(job, LOGFILE_DIR, exitcode is not None and exitcode < 0, known,
                             crashed=exitcode is not None and exitcode > 0)

    return Transfer(namespace, UPLOAD, read_upload)


_names: frozenset[str] | None = None


def _exception_names() -> frozenset[str]:
    global _names
    if _names is None:
        _names = rucio_exception_names()
    return _names


# How long the reader waits for an ended child's exit status once its sentinel closed.
EXIT_STATUS_SECONDS = 10.0


class TransferWatcher:
    """Counts the transfers whose processes ``ObservedMultiprocessing.Process`` made, until each child exits."""

    def __init__(self, metrics: TransferMetrics) -> None:
        self.metrics = metrics
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rucio_metrics-transfers")
        self._reported = threading.Event()

    def created(self, process: multiprocessing.process.BaseProcess, target: object, args: Sequence[Any],
                kwargs: dict[str, Any]) -> None:
        transfer = describe(target, args, kwargs)
        if transfer is None:
            return
        transfer.start = time.perf_counter()
        self.metrics.start(transfer.instance, transfer.direction)
        # The caller starts the process right after making it, in the same request: look once it returned.
        IOLoop.current().add_callback(self._watch, process, transfer)

    def _watch(self, process: multiprocessing.process.BaseProcess, transfer: Transfer) -> None:
        try:
            if process.pid is None:
                self._end(transfer, Result(FAILED, NOT_STARTED))
                return
            loop = IOLoop.current()

            def exited(fd: int, events: int) -> None:
                loop.remove_handler(fd)
                seconds = time.perf_counter() - transfer.start
                self._reader.submit(self._read, process, transfer, seconds)

            loop.add_handler(process.sentinel, exited, IOLoop.READ)
        except Exception:
            self._report("watching a transfer process failed")
            self._end(transfer, Result(KILLED))

    def _read(self, process: multiprocessing.process.BaseProcess, transfer: Transfer, seconds: float) -> None:
        try:
            # The sentinel closes when the child's files do, a moment before the kernel has its exit
            # status (or earlier, if the child closed it): until the child is reaped, exitcode is None
            # and a child killed by a signal would read as one that failed. This thread may wait.
            process.join(EXIT_STATUS_SECONDS)
            result = transfer.read_result(process)
        except Exception:
            self._report("reading a transfer's result failed")
            result = Result(KILLED)
        self._end(transfer, result, seconds)

    def _end(self, transfer: Transfer, result: Result, seconds: float | None = None) -> None:
        try:
            elapsed = time.perf_counter() - transfer.start if seconds is None else seconds
            self.metrics.end(transfer.instance, transfer.direction, result, elapsed)
        except Exception:
            self._report("recording a transfer's end failed")

    def _report(self, what: str) -> None:
        if not self._reported.is_set():
            self._reported.set()
            log.exception("rucio_metrics: %s; transfers go on as usual (logged once)", what)


class ObservedMultiprocessing(types.ModuleType):
    """``multiprocessing`` for one module of rucio-jupyterlab: the same, except that ``Process`` is watched."""

    def __init__(self, real: types.ModuleType, watcher: TransferWatcher) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real
        self.watcher = watcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Process(self, *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:
        process: multiprocessing.process.BaseProcess = self._real.Process(*args, **kwargs)
        try:
            call = inspect.signature(self._real.Process).bind(*args, **kwargs).arguments
            self.watcher.created(process, call.get("target"), call.get("args", ()), call.get("kwargs") or {})
        except Exception:
            self.watcher._report("counting a transfer's start failed")
        return process


def watch_transfers(metrics: TransferMetrics, server_log: logging.Logger) -> list[str]:
    """Give rucio-jupyterlab's transfer-starting modules a watched ``multiprocessing``; the modules done.

    Idempotent: a module already watched only gets the latest ``metrics``.
    """
    done = []
    for name in STARTING_MODULES:
        module = sys.modules.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except Exception as e:
                server_log.warning("rucio_metrics: transfers started in %s are not measured: %s: %s",
                                   name, type(e).__name__, e)
                continue
        current = getattr(module, "mp", None)
        if isinstance(current, ObservedMultiprocessing):
            current.watcher.metrics = metrics
        elif current is multiprocessing:
            module.mp = ObservedMultiprocessing(multiprocessing, TransferWatcher(metrics))  # type: ignore[attr-defined]
        else:
            server_log.warning("rucio_metrics: %s has changed shape (no `mp` module): its transfers are not measured",
                               name)
            continue
        done.append(name)
    return done


def load_transfers(
    registry: CollectorRegistry, latency_metric: str, config: Any, server_log: logging.Logger,
) -> TransferMetrics | None:
    """Measure rucio-jupyterlab's downloads and uploads; the extension's one call into this module. Never raises."""
    if sys.modules.get("rucio_jupyterlab") is None:
        return None  # not loaded in this server (importing it would create its cache folder in HOME)
    try:
        metrics = TransferMetrics.on(registry, latency_metric)
        done = watch_transfers(metrics, server_log)
        metrics.precreate(configured_instances(config))
    except Exception:
        server_log.warning("rucio_metrics: downloads and uploads are not measured: setting up failed", exc_info=True)
        return None
    if done:
        server_log.info("rucio_metrics: measuring downloads and uploads started in %s", ", ".join(done))
    return metrics
