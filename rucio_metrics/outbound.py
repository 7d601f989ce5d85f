"""Outbound metrics: the Rucio JupyterLab extension's calls to its Rucio servers.

rucio-jupyterlab talks to Rucio through ``rucio_jupyterlab.rucio.rucio.RucioAPI``;
its handlers run those calls in a thread pool. ``instrument_rucio_api``
replaces each method of that class that sends a request to Rucio, once, with
a wrapper that counts and times the call and then returns or raises exactly
what the method did. Only ``RucioAPI`` is touched: it serves nothing but
Rucio calls.

One call is one sample, labelled with the Rucio instance it went to, the
method name, and how it ended:

>>> from prometheus_client import CollectorRegistry
>>> class API:  # the shape of RucioAPI
...     def __init__(self, name):
...         self.instance_config = {"name": name}
...     def get_scopes(self):
...         return ["user.alice"]
>>> registry = CollectorRegistry()
>>> instrument_rucio_api(API, OutboundMetrics.on(registry), ["get_scopes"])
(['get_scopes'], [])
>>> API("atlas").get_scopes()
['user.alice']
>>> registry.get_sample_value("rucio_jupyterlab_rucio_requests_total",
...     {"instance": "atlas", "operation": "get_scopes", "outcome": "2xx"})
1.0
"""

from __future__ import annotations

import functools
import http.client
import importlib
import importlib.util
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

from .faults import INVALID_INPUT, carry_context_into, note_rucio_outcome, raised_at
from .metrics import OncePerRegistry
from .sinks import Sink, Sinks

OUTBOUND_PREFIX = "rucio_jupyterlab_rucio_"

RUCIO_API = "rucio_jupyterlab.rucio.rucio.RucioAPI"

# The RucioAPI methods that send requests to Rucio (rucio-jupyterlab 41); each
# is one ``operation`` label value. ``authenticate`` also runs inside another
# operation when the cached token has expired: it is counted on its own too.
OPERATIONS = (
    "get_scopes",
    "get_rses",
    "search_did",
    "get_metadata",
    "get_files",
    "get_parents",
    "get_rules",
    "get_rule_details",
    "get_replicas",
    "add_replication_rule",
    "authenticate",
)

# Every ``outcome`` label value. A call that returns got a 2xx answer:
# rucio-jupyterlab raises on any other, except where ``_RESULT_OUTCOMES`` says.
# ``invalid_input``: no request left, rucio-jupyterlab's own check refused what the user
# typed or stored (``INPUT_CHECKS``); like 4xx, a user's mistake.
OUTCOMES = ("2xx", "4xx", "5xx", "timeout", "connection_error", "error", INVALID_INPUT)

# Where rucio-jupyterlab 41 checks what the user typed or stored before any request leaves, and the
# exact classes it raises there: the DID search's filter parser (ValueError), and the x509 login's check
# of the certificate and key paths the user saved (FileNotFoundError, ValueError when there is none).
# Only an exception raised by that function itself counts: the same classes raised deeper are the
# service's (json's JSONDecodeError for an answer that could not be parsed; requests' plain OSError for
# a CA bundle the operator configured where there is none).
INPUT_CHECKS: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    ("rucio_jupyterlab.rucio.rucio", "parse_did_filter_from_string_fe"): (ValueError,),
    ("rucio_jupyterlab.rucio.authenticators", "authenticate_x509"): (ValueError, FileNotFoundError),
}

# Instance label of an API object without a usable ``instance_config["name"]``.
UNKNOWN_INSTANCE = "unknown"

_MARK = "_rucio_metrics_operation"

log = logging.getLogger("rucio_metrics")


