"""Scrape cost: rendering rucio_metrics' families with every Rucio route populated.

The registry holds only rucio_metrics' families (jupyter_server's own metrics
cost the same with or without them), filled the way a busy server fills
them: every route with the verbs it implements, a few statuses each, and the
upstream bugs' exceptions.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

from rucio_metrics.metrics import Metrics

# rucio-jupyterlab 41.0.0's 16 routes and the verbs each handler implements
# (handlers/handlers.py::setup_handlers and the handler classes).
ROUTES: dict[str, tuple[str, ...]] = {
    "/rucio-jupyterlab/instances": ("GET", "PUT"),
    "/rucio-jupyterlab/auth": ("GET", "PUT"),
    "/rucio-jupyterlab/files": ("GET",),
    "/rucio-jupyterlab/did": ("GET",),
    "/rucio-jupyterlab/did-search": ("GET",),
    "/rucio-jupyterlab/did/make-available": ("POST",),
    "/rucio-jupyterlab/file-browser": ("GET",),
    "/rucio-jupyterlab/purge-cache": ("POST",),
    "/rucio-jupyterlab/oidc-auth-check": ("GET",),
    "/rucio-jupyterlab/open-replication-rule": ("GET",),
    "/rucio-jupyterlab/list-scopes": ("GET",),
    "/rucio-jupyterlab/list-rses": ("GET",),
    "/rucio-jupyterlab/upload/jobs": ("GET",),
    "/rucio-jupyterlab/upload/jobs/details": ("GET", "DELETE"),
    "/rucio-jupyterlab/upload/jobs/log": ("GET",),
    "/rucio-jupyterlab/upload": ("POST",),
}
STATUSES = ("200", "400", "401", "500")
# The upstream bugs that surface as 500s (see the design notes).
EXCEPTIONS = {
    ("/rucio-jupyterlab/did/make-available", "POST"): "UnboundLocalError",
    ("/rucio-jupyterlab/upload/jobs/details", "GET"): "IndexError",
}
# Spread over the default buckets, so a histogram's buckets are not all equal.
DURATIONS = (0.003, 0.012, 0.04, 0.2, 0.7, 3.0)


@dataclass
class ScrapeResult:
    latency_metric: str
    series: int  # sample lines in the exposition
    bytes: int
    ms_per_render: float  # median


def populated_registry(latency_metric: str) -> CollectorRegistry:
    """A fresh registry with rucio_metrics' families filled for every route, verb and status."""
    registry = CollectorRegistry()
    metrics = Metrics.on(registry, latency_metric)
    for handler, methods in ROUTES.items():
        route = metrics.route(handler)
        route.precreate(methods)
        for method in methods:
            call = route.method(method)
            for status in STATUSES:
                for seconds in DURATIONS:
                    call.started()
                    call.finished(status, seconds)
            exception = EXCEPTIONS.get((handler, method))
            if exception:
                call.raised(exception)
    return registry


def measure(renders: int = 200) -> list[ScrapeResult]:
    """Median time of ``generate_latest`` over ``renders`` renders, summary and histogram."""
    results = []
    for latency_metric in ("summary", "histogram"):
        registry = populated_registry(latency_metric)
        text = generate_latest(registry)
        times = []
        for _ in range(renders):
            start = time.perf_counter()
            generate_latest(registry)
            times.append(time.perf_counter() - start)
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        results.append(ScrapeResult(latency_metric, series, len(text), statistics.median(times) * 1e3))
    return results


if __name__ == "__main__":
    for result in measure():
        print(result)
