"""The instrumented handler: count, time and classify each request once, at its end.

A handler class is never changed. Each instrumented rule gets a subclass
that keeps the original's name, module and verb methods (so jupyter_server's
auth checks and its own ``handler`` label stay as they were) and adds:

- ``__init__``: the request starts; in-progress goes up.
- ``on_finish``: Tornado's one call after the response is complete, whatever
  ended it (verb, ``prepare`` rejection, 405, 304, ``Finish``, error page):
  the status here is the one the client got. A failed request is also
  counted by whose fault it is (``faults.py``), from the Rucio calls it made.
- ``on_connection_close``: the client went away before the end; recorded
  as status 499 so in-progress cannot leak.
- ``detach``: the handler takes the connection over (as a WebSocket upgrade
  or a proxy does); Tornado then calls neither of the above, so the request
  ends here, with the status set so far (200 unless the handler set one).
- ``log_exception``: Tornado's one call for every uncaught exception, in
  ``prepare``, the verb or ``on_finish`` alike: counted by class, and noted
  as the user's input refused when it is a route failing on a malformed
  request (``faults.rejected_input``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, ClassVar

from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream
from tornado.web import Application, HTTPError, RequestHandler

from .faults import CLIENT_CLOSED_REQUEST, INVALID_INPUT, RucioCalls, fault_of, rejected_input, start_request
from .metrics import MethodMetrics, Metrics, RouteMetrics
from .routes import rules_under

log = logging.getLogger("rucio_metrics")

# The status label of a request whose client went away (faults.CLIENT_CLOSED_REQUEST, nginx's code).
_CLIENT_CLOSED = str(CLIENT_CLOSED_REQUEST)


class InstrumentedHandler(RequestHandler):
    """Put in front of a handler class by ``instrumented_class``; not used alone."""

    _rucio_metrics_route: ClassVar[RouteMetrics]
    _rucio_metrics_call: MethodMetrics | None = None
    _rucio_metrics_start = 0.0
    _rucio_metrics_rucio_calls: RucioCalls | None = None

    def __init__(self, application: Application, request: HTTPServerRequest, **kwargs: Any) -> None:
        # request_time() counts from when the headers were parsed, on the wall
        # clock; move that start onto the monotonic clock once, here.
        elapsed = request.request_time()
        start = time.perf_counter() - (elapsed if elapsed > 0.0 else 0.0)
        super().__init__(application, request, **kwargs)
        try:
            # A known verb is its own label, found without a call; any other goes through method().
            call = self._rucio_metrics_route.methods.get(request.method)
            if call is None:
                call = self._rucio_metrics_route.method(request.method)
            call.started()
        except Exception:
            report_failure("start")
            return
        self._rucio_metrics_start = start
        self._rucio_metrics_call = call
        try:
            # In the context the request's handler runs in: its Rucio calls note how they ended here.
            self._rucio_metrics_rucio_calls = start_request()
        except Exception:
            report_failure("start")

    def on_finish(self) -> None:
        try:
            super().on_finish()
        finally:
            self._rucio_metrics_end(str(self.get_status()))

    def on_connection_close(self) -> None:
        try:
            super().on_connection_close()
        finally:
            if not self._finished:
                self._rucio_metrics_end(_CLIENT_CLOSED)

    def detach(self) -> IOStream:
        try:
            return super().detach()
        finally:
            self._rucio_metrics_end(str(self.get_status()))

    def log_exception(
        self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            super().log_exception(typ, value, tb)
        finally:
            if typ is not None and not isinstance(value, HTTPError):
                try:
                    self._rucio_metrics_route.method(self.request.method).raised(typ.__name__)
                    calls = self._rucio_metrics_rucio_calls
                    if calls is not None and value is not None and rejected_input(value, tb):
                        calls.noted(INVALID_INPUT)
                except Exception:
                    report_failure("exception")

    def _rucio_metrics_end(self, status_code: str) -> None:
        call = self._rucio_metrics_call
        if call is None:
            return
        self._rucio_metrics_call = None
        try:
            calls = self._rucio_metrics_rucio_calls
            # Statuses are three digits, so text order is number order: no int() for the many successes.
            # No record (starting one failed): judged by the status alone, as a request with no Rucio call.
            fault = None if status_code < "400" else fault_of(int(status_code), calls or RucioCalls())
            # Both ends are on the monotonic clock and start is never later
            # than __init__, so the difference cannot be negative.
            call.finished(status_code, time.perf_counter() - self._rucio_metrics_start, fault)
        except Exception:
            report_failure("finish")


_subclasses: dict[tuple[type[RequestHandler], RouteMetrics], type[RequestHandler]] = {}
_subclasses_lock = threading.Lock()


def is_instrumented(handler_class: type[RequestHandler]) -> bool:
    return issubclass(handler_class, InstrumentedHandler)


# CORS preflights and HEAD are rare here: their series appear on first use
# instead of doubling the series of every route up front.
_NOT_PRECREATED = frozenset({"OPTIONS", "HEAD"})


def implemented_methods(handler_class: type[RequestHandler]) -> list[str]:
    """The verbs ``handler_class`` itself answers, e.g. ``["GET", "PUT"]``."""
    return [
        m for m in handler_class.SUPPORTED_METHODS
        if m not in _NOT_PRECREATED
        and getattr(handler_class, m.lower(), None) is not getattr(RequestHandler, m.lower(), None)
    ]


def instrumented_class(handler_class: type[RequestHandler], route: RouteMetrics) -> type[RequestHandler]:
    """The subclass of ``handler_class`` that records into ``route``; one per pair."""
    key = (handler_class, route)
    with _subclasses_lock:
        subclass = _subclasses.get(key)
        if subclass is None:
            namespace = {
                "__module__": handler_class.__module__,
                "__qualname__": handler_class.__qualname__,
                "__doc__": handler_class.__doc__,
                "_rucio_metrics_route": route,
            }
            subclass = type(handler_class.__name__, (InstrumentedHandler, handler_class), namespace)
            _subclasses[key] = subclass
    route.precreate(implemented_methods(handler_class))
    return subclass


def instrument_app(app: Application, base_url: str, prefixes: Iterable[str], metrics: Metrics) -> list[str]:
    """Instrument every not yet instrumented rule under ``prefixes``; return their labels.

    Safe to call again at any time: rules already instrumented are skipped.
    """
    labels = []
    for rule, label in rules_under(app, base_url, prefixes):
        if not is_instrumented(rule.target):
            rule.target = instrumented_class(rule.target, metrics.route(label))
            labels.append(label)
    return labels


_reported: set[str] = set()


def report_failure(stage: str) -> None:
    """Log a recording failure once per stage; the request goes on regardless."""
    if stage not in _reported:
        _reported.add(stage)
        log.exception(
            "rucio_metrics: recording a request failed at %s; requests are served as usual "
            "but their metrics may be incomplete (logged once)", stage,
        )
