"""Run a coroutine on an event loop of its own, never the thread's current loop, closed afterwards.

For in-process tests of code that schedules on the running loop (Tornado's
``IOLoop.current()`` inside a coroutine is this loop): nothing of the loop is left
for the next test.

    run_on_own_loop(wait_for_the_child, timeout=10)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_own_loop(main: Callable[[], Awaitable[T]], timeout: float) -> T:
    """``main()`` to its end (at most ``timeout`` seconds) on a new loop, closed afterwards."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), timeout))
    finally:
        loop.close()
