"""The families on /metrics: the custom collector gives what prometheus_client's metric objects gave.

``ClientMetrics`` below is the implementation rucio_metrics had before its
collector: prometheus_client ``Counter``, ``Summary``/``Histogram`` and
``Gauge`` families with cached children. Both are driven through the same
events, on the same clock, and their expositions compared byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from traitlets import TraitError

from rucio_metrics.config import RucioMetrics
from rucio_metrics.metrics import FAILURES_HELP, Metrics, method_label

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ClientMetrics:
    """The families as prometheus_client's own metric objects, labelled and cached as before."""

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: tuple[float, ...]) -> None:
        prefix = "rucio_jupyterlab_http_"
        self.requests = Counter(
            prefix + "requests",
            "Requests to the Rucio JupyterLab routes, by route template, method and the status the client got.",
            ["handler", "method", "status_code"], registry=registry,
        )
        duration_help = "Time from the start of a request to its end, by route template and method."
        self.duration: Summary | Histogram
        if latency_metric == "histogram":
            self.duration = Histogram(prefix + "request_duration_seconds", duration_help, ["handler", "method"],
                                      buckets=buckets, registry=registry)
        else:
            self.duration = Summary(prefix + "request_duration_seconds", duration_help, ["handler", "method"],
                                    registry=registry)
        self.in_progress = Gauge(prefix + "requests_in_progress",
                                 "Requests to the Rucio JupyterLab routes being served now.",
                                 ["handler", "method"], registry=registry)
        self.exceptions = Counter(
            prefix + "exceptions",
            "Uncaught exceptions other than HTTPError in Rucio JupyterLab handlers, by exception class.",
            ["handler", "method", "exception"], registry=registry,
        )
        self.failures = Counter(
            prefix + "request_failures", FAILURES_HELP, ["handler", "method", "fault"], registry=registry,
        )
        self.instrumented_routes = Gauge(
            prefix + "instrumented_routes",
            "Routes rucio_metrics instruments in this process; 0 means the Rucio extension's routes were not found.",
            registry=registry,
        )
        self.routes: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()

    def method(self, handler: str, method: str) -> None:
        if handler not in self.routes:
            self.routes.add(handler)
            self.instrumented_routes.set(len(self.routes))
        if (handler, method) not in self.pairs:
            self.pairs.add((handler, method))
            self.in_progress.labels(handler, method)
            self.duration.labels(handler, method)
            self.failures.labels(handler, method, "service")

    def started(self, handler: str, method: str) -> None:
        self.method(handler, method)
        self.in_progress.labels(handler, method).inc()

    def finished(self, handler: str, method: str, status: str, seconds: float, fault: str | None) -> None:
        self.in_progress.labels(handler, method).dec()
        self.requests.labels(handler, method, status).inc()
        self.duration.labels(handler, method).observe(seconds)
        if fault is not None:
            self.failures.labels(handler, method, fault).inc()

    def raised(self, handler: str, method: str, exception: str) -> None:
        self.method(handler, method)
        self.exceptions.labels(handler, method, exception).inc()


INSTANCES, FILES, UPLOAD = "/rucio-jupyterlab/instances", "/rucio-jupyterlab/files", "/rucio-jupyterlab/upload"

# (event, handler, method, more...): routes found at load with their verbs,
# then requests interleaved over routes and statuses, a verb met on first
# use, one outside the known verbs, exceptions, and durations on, between,
# below and above the bucket bounds. Two requests are still in progress at
# the end.
EVENTS: list[tuple[object, ...]] = [
    ("route", INSTANCES, "GET"), ("route", INSTANCES, "PUT"), ("route", FILES, "GET"), ("route", UPLOAD, "POST"),
    ("start", INSTANCES, "GET"), ("finish", INSTANCES, "GET", "200", 0.003),
    ("start", FILES, "GET"), ("finish", FILES, "GET", "200", 0.01),
    ("start", INSTANCES, "GET"), ("finish", INSTANCES, "GET", "500", 0.0123456789),
    ("start", INSTANCES, "GET"), ("start", FILES, "GET"), ("raise", FILES, "GET", "IndexError"),
    ("finish", FILES, "GET", "500", 0.7), ("finish", INSTANCES, "GET", "200", 60.0),
    ("start", INSTANCES, "HEAD"), ("finish", INSTANCES, "HEAD", "200", 0.0),
    ("start", UPLOAD, "BREW"), ("finish", UPLOAD, "BREW", "405", 0.001),
    ("start", FILES, "GET"), ("finish", FILES, "GET", "401", 61.5), ("raise", UPLOAD, "POST", "ValueError"),
    ("start", UPLOAD, "POST"), ("finish", UPLOAD, "POST", "400", 2.5), ("raise", FILES, "GET", "IndexError"),
    ("start", INSTANCES, "PUT"), ("start", FILES, "GET"),
]


