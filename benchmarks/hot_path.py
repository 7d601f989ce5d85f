"""In-process hot path: the CPU one request costs under each kind of instrumentation.

Every variant serves the same small JSON answer on ``/rucio-jupyterlab/instances``
from a plain Tornado ``Application``. Requests go through Tornado's real server
path (``Application.start_request`` -> routing -> handler -> ``finish``) into a
connection stand-in, so no socket, parser or client adds noise. Variants run
alternately, round after round, and each round's cost is compared with the
plain variant of the same round (paired), so drift in machine speed cancels.

Besides time, each variant's Python function calls per request are counted
with ``sys.setprofile`` (``call`` + ``c_call`` events): a cost proxy that does
not vary from run to run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Summary
from tornado import httputil
from tornado.web import Application, RequestHandler

from rucio_metrics.instrument import instrument_app
from rucio_metrics.metrics import Metrics

ROUTE = "/rucio-jupyterlab/instances"
BODY = b'{"active_instance": null, "auth_type": null, "instances": []}'
# Requests are started in chunks, then the loop runs them: a chunk's loop
# overhead is shared by many requests instead of paid by each.
CHUNK = 100


class InstancesHandler(RequestHandler):
    """Stands in for rucio-jupyterlab's InstancesHandler: a sync verb, a small JSON body."""

    def get(self) -> None:
        self.finish(BODY)


class _Connection(httputil.HTTPConnection):
    """Just enough of an HTTP/1 connection for a handler to answer into; nothing is sent."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self._done = done

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(self, start_line: Any, headers: Any, chunk: bytes | None = None) -> asyncio.Future[None]:
        return self._done

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self._done

    def finish(self) -> None:
        pass


def _no_log(handler: RequestHandler) -> None:
    """Tornado's default access log formats a line per request; every variant skips it alike."""


def _upstream_handler() -> type[RequestHandler]:
    """The handler with rucio-jupyterlab's own decorator (unlabelled Counter + Summary ``.time()``)."""
    try:
        from rucio_jupyterlab.metrics import prometheus_metrics
    except ImportError:  # not installed: the same decorator, on a registry of its own
        prometheus_metrics = _upstream_style_decorator(CollectorRegistry())

    class UpstreamInstancesHandler(RequestHandler):
        @prometheus_metrics  # type: ignore[untyped-decorator,unused-ignore]
        def get(self) -> None:
            self.finish(BODY)

    return UpstreamInstancesHandler


