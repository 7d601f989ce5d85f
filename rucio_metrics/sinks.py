"""Where the wrappers installed on a class record: one sink per class, moved by a later load.

A class's methods are wrapped once (a wrapper is marked and never wrapped
again); a later load with new metrics moves the class's sink instead, so the
first wrappers record into the new metrics and loading twice never counts
twice. Each instrumenting module keeps its own ``Sinks``.

    _sinks: Sinks[OutboundMetrics] = Sinks()
    with _sinks.lock:
        sink = _sinks.moved_to(RucioAPI, metrics)
        ...                                    # wrap what is not wrapped yet, each wrapper given ``sink``
    sink.target.operation(...)                 # in a wrapper, at call time
"""

from __future__ import annotations

import threading
import weakref
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Sink(Generic[_T]):
    """What one class's wrappers record into, read at each call."""

    __slots__ = ("__weakref__", "target")

    def __init__(self, target: _T) -> None:
        self.target = target


class Sinks(Generic[_T]):
    """The sinks of the classes one module wraps; the classes are not kept alive by it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._by_class: weakref.WeakKeyDictionary[type, Sink[_T]] = weakref.WeakKeyDictionary()

    def moved_to(self, cls: type, target: _T) -> Sink[_T]:
        """The sink of ``cls``, made or moved to ``target``; call with ``lock`` held, around the wrapping."""
        sink = self._by_class.get(cls)
        if sink is None:
            sink = self._by_class[cls] = Sink(target)
        sink.target = target
        return sink
