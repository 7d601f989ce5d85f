"""The metric families of rucio_metrics, and the plain numbers behind them.

Every family is created once per registry; a second ``Metrics.on(registry)``
returns the same object, so loading the extension twice (or two servers in
one process) never raises a duplicate-registration error and never double
counts.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> route = Metrics.on(registry).route("/rucio-jupyterlab/instances")
>>> call = route.method("GET")
>>> call.started()
>>> call.finished("200", 0.012)
>>> registry.get_sample_value("rucio_jupyterlab_http_requests_total",
...     {"handler": "/rucio-jupyterlab/instances", "method": "GET", "status_code": "200"})
1.0

A request does not go through prometheus_client's metric objects (each of
their updates takes a lock and a few calls): it updates a few plain numbers
of its (handler, method) pair, and ``Metrics.collect`` turns those numbers
into metric families when the registry is scraped, a custom collector in
prometheus_client's sense. The exposition is the one prometheus_client's
``Counter``, ``Summary``, ``Histogram`` and ``Gauge`` would give: the same
names, help, types, labels, series order and ``_created`` samples.

Why plain numbers are safe here: every update is made by a Tornado handler,
and jupyter_server's ``/metrics`` handler reads them, all on the server's one
IOLoop thread, so an update and a read never interleave. Only tests run two
servers on different threads of one process; they then share these numbers
under the GIL, where an update can in principle be lost between two threads
but a read always sees whole numbers. New series are created under a lock.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client import metrics as _client_metrics
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString

from .buckets import DEFAULT_BUCKETS, histogram_bounds
from .faults import SERVICE

HTTP_PREFIX = "rucio_jupyterlab_http_"

# Verbs a label may carry; anything else a client sends is "OTHER", so a
# client cannot create series by inventing methods.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"})
OTHER_METHOD = "OTHER"

REQUESTS = HTTP_PREFIX + "requests"
REQUESTS_HELP = "Requests to the Rucio JupyterLab routes, by route template, method and the status the client got."
DURATION = HTTP_PREFIX + "request_duration_seconds"
DURATION_HELP = "Time from the start of a request to its end, by route template and method."
IN_PROGRESS = HTTP_PREFIX + "requests_in_progress"
IN_PROGRESS_HELP = "Requests to the Rucio JupyterLab routes being served now."
FAILURES = HTTP_PREFIX + "request_failures"
FAILURES_HELP = (
    "Requests to the Rucio JupyterLab routes that failed (4xx but 499, and 5xx), by whose fault: service "
    "(Rucio unreachable, timing out or failing, or the extension's own error) or user (Rucio refused what the "
    "user typed or stored, or the route refused the request)."
)
EXCEPTIONS = HTTP_PREFIX + "exceptions"
EXCEPTIONS_HELP = "Uncaught exceptions other than HTTPError in Rucio JupyterLab handlers, by exception class."
INSTRUMENTED_ROUTES = HTTP_PREFIX + "instrumented_routes"
INSTRUMENTED_ROUTES_HELP = (
    "Routes rucio_metrics instruments in this process; 0 means the Rucio extension's routes were not found."
)


def method_label(method: str | None) -> str:
    """The ``method`` label value for an HTTP verb as the client sent it."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def _created_samples() -> bool:
    # prometheus_client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES,
    # disable_created_metrics()), read at every scrape as its metrics do.
    return bool(getattr(_client_metrics, "_use_created", True))