def _upstream_style_decorator(registry: CollectorRegistry) -> Callable[[Any], Any]:
    """A copy of rucio_jupyterlab.metrics.prometheus_metrics, for when that package is missing."""
    import functools

    count = Counter("rucio_jupyterlab_requests", "Total number of HTTP requests", registry=registry)
    latency = Summary("rucio_jupyterlab_request_latency_seconds", "Latency of HTTP requests", registry=registry)

    def prometheus_metrics(handler_method: Any) -> Any:
        @functools.wraps(handler_method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            count.inc()
            with latency.time():
                return handler_method(self, *args, **kwargs)

        return wrapper

    return prometheus_metrics


def _app(handler: type[RequestHandler], log_function: Callable[[RequestHandler], None] = _no_log) -> Application:
    return Application([(ROUTE, handler)], log_function=log_function)


def rucio_metrics_app(latency_metric: str = "summary", registry: CollectorRegistry | None = None) -> Application:
    """The plain application with its route instrumented by rucio_metrics, on its own registry."""
    app = _app(InstancesHandler)
    instrument_app(app, "/", ["rucio-jupyterlab"], Metrics.on(registry or CollectorRegistry(), latency_metric))
    return app


def _floor_app() -> Application:
    """prometheus_client's own floor for count + latency: two cached labelled children, nothing else."""
    registry = CollectorRegistry()
    requests = Counter("floor_requests", "Requests.", ["handler", "method", "status_code"], registry=registry)
    duration = Summary("floor_duration_seconds", "Duration.", ["handler", "method"], registry=registry)
    count, observe = requests.labels(ROUTE, "GET", "200"), duration.labels(ROUTE, "GET")

    class FloorInstancesHandler(InstancesHandler):
        def on_finish(self) -> None:
            count.inc()
            observe.observe(0.001)

    return _app(FloorInstancesHandler)


def variants() -> dict[str, Application]:
    """The applications to compare, by name; "plain" first."""
    from jupyter_server.prometheus.log_functions import prometheus_log_method

    return {
        "plain": _app(InstancesHandler),
        "upstream decorator": _app(_upstream_handler()),
        "jupyter_server histogram": _app(InstancesHandler, prometheus_log_method),
        "prometheus_client floor": _floor_app(),
        "rucio_metrics (summary)": rucio_metrics_app("summary"),
        "rucio_metrics (histogram)": rucio_metrics_app("histogram"),
    }


_START_LINE = httputil.RequestStartLine("GET", ROUTE, "HTTP/1.1")
_HEADERS = httputil.HTTPHeaders({"Host": "127.0.0.1", "Accept": "application/json"})


async def serve(app: Application, requests: int) -> None:
    """Serve ``requests`` GET requests through ``app``, to the end of each."""
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    connection = _Connection(done)
    left = requests
    while left > 0:
        for _ in range(min(CHUNK, left)):
            delegate = app.start_request(None, connection)
            delegate.headers_received(_START_LINE, _HEADERS)
            delegate.finish()
        left -= CHUNK
        # One yield runs the chunk's handler tasks, a second their done callbacks.
        await asyncio.sleep(0)
        await asyncio.sleep(0)


async def cpu_per_request(app: Application, requests: int) -> float:
    """CPU seconds per request for one batch; GC off while timing, as timeit does."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        await serve(app, requests)
        return (time.process_time() - start) / requests
    finally:
        gc.enable()


@contextlib.contextmanager
def counting_calls() -> Iterator[list[int]]:
    """Python and C function calls made in the block (profiler ``call`` + ``c_call`` events), in ``[0]``."""
    counted = [0]

    def count(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            counted[0] += 1

    sys.setprofile(count)
    try:
        yield counted
    finally:
        sys.setprofile(None)


async def calls_per_request(app: Application, requests: int) -> float:
    """Python and C function calls per request."""
    with counting_calls() as counted:
        await serve(app, requests)
    return counted[0] / requests


async def calls_by_function(app: Application, requests: int = 10) -> collections.Counter[str]:
    """Which functions a request calls, ``module:function`` -> calls per request: the profile."""
    calls: collections.Counter[str] = collections.Counter()

    def count(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[f"{frame.f_globals.get('__name__')}:{frame.f_code.co_qualname}"] += 1
        elif event == "c_call":
            calls[f"(C) {getattr(arg, '__qualname__', arg)}"] += 1

    await serve(app, CHUNK)  # warm
    sys.setprofile(count)
    try:
        await serve(app, requests)
    finally:
        sys.setprofile(None)
    return collections.Counter({name: n // requests for name, n in calls.items()})


async def added_calls_by_function(name: str) -> collections.Counter[str]:
    """The calls variant ``name`` makes per request on top of plain Tornado."""
    apps = variants()
    return await calls_by_function(apps[name]) - await calls_by_function(apps["plain"])


@dataclass
class HotPathResult:
    name: str
    us_per_request: float  # median over rounds
    added_us: float  # median over rounds of (this variant - plain), same round
    ratio: float  # us_per_request / plain's
    calls_per_request: float
    added_calls: float


async def measure(rounds: int = 30, requests: int = 1000, profiled_requests: int = 500) -> list[HotPathResult]:
    """Alternate the variants ``rounds`` times; medians per variant, paired against plain."""
    apps = variants()
    names = list(apps)
    for app in apps.values():  # warm-up: caches, label children, code paths
        await serve(app, CHUNK * 5)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        # Rotate the order each round, so no variant always runs right after GC or another.
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            samples[name].append(await cpu_per_request(apps[name], requests))
    calls = {name: await calls_per_request(app, profiled_requests) for name, app in apps.items()}
    plain = statistics.median(samples["plain"])
    return [
        HotPathResult(
            name=name,
            us_per_request=statistics.median(samples[name]) * 1e6,
            added_us=statistics.median(v - p for v, p in zip(samples[name], samples["plain"])) * 1e6,
            ratio=statistics.median(samples[name]) / plain,
            calls_per_request=calls[name],
            added_calls=calls[name] - calls["plain"],
        )
        for name in names
    ]


def run(rounds: int = 30, requests: int = 1000, profiled_requests: int = 500) -> list[HotPathResult]:
    return asyncio.run(measure(rounds, requests, profiled_requests))


if __name__ == "__main__":
    # The profile: what each instrumented variant calls per request, beyond plain Tornado.
    for variant in list(variants())[1:]:
        added = asyncio.run(added_calls_by_function(variant))
        print(f"{variant}: {sum(added.values())} calls per request on top of plain")
        for function, n in sorted(added.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {n:3}  {function}")
