"""Whose fault a failed request is, and how a request's Rucio calls reach its record across threads.

The whole chain, on a real server with rucio-jupyterlab's routes and a real
Rucio server, is in test_error_budget.py; the routes' faults one by one, with
the Rucio stand-in, in test_rucio_routes.py and test_rucio_faults.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from rucio_metrics.faults import (
    SERVICE,
    USER,
    ContextCarryingExecutor,
    RucioCalls,
    carry_context_into,
    fault_of,
    note_rucio_outcome,
    rejected_input,
    start_request,
)


def calls(*outcomes: str) -> RucioCalls:
    record = RucioCalls()
    for outcome in outcomes:
        record.noted(outcome)
    return record


@pytest.mark.parametrize(("status", "outcomes", "fault"), [
    (200, (), None),
    (200, ("connection_error",), None),  # the user got their answer: nobody's failure
    (304, (), None),
    (499, ("timeout",), None),  # the client went away
    (400, (), USER),  # the route refused the request (no namespace)
    (404, ("4xx",), USER),  # a DID that does not exist
    (401, ("connection_error",), SERVICE),  # a login that could not reach Rucio
    (500, ("4xx",), USER),  # an invalid RSE expression, upstream's 500
    (500, ("4xx", "4xx", "2xx"), USER),
    (500, (), SERVICE),  # the extension's own error
    (500, ("2xx",), SERVICE),
    (500, ("5xx",), SERVICE),
    (502, ("timeout",), SERVICE),
    (500, ("error",), SERVICE),
    (500, ("4xx", "connection_error"), SERVICE),  # a refusal and an outage: the outage counts
    (500, ("connection_error", "4xx"), SERVICE),
    (500, ("invalid_input",), USER),  # a filter that does not parse: refused before any request left
    (401, ("invalid_input",), USER),  # a login with a certificate path that does not exist
    (500, ("invalid_input", "5xx"), SERVICE),
])
def test_fault_of(status: int, outcomes: tuple[str, ...], fault: str | None) -> None:
    assert fault_of(status, calls(*outcomes)) == fault


# Code as it runs in a module of rucio-jupyterlab's handlers: what the frames of its exceptions say.
_HANDLER = """
import json

def get(did):
    scope, name = did.split(':')

def post(body):
    return body['did']

def put(text):
    return json.loads(text)

def parse(did):
    scope, name = did.split(':')

def patch(did):
    return parse(did)
