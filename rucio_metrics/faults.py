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

The Rucio calls a request makes run on the IOLoop (sync handlers) or in
rucio-jupyterlab's thread pool; a context variable carries the request's
``RucioCalls`` to both (``carry_context_into`` makes the pool's threads see
the context of the request that submitted the work).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

SERVICE, USER = "service", "user"
FAULTS = (SERVICE, USER)

# Outcomes of a Rucio call (outbound.OUTCOMES) that are the service's: Rucio unreachable,
# too slow, failing, or an answer the extension could not use. "4xx" is Rucio refusing
# what the user typed or stored: not found, invalid, access denied, wrong credentials, quota.
SERVICE_OUTCOMES = frozenset({"5xx", "timeout", "connection_error", "error"})
USER_OUTCOME = "4xx"

# nginx's code for a client that went away: nobody's failure.
CLIENT_CLOSED_REQUEST = 499


class RucioCalls:
    """How the Rucio calls of one request ended, as far as blame goes."""

    __slots__ = ("refused", "service_failed")

    def __init__(self) -> None:
        self.service_failed = False
        self.refused = False

    def noted(self, outcome: str) -> None:
        if outcome in SERVICE_OUTCOMES:
            self.service_failed = True
        elif outcome == USER_OUTCOME:
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
      (4xx), and else the service's: the extension's own failure.
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