# add_replication_rule returns response.json() without checking the status: Rucio answers a
# created rule with 201 and a list of rule ids, an error with {"ExceptionClass": ..., "ExceptionMessage":
# ...}. Its status class is what Rucio's REST API (rucio 41, POST /rules/) answers for that class: these
# are refusals of what the user asked for (409, 404, or 401 from the token check); any other
# RucioException is Rucio's generic 500. AccessDenied (the account may not create that rule) is raised
# where the REST layer does not catch it, so Rucio 41 answers it with its generic 500: a refusal all
# the same, counted 4xx by its class.
RULE_REFUSALS = frozenset({
    "AccessDenied", "CannotAuthenticate", "DataIdentifierNotFound", "DuplicateRule", "InsufficientAccountLimit",
    "InsufficientTargetRSEs", "InvalidObject", "InvalidReplicationRule", "InvalidRSEExpression",
    "InvalidRuleWeight", "ManualRuleApprovalBlocked", "ScratchDiskLifetimeConflict",
    "StagingAreaRuleRequiresLifetime",
})
# Rucio answers this one with 409 too, but it is Rucio failing, not the user: an answer the
# extension could not use, the service's (faults.SERVICE_OUTCOMES).
RULE_TEMPORARY_FAILURE = "ReplicationRuleCreationTemporaryFailed"


def rule_call_outcome(result: object) -> str:
    """The outcome of ``add_replication_rule`` from what it returned (Rucio's answer, or its error body)."""
    if isinstance(result, list):
        return "2xx"
    exception_class = result.get("ExceptionClass") if isinstance(result, dict) else None
    if not isinstance(exception_class, str) or exception_class == RULE_TEMPORARY_FAILURE:
        return "error"  # not an answer of Rucio's shape, or Rucio failing
    return "4xx" if exception_class in RULE_REFUSALS else "5xx"


# Operations whose return value, not an exception, tells how Rucio answered.
_RESULT_OUTCOMES: dict[str, Callable[[object], str]] = {"add_replication_rule": rule_call_outcome}


class OperationMetrics:
    """Children of one (instance, operation) pair, so a call costs no ``labels()`` lookup."""

    __slots__ = ("_by_outcome", "_instance", "_metrics", "_operation", "duration")

    def __init__(self, metrics: OutboundMetrics, instance: str, operation: str) -> None:
        self._metrics = metrics
        self._instance = instance
        self._operation = operation
        self.duration = metrics.duration.labels(instance, operation)
        self._by_outcome: dict[str, Counter] = {}

    def observe(self, outcome: str, seconds: float) -> None:
        child = self._by_outcome.get(outcome)
        if child is None:
            child = self._by_outcome.setdefault(
                outcome, self._metrics.requests.labels(self._instance, self._operation, outcome)
            )
        child.inc()
        self.duration.observe(seconds)


