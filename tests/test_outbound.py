"""Outbound metrics on a fresh registry: rucio-jupyterlab's real ``RucioAPI`` against the Rucio stand-in.

Each test instruments its own subclass of ``RucioAPI``, so the class the
rest of the process sees is never changed and tests cannot leak into each
other.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import subprocess
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from rucio_metrics import outbound
from rucio_metrics.outbound import (
    OPERATIONS,
    OUTCOMES,
    OutboundMetrics,
    configured_instances,
    instance_label,
    instrument_rucio_api,
    load_outbound,
    outcome_of,
)
from tests.servers.jupyter_server_process import REPO
from tests.support.durations import Stopwatch, assert_plausible_durations, registry_samples
from tests.support.rucio_standin import ACCOUNT, PASSWORD, RULES, USERNAME, RucioStandIn

REQUESTS = "rucio_jupyterlab_rucio_requests_total"
DURATION = "rucio_jupyterlab_rucio_request_duration_seconds"
USERPASS = {"username": USERNAME, "password": PASSWORD, "account": ACCOUNT}
DATASET = ("data18", "AOD.dataset")


@pytest.fixture(scope="module")
def rucio_api_class(tmp_path_factory: pytest.TempPathFactory) -> type:
    # Importing rucio_jupyterlab creates its cache database under HOME.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        from rucio_jupyterlab.rucio.rucio import RucioAPI
    return RucioAPI


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioStandIn]:
    with RucioStandIn() as standin:
        yield standin


@pytest.fixture
def api_class(rucio_api_class: type, rucio: RucioStandIn, registry: CollectorRegistry) -> type:
    """A fresh subclass of RucioAPI, instrumented on ``registry``; no cached tokens."""
    rucio.reset()
    rucio_api_class.clear_auth_token_cache()  # type: ignore[attr-defined]
    subclass = plain_subclass(rucio_api_class)
    wrapped, missing = instrument_rucio_api(subclass, OutboundMetrics.on(registry))
    assert (wrapped, missing) == (list(OPERATIONS), [])
    return subclass


@pytest.fixture
def wall() -> Stopwatch:
    """Started before the test's calls: what none of them can have outlasted."""
    return Stopwatch()


def plausible(registry: CollectorRegistry, wall: Stopwatch, concurrency: int = 1) -> None:
    """Each call counted on ``registry`` (fresh for the test) took more than 0 and less than the test so far."""
    assert_plausible_durations({}, registry_samples(registry), wall.seconds, concurrency=concurrency)


def plain_subclass(rucio_api_class: type) -> type:
    """A subclass with RucioAPI's own methods, even if another test instrumented RucioAPI itself."""
    originals = {op: inspect.unwrap(inspect.getattr_static(rucio_api_class, op)) for op in OPERATIONS}
    return type("RucioAPI", (rucio_api_class,), originals)


def client(api_class: type, rucio: RucioStandIn, instance: str = "atlas", password: str = PASSWORD) -> Any:
    return api_class(rucio.instance_config(instance), "userpass", {**USERPASS, "password": password})


def count(registry: CollectorRegistry, instance: str, operation: str, outcome: str) -> float | None:
    return registry.get_sample_value(REQUESTS, {"instance": instance, "operation": operation, "outcome": outcome})