def replay(registry: CollectorRegistry, latency_metric: str, clock: list[float]) -> tuple[bytes, bytes]:
    """Run EVENTS through both implementations, one clock tick per event; both expositions."""
    client_registry = CollectorRegistry()
    client = ClientMetrics(client_registry, latency_metric, BUCKETS)
    ours = Metrics.on(registry, latency_metric, BUCKETS)
    calls = {}
    for tick, (event, handler, method, *more) in enumerate(EVENTS):
        clock[0] = 1_700_000_000.0 + tick
        assert isinstance(handler, str) and isinstance(method, str)
        label = method_label(method)
        if event == "route":
            client.method(handler, label)
            ours.route(handler).precreate([label])
        elif event == "start":
            client.started(handler, label)
            calls[handler, method] = ours.route(handler).method(method)
            calls[handler, method].started()
        elif event == "finish":
            status, seconds = more
            assert isinstance(status, str) and isinstance(seconds, float)
            # Whose fault is the classifier's business (tests/test_faults.py); here, that both count it alike.
            fault = None if int(status) < 400 else "user" if int(status) < 500 else "service"
            client.finished(handler, label, status, seconds, fault)
            calls[handler, method].finished(status, seconds, fault)
        else:
            (exception,) = more
            assert isinstance(exception, str)
            client.raised(handler, label, exception)
            ours.route(handler).method(method).raised(exception)
    for render in (generate_latest, generate_openmetrics):
        assert render(registry).decode() == render(client_registry).decode()
    return generate_latest(registry), generate_latest(client_registry)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    # prometheus_client stamps _created with time.time(), and so does rucio_metrics.
    now = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    yield now


@pytest.mark.parametrize("latency_metric", ["summary", "histogram"])
def test_exposition_is_what_prometheus_client_gave(registry, clock, latency_metric):
    text, _ = replay(registry, latency_metric, clock)
    lines = text.decode().splitlines()
    # Not vacuous: every family is there, with series that exist at zero and a created time per series.
    assert "# TYPE rucio_jupyterlab_http_request_duration_seconds " + latency_metric in lines
    assert ('rucio_jupyterlab_http_requests_in_progress{handler="/rucio-jupyterlab/instances",method="PUT"} 1.0'
            in lines)
    assert ('rucio_jupyterlab_http_exceptions_total{exception="IndexError",handler="/rucio-jupyterlab/files",'
            'method="GET"} 2.0' in lines)
    assert ('rucio_jupyterlab_http_requests_created{handler="/rucio-jupyterlab/instances",method="GET",'
            'status_code="500"} 1.700000009e+09' in lines)
    assert 'rucio_jupyterlab_http_requests_total{handler="/rucio-jupyterlab/upload",method="OTHER",' \
           'status_code="405"} 1.0' in lines
    assert "rucio_jupyterlab_http_instrumented_routes 3.0" in lines
    assert ('rucio_jupyterlab_http_request_failures_total{fault="user",handler="/rucio-jupyterlab/files",'
            'method="GET"} 1.0' in lines)
    assert ('rucio_jupyterlab_http_request_failures_total{fault="service",handler="/rucio-jupyterlab/instances",'
            'method="PUT"} 0.0' in lines)
    if latency_metric == "histogram":
        assert ('rucio_jupyterlab_http_request_duration_seconds_bucket{handler="/rucio-jupyterlab/files",le="+Inf",'
                'method="GET"} 3.0' in lines)
        assert ('rucio_jupyterlab_http_request_duration_seconds_bucket{handler="/rucio-jupyterlab/files",le="0.01",'
                'method="GET"} 1.0' in lines)


@pytest.mark.parametrize("latency_metric", ["summary", "histogram"])
def test_exposition_without_created_samples_is_the_same_too(registry, clock, latency_metric):
    prometheus_client.metrics.disable_created_metrics()
    try:
        text, _ = replay(registry, latency_metric, clock)
    finally:
        prometheus_client.metrics.enable_created_metrics()
    assert b"_created" not in text


@pytest.mark.parametrize("latency_metric", ["summary", "histogram"])
def test_registering_the_families_twice_on_one_registry_raises(registry, latency_metric):
    Metrics(registry, latency_metric, BUCKETS)
    with pytest.raises(ValueError):
        Metrics(registry, latency_metric, BUCKETS)
    # Nor may prometheus_client metrics with our names sit beside them.
    with pytest.raises(ValueError):
        Counter("rucio_jupyterlab_http_requests", "Requests.", ["handler"], registry=registry)
    with pytest.raises(ValueError):
        Gauge("rucio_jupyterlab_http_request_duration_seconds_count", "Count.", registry=registry)


def test_metrics_on_returns_the_same_families(registry):
    assert Metrics.on(registry) is Metrics.on(registry, "histogram")


@pytest.mark.parametrize("buckets", [(1.0, 0.5), (float("inf"), float("inf")), (float("inf"),), (0.0, 1.0)])
def test_histogram_buckets_are_checked_by_the_function_that_checks_the_option(registry, buckets):
    with pytest.raises(ValueError) as raised:
        Metrics(registry, "histogram", buckets)
    with pytest.raises(TraitError) as refused:
        RucioMetrics(buckets=list(buckets))
    assert str(raised.value) in str(refused.value)


def test_histogram_bounds_end_in_inf(registry):
    assert Metrics(registry, "histogram", (0.5, 1.0)).bounds == [0.5, 1.0, float("inf")]
    assert Metrics.on(CollectorRegistry(), "histogram", (0.5, float("inf"))).bounds == [0.5, float("inf")]
