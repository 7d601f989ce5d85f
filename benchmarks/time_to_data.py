"""What measuring time to data costs: CPU per ``did`` poll and per make-available, memory per tracked wait.

In-process, side by side: the same replica-mode handler (the shape of
rucio-jupyterlab's ``ReplicaModeHandler``, its answers fixed so nothing else
varies) plain and wrapped by ``time_to_data``, called directly in a loop.
Plain and wrapped alternate, round after round, and each round's wrapped cost
is compared with the plain one of the same round (paired), so drift in
machine speed cancels; medians over rounds. Each operation's Python function
calls are also counted with ``sys.setprofile`` (``call`` + ``c_call``), a cost
proxy that does not vary from run to run.

Memory: the bytes ``tracemalloc`` sees allocated for 10,000 open waits, the
DID names they keep included, divided by the waits.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from rucio_metrics.time_to_data import REPLICA, TimeToData, instrument_mode_handler

from .hot_path import counting_calls

FILES = 10  # files of the DID a poll answers for
TRACKED = 10_000  # open waits for the memory measurement
SCOPE, NAMESPACE = "user.alice", "atlas"


RULE_IDS = ["3f2a9c0d1e2f4a5b6c7d8e9f0a1b2c3d"]
DUPLICATE_RULE = {"ExceptionClass": "DuplicateRule", "ExceptionMessage": "A duplicate rule for this account, did, "
                  "rse_expression, copies already exists"}


class ReplicaModeHandler:
    """The shape of rucio-jupyterlab's handler: Rucio's answer, and the files' statuses, fixed."""

    def __init__(self, namespace: str, files: list[dict[str, Any]]) -> None:
        self.namespace = namespace
        self.files = files
        self.answer: Any = RULE_IDS

    def make_available(self, scope: str, name: str) -> Any:
        return self.answer

    def get_did_details(self, scope: str, name: str, force_fetch: bool = False) -> Any:
        return self.files


def handler_class() -> type[ReplicaModeHandler]:
    """A class of its own with the methods as its own functions, so wrapping it leaves the others plain."""
    return type("ReplicaModeHandler", (ReplicaModeHandler,), {
        "make_available": ReplicaModeHandler.make_available, "get_did_details": ReplicaModeHandler.get_did_details,
    })


def files(status: str) -> list[dict[str, Any]]:
    return [{"status": status, "did": f"{SCOPE}:file{i}.root", "path": None, "size": 1000, "pfn": None}
            for i in range(FILES)]


@dataclass
class Operation:
    name: str
    # call(handler, i): one operation; setup(waits) runs before each batch, untimed
    call: Callable[[Any, int], object]
    setup: Callable[[TimeToData], None] = lambda waits: None
    answer: Any = None  # Rucio's answer to make-available, if not RULE_IDS


def _reset(waits: TimeToData) -> None:
    """No wait open, and the one the polls of a DID on its way look at."""
    waits._open.clear()
    waits._waiting.clear()  # as the open waits: the gauge of the next batch starts at 0
    waits.made_available(NAMESPACE, REPLICA, SCOPE, "waiting.root", "rule_created", waits.clock())


OPERATIONS = [
    Operation("`did` poll, a DID nobody made available", lambda h, i: h.get_did_details(SCOPE, "elsewhere.root")),
    Operation(f"`did` poll, a DID on its way ({FILES} files replicating)",
              lambda h, i: h.get_did_details(SCOPE, "waiting.root"), _reset),
    Operation("make-available, a new wait (rule created)", lambda h, i: h.make_available(SCOPE, NAMES[i]), _reset),
    Operation("make-available of a DID that waits (Rucio: DuplicateRule)",
              lambda h, i: h.make_available(SCOPE, "waiting.root"), _reset, DUPLICATE_RULE),
]
NAMES: list[str] = []


@dataclass
class TimeToDataCost:
    operation: str
    plain_us: float  # median over rounds, per call
    added_us: float  # median over rounds of (wrapped - plain), same round
    added_calls: float  # profiler events per call, wrapped minus plain


@dataclass
class MemoryCost:
    waits: int
    bytes_per_wait: float


def _cpu_per_call(call: Callable[[Any, int], object], handler: Any, calls: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for i in range(calls):
            call(handler, i)
        return (time.process_time() - start) / calls
    finally:
        gc.enable()


def _calls_per_call(call: Callable[[Any, int], object], handler: Any, calls: int) -> float:
    with counting_calls() as counted:
        for i in range(calls):
            call(handler, i)
    return counted[0] / calls


def measure(rounds: int = 30, calls: int = 20_000, profiled_calls: int = 1000) -> list[TimeToDataCost]:
    """Alternate plain and wrapped ``rounds`` times per operation; medians, paired against plain."""
    NAMES[:] = [f"file{i:06d}.root" for i in range(calls)]
    waits = TimeToData.on(CollectorRegistry())
    waits.configure(3600.0, calls + 10)
    waits.precreate([(NAMESPACE, REPLICA)])
    plain_class, wrapped_class = handler_class(), handler_class()
    instrument_mode_handler(wrapped_class, REPLICA, waits)
    replicating = files("REPLICATING")
    plain, wrapped = plain_class(NAMESPACE, replicating), wrapped_class(NAMESPACE, replicating)
    results = []
    for operation in OPERATIONS:
        plain.answer = wrapped.answer = operation.answer or RULE_IDS
        samples: dict[str, list[float]] = {"plain": [], "wrapped": []}
        for round_ in range(rounds + 1):  # the first round warms up
            order = [("plain", plain), ("wrapped", wrapped)]
            for name, handler in order if round_ % 2 else order[::-1]:
                operation.setup(waits)
                seconds = _cpu_per_call(operation.call, handler, calls)
                if round_:
                    samples[name].append(seconds)
        operation.setup(waits)
        added_calls = _calls_per_call(operation.call, wrapped, profiled_calls) \
            - _calls_per_call(operation.call, plain, profiled_calls)
        results.append(TimeToDataCost(
            operation.name,
            statistics.median(samples["plain"]) * 1e6,
            statistics.median(w - p for w, p in zip(samples["wrapped"], samples["plain"])) * 1e6,
            added_calls,
        ))
    return results


def memory(tracked: int = TRACKED) -> MemoryCost:
    """Bytes per open wait, with ``tracked`` waits open (each DID's name a string of its own, as requests bring)."""
    waits = TimeToData.on(CollectorRegistry())
    waits.configure(3600.0, tracked)
    waits.precreate([(NAMESPACE, REPLICA)])
    waits.made_available(NAMESPACE, REPLICA, SCOPE, "warm.root", "rule_created", waits.clock())  # children made
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(tracked - 1):
            # Made at run time, as a request's query arguments are: never shared constants.
            scope, name = "".join(["user.", "alice"]), f"data18.{i:08d}.physics_Main.DAOD_PHYS.root"
            waits.made_available(NAMESPACE, REPLICA, scope, name, "rule_created", waits.clock())
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert waits.open_waits == tracked
    return MemoryCost(tracked, (after - before) / (tracked - 1))


def run(rounds: int = 30, calls: int = 20_000) -> tuple[list[TimeToDataCost], MemoryCost]:
    return measure(rounds, calls), memory()


if __name__ == "__main__":
    costs, mem = run()
    for cost in costs:
        print(f"{cost.operation}: plain {cost.plain_us:.2f} µs, added {cost.added_us:+.2f} µs, "
              f"{cost.added_calls:+.0f} calls")
    print(f"{mem.bytes_per_wait:.0f} bytes per open wait with {mem.waits:,} open")
