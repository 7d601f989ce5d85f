"""Time to data: how long users wait for their files after "Make available", and how often they never come.

In replica mode (the hub mounts an RSE) "Make available" creates a
replication rule, and the panel polls the ``did`` route, showing
"Replicating files..." until every file is on the hub's RSE. rucio_metrics
wraps, once and from outside, the two methods of rucio-jupyterlab's
``ReplicaModeHandler`` that do this: ``make_available`` opens a wait for the
DID (or joins the one open), and ``get_did_details``, the answer the panel
polls, ends it the first time it says every file of the DID is ``OK``
(``available``) or the rule ``STUCK`` (``stuck``). A wait nobody looked at
again for ``time_to_data_horizon_seconds`` ends ``unobserved``, its seconds
counted to its last look: the user closed the panel or left. No call to
Rucio is added; a poll of a DID nobody made available costs one dictionary
lookup.

In download mode the wait is the download rucio-jupyterlab starts in a
child process, which ``transfers.py`` already watches (so it needs
``transfers_enabled``): from its start to its end, ``available`` when it
succeeded, ``failed`` when it failed or was killed, ``refused`` when it
failed for the user's reason (Rucio refused what they asked for: judged by
no objective, as a refused make-available starts no wait). rucio-jupyterlab 41
removes its record of a finished download before it looks for one, so every
"Make available" downloads again: each download is a wait of its own
(``already_available`` is for versions that look first).

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> waits = TimeToData.on(registry)
>>> waits.made_available("atlas", REPLICA, "data18", "RAW.dataset", RULE_CREATED, start=waits.clock())
>>> waits.looked("atlas", "data18", "RAW.dataset", [{"status": "REPLICATING"}, {"status": "REPLICATING"}])
>>> registry.get_sample_value(WAITS, {"rucio_instance": "atlas", "mode": "replica"})
1.0
>>> waits.looked("atlas", "data18", "RAW.dataset", [{"status": "OK"}, {"status": "OK"}])
>>> registry.get_sample_value(SECONDS + "_count", {"rucio_instance": "atlas", "mode": "replica",
...                                                "outcome": "available"})
1.0

The families (label values bounded by the configured instances and these
lists):

- ``rucio_jupyterlab_time_to_data_seconds{rucio_instance, mode, outcome}``,
  always a histogram (``BUCKETS``, 10 s to 6 h, one bound at 1800 s for an
  objective such as "95% within 30 minutes"): one observation per wait, when
  it ends. ``outcome``: ``available``, ``stuck``, ``failed`` and ``refused``
  (download mode), ``unobserved`` (replica mode).
- ``rucio_jupyterlab_time_to_data_waits{rucio_instance, mode}``: waits open now.
- ``rucio_jupyterlab_time_to_data_make_available_total{rucio_instance, mode,
  outcome}``: make-available requests. Replica mode: ``rule_created``,
  ``rule_exists`` (Rucio answered DuplicateRule: the wait starts, or goes on),
  ``refused`` (Rucio refused what the user asked for: an unknown DID, no
  quota), ``failed`` (Rucio unreachable or failing, or the extension's own
  error). Download mode: ``download_started``, ``already_available`` (every
  file is on disk: no download, a wait of 0 s), ``failed``.
- ``rucio_jupyterlab_time_to_data_waits_dropped_total``: waits dropped
  unended because ``time_to_data_max_waits`` were open (the one looked at
  least recently goes).

At zero from the start: the dropped counter, and for each configured
instance in its mode the waits gauge and the histograms the objective and the
stuck alert judge (``available`` and ``stuck`` in replica mode, ``available``
and ``failed`` in download mode), so ``rate()`` sees their first wait; every
other series is created by its first event.

A DID made available again while its wait is open joins that wait: it is
counted once, however often the panel polls. A DID already on the hub's RSE
is a wait all the same: it starts at make-available and ends at the first
poll that sees it available, so it counts as about one poll of the panel
(rucio_metrics cannot know without asking Rucio). Open waits live in memory
only: a server restart loses them (never counts one twice; the gauge starts
again at 0).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from tornado.ioloop import PeriodicCallback

from .faults import USER, USER_OUTCOME, USER_OUTCOMES
from .metrics import OncePerRegistry, _created_samples
from .outbound import configured_instance_settings, outcome_of, rule_call_outcome
from .sinks import Sink, Sinks
from .transfer_results import SUCCEEDED
from .transfers import DOWNLOAD, TransferMetrics

PREFIX = "rucio_jupyterlab_time_to_data"
SECONDS = PREFIX + "_seconds"
WAITS = PREFIX + "_waits"
MAKE_AVAILABLE = PREFIX + "_make_available"
DROPPED = PREFIX + "_waits_dropped"

# A wait takes seconds to hours; 1800 s is an objective's bound ("95% within 30 minutes").
BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

REPLICA = "replica"
MODES = (REPLICA, DOWNLOAD)

# Outcomes of a wait (REFUSED too: a download that failed for the user's reason).
AVAILABLE, STUCK, FAILED, UNOBSERVED = "available", "stuck", "failed", "unobserved"
# Outcomes of a make-available request (FAILED too).
RULE_CREATED, RULE_EXISTS, REFUSED = "rule_created", "rule_exists", "refused"
DOWNLOAD_STARTED, ALREADY_AVAILABLE = "download_started", "already_available"

# The outcomes whose histograms exist from the start, by mode.
_PRECREATED = {REPLICA: (AVAILABLE, STUCK), DOWNLOAD: (AVAILABLE, FAILED)}

# The options' defaults (config.RucioMetrics takes them from here), for a TimeToData made without the options.
DEFAULT_HORIZON_SECONDS = 3600.0
DEFAULT_MAX_WAITS = 10_000

# rucio-jupyterlab 41's (module, class) whose methods are wrapped, by mode.
MODE_HANDLERS = {
    REPLICA: ("rucio_jupyterlab.mode_handlers.replica", "ReplicaModeHandler"),
    DOWNLOAD: ("rucio_jupyterlab.mode_handlers.download", "DownloadModeHandler"),
}
# Statuses of get_did_details' files.
STATUS_OK, STATUS_STUCK = "OK", "STUCK"

_MARK = "_rucio_metrics_time_to_data"

log = logging.getLogger("rucio_metrics")

# (rucio_instance, scope, name) of a DID waited for.
_Key = tuple[str, str, str]


def verdict(files: object) -> str | None:
    """``available``, ``stuck``, or None (still waiting) for a ``get_did_details`` answer.

    Upstream gives every file without a replica on the hub's RSE the one status
    of the DID's rule, so the first file not ``OK`` decides: a poll looks at
    the files up to that one, not at every file of a DID on its way.
    """
    if not isinstance(files, list) or not files:
        return None
    for file in files:
        status = file.get("status") if isinstance(file, dict) else None
        if status != STATUS_OK:
            return STUCK if status == STATUS_STUCK else None
    return AVAILABLE


def rule_outcome(result: object) -> str:
    """The make-available outcome of what ``ReplicaModeHandler.make_available`` returned (Rucio's answer):
    the rule call's outcome, but for the rule that exists already, which the user waits for all the same."""
    if isinstance(result, dict) and result.get("ExceptionClass") == "DuplicateRule":
        return RULE_EXISTS
    return {"2xx": RULE_CREATED, USER_OUTCOME: REFUSED}.get(rule_call_outcome(result), FAILED)


def raised_outcome(error: BaseException) -> str:
    """The make-available outcome of a call that raised: Rucio's refusal (4xx) or a failure."""
    return REFUSED if outcome_of(error) in USER_OUTCOMES else FAILED


class TimeToData(OncePerRegistry):
    """The time-to-data families on one registry, and the waits open now; use ``TimeToData.on(registry)``.

    Replica-mode calls run in rucio-jupyterlab's thread pool and on the
    IOLoop, downloads end on a worker thread: one lock guards the waits and
    the plain numbers behind the make-available, waits and dropped families,
    which this object, a collector, turns into families when the registry is
    scraped (as ``metrics.Metrics`` does, so a request pays no metric object's
    lock and calls). The histogram is prometheus_client's: it is observed once
    per wait, when the wait ends.
    """

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        # Always a histogram with buckets of its own, whatever the request durations are.
        self.seconds = Histogram(
            SECONDS,
            "Time users waited for their data, from the make-available that created (or found) the replication "
            "rule to the first answer of the did route that showed every file available or the rule stuck "
            "(replica mode), or from a download's start to its end (download mode); by Rucio instance, mode and "
            "outcome (available, stuck, failed; refused: the download failed for the user's reason; unobserved: "
            "nobody looked again within the horizon, counted to the last look).",
            ["rucio_instance", "mode", "outcome"], buckets=BUCKETS, registry=registry,
        )
        self.horizon = DEFAULT_HORIZON_SECONDS
        self.max_waits = DEFAULT_MAX_WAITS
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()
        # Replica mode's open waits, [start, last look], the one looked at least recently first.
        self._open: OrderedDict[_Key, list[float]] = OrderedDict()
        # The collector's numbers, in the order their series were created: count and creation time.
        self._made: dict[tuple[str, str, str], list[float]] = {}
        self._waiting: dict[tuple[str, str], int] = {}
        self._dropped = 0
        self._dropped_created = time.time()
        self._histograms: dict[tuple[str, str, str], Any] = {}
        self._instance_names: dict[str, str] = {}
        self._timer: PeriodicCallback | None = None
        self._reported = threading.Event()
        registry.register(self)

    def configure(self, horizon: float, max_waits: int) -> None:
        """The options of the latest load."""
        self.horizon = horizon
        self.max_waits = max_waits
        if self._timer is not None:
            self._timer.callback_time = self.sweep_ms()

    def sweep_ms(self) -> float:
        """How often open waits are expired without traffic: a quarter of the horizon, 1 s to 60 s."""
        return min(max(self.horizon / 4, 1.0), 60.0) * 1000

    def precreate(self, instances: Iterable[tuple[str, str]]) -> None:
        """For each (instance, mode): the histograms of the outcomes the objective judges, and the waits gauge, at zero.

        A series born with its first observation hides that one from ``rate()``: the first rule stuck on
        a server would then raise no alert. ``unobserved`` (judged by nothing) appears on first use.
        """
        for instance, mode in instances:
            for outcome in _PRECREATED[mode]:
                self._histogram(instance, mode, outcome)
            with self._lock:
                self._waiting.setdefault((instance, mode), 0)

    @property
    def open_waits(self) -> int:
        return len(self._open)

    # -- what the wrapped methods report ---------------------------------------------------------

    def made_available(self, instance: str, mode: str, scope: str, name: str, outcome: str, start: float) -> None:
        """A make-available request that ended with ``outcome``; ``start`` is when it began (``clock()``)."""
        # One string per instance, not one per wait: the key of every wait holds it.
        instance = self._instance_names.get(instance) or self._instance_names.setdefault(instance, instance)
        ended: list[tuple[_Key, list[float]]] = []
        with self._lock:
            made = self._made.get((instance, mode, outcome))
            if made is None:
                made = self._made[(instance, mode, outcome)] = [0, time.time()]
            made[0] += 1
            if outcome in _STARTING:
                ended = self._open_wait((instance, scope, name), start)
        for (ended_instance, _, _), (begun, last) in ended:
            self._histogram(ended_instance, REPLICA, UNOBSERVED).observe(last - begun)
        if outcome == ALREADY_AVAILABLE:
            self._histogram(instance, mode, AVAILABLE).observe(0.0)
        if outcome in _STARTING and self._timer is None:
            self._start_sweeping()

    def looked(self, instance: str, scope: str, name: str, files: object) -> None:
        """An answer of ``get_did_details`` (None: it raised): may end the DID's wait."""
        key = (instance, scope, name)
        if key not in self._open:
            return
        outcome = verdict(files)
        now = self.clock()
        with self._lock:
            wait = self._open.get(key)
            if wait is None:
                return
            start, last = wait
            if now - last > self.horizon:
                outcome, seconds = UNOBSERVED, last - start
            elif outcome is None:
                wait[1] = now
                self._open.move_to_end(key)
                return
            else:
                seconds = now - start
            del self._open[key]
            self._waiting[(key[0], REPLICA)] -= 1
        self._histogram(key[0], REPLICA, outcome).observe(seconds)

    def expire(self) -> None:
        """End every wait nobody looked at within the horizon ``unobserved`` (the IOLoop runs this periodically)."""
        try:
            with self._lock:
                ended = self._pop_expired(self.clock())
            for (instance, _, _), (start, last) in ended:
                self._histogram(instance, REPLICA, UNOBSERVED).observe(last - start)
        except Exception:
            self._report("expiring waits for data failed")

    def transfer_started(self, instance: str, direction: str) -> None:
        """A download started: download mode's wait (``transfers.TransferObserver``)."""
        if direction == DOWNLOAD:
            _download.started = True
            with self._lock:
                self._waiting[(instance, DOWNLOAD)] = self._waiting.get((instance, DOWNLOAD), 0) + 1

    def transfer_ended(self, instance: str, direction: str, outcome: str, seconds: float,
                       fault: str | None = None) -> None:
        """A download ended: ``available`` if it succeeded, ``refused`` if it failed for the user's reason
        (``fault``), else ``failed`` (it failed otherwise or was killed)."""
        if direction == DOWNLOAD:
            try:
                with self._lock:
                    # Never below 0: a download started before these families observed transfers (a later
                    # load turned time to data on) ends here without having been counted.
                    self._waiting[(instance, DOWNLOAD)] = max(self._waiting.get((instance, DOWNLOAD), 0) - 1, 0)
                ended = AVAILABLE if outcome == SUCCEEDED else REFUSED if fault == USER else FAILED
                self._histogram(instance, DOWNLOAD, ended).observe(seconds)
            except Exception:
                self._report("recording a download's end failed")

    # -- the waits; the caller holds the lock ------------------------------------------------------

    def _open_wait(self, key: _Key, start: float) -> list[tuple[_Key, list[float]]]:
        """Open a wait for ``key``, or join the one open; the waits that ended unobserved meanwhile."""
        wait = self._open.get(key)
        if wait is not None:  # made available again while it waits: the same wait, looked at now
            # A poll that ended while this request waited for Rucio looked later than its start.
            wait[1] = max(wait[1], start)
            self._open.move_to_end(key)
            return []
        ended = []
        if len(self._open) >= self.max_waits:
            # The least recently looked at go first: those past the horizon end, then the cap drops.
            ended = self._pop_expired(start)
            while len(self._open) >= self.max_waits:
                (instance, _, _), _ = self._open.popitem(last=False)
                self._waiting[(instance, REPLICA)] -= 1
                self._dropped += 1
        self._open[key] = [start, start]
        self._waiting[(key[0], REPLICA)] = self._waiting.get((key[0], REPLICA), 0) + 1
        return ended

    def _pop_expired(self, now: float) -> list[tuple[_Key, list[float]]]:
        """Remove and return the waits whose last look is older than the horizon."""
        ended = []
        while self._open:
            key, wait = next(iter(self._open.items()))
            if now - wait[1] <= self.horizon:
                break
            del self._open[key]
            self._waiting[(key[0], REPLICA)] -= 1
            ended.append((key, wait))
        return ended

    def _start_sweeping(self) -> None:
        """Expire waits from the IOLoop, so the gauge comes down without traffic; started by the first wait."""
        if asyncio._get_running_loop() is None:
            return  # no loop on this thread (in-process callers): waits expire when touched or over the cap
        with self._lock:
            if self._timer is not None:
                return
            self._timer = PeriodicCallback(self.expire, self.sweep_ms())
        self._timer.start()

    def _histogram(self, instance: str, mode: str, outcome: str) -> Any:
        key = (instance, mode, outcome)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms.setdefault(key, self.seconds.labels(instance, mode, outcome))
        return child

    # -- the collector -----------------------------------------------------------------------------

    def _families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                MAKE_AVAILABLE,
                "Make-available requests, by Rucio instance, mode and outcome (rule_created, rule_exists, refused, "
                "download_started, already_available, failed).",
                labels=("rucio_instance", "mode", "outcome"),
            ),
            GaugeMetricFamily(
                WAITS, "Waits for data open now (made available, not yet available), by Rucio instance and mode.",
                labels=("rucio_instance", "mode"),
            ),
            CounterMetricFamily(
                DROPPED, "Waits for data dropped unended because time_to_data_max_waits were open.", labels=(),
            ),
        )

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry reserves their names, so a second registration raises."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The families with their samples, as prometheus_client's Counter and Gauge would give them."""
        created = _created_samples()
        made, waiting, dropped = self._families()
        with self._lock:
            made_now = [(labels, count, when) for labels, (count, when) in self._made.items()]
            waiting_now = list(self._waiting.items())
            dropped_now = self._dropped
        for labels, count, when in made_now:
            made.add_metric(labels, float(count), when if created else None)
        for instance_mode, open_now in waiting_now:
            waiting.add_metric(instance_mode, float(open_now))
        dropped.add_metric((), float(dropped_now), self._dropped_created if created else None)
        yield made
        yield waiting
        yield dropped

    def _report(self, what: str) -> None:
        if not self._reported.is_set():
            self._reported.set()
            log.exception("rucio_metrics: %s; requests are served as usual (logged once)", what)