class MethodMetrics:
    """The numbers of one (handler, method) pair: a request updates them and nothing else.

    ``active`` (requests in progress), ``count`` and ``sum`` (the summary),
    ``buckets`` (the histogram's per-bucket counts, not cumulative; ``None``
    for a summary), and a count per status, per exception class and per
    fault of the failed requests. They
    are read by ``Metrics.collect`` when the registry is scraped.
    """

    __slots__ = (
        "_bounds", "_by_exception", "_by_fault", "_by_status", "_metrics", "active", "buckets", "count", "created",
        "handler", "method", "sum",
    )

    def __init__(self, metrics: Metrics, handler: str, method: str) -> None:
        self._metrics = metrics
        self.handler = handler
        self.method = method
        self.active = 0
        self.count = 0
        self.sum = 0.0
        bounds = metrics.bounds
        self._bounds = bounds or []
        self.buckets: list[int] | None = None if bounds is None else [0] * len(bounds)
        self.created = time.time()
        self._by_status: dict[str, int] = {}
        self._by_exception: dict[str, int] = {}
        # The service's failures exist at 0 from the start: the error budget's rate sees the first one.
        self._by_fault: dict[str, int] = {SERVICE: 0}

    def started(self) -> None:
        self.active += 1

    def finished(self, status_code: str, seconds: float, fault: str | None = None) -> None:
        self.active -= 1
        self.sum += seconds
        buckets = self.buckets
        if buckets is None:
            self.count += 1
        else:
            # The first bound >= seconds: the bucket "le" that bound.
            buckets[bisect_left(self._bounds, seconds)] += 1
        try:
            self._by_status[status_code] += 1
        except KeyError:
            self._metrics.new_series(self._by_status, status_code, self, self._metrics.status_series)
        if fault is not None:
            try:
                self._by_fault[fault] += 1
            except KeyError:
                self._metrics.new_series(self._by_fault, fault, self, self._metrics.fault_series)

    def raised(self, exception: str) -> None:
        try:
            self._by_exception[exception] += 1
        except KeyError:
            self._metrics.new_series(self._by_exception, exception, self, self._metrics.exception_series)


class RouteMetrics:
    """The numbers of one route (one ``handler`` label value), per method."""

    def __init__(self, metrics: Metrics, handler: str) -> None:
        self._metrics = metrics
        self.handler = handler
        # By label; read without the lock (a known verb is its own label).
        self.methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()

    def method(self, method: str | None) -> MethodMetrics:
        """The numbers for the verb ``method`` as the client sent it (see ``method_label``)."""
        # The cache is keyed by label value, and a known verb is its own label:
        # one dict lookup on the hot path; an unknown verb is never a key.
        children = self.methods.get(method or "")
        if children is None:
            label = method_label(method)
            with self._lock:
                children = self.methods.get(label)
                if children is None:
                    # Created at most once per label: each pair is one series.
                    children = self.methods[label] = MethodMetrics(self._metrics, self.handler, label)
                    self._metrics.method_series.append(children)
                    self._metrics.fault_series.append((children, SERVICE, children.created))
        return children

    def precreate(self, methods: Iterable[str]) -> None:
        """Create the duration and in-progress series at zero for ``methods``."""
        for method in methods:
            self.method(method)


# A labelled series of a counter: the pair, the label value after handler and
# method, and when it was created.
_Series = tuple[MethodMetrics, str, float]


_Families = TypeVar("_Families", bound="OncePerRegistry")


