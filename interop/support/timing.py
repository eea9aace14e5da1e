"""Latency of a callable: ``runs`` timed calls after ``warmup`` untimed ones, as percentiles
(``interop bench`` and every target's bench use it)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable


@dataclass
class Latency:
    """Wall-clock milliseconds of ``runs`` timed calls after ``warmup`` untimed ones."""

    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure(run: Callable[[], Any], warmup: int, runs: int, clock: Callable[[], float] = time.perf_counter) -> Latency:
    """Call ``run`` ``warmup`` times untimed, then ``runs`` times timed one by one."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = clock()
        run()
        times.append((clock() - start) * 1000)
    return Latency(warmup, runs, percentile(times, 50), percentile(times, 90), sum(times) / len(times), min(times))
