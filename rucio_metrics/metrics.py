"""The metric families of rucio_metrics, and cached children for the hot path.

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
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Summary

from .config import DEFAULT_BUCKETS

HTTP_PREFIX = "rucio_jupyterlab_http_"

# Verbs a label may carry; anything else a client sends is "OTHER", so a
# client cannot create series by inventing methods.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"})
OTHER_METHOD = "OTHER"


def method_label(method: str | None) -> str:
    """The ``method`` label value for an HTTP verb as the client sent it."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


class MethodMetrics:
    """Children of one (handler, method) pair, so a request costs no ``labels()`` call.

    Requests in progress are a plain count, read by the gauge when it is
    scraped (``Gauge.set_function``): a request then pays no gauge ``inc()``
    and ``dec()`` with their locks. It is changed only by Tornado handlers,
    which all run on the server's one IOLoop thread.
    """

    __slots__ = ("_by_exception", "_by_status", "_handler", "_method", "_metrics", "active", "duration", "in_progress")

    def __init__(self, metrics: Metrics, handler: str, method: str) -> None:
        self._metrics = metrics
        self._handler = handler
        self._method = method
        self.active = 0
        self.in_progress = metrics.in_progress.labels(handler, method)
        self.in_progress.set_function(lambda: self.active)
        self.duration = metrics.duration.labels(handler, method)
        self._by_status: dict[str, Counter] = {}
        self._by_exception: dict[str, Counter] = {}

    def started(self) -> None:
        self.active += 1

    def finished(self, status_code: str, seconds: float) -> None:
        self.active -= 1
        child = self._by_status.get(status_code)
        if child is None:
            child = self._by_status.setdefault(
                status_code, self._metrics.requests.labels(self._handler, self._method, status_code)
            )
        child.inc()
        self.duration.observe(seconds)

    def raised(self, exception: str) -> None:
        child = self._by_exception.get(exception)
        if child is None:
            child = self._by_exception.setdefault(
                exception, self._metrics.exceptions.labels(self._handler, self._method, exception)
            )
        child.inc()


class RouteMetrics:
    """The children of one route (one ``handler`` label value), per method."""

    def __init__(self, metrics: Metrics, handler: str) -> None:
        self._metrics = metrics
        self.handler = handler
        self._methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()

    def method(self, method: str | None) -> MethodMetrics:
        """Children for the verb ``method`` as the client sent it (see ``method_label``)."""
        # The cache is keyed by label value, and a known verb is its own label:
        # one dict lookup on the hot path; an unknown verb is never a key.
        children = self._methods.get(method or "")
        if children is None:
            label = method_label(method)
            with self._lock:
                children = self._methods.get(label)
                if children is None:
                    # Created at most once per label: a second MethodMetrics
                    # would take over the in-progress gauge's function.
                    children = self._methods[label] = MethodMetrics(self._metrics, self.handler, label)
        return children

    def precreate(self, methods: Iterable[str]) -> None:
        """Create the duration and in-progress series at zero for ``methods``."""
        for method in methods:
            self.method(method)


class Metrics:
    """All ``rucio_jupyterlab_http_*`` families on one registry.

    Use ``Metrics.on(registry)``; the constructor registers the families and
    raises if they exist already.
    """

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, Metrics]] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    @classmethod
    def on(
        cls,
        registry: CollectorRegistry = REGISTRY,
        latency_metric: str = "summary",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Metrics:
        """The metrics on ``registry``, created on first use.

        ``latency_metric`` and ``buckets`` take effect only on first use: a
        family cannot change type once Prometheus has scraped it.
        """
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls._by_registry[registry] = cls(registry, latency_metric, buckets)
            return metrics

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        self.registry = registry
        self.latency_metric = latency_metric
        self.buckets = tuple(buckets)
        self.requests = Counter(
            HTTP_PREFIX + "requests",
            "Requests to the Rucio JupyterLab routes, by route template, method and the status the client got.",
            ["handler", "method", "status_code"],
            registry=registry,
        )
        duration_help = "Time from the start of a request to its end, by route template and method."
        if latency_metric == "histogram":
            self.duration: Summary | Histogram = Histogram(
                HTTP_PREFIX + "request_duration_seconds", duration_help, ["handler", "method"],
                buckets=self.buckets, registry=registry,
            )
        else:
            self.duration = Summary(
                HTTP_PREFIX + "request_duration_seconds", duration_help, ["handler", "method"], registry=registry
            )
        self.in_progress = Gauge(
            HTTP_PREFIX + "requests_in_progress",
            "Requests to the Rucio JupyterLab routes being served now.",
            ["handler", "method"],
            registry=registry,
        )
        self.exceptions = Counter(
            HTTP_PREFIX + "exceptions",
            "Uncaught exceptions other than HTTPError in Rucio JupyterLab handlers, by exception class.",
            ["handler", "method", "exception"],
            registry=registry,
        )
        self.instrumented_routes = Gauge(
            HTTP_PREFIX + "instrumented_routes",
            "Routes rucio_metrics instruments in this process; 0 means the Rucio extension's routes were not found.",
            registry=registry,
        )
        self._routes: dict[str, RouteMetrics] = {}

    def route_labels(self) -> list[str]:
        """The ``handler`` label of every route instrumented so far."""
        return list(self._routes)

    def route(self, handler: str) -> RouteMetrics:
        """The children of the route labelled ``handler``; counted in ``instrumented_routes``."""
        with self._lock:
            route = self._routes.get(handler)
            if route is None:
                route = self._routes[handler] = RouteMetrics(self, handler)
                self.instrumented_routes.set(len(self._routes))
            return route
