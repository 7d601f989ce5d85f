"""Histogram bucket bounds: the one function that checks them and the one that builds them.

The ``buckets`` option is validated by ``histogram_bounds`` itself, so a
value the option accepts can never fail later when the histogram is made.

>>> histogram_bounds([0.1, 1, 10])
[0.1, 1.0, 10.0, inf]
>>> histogram_bounds([float("inf"), float("inf")])
Traceback (most recent call last):
...
ValueError: buckets must be strictly increasing
"""

from __future__ import annotations

import math
from collections.abc import Iterable

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

INF = float("inf")


def histogram_bounds(buckets: Iterable[object]) -> list[float]:
    """Upper bounds as a histogram takes them: finite, positive, strictly increasing, then +Inf.

    A trailing +Inf may be given or left out. Raises ``ValueError`` saying
    which rule ``buckets`` breaks.
    """
    try:
        bounds = [float(b) for b in buckets]  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise ValueError(f"buckets must be numbers ({e})") from None
    except OverflowError:
        # An int too large for a float (2**2000): say so rather than let it escape the validation.
        raise ValueError("buckets must be numbers a float can hold") from None
    if not bounds:
        raise ValueError("at least one bucket is needed")
    if any(math.isnan(b) for b in bounds):
        raise ValueError("buckets must be numbers, not NaN")
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError("buckets must be strictly increasing")
    if bounds[0] <= 0:
        raise ValueError("buckets must be positive numbers")
    if bounds[-1] == INF:
        bounds.pop()
    if not bounds:
        raise ValueError("at least one finite bucket is needed")
    return [*bounds, INF]
