"""Plausible durations: what a test that counts timed events checks of their times too.

A request (or a call to Rucio, or a transfer) that a test sent and counted
took more than nothing and less than the test's own wall time for that
traffic. ``assert_plausible_durations`` checks that of every duration family
in two sets of samples, taken before and after the traffic:

    before = server.samples()
    with Stopwatch() as wall:
        ...  # the traffic
    after = server.samples()
    assert_plausible_durations(before, after, wall.seconds)

A wrong clock (an uptime for a duration), a flipped sign or milliseconds for
seconds then fail the test that counted those events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

Key = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Key, float]

HTTP_DURATION = "rucio_jupyterlab_http_request_duration_seconds"
RUCIO_DURATION = "rucio_jupyterlab_rucio_request_duration_seconds"
TRANSFER_DURATION = "rucio_jupyterlab_transfer_duration_seconds"

# Each duration family and the counter that counts the same events, one per observation.
COUNTED_BY = {
    HTTP_DURATION: "rucio_jupyterlab_http_requests_total",
    RUCIO_DURATION: "rucio_jupyterlab_rucio_requests_total",
    TRANSFER_DURATION: "rucio_jupyterlab_transfers_ended_total",
}
REQUEST_DURATIONS = (HTTP_DURATION, RUCIO_DURATION)


class Stopwatch:
    """Monotonic seconds since it was made (or its ``with`` block began), up to now or the block's end."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._end: float | None = None

    def __enter__(self) -> Stopwatch:
        self._start = time.monotonic()
        return self

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end = time.monotonic()

    @property
    def seconds(self) -> float:
        return (time.monotonic() if self._end is None else self._end) - self._start


def registry_samples(registry: CollectorRegistry) -> Samples:
    """Every sample of ``registry``, keyed as ``JupyterServerProcess.samples`` keys them."""
    return {(s.name, frozenset(s.labels.items())): s.value for family in registry.collect() for s in family.samples}


def prometheus_samples(results: Iterable[dict[str, Any]]) -> Samples:
    """An instant query's results from Prometheus' HTTP API, keyed as above (``__name__`` as the name)."""
    samples: Samples = {}
    for r in results:
        labels = dict(r["metric"])
        samples[(labels.pop("__name__"), frozenset(labels.items()))] = float(r["value"][1])
    return samples


def assert_plausible_durations(
    before: Samples, after: Samples, wall_seconds: float, *, concurrency: int = 1,
    families: Iterable[str] = REQUEST_DURATIONS,
) -> dict[str, tuple[int, float]]:
    """Every event counted between ``before`` and ``after`` took more than 0 and less than ``wall_seconds``.

    Per series of each duration family in ``families``:

    - ``_count`` grew by the events the family's counter counted (``COUNTED_BY``);
    - if it grew by n, ``_sum`` grew by more than 0, by less than n times
      ``wall_seconds``, and by less than ``concurrency`` times ``wall_seconds``
      (the traffic had at most that many events of one series under way at
      once; events of different series may overlap: a call to Rucio runs
      inside a request, a log-in inside another call); if not, ``_sum`` kept
      its value;
    - a histogram's buckets from ``wall_seconds`` up grew by n.

    Returns ``{family: (events, seconds)}``, the growth of each family.
    """
    assert wall_seconds > 0
    grown: dict[str, tuple[int, float]] = {}
    for family in families:
        counts = _growth(before, after, family + "_count")
        sums = _growth(before, after, family + "_sum")
        events = _counted_by(before, after, COUNTED_BY[family], counts)
        problems = [f"{family}: _count grew by {counts.get(k, 0.0):g} where {COUNTED_BY[family]} counted "
                    f"{events.get(k, 0.0):g} ({_show(k)})" for k in sorted(set(counts) | set(events), key=str)
                    if counts.get(k, 0.0) != events.get(k, 0.0)]
        for labels in sorted(set(counts) | set(sums), key=str):
            n, seconds = counts.get(labels, 0.0), sums.get(labels, 0.0)
            if n == 0 and seconds != 0:
                problems.append(f"{family}: _sum changed by {seconds!r} s without an event ({_show(labels)})")
            elif n and not 0 < seconds < min(n, concurrency) * wall_seconds:
                problems.append(f"{family}: {n:g} events took {seconds!r} s in all, not within (0, "
                                f"{min(n, concurrency):g} x the traffic's {wall_seconds:.3f} s) ({_show(labels)})")
        problems += _bucket_problems(before, after, family, counts, wall_seconds)
        assert not problems, "implausible durations:\n" + "\n".join(problems)
        grown[family] = (int(sum(counts.values())), sum(sums.values()))
    return grown


def _growth(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value - before.get((n, labels), 0.0) for (n, labels), value in after.items() if n == name}


def _counted_by(before: Samples, after: Samples, counter: str, counts: dict[frozenset[tuple[str, str]], float]
                ) -> dict[frozenset[tuple[str, str]], float]:
    """The counter's growth summed onto the duration's labels (those its series have)."""
    names = {name for labels in counts for name, _ in labels}
    events: dict[frozenset[tuple[str, str]], float] = {}
    for labels, value in _growth(before, after, counter).items():
        if value:
            series = frozenset((k, v) for k, v in labels if k in names)
            events[series] = events.get(series, 0.0) + value
    return events


def _bucket_problems(before: Samples, after: Samples, family: str, counts: dict[frozenset[tuple[str, str]], float],
                     wall_seconds: float) -> list[str]:
    problems = []
    for labels, value in _growth(before, after, family + "_bucket").items():
        le = dict(labels)["le"]
        series = frozenset((k, v) for k, v in labels if k != "le")
        n = counts.get(series, 0.0)
        bound = math.inf if le == "+Inf" else float(le)
        if bound >= wall_seconds and value != n:
            problems.append(f"{family}: {value:g} of {n:g} events in the bucket le={le}, though each took less "
                            f"than the traffic's {wall_seconds:.3f} s ({_show(series)})")
    return problems


def _show(labels: frozenset[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(labels))