"""


def raised_by(module: str, function: str, *args: object) -> BaseException:
    namespace: dict[str, object] = {"__name__": module}
    exec(compile(_HANDLER, f"<{module}>", "exec"), namespace)
    try:
        namespace[function](*args)  # type: ignore[operator]
    except BaseException as error:
        return error
    raise AssertionError("nothing raised")


@pytest.mark.parametrize(("module", "function", "argument", "rejected"), [
    ("rucio_jupyterlab.handlers.did_details", "get", "nocolon", True),  # a DID without ":"
    ("rucio_jupyterlab.handlers.did_browser", "get", "a:b:c", True),  # with two
    ("rucio_jupyterlab.handlers.did_make_available", "post", {}, True),  # a body without "did"
    ("rucio_jupyterlab.handlers.did_details", "put", "<html>", False),  # JSONDecodeError, raised by json
    ("rucio_jupyterlab.handlers.did_details", "parse", "nocolon", False),  # not a verb
    ("rucio_jupyterlab.handlers.did_details", "patch", "nocolon", False),  # a verb's callee raised it
    ("rucio_jupyterlab.mode_handlers.replica", "get", "nocolon", False),  # not a handler
    ("rucio_metrics_tests.elsewhere", "post", {}, False),
])
def test_a_route_failing_on_a_malformed_request_is_the_users(
    module: str, function: str, argument: object, rejected: bool
) -> None:
    error = raised_by(module, function, argument)
    assert rejected_input(error, error.__traceback__) is rejected


def test_an_upload_job_id_that_does_not_exist_is_the_users() -> None:
    # rucio-jupyterlab's own job lookup, on its own database (in the test's HOME): the first row of none.
    from rucio_jupyterlab.db import get_db

    with pytest.raises(IndexError) as raised:
        get_db().get_upload_job(999999)
    assert rejected_input(raised.value, raised.value.__traceback__)
    # An IndexError anywhere else is not.
    with pytest.raises(IndexError) as elsewhere:
        [][0]
    assert not rejected_input(elsewhere.value, elsewhere.value.__traceback__)
    assert not rejected_input(IndexError(), None)


def test_a_call_outside_any_request_notes_nothing() -> None:
    # Background work (rucio-jupyterlab's replica fetcher) belongs to no request.
    context = contextvars.Context()
    context.run(note_rucio_outcome, "5xx")  # no record: nothing to note into, nothing raised


def test_the_context_carrying_pool_runs_work_in_the_submitters_context() -> None:
    def request(pool: ThreadPoolExecutor) -> RucioCalls:
        record = start_request()
        pool.submit(note_rucio_outcome, "4xx").result(10)
        return record

    with ContextCarryingExecutor(max_workers=2) as pool:
        first = contextvars.Context().run(request, pool)
        second = contextvars.Context().run(request, pool)
    assert first is not second
    assert (first.refused, second.refused) == (True, True)
    with ThreadPoolExecutor(max_workers=2) as plain:
        lost = contextvars.Context().run(request, plain)
    assert lost.refused is False  # what a plain pool does: why the pool is replaced


def test_asyncio_run_in_executor_carries_the_context_through_the_pool() -> None:
    # rucio-jupyterlab's run_in_api_executor: loop.run_in_executor(pool, partial(...)).
    async def request(pool: ThreadPoolExecutor) -> RucioCalls:
        record = start_request()
        await asyncio.get_running_loop().run_in_executor(pool, note_rucio_outcome, "connection_error")
        return record

    with ContextCarryingExecutor(max_workers=1) as pool:
        record = asyncio.run(request(pool))
    assert record.service_failed


def test_carry_context_into_replaces_a_pool_once_and_keeps_its_size() -> None:
    module = types.ModuleType("fake_rucio_jupyterlab_base")
    original = module.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rucio")
    assert carry_context_into(module, "pool")
    replaced = module.pool
    assert isinstance(replaced, ContextCarryingExecutor) and replaced is not original
    assert (replaced._max_workers, replaced._thread_name_prefix) == (4, "rucio")
    assert carry_context_into(module, "pool") and module.pool is replaced  # a second load changes nothing
    replaced.shutdown()
    assert not carry_context_into(module, "missing")
    module.not_a_pool = object()
    assert not carry_context_into(module, "not_a_pool")


def test_rucio_jupyterlab_runs_its_calls_in_the_pool_we_replace() -> None:
    # The shape rucio_metrics relies on (outbound.API_EXECUTOR): if upstream moves it, this says so.
    import rucio_jupyterlab.handlers.base as base

    from rucio_metrics.outbound import API_EXECUTOR

    assert API_EXECUTOR == (base.__name__, "rucio_api_executor")
    assert isinstance(base.rucio_api_executor, ThreadPoolExecutor)
    assert "rucio_api_executor" in base.run_in_api_executor.__code__.co_names
    assert sys.modules[API_EXECUTOR[0]] is base


@pytest.mark.parametrize(("result", "outcome"), [
    (["a1b2c3"], "2xx"),  # the rule ids Rucio answers a created rule with
    ({"ExceptionClass": "DuplicateRule", "ExceptionMessage": "..."}, "4xx"),  # 409: made available twice
    ({"ExceptionClass": "DataIdentifierNotFound"}, "4xx"),  # 404
    ({"ExceptionClass": "InsufficientAccountLimit"}, "4xx"),  # 409: no quota
    ({"ExceptionClass": "CannotAuthenticate"}, "4xx"),  # 401 from the token check
    ({"ExceptionClass": "ReplicationRuleCreationTemporaryFailed"}, "error"),  # 409, but Rucio failing
    ({"ExceptionClass": "DatabaseException"}, "5xx"),  # Rucio's generic 500
    ({"ExceptionClass": "RSEWriteBlocked"}, "5xx"),
    ({}, "error"),  # not Rucio's shape
    ("<html>Bad Gateway</html>", "error"),
    (None, "error"),
])
def test_a_replication_rules_answer_is_classed_as_rucio_answered_it(result: object, outcome: str) -> None:
    from rucio_metrics.outbound import _RESULT_OUTCOMES

    assert _RESULT_OUTCOMES["add_replication_rule"](result) == outcome


def test_the_rule_refusals_are_rucio_exception_classes() -> None:
    from rucio_metrics.outbound import RULE_REFUSALS, RULE_TEMPORARY_FAILURE
    from rucio_metrics.transfer_results import rucio_exception_names

    assert RULE_REFUSALS | {RULE_TEMPORARY_FAILURE} <= rucio_exception_names()
