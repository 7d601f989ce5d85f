"""Whose fault a failed request is: the service's, or the user's.

An error budget should be spent by the service failing users, not by users'
mistakes. The status a route answered does not say which: upstream answers
500 to an invalid RSE expression or a wrong stored password, because Rucio
refused them (4xx) and the handler raised. rucio_metrics sees the route and
the Rucio calls of one request in one process, so it can tell:

>>> calls = RucioCalls()
>>> calls.noted("4xx")            # Rucio refused what the user typed or stored
>>> fault_of(500, calls)
'user'
>>> calls.noted("connection_error")
>>> fault_of(500, calls)          # but Rucio was also unreachable: the service's
'service'
>>> fault_of(500, RucioCalls())   # a 5xx without any Rucio refusal: the extension's own bug
'service'
>>> fault_of(404, RucioCalls()), fault_of(499, RucioCalls()), fault_of(200, RucioCalls())
('user', None, None)

Input the user typed or stored that never reached Rucio is the user's too:
a call that stopped at rucio-jupyterlab's own check of it
(``invalid_input``), or a route that raised reading a malformed request
(``rejected_input``: upstream answers those with a 500).

The Rucio calls a request makes run on the IOLoop (sync handlers) or in
rucio-jupyterlab's thread pool; a context variable carries the request's
``RucioCalls`` to both (``carry_context_into`` makes the pool's threads see
the context of the request that submitted the work).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

SERVICE, USER = "service", "user"
# The faults whose series exist from the start (a failed request is always one of them).
FAULTS = (SERVICE, USER)
# A failed transfer whose cause nothing tells (an upload that left no log): judged by no rule.
UNKNOWN = "unknown"

# Outcomes of a Rucio call (outbound.OUTCOMES) that are the service's: Rucio unreachable,
# too slow, failing, or an answer the extension could not use. "4xx" is Rucio refusing
# what the user typed or stored: not found, invalid, access denied, wrong credentials, quota.
SERVICE_OUTCOMES = frozenset({"5xx", "timeout", "connection_error", "error"})
USER_OUTCOME = "4xx"
# The call never left: rucio-jupyterlab's own check refused what the user typed or stored.
INVALID_INPUT = "invalid_input"
USER_OUTCOMES = frozenset({USER_OUTCOME, INVALID_INPUT})

# nginx's code for a client that went away: nobody's failure.
CLIENT_CLOSED_REQUEST = 499


class RucioCalls:
    """How the Rucio calls of one request ended, as far as blame goes."""

    __slots__ = ("refused", "service_failed")

    def __init__(self) -> None:
        self.service_failed = False
        # Rucio refused the request's input, or it was refused before it reached Rucio.
        self.refused = False

    def noted(self, outcome: str) -> None:
        if outcome in SERVICE_OUTCOMES:
            self.service_failed = True
        elif outcome in USER_OUTCOMES:
            self.refused = True


_current: contextvars.ContextVar[RucioCalls | None] = contextvars.ContextVar("rucio_metrics_request", default=None)


def start_request() -> RucioCalls:
    """A new record for the request starting in this context; Rucio calls made from it note into it."""
    calls = RucioCalls()
    _current.set(calls)
    return calls


def note_rucio_outcome(outcome: str) -> None:
    """Note a Rucio call's outcome in the record of the request that made it, if any (background work has none)."""
    calls = _current.get()
    if calls is not None:
        calls.noted(outcome)


def fault_of(status: int, calls: RucioCalls) -> str | None:
    """``service`` or ``user`` for a request that failed with ``status``; None if it did not fail.

    - Any Rucio call of the request failed on the service's side: the
      service's, whatever the status (upstream answers 401 to a login that
      could not reach Rucio).
    - Otherwise a 5xx is the user's when Rucio refused the request's input
      (4xx), or it was refused before it reached Rucio (``invalid_input``),
      and else the service's: the extension's own failure.
    - Otherwise a 4xx is the user's (or their client's); 499, a client that
      went away, is nobody's.
    """
    if status < 400 or status == CLIENT_CLOSED_REQUEST:
        return None
    if calls.service_failed:
        return SERVICE
    if status >= 500:
        return USER if calls.refused else SERVICE
    return USER


def raised_at(tb: TracebackType | None) -> list[tuple[str, str]]:
    """(module, function) of each frame of a traceback, outermost first; the last one raised."""
    frames = []
    while tb is not None:
        frame = tb.tb_frame
        frames.append((str(frame.f_globals.get("__name__", "")), frame.f_code.co_name))
        tb = tb.tb_next
    return frames


# Where rucio-jupyterlab 41's routes read what the client sent, and what they raise, uncaught, when it is
# malformed: a verb of a handler splitting a DID without exactly one ":" (ValueError), reading a body
# without a key it needs (KeyError); and the upload job looked up by the id the client gave, the first
# row of a query that found none (IndexError). Upstream answers each with a 500.
HANDLERS_PACKAGE = "rucio_jupyterlab.handlers."
_VERBS = frozenset({"get", "post", "put", "patch", "delete"})
_JOB_LOOKUP = ("rucio_jupyterlab.db", "get_upload_job")


def rejected_input(error: BaseException, tb: TracebackType | None) -> bool:
    """Whether an uncaught exception is a route of rucio-jupyterlab failing on a malformed request.

    Narrow on purpose: only these exact classes, raised by a handler's verb
    itself (not by anything it called: a ValueError from parsing Rucio's
    answer is a callee's), or by the upload job lookup. The price: a bug in
    a verb's own code raising one of them is counted the user's too
    (``rucio_jupyterlab_http_exceptions_total`` still shows it, by class).
    """
    kind = type(error)
    if kind not in (ValueError, KeyError, IndexError):
        return False
    frames = raised_at(tb)
    if not frames:
        return False
    if kind is IndexError:
        ours = [frame for frame in frames if frame[0].startswith("rucio_jupyterlab.")]
        return bool(ours) and ours[-1] == _JOB_LOOKUP
    module, function = frames[-1]
    return module.startswith(HANDLERS_PACKAGE) and function in _VERBS


_T = TypeVar("_T")


class ContextCarryingExecutor(ThreadPoolExecutor):
    """A thread pool whose work runs in the context of whoever submitted it (``asyncio.to_thread`` does the same)."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def carry_context_into(module: Any, attribute: str) -> bool:
    """Replace the thread pool ``module.<attribute>`` with a context-carrying one of the same size, once.

    False when there is no such pool. The old pool is shut down without waiting:
    work already submitted to it finishes there.
    """
    pool = getattr(module, attribute, None)
    if isinstance(pool, ContextCarryingExecutor):
        return True
    if not isinstance(pool, ThreadPoolExecutor):
        return False
    setattr(module, attribute, ContextCarryingExecutor(max_workers=pool._max_workers,
                                                       thread_name_prefix=pool._thread_name_prefix or ""))
    pool.shutdown(wait=False)
    return True