# Make-available outcomes that start a wait (or find one open) in replica mode.
_STARTING = frozenset({RULE_CREATED, RULE_EXISTS})


_sinks: Sinks[TimeToData] = Sinks()


def instrument_mode_handler(handler_class: type, mode: str, waits: TimeToData) -> tuple[list[str], list[str]]:
    """Wrap ``handler_class``'s methods to record into ``waits``: in replica mode ``make_available`` and
    ``get_did_details``, in download mode ``make_available`` (the download itself is ``transfers.py``'s).

    Returns (newly wrapped, not found) method names; when one is not found,
    none is wrapped (half the methods would open waits nothing ends).
    Idempotent: a method already wrapped is left alone and records into the
    latest ``waits``.
    """
    wrappers = _REPLICA_WRAPPERS if mode == REPLICA else _DOWNLOAD_WRAPPERS
    with _sinks.lock:
        sink = _sinks.moved_to(handler_class, waits)
        functions = {method: inspect.getattr_static(handler_class, method, None) for method in wrappers}
        missing = [method for method, function in functions.items()
                   if not getattr(function, _MARK, False) and not inspect.isfunction(function)]
        if missing:
            return [], missing
        wrapped = []
        for method, function in functions.items():
            if getattr(function, _MARK, False):
                continue
            replacement = functools.wraps(function)(wrappers[method](function, sink))
            setattr(replacement, _MARK, True)
            setattr(handler_class, method, replacement)
            wrapped.append(method)
    return wrapped, []