def series(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """Every non-zero requests_total and duration _count sample, keyed by name and label values."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name in (REQUESTS, DURATION + "_count") and s.value:
                out[(s.name, *s.labels.values())] = s.value
    return out


class _Log(logging.Handler):
    """Collects the records of ``logger`` (a fresh one by default)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.logger = logger or logging.getLogger(f"test-outbound-{id(self)}")
        self.logger.addHandler(self)
        if logger is None:
            self.logger.propagate = False
            self.logger.setLevel(logging.DEBUG)

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


def test_every_operation_is_counted_once_by_instance_and_method(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    api = client(api_class, rucio)
    assert api.get_scopes() == ["user.alice", "data18", "mc16"]
    api.get_rses("*")
    api.search_did("data18", "*")
    api.get_metadata("data18", "legacy.dataset")
    api.get_files(*DATASET)
    api.get_parents("data18", "file1.root")
    api.get_rules(*DATASET)
    api.get_rule_details(RULES[0]["id"])
    api.get_replicas(*DATASET)
    assert isinstance(api.add_replication_rule([{"scope": "data18", "name": "AOD.dataset"}], 1, "SITE_DISK"), list)

    # The first call fetched a token: authenticate once, inside get_scopes.
    assert series(registry) == {
        **{(REQUESTS, "atlas", op, "2xx"): 1.0 for op in OPERATIONS},
        **{(DURATION + "_count", "atlas", op): 1.0 for op in OPERATIONS},
    }
    assert len(rucio.requests()) == len(OPERATIONS)
    plausible(registry, wall)


def test_outcomes_follow_what_rucio_answered(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    api = client(api_class, rucio)
    api.get_scopes()  # token now cached: what follows is one request per call

    rucio.fail("GET /scopes/", 500, times=1)
    with pytest.raises(Exception, match="500"):
        api.get_scopes()
    with pytest.raises(Exception, match="404"):
        api.get_files("data18", "no-such-dataset")
    rucio.drop("GET /rses", times=1)
    with pytest.raises(Exception, match="ConnectionError"):
        api.get_rses()
    rucio.truncate("GET /dids/data18/AOD.dataset/rules", times=1)  # dropped in the middle of the body
    with pytest.raises(Exception):  # noqa: B017  (whatever rucio-jupyterlab makes of it)
        api.get_rules(*DATASET)
    with pytest.raises(Exception, match="Duplicate filter key"):
        api.search_did("data18", "*", filters="a=1,a=2")  # refused before any request

    # add_replication_rule does not check the status: Rucio's error body comes back as its value, and
    # its exception class says which status Rucio answers it with (a RucioException: Rucio's generic 500).
    rucio.fail("POST /rules/", 500, times=1)
    assert api.add_replication_rule([{"scope": "data18", "name": "AOD.dataset"}], 1, "SITE_DISK") == {
        "ExceptionClass": "RucioException", "ExceptionMessage": "injected failure 500",
    }

    assert series(registry) == {
        (REQUESTS, "atlas", "authenticate", "2xx"): 1.0,
        (REQUESTS, "atlas", "get_scopes", "2xx"): 1.0,
        (REQUESTS, "atlas", "get_scopes", "5xx"): 1.0,
        (REQUESTS, "atlas", "get_files", "4xx"): 1.0,
        (REQUESTS, "atlas", "get_rses", "connection_error"): 1.0,
        (REQUESTS, "atlas", "get_rules", "connection_error"): 1.0,
        (REQUESTS, "atlas", "search_did", "invalid_input"): 1.0,  # the user's filter, refused before sending
        (REQUESTS, "atlas", "add_replication_rule", "5xx"): 1.0,
        (DURATION + "_count", "atlas", "authenticate"): 1.0,
        (DURATION + "_count", "atlas", "get_scopes"): 2.0,
        (DURATION + "_count", "atlas", "get_files"): 1.0,
        (DURATION + "_count", "atlas", "get_rses"): 1.0,
        (DURATION + "_count", "atlas", "get_rules"): 1.0,
        (DURATION + "_count", "atlas", "search_did"): 1.0,
        (DURATION + "_count", "atlas", "add_replication_rule"): 1.0,
    }
    plausible(registry, wall)


def test_input_refused_before_any_request_is_the_users_and_the_operators_settings_are_not(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch, tmp_path: Path
) -> None:
    # What the user typed or stored, refused by rucio-jupyterlab's own checks: nothing reaches Rucio.
    missing = str(tmp_path / "no-such-cert.pem")
    with pytest.raises(Exception, match="File not found"):
        api_class(rucio.instance_config("atlas"), "x509", {"certificate": missing, "key": missing}).get_scopes()
    with pytest.raises(Exception, match="cert_path must be provided"):
        api_class(rucio.instance_config("cms"), "x509", {"certificate": ""}).get_files(*DATASET)
    with pytest.raises(Exception, match=r"operator not understood|junk"):
        client(api_class, rucio, instance="lhcb").search_did("data18", "*", filters="junk")
    assert rucio.requests() == []  # the filter is parsed before the login
    # The operator's CA bundle where there is none (rucio_ca_cert): requests' plain OSError, the
    # service's, through either login. Nothing listens on port 9: the bundle is looked for first.
    bundle = {"rucio_base_url": "https://127.0.0.1:9", "rucio_auth_url": "https://127.0.0.1:9",
              "rucio_ca_cert": str(tmp_path / "no-such-bundle.pem")}
    cert = tmp_path / "cert.pem"
    cert.write_text("a certificate the user saved")
    with pytest.raises(Exception, match="CA certificate bundle"):
        api_class({**rucio.instance_config("ops"), **bundle}, "userpass", USERPASS).get_scopes()
    with pytest.raises(Exception, match="CA certificate bundle"):
        api_class({**rucio.instance_config("ops"), **bundle}, "x509",
                  {"certificate": str(cert), "key": str(cert)}).get_rses()

    assert series(registry) == {
        (REQUESTS, "atlas", "authenticate", "invalid_input"): 1.0,
        (REQUESTS, "atlas", "get_scopes", "invalid_input"): 1.0,
        (REQUESTS, "cms", "authenticate", "invalid_input"): 1.0,
        (REQUESTS, "cms", "get_files", "invalid_input"): 1.0,
        (REQUESTS, "lhcb", "search_did", "invalid_input"): 1.0,
        (REQUESTS, "ops", "authenticate", "error"): 2.0,
        (REQUESTS, "ops", "get_scopes", "error"): 1.0,
        (REQUESTS, "ops", "get_rses", "error"): 1.0,
        (DURATION + "_count", "atlas", "authenticate"): 1.0,
        (DURATION + "_count", "atlas", "get_scopes"): 1.0,
        (DURATION + "_count", "cms", "authenticate"): 1.0,
        (DURATION + "_count", "cms", "get_files"): 1.0,
        (DURATION + "_count", "lhcb", "search_did"): 1.0,
        (DURATION + "_count", "ops", "authenticate"): 2.0,
        (DURATION + "_count", "ops", "get_scopes"): 1.0,
        (DURATION + "_count", "ops", "get_rses"): 1.0,
    }
    plausible(registry, wall)


@pytest.mark.parametrize(("exception_class", "status", "outcome"), [
    ("DuplicateRule", 409, "4xx"),
    ("InvalidRSEExpression", 400, "4xx"),
    # Raised where Rucio's REST layer does not catch it, so answered with its generic 500: a refusal.
    ("AccessDenied", 500, "4xx"),
    ("RucioException", 500, "5xx"),
    ("DatabaseException", 500, "5xx"),
    ("ReplicationRuleCreationTemporaryFailed", 500, "error"),
])
def test_a_rules_outcome_follows_rucios_exception_class(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, exception_class: str, status: int,
    outcome: str,
) -> None:
    rucio.fail("POST /rules/", status, times=1, exception_class=exception_class)
    answer = client(api_class, rucio).add_replication_rule([{"scope": "data18", "name": "AOD.dataset"}], 1,
                                                           "SITE_DISK")
    assert answer["ExceptionClass"] == exception_class
    assert {k: v for k, v in series(registry).items() if k[0] == REQUESTS and k[2] == "add_replication_rule"} \
        == {(REQUESTS, "atlas", "add_replication_rule", outcome): 1.0}


def test_a_failed_token_request_fails_the_call_that_needed_it(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    with pytest.raises(Exception, match="401"):
        client(api_class, rucio, password="wrong").get_scopes()
    rucio.drop("GET /auth/userpass", times=1)
    with pytest.raises(Exception, match="ConnectionError"):
        client(api_class, rucio, instance="cms").add_replication_rule([], 1, "SITE_DISK")

    assert series(registry) == {
        (REQUESTS, "atlas", "authenticate", "4xx"): 1.0,
        (REQUESTS, "atlas", "get_scopes", "4xx"): 1.0,
        (REQUESTS, "cms", "authenticate", "connection_error"): 1.0,
        (REQUESTS, "cms", "add_replication_rule", "connection_error"): 1.0,
        (DURATION + "_count", "atlas", "authenticate"): 1.0,
        (DURATION + "_count", "atlas", "get_scopes"): 1.0,
        (DURATION + "_count", "cms", "authenticate"): 1.0,
        (DURATION + "_count", "cms", "add_replication_rule"): 1.0,
    }
    assert rucio.requests() == ["GET /auth/userpass", "GET /auth/userpass"]
    plausible(registry, wall)


def test_duration_is_the_time_rucio_took(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    api = client(api_class, rucio)
    api.get_scopes()
    rucio.delay("GET /rses", 0.3)
    api.get_rses()
    seconds = registry.get_sample_value(DURATION + "_sum", {"instance": "atlas", "operation": "get_rses"})
    assert seconds is not None and 0.3 <= seconds < 1.0
    plausible(registry, wall)


def test_a_timeout_is_told_apart_from_a_refused_connection(
    rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    # rucio-jupyterlab 41 sets no timeout itself; a client that does gets "timeout".
    class API:
        instance_config: ClassVar[dict[str, str]] = {"name": "atlas"}

        def get_scopes(self, timeout: float) -> Any:
            return requests.get(rucio.url + "/scopes/", timeout=timeout)

        def get_rses(self) -> Any:
            return requests.get("http://127.0.0.1:9/rses")

    instrument_rucio_api(API, OutboundMetrics.on(registry), ["get_scopes", "get_rses"])
    rucio.delay("GET /scopes/", 1.0, times=1)
    with pytest.raises(requests.ReadTimeout):
        API().get_scopes(timeout=0.2)
    with pytest.raises(requests.ConnectionError):
        API().get_rses()
    assert count(registry, "atlas", "get_scopes", "timeout") == 1.0
    assert count(registry, "atlas", "get_rses", "connection_error") == 1.0
    plausible(registry, wall)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (requests.ConnectTimeout(), "timeout"),  # both a ConnectionError and a Timeout
        (requests.ReadTimeout(), "timeout"),
        (requests.ConnectionError(), "connection_error"),
        (requests.exceptions.SSLError(), "connection_error"),
        (ValueError("bad JSON"), "error"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), "error"),  # Rucio's answer could not be parsed
        (FileNotFoundError(2, "No such file"), "error"),  # not raised by one of rucio-jupyterlab's input checks
    ],
)
def test_outcome_of_a_wrapped_exception(rucio_api_class: type, error: Exception, outcome: str) -> None:
    from rucio_jupyterlab.rucio.exceptions import RucioAPIException, RucioRequestsException

    # As rucio-jupyterlab raises them: its own exception, raised inside the except block.
    def raised() -> BaseException:
        try:
            raise error
        except requests.RequestException as e:
            try:
                raise RucioRequestsException(e)
            except Exception as wrapped:
                return wrapped
        except Exception as e:
            try:
                raise RucioAPIException(None, str(e))
            except Exception as wrapped:
                return wrapped

    assert outcome_of(raised()) == outcome


def test_outcome_of_an_http_error_is_its_status_class(rucio_api_class: type) -> None:
    from rucio_jupyterlab.rucio.exceptions import RucioAuthenticationException, RucioHTTPException

    response = requests.Response()
    for status, outcome in [(404, "4xx"), (401, "4xx"), (503, "5xx"), (200, "error")]:
        response.status_code = status
        assert outcome_of(RucioHTTPException(response)) == outcome
    # A 200 without a token is still a failed login.
    response.status_code = 200
    assert outcome_of(RucioAuthenticationException(response)) == "error"


def test_return_values_and_exceptions_are_untouched(
    api_class: type, rucio_api_class: type, rucio: RucioStandIn
) -> None:
    wrapped, plain = client(api_class, rucio), client(rucio_api_class, rucio)
    assert wrapped.get_replicas(*DATASET) == plain.get_replicas(*DATASET)
    assert wrapped.get_metadata("data18", "legacy.dataset") == plain.get_metadata("data18", "legacy.dataset")
    errors = []
    for api in (wrapped, plain):
        with pytest.raises(Exception) as info:
            api.get_rules("data18", "nope")
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]) and errors[0].args == errors[1].args
    assert errors[0].__traceback__ is not None
    method, original = api_class.get_rules, inspect.unwrap(rucio_api_class.get_rules)
    assert method.__name__ == "get_rules" and method.__wrapped__ is original  # type: ignore[attr-defined]
    assert method.__doc__ == original.__doc__ and method.__qualname__ == original.__qualname__


def test_instrumenting_twice_never_double_counts(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    method = api_class.get_scopes
    assert instrument_rucio_api(api_class, OutboundMetrics.on(registry)) == ([], [])
    assert api_class.get_scopes is method
    client(api_class, rucio).get_scopes()
    assert count(registry, "atlas", "get_scopes", "2xx") == 1.0

    # Instrumenting again for another registry moves the recording there.
    other = CollectorRegistry()
    assert instrument_rucio_api(api_class, OutboundMetrics.on(other)) == ([], [])
    client(api_class, rucio).get_scopes()
    assert count(registry, "atlas", "get_scopes", "2xx") == 1.0
    assert count(other, "atlas", "get_scopes", "2xx") == 1.0
    plausible(registry, wall)
    plausible(other, wall)


def test_metrics_are_created_once_per_registry(registry: CollectorRegistry) -> None:
    metrics = OutboundMetrics.on(registry, "histogram", [0.1, 1.0])
    assert OutboundMetrics.on(registry, "summary") is metrics
    metrics.operation("atlas", "get_scopes").observe("2xx", 0.05)
    labels = {"instance": "atlas", "operation": "get_scopes"}
    assert registry.get_sample_value(DURATION + "_bucket", {**labels, "le": "0.1"}) == 1.0
    assert registry.get_sample_value(DURATION + "_bucket", {**labels, "le": "+Inf"}) == 1.0
    assert registry.get_sample_value(REQUESTS, {**labels, "outcome": "2xx"}) == 1.0


def test_series_exist_at_zero_for_configured_instances(registry: CollectorRegistry) -> None:
    OutboundMetrics.on(registry).precreate(["atlas", "cms"])
    for instance in ("atlas", "cms"):
        for operation in OPERATIONS:
            labels = {"instance": instance, "operation": operation}
            assert registry.get_sample_value(DURATION + "_count", labels) == 0.0
    assert count(registry, "atlas", "get_scopes", "2xx") is None


def test_concurrent_calls_from_threads_are_counted_exactly(
    api_class: type, rucio: RucioStandIn, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    # As in rucio-jupyterlab: RucioAPI objects made per request, run in a pool.
    # Nobody holds a token yet, so concurrent first calls race to fetch one.
    rucio.delay("GET /(scopes|rses)", 0.01)
    rucio.fail("GET /dids/data18/file2.root/parents", 500)
    calls = [("atlas", "get_scopes", ()), ("cms", "get_rses", ()), ("atlas", "get_parents", ("data18", "file2.root"))]
    jobs = [calls[i % 3] for i in range(300)]

    def call(job: tuple[str, str, tuple[str, ...]]) -> None:
        instance, operation, args = job
        try:
            getattr(client(api_class, rucio, instance), operation)(*args)
        except Exception:
            assert operation == "get_parents"

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(call, jobs))

    seen = Counter(rucio.requests())
    tokens = {instance: count(registry, instance, "authenticate", "2xx") for instance in ("atlas", "cms")}
    assert sum(tokens.values()) == seen["GET /auth/userpass"] >= 2
    assert series(registry) == {
        (REQUESTS, "atlas", "get_scopes", "2xx"): 100.0,
        (REQUESTS, "cms", "get_rses", "2xx"): 100.0,
        (REQUESTS, "atlas", "get_parents", "5xx"): 100.0,
        (REQUESTS, "atlas", "authenticate", "2xx"): tokens["atlas"],
        (REQUESTS, "cms", "authenticate", "2xx"): tokens["cms"],
        (DURATION + "_count", "atlas", "get_scopes"): 100.0,
        (DURATION + "_count", "cms", "get_rses"): 100.0,
        (DURATION + "_count", "atlas", "get_parents"): 100.0,
        (DURATION + "_count", "atlas", "authenticate"): tokens["atlas"],
        (DURATION + "_count", "cms", "authenticate"): tokens["cms"],
    }
    assert seen["GET /scopes/"] == seen["GET /rses"] == seen["GET /dids/data18/file2.root/parents"] == 100
    duration = registry.get_sample_value(DURATION + "_sum", {"instance": "atlas", "operation": "get_scopes"})
    assert duration is not None and duration >= 100 * 0.01
    plausible(registry, wall, concurrency=16)


def test_a_recording_failure_never_breaks_the_call(
    api_class: type, rucio: RucioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def operation(self, *args: object) -> Any:
            raise RuntimeError("broken metrics")

    monkeypatch.setattr(outbound, "_reported", threading.Event())  # report again, whatever ran before
    instrument_rucio_api(api_class, Broken())  # type: ignore[arg-type]
    log = _Log(outbound.log)
    try:
        assert client(api_class, rucio).get_scopes() == ["user.alice", "data18", "mc16"]
        with pytest.raises(Exception, match="404"):
            client(api_class, rucio).get_files("data18", "nope")
    finally:
        log.close()
    assert [r.getMessage() for r in log.records] == [
        "rucio_metrics: recording a call to Rucio failed; calls go on as usual (logged once)"
    ]
    assert log.records[0].exc_info is not None


def test_instance_label() -> None:
    api = types.SimpleNamespace(instance_config={"name": "atlas"})
    assert instance_label(api) == "atlas"
    assert instance_label(types.SimpleNamespace(instance_config={})) == "unknown"
    assert instance_label(types.SimpleNamespace(instance_config={"name": 3})) == "unknown"
    assert instance_label(object()) == "unknown"


def test_configured_instances() -> None:
    config = {"RucioConfig": {"instances": [{"name": "atlas"}, {"name": "cms", "$url": "x"}, {"display_name": "x"}]}}
    assert configured_instances(config) == ["atlas", "cms"]
    assert configured_instances({}) == []
    assert configured_instances({"RucioConfig": {"instances": "nonsense"}}) == []
    # A name that is empty or not text names no instance (rucio-jupyterlab could not find it by it).
    odd = {"RucioConfig": {"instances": [{"name": ""}, {"name": 7}, "atlas", {"name": "lhcb"}]}}
    assert configured_instances(odd) == ["lhcb"]


def test_missing_rucio_jupyterlab_gives_one_warning(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    for module in ("rucio_jupyterlab", "rucio_jupyterlab.rucio", "rucio_jupyterlab.rucio.rucio"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    log = _Log()
    assert load_outbound(registry, "summary", [1.0], {}, log.logger) is None
    assert [(r.levelname, r.getMessage()) for r in log.records] == [(
        "WARNING",
        "rucio_metrics: calls to Rucio are not measured: cannot import rucio_jupyterlab.rucio.rucio.RucioAPI "
        "(ModuleNotFoundError: import of rucio_jupyterlab.rucio.rucio halted; None in sys.modules)",
    )]
    assert registry.get_sample_value(DURATION + "_count", {"instance": "atlas", "operation": "get_scopes"}) is None


def test_rucio_jupyterlab_not_loaded_is_not_imported(
    rucio_api_class: type, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    # Installed but not enabled: nothing to measure, and importing it would create its cache folder in HOME.
    monkeypatch.delitem(sys.modules, "rucio_jupyterlab")
    log = _Log()
    assert load_outbound(registry, "summary", [1.0], {}, log.logger) is None
    assert "rucio_jupyterlab" not in sys.modules
    assert [(r.levelname, r.getMessage()) for r in log.records] == [
        ("INFO", "rucio_metrics: rucio-jupyterlab is not loaded in this server: no calls to Rucio to measure")
    ]


def test_changed_api_shape_gives_one_warning_and_measures_the_rest(
    rucio_api_class: type, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, wall: Stopwatch
) -> None:
    class RucioAPI:  # get_scopes became a property, get_rule_details is gone
        instance_config: ClassVar[dict[str, str]] = {"name": "atlas"}
        get_scopes = property(lambda self: [])

    for operation in OPERATIONS:
        if operation not in ("get_scopes", "get_rule_details"):
            setattr(RucioAPI, operation, lambda self, *a, **k: ["ok"])
    module = types.ModuleType("rucio_jupyterlab.rucio.rucio")
    module.RucioAPI = RucioAPI  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rucio_jupyterlab.rucio.rucio", module)
    log = _Log()
    config = {"RucioConfig": {"instances": [{"name": "atlas"}]}}
    assert load_outbound(registry, "summary", [1.0], config, log.logger) is not None
    assert [r.levelname for r in log.records] == ["WARNING"]
    assert log.warnings() == [
        "rucio_metrics: rucio_jupyterlab.rucio.rucio.RucioAPI has changed shape: get_scopes, get_rule_details "
        "not found, so not measured; measuring get_rses, search_did, get_metadata, get_files, get_parents, "
        "get_rules, get_replicas, add_replication_rule, authenticate"
    ]
    assert RucioAPI().get_rses() == ["ok"]
    assert count(registry, "atlas", "get_rses", "2xx") == 1.0
    # Only instrumented operations get series at zero.
    assert registry.get_sample_value(DURATION + "_count", {"instance": "atlas", "operation": "get_metadata"}) == 0.0
    assert registry.get_sample_value(DURATION + "_count", {"instance": "atlas", "operation": "get_scopes"}) is None

    # Loading again (a second server in the process) neither wraps twice nor warns differently.
    log2 = _Log()
    load_outbound(registry, "summary", [1.0], config, log2.logger)
    assert log2.warnings() == log.warnings()
    RucioAPI().get_rses()
    assert count(registry, "atlas", "get_rses", "2xx") == 2.0
    plausible(registry, wall)


def test_threads_see_one_wrapper(rucio_api_class: type, registry: CollectorRegistry) -> None:
    # Instrumenting from many threads at once still wraps each method once.
    subclass = plain_subclass(rucio_api_class)
    results: list[tuple[list[str], list[str]]] = []
    barrier = threading.Barrier(8)

    def instrument() -> None:
        barrier.wait()
        results.append(instrument_rucio_api(subclass, OutboundMetrics.on(registry)))

    threads = [threading.Thread(target=instrument) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(wrapped) for wrapped, _ in results) == [0] * 7 + [len(OPERATIONS)]
    assert subclass.get_scopes.__wrapped__ is inspect.unwrap(rucio_api_class.get_scopes)  # type: ignore[attr-defined]


@pytest.mark.parametrize("latency_metric", ["summary", "histogram"])
def test_promtool_accepts_the_families(latency_metric: str) -> None:
    # Naming, HELP and types as Prometheus' own linter wants them.
    registry = CollectorRegistry()
    metrics = OutboundMetrics.on(registry, latency_metric)
    metrics.precreate(["atlas"])
    metrics.operation("atlas", "get_scopes").observe("2xx", 0.1)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(registry), capture_output=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_the_readme_describes_these_families_labels_and_values(registry: CollectorRegistry) -> None:
    page = (REPO / "docs" / "metrics.md").read_text()
    section = page.split("## Outbound metrics (calls to the Rucio server)\n", 1)[1].split("\n## ", 1)[0]
    metrics = OutboundMetrics.on(registry)
    families = [(m.name, m.type, list(family._labelnames)) for family in (metrics.requests, metrics.duration)
                for m in family.collect()]
    rows = re.findall(r"^\| `(rucio_jupyterlab_rucio_\w+)` \| (\w+).*? \| (.+?) \|", section, re.M)
    assert [(name.removesuffix("_total"), kind, re.findall(r"`(\w+)`", labels)) for name, kind, labels in rows] == (
        families
    )
    outcome_rows = re.findall(r"^  \| (`\w+`(?:, `\w+`)*) \|", section, re.M)
    assert [value for row in outcome_rows for value in re.findall(r"`(\w+)`", row)] == list(OUTCOMES)
    operations = section.split("- `operation` is the `RucioAPI` method:", 1)[1].split("\n- ", 1)[0]
    assert tuple(re.findall(r"`(\w+)`", operations)) == OPERATIONS
    assert "c.RucioMetrics.outbound_enabled = False" in section