class OncePerRegistry:
    """Metric families that exist once per registry: ``on(registry)`` makes them, then finds them.

    Loading the extension twice, or two servers in one process, then never
    raises a duplicate-registration error and never counts twice.
    """

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, dict[type, OncePerRegistry]]] = (
        weakref.WeakKeyDictionary()
    )
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        raise NotImplementedError

    @classmethod
    def on(
        cls: type[_Families],
        registry: CollectorRegistry = REGISTRY,
        latency_metric: str = "summary",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> _Families:
        """The families on ``registry``, created on first use.

        ``latency_metric`` and ``buckets`` take effect only on first use: a
        family cannot change type once Prometheus has scraped it.
        """
        with OncePerRegistry._instances_lock:
            made = OncePerRegistry._instances.setdefault(registry, {})
            families = made.get(cls)
            if families is None:
                families = made[cls] = cls(registry, latency_metric, buckets)
            assert isinstance(families, cls)
            return families


class Metrics(OncePerRegistry):
    """All ``rucio_jupyterlab_http_*`` families on one registry.

    Use ``Metrics.on(registry)``; the constructor registers the families and
    raises if they exist already. The requests, duration, in-progress and
    exceptions families come from this object's ``collect``;
    ``instrumented_routes`` is a prometheus_client ``Gauge``.
    """

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self.registry = registry
        self.latency_metric = latency_metric
        self.buckets = tuple(buckets)
        self.bounds = histogram_bounds(self.buckets) if latency_metric == "histogram" else None
        # The "le" label values, formatted as prometheus_client formats them.
        self._le = None if self.bounds is None else [str(floatToGoString(b)) for b in self.bounds]  # type: ignore[no-untyped-call]
        # Series in the order they were created, as prometheus_client lists
        # children; appended to only, so a scrape may read them from any thread.
        self.method_series: list[MethodMetrics] = []
        self.status_series: list[_Series] = []
        self.exception_series: list[_Series] = []
        self.fault_series: list[_Series] = []
        self._series_lock = threading.Lock()
        registry.register(self)
        self.instrumented_routes = Gauge(INSTRUMENTED_ROUTES, INSTRUMENTED_ROUTES_HELP, registry=registry)
        self._routes: dict[str, RouteMetrics] = {}

    def new_series(self, counts: dict[str, int], label: str, call: MethodMetrics, series: list[_Series]) -> None:
        """Count the first ``label`` of ``call`` in ``counts``: a new series, at 1."""
        with self._series_lock:
            if label in counts:  # another thread created it meanwhile
                counts[label] += 1
            else:
                counts[label] = 1
                series.append((call, label, time.time()))

    def route_labels(self) -> list[str]:
        """The ``handler`` label of every route instrumented so far."""
        return list(self._routes)

    def route(self, handler: str) -> RouteMetrics:
        """The numbers of the route labelled ``handler``; counted in ``instrumented_routes``."""
        with self._lock:
            route = self._routes.get(handler)
            if route is None:
                route = self._routes[handler] = RouteMetrics(self, handler)
                self.instrumented_routes.set(len(self._routes))
            return route

    def _families(
        self,
    ) -> tuple[CounterMetricFamily, Metric, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        duration: Metric
        if self.bounds is None:
            duration = SummaryMetricFamily(DURATION, DURATION_HELP, labels=("handler", "method"))
        else:
            duration = HistogramMetricFamily(DURATION, DURATION_HELP, labels=("handler", "method"))
        return (
            CounterMetricFamily(REQUESTS, REQUESTS_HELP, labels=("handler", "method", "status_code")),
            duration,
            GaugeMetricFamily(IN_PROGRESS, IN_PROGRESS_HELP, labels=("handler", "method")),
            CounterMetricFamily(EXCEPTIONS, EXCEPTIONS_HELP, labels=("handler", "method", "exception")),
            CounterMetricFamily(FAILURES, FAILURES_HELP, labels=("handler", "method", "fault")),
        )

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry reserves their names, so a second registration raises."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The families with their samples, as prometheus_client's own metric objects would give them."""
        created = _created_samples()
        requests, duration, in_progress, exceptions, failures = self._families()
        for call, status, when in list(self.status_series):
            requests.add_metric(
                (call.handler, call.method, status), float(call._by_status[status]), when if created else None
            )
        yield requests

        calls = list(self.method_series)
        name, bounds, le = duration.name, self.bounds, self._le
        for call in calls:
            labels = {"handler": call.handler, "method": call.method}
            buckets = call.buckets
            if bounds is None or le is None or buckets is None:
                duration.add_sample(name + "_count", labels, float(call.count))
                duration.add_sample(name + "_sum", labels, call.sum)
            else:
                cumulative = 0.0
                for bound, n in zip(le, buckets):
                    cumulative += n
                    duration.add_sample(name + "_bucket", {**labels, "le": bound}, cumulative)
                duration.add_sample(name + "_count", labels, cumulative)
                if bounds[0] >= 0:
                    duration.add_sample(name + "_sum", labels, call.sum)
            if created:
                duration.add_sample(name + "_created", labels, call.created)
        yield duration

        for call in calls:
            in_progress.add_metric((call.handler, call.method), float(call.active))
        yield in_progress

        for call, exception, when in list(self.exception_series):
            exceptions.add_metric(
                (call.handler, call.method, exception), float(call._by_exception[exception]), when if created else None
            )
        yield exceptions

        for call, fault, when in list(self.fault_series):
            failures.add_metric(
                (call.handler, call.method, fault), float(call._by_fault[fault]), when if created else None
            )
        yield failures