def _replica_make_available(function: Callable[..., Any], sink: Sink[TimeToData]) -> Callable[..., Any]:
    def make_available(self: Any, scope: str, name: str, *args: Any, **kwargs: Any) -> Any:
        waits = sink.target
        start = waits.clock()
        try:
            result = function(self, scope, name, *args, **kwargs)
        except BaseException as error:
            _record(waits, self, REPLICA, scope, name, start, raised_outcome, error)
            raise
        _record(waits, self, REPLICA, scope, name, start, rule_outcome, result)
        return result

    return make_available


def _looked_at(function: Callable[..., Any], sink: Sink[TimeToData]) -> Callable[..., Any]:
    def get_did_details(self: Any, scope: str, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = function(self, scope, name, *args, **kwargs)
        except BaseException:
            _look(sink.target, self, scope, name, None)  # the user looked, though nothing was shown
            raise
        _look(sink.target, self, scope, name, result)
        return result

    return get_did_details


# Set by a download's start (TimeToData.transfer_started), which runs inside make_available on its thread.
_download = threading.local()


def _download_make_available(function: Callable[..., Any], sink: Sink[TimeToData]) -> Callable[..., Any]:
    def make_available(self: Any, scope: str, name: str, *args: Any, **kwargs: Any) -> Any:
        waits = sink.target
        _download.started = False
        start = waits.clock()
        try:
            result = function(self, scope, name, *args, **kwargs)
        except BaseException as error:
            # A download that started before the error is a wait all the same: its end is the wait's.
            if _download.started:
                _record(waits, self, DOWNLOAD, scope, name, start, str, DOWNLOAD_STARTED)
            else:
                _record(waits, self, DOWNLOAD, scope, name, start, raised_outcome, error)
            raise
        _record(waits, self, DOWNLOAD, scope, name, start, str,
                DOWNLOAD_STARTED if _download.started else ALREADY_AVAILABLE)
        return result

    return make_available


_REPLICA_WRAPPERS = {"make_available": _replica_make_available, "get_did_details": _looked_at}
_DOWNLOAD_WRAPPERS = {"make_available": _download_make_available}


def _record(waits: TimeToData, handler: Any, mode: str, scope: str, name: str, start: float,
            outcome_of_call: Callable[[Any], str], returned_or_raised: object) -> None:
    # Never lets a recording failure change what make_available returned or raised.
    try:
        outcome = outcome_of_call(returned_or_raised)
        waits.made_available(handler.namespace, mode, scope, name, outcome, start)
    except Exception:
        waits._report("recording a make-available failed")


def _look(waits: TimeToData, handler: Any, scope: str, name: str, files: object) -> None:
    try:
        waits.looked(handler.namespace, scope, name, files)
    except Exception:
        waits._report("recording a look at a DID failed")


def configured_modes(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, mode) of each Rucio instance in the server's ``c.RucioConfig.instances`` (mode: replica unless set)."""
    found = []
    for name, settings in configured_instance_settings(config):
        mode = settings.get("mode")
        found.append((name, mode if isinstance(mode, str) and mode in MODES else REPLICA))
    return found


def load_time_to_data(
    registry: CollectorRegistry,
    horizon: float,
    max_waits: int,
    transfers: TransferMetrics | None,
    config: Mapping[str, Any],
    server_log: logging.Logger,
) -> TimeToData | None:
    """Measure users' waits for data; the extension's one call into this module. Never raises.

    ``transfers``: the download watcher's metrics, or None when downloads are
    not watched (then download mode's waits are not measured).
    """
    if sys.modules.get("rucio_jupyterlab") is None:
        return None  # not loaded in this server (importing it would create its cache folder in HOME)
    try:
        waits = TimeToData.on(registry)
        waits.configure(horizon, max_waits)
        modes = [REPLICA] + ([DOWNLOAD] if transfers is not None else [])
        measured = []
        for mode in modes:
            module_name, class_name = MODE_HANDLERS[mode]
            try:
                handler_class = getattr(importlib.import_module(module_name), class_name)
            except Exception as e:
                server_log.warning("rucio_metrics: time to data in %s mode is not measured: %s.%s: %s: %s",
                                   mode, module_name, class_name, type(e).__name__, e)
                continue
            _, missing = instrument_mode_handler(handler_class, mode, waits)
            if missing:
                server_log.warning("rucio_metrics: %s.%s has changed shape: %s not found; time to data in %s mode "
                                   "is not measured", module_name, class_name, ", ".join(missing), mode)
                continue
            measured.append(mode)
        if transfers is not None and DOWNLOAD in measured and waits not in transfers.observers:
            transfers.observers.append(waits)
        waits.precreate((name, mode) for name, mode in configured_modes(config) if mode in measured)
    except Exception:
        server_log.warning("rucio_metrics: time to data is not measured: setting up failed", exc_info=True)
        return None
    if transfers is None:
        server_log.info("rucio_metrics: time to data in download mode is not measured: downloads are not "
                        "watched (RucioMetrics.transfers_enabled = False)")
    if measured:
        server_log.info("rucio_metrics: measuring time to data in %s mode", " and ".join(measured))
    return waits