class OutboundMetrics(OncePerRegistry):
    """The ``rucio_jupyterlab_rucio_*`` families on one registry.

    Use ``OutboundMetrics.on(registry)``; the constructor registers the
    families and raises if they exist already.
    """

    def __init__(self, registry: CollectorRegistry, latency_metric: str, buckets: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self.latency_metric = latency_metric
        self.requests = Counter(
            OUTBOUND_PREFIX + "requests",
            "Calls from the Rucio JupyterLab extension to a Rucio server, by Rucio instance, RucioAPI method "
            "and outcome (2xx, 4xx, 5xx, timeout, connection_error, error; invalid_input: refused before any "
            "request left).",
            ["instance", "operation", "outcome"],
            registry=registry,
        )
        duration_help = (
            "Time a call from the Rucio JupyterLab extension to a Rucio server took, from the RucioAPI method's "
            "start to its return, by Rucio instance and RucioAPI method."
        )
        if latency_metric == "histogram":
            self.duration: Summary | Histogram = Histogram(
                OUTBOUND_PREFIX + "request_duration_seconds", duration_help, ["instance", "operation"],
                buckets=tuple(buckets), registry=registry,
            )
        else:
            self.duration = Summary(
                OUTBOUND_PREFIX + "request_duration_seconds", duration_help, ["instance", "operation"],
                registry=registry,
            )
        self._operations: dict[tuple[str, str], OperationMetrics] = {}

    def operation(self, instance: str, operation: str) -> OperationMetrics:
        """Children for one (instance, operation) pair, created on first use."""
        key = (instance, operation)
        children = self._operations.get(key)
        if children is None:
            with self._lock:
                children = self._operations.setdefault(key, OperationMetrics(self, instance, operation))
        return children

    def precreate(self, instances: Iterable[str], operations: Iterable[str] = OPERATIONS) -> None:
        """Create the duration series at zero, so rates work from the first scrape."""
        operations = list(operations)
        for instance in instances:
            for operation in operations:
                self.operation(instance, operation)


def instance_label(api: object) -> str:
    """The ``instance`` label of a RucioAPI object: its configured instance name."""
    config = getattr(api, "instance_config", None)
    name = config.get("name") if isinstance(config, Mapping) else None
    return name if isinstance(name, str) and name else UNKNOWN_INSTANCE


def outcome_of(error: BaseException) -> str:
    """The ``outcome`` label of a call that raised ``error``.

    rucio-jupyterlab wraps the ``requests`` exception in its own (explicitly
    or by raising inside ``except``), so the whole chain is searched: a
    timeout or connection failure anywhere in it wins, else the status of an
    HTTP error answer (``RucioRequestsException`` claims status 503 without
    any answer: only a real response's status counts), else
    ``invalid_input`` when one of ``INPUT_CHECKS`` raised, else ``error``. A
    connection dropped before or during the answer's body is a
    ``connection_error`` alike.
    """
    try:
        import requests
        import urllib3
    except ImportError:  # pragma: no cover - rucio-jupyterlab cannot run without them
        return "error"
    # A connection lost before the answer is requests' ConnectionError; one lost in the
    # middle of the body is ChunkedEncodingError over urllib3's ProtocolError (IncompleteRead).
    dropped = (
        requests.ConnectionError, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
        http.client.IncompleteRead, ConnectionError,
    )
    status = None
    invalid = False
    for exc in _chain(error):
        if isinstance(exc, requests.Timeout):
            return "timeout"
        if isinstance(exc, dropped):
            return "connection_error"
        code = getattr(getattr(exc, "response", None), "status_code", None)
        if status is None and isinstance(code, int) and 400 <= code < 600:
            status = code
        invalid = invalid or _failed_input_check(exc)
    if status is not None:
        return f"{status // 100}xx"
    return INVALID_INPUT if invalid else "error"


def _failed_input_check(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by one of ``INPUT_CHECKS`` itself, as one of its classes."""
    frames = raised_at(exc.__traceback__)
    return bool(frames) and type(exc) in INPUT_CHECKS.get(frames[-1], ())


def _chain(error: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen and len(seen) < 16:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


_sinks: Sinks[OutboundMetrics] = Sinks()
_reported = threading.Event()


def instrument_rucio_api(
    api_class: type, metrics: OutboundMetrics, operations: Iterable[str] = OPERATIONS
) -> tuple[list[str], list[str]]:
    """Wrap the ``operations`` methods of ``api_class`` to record into ``metrics``.

    Returns (newly wrapped, not instrumentable) method names; a name is not
    instrumentable when ``api_class`` has no plain function of that name.
    Idempotent: a method already wrapped is left alone (its calls go to the
    latest ``metrics``), so loading twice never double counts.
    """
    wrapped: list[str] = []
    missing: list[str] = []
    with _sinks.lock:
        sink = _sinks.moved_to(api_class, metrics)
        for operation in operations:
            function = inspect.getattr_static(api_class, operation, None)
            if getattr(function, _MARK, None) is not None:
                continue
            if not inspect.isfunction(function):
                missing.append(operation)
                continue
            setattr(api_class, operation, _measured(function, operation, sink))
            wrapped.append(operation)
    return wrapped, missing


def _measured(function: Callable[..., Any], operation: str, sink: Sink[OutboundMetrics]) -> Callable[..., Any]:
    outcome_of_result = _RESULT_OUTCOMES.get(operation)

    @functools.wraps(function)
    def measured(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            result = function(self, *args, **kwargs)
        except BaseException as error:
            _record(sink, self, operation, error, start)
            raise
        _record(sink, self, operation, "2xx" if outcome_of_result is None else outcome_of_result(result), start)
        return result

    setattr(measured, _MARK, operation)
    return measured


def _record(sink: Sink[OutboundMetrics], api: object, operation: str, outcome: str | BaseException,
            start: float) -> None:
    # Never lets a recording failure change what the Rucio call returned or raised.
    try:
        seconds = time.perf_counter() - start
        label = outcome if isinstance(outcome, str) else outcome_of(outcome)
        sink.target.operation(instance_label(api), operation).observe(label, seconds)
        note_rucio_outcome(label)
    except Exception:
        if not _reported.is_set():
            _reported.set()
            log.exception("rucio_metrics: recording a call to Rucio failed; calls go on as usual (logged once)")


# Where rucio-jupyterlab's handlers run their Rucio calls (handlers/base.py, run_in_api_executor).
API_EXECUTOR = ("rucio_jupyterlab.handlers.base", "rucio_api_executor")


def blame_rucio_calls(server_log: logging.Logger) -> None:
    """Let the calls rucio-jupyterlab's handlers run in its thread pool note into their request (faults.py).

    rucio-jupyterlab before 40 has no such pool: its handlers call Rucio on the IOLoop, in the request's
    own context, so there is nothing to do. A pool of another kind would lose the link: the server logs
    that a failed request's fault is then judged without its Rucio calls.
    """
    module_name, attribute = API_EXECUTOR
    try:
        module = importlib.import_module(module_name)
        if not hasattr(module, attribute):
            return
        carried = carry_context_into(module, attribute)
    except Exception:
        carried = False
    if not carried:
        server_log.warning(
            "rucio_metrics: %s.%s is not a thread pool: requests cannot tell a Rucio refusal (the user's "
            "fault) from a failure of the service; their 5xx all count as the service's", module_name, attribute,
        )


def configured_instance_settings(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, settings) of each named Rucio instance in the server's ``c.RucioConfig.instances``."""
    section = config.get("RucioConfig") or {}
    instances = section.get("instances") if isinstance(section, Mapping) else None
    if not isinstance(instances, (list, tuple)):
        return []
    named = ((i.get("name"), i) for i in instances if isinstance(i, Mapping))
    return [(name, i) for name, i in named if isinstance(name, str) and name]


def configured_instances(config: Mapping[str, Any]) -> list[str]:
    """Names of the Rucio instances in the server's ``c.RucioConfig.instances``."""
    return [name for name, _ in configured_instance_settings(config)]


def load_outbound(
    registry: CollectorRegistry,
    latency_metric: str,
    buckets: Sequence[float],
    config: Mapping[str, Any],
    server_log: logging.Logger,
) -> OutboundMetrics | None:
    """Instrument rucio-jupyterlab's ``RucioAPI``; the extension's one call into this module.

    Never raises. When rucio-jupyterlab is missing or ``RucioAPI`` has
    changed shape, logs one warning naming what could not be instrumented;
    whatever could be is measured, and the inbound metrics are untouched.
    """
    # jupyter_server imports every enabled extension before loading any, so an
    # enabled Rucio extension is imported by now. If it is installed but not
    # imported, it is not enabled: importing it here would only create its
    # cache folder in HOME.
    if sys.modules.get("rucio_jupyterlab") is None and importlib.util.find_spec("rucio_jupyterlab") is not None:
        server_log.info("rucio_metrics: rucio-jupyterlab is not loaded in this server: no calls to Rucio to measure")
        return None
    try:
        from rucio_jupyterlab.rucio.rucio import RucioAPI
    except Exception as e:
        server_log.warning(
            "rucio_metrics: calls to Rucio are not measured: cannot import %s (%s: %s)",
            RUCIO_API, type(e).__name__, e,
        )
        return None
    try:
        metrics = OutboundMetrics.on(registry, latency_metric, buckets)
        wrapped, missing = instrument_rucio_api(RucioAPI, metrics)
        instrumented = [op for op in OPERATIONS if op not in missing]
        metrics.precreate(configured_instances(config), instrumented)
    except Exception:
        server_log.warning(
            "rucio_metrics: calls to Rucio are not measured: instrumenting %s failed", RUCIO_API, exc_info=True
        )
        return None
    blame_rucio_calls(server_log)
    if missing:
        server_log.warning(
            "rucio_metrics: %s has changed shape: %s not found, so not measured; %s",
            RUCIO_API, ", ".join(missing), "measuring " + ", ".join(instrumented) if instrumented else "none measured",
        )
    elif wrapped:
        server_log.info("rucio_metrics: measuring calls to Rucio: %s", ", ".join(wrapped))
    return metrics
