"""Dynamic batching: group requests that arrive over time, trade latency for throughput.

A server that runs one request at a time wastes the hardware: a batch of 64 costs far
less than 64 batches of 1. A *dynamic batcher* holds the first request of a batch for
at most ``max_wait`` seconds, hoping more arrive, and dispatches as soon as the batch is
full (``max_batch_size``) or the oldest request's wait is over. This module schedules
such batches for a list of arrival times, serves them with a measured service-time
model, and reports latency percentiles and throughput (an event-driven simulation, so
a sweep over ``max_wait`` takes milliseconds while the service times are real).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def _check_arrivals(arrival_times: Sequence[float]) -> np.ndarray:
    a = np.asarray(arrival_times, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"arrival_times must be a 1-D sequence, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("arrival_times contains NaN or inf")
    if a.size > 1 and (np.diff(a) < 0).any():
        raise ValueError("arrival_times must be nondecreasing")
    return a


def schedule_batches(
    arrival_times: Sequence[float], max_batch_size: int, max_wait: float
) -> list[tuple[list[int], float]]:
    """Group requests into batches the way a dynamic batcher would.

    A batch opens with the oldest waiting request (arrival ``t0``) and closes at
    ``t0 + max_wait`` or as soon as it holds ``max_batch_size`` requests (at the arrival
    time of the one that filled it). A request arriving exactly at the closing time
    joins if there is room.

    Args:
        arrival_times: nondecreasing arrival times in seconds.
        max_batch_size: at least 1.
        max_wait: seconds, at least 0.

    Returns:
        ``[(request indices, dispatch time), ...]`` in dispatch order.
    """
    a = _check_arrivals(arrival_times)
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, (int, np.integer)) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if not (isinstance(max_wait, (int, float)) and math.isfinite(max_wait) and max_wait >= 0):
        raise ValueError(f"max_wait must be a finite number >= 0 seconds, got {max_wait!r}")
    batches: list[tuple[list[int], float]] = []
    n, start = a.size, 0
    while start < n:
        deadline = a[start] + max_wait
        # requests [start, stop) arrive no later than the deadline; the batch takes at most max_batch_size
        stop = int(np.searchsorted(a, deadline, side="right"))
        end = min(stop, start + int(max_batch_size))
        dispatch = float(a[end - 1]) if end - start == max_batch_size else float(deadline)
        batches.append((list(range(start, end)), dispatch))
        start = end
    return batches


def request_latencies(
    arrival_times: Sequence[float],
    batches: Sequence[tuple[Sequence[int], float]],
    service_time: Callable[[int], float],
) -> list[float]:
    """Per-request latency (finish of its batch minus its arrival) with one worker that
    serves ``batches`` in order, each starting at ``max(dispatch, previous finish)`` and
    taking ``service_time(batch size)`` seconds. Returned in request order.

    Raises:
        ValueError: a request in no batch or in two, or a negative/non-finite service time.
    """
    a = _check_arrivals(arrival_times)
    finish_of = np.full(a.size, np.nan)
    free_at = -math.inf
    for indices, dispatch in batches:
        if len(indices) == 0:
            raise ValueError("empty batch")
        cost = float(service_time(len(indices)))
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"service_time({len(indices)}) returned {cost}; expected a finite time >= 0")
        start = max(float(dispatch), free_at)
        free_at = start + cost
        idx = np.asarray(indices)
        if np.isfinite(finish_of[idx]).any():
            raise ValueError("a request appears in two batches")
        finish_of[idx] = free_at
    if np.isnan(finish_of).any():
        raise ValueError(f"{int(np.isnan(finish_of).sum())} requests are in no batch")
    return (finish_of - a).tolist()


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` arrival times (seconds, from 0) of a Poisson process with ``rate`` requests/s."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of requests per second, got {rate!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.cumsum(gaps) - gaps[0]


@dataclass(frozen=True)
class LinearServiceTime:
    """Service time model ``t(b) = overhead + per_item * b`` seconds, fitted to
    measured latencies by least squares on *relative* residuals (:meth:`fit`), so that
    the small batches, where the fixed overhead dominates, are fitted as well as the
    large ones."""

    overhead: float
    per_item: float

    def __call__(self, batch_size: int) -> float:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        return self.overhead + self.per_item * batch_size

    @classmethod
    def fit(cls, batch_sizes: Sequence[int], seconds: Sequence[float]) -> "LinearServiceTime":
        b = np.asarray(batch_sizes, dtype=np.float64)
        t = np.asarray(seconds, dtype=np.float64)
        if b.size < 2 or b.size != t.size or np.unique(b).size < 2:
            raise ValueError("need measured times for at least two different batch sizes")
        if not (np.isfinite(t).all() and (t > 0).all()):
            raise ValueError("measured times must be positive and finite")
        slope, intercept = np.polyfit(b, t, 1, w=1.0 / t)
        return cls(overhead=max(float(intercept), 0.0), per_item=max(float(slope), 1e-12))


class InterpolatedServiceTime:
    """Service time read off measured ``(batch size, seconds)`` points: linear
    interpolation between them, and linear extrapolation beyond the largest one (so no
    model is imposed on the measurements)."""

    def __init__(self, batch_sizes: Sequence[int], seconds: Sequence[float]):
        b = np.asarray(batch_sizes, dtype=np.float64)
        t = np.asarray(seconds, dtype=np.float64)
        if b.size < 2 or b.size != t.size or np.unique(b).size != b.size:
            raise ValueError("need measured times for at least two distinct batch sizes")
        if not (np.isfinite(t).all() and (t > 0).all() and (b >= 1).all()):
            raise ValueError("batch sizes must be >= 1 and measured times positive and finite")
        order = np.argsort(b)
        self.batch_sizes, self.seconds = b[order], t[order]

    def __call__(self, batch_size: int) -> float:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        b, t = self.batch_sizes, self.seconds
        if batch_size <= b[-1]:
            return float(np.interp(batch_size, b, t))
        slope = (t[-1] - t[-2]) / (b[-1] - b[-2])
        return float(t[-1] + max(slope, 0.0) * (batch_size - b[-1]))


@dataclass(frozen=True)
class BatchingReport:
    """Outcome of serving one arrival trace with one batching policy."""

    max_batch_size: int
    max_wait: float
    latencies: np.ndarray  # seconds, per request
    batch_sizes: np.ndarray  # per dispatched batch
    makespan: float  # seconds from first arrival to last finish

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` in [0, 100], seconds."""
        return float(np.percentile(self.latencies, q))

    @property
    def throughput(self) -> float:
        """Requests per second over the whole trace."""
        return self.latencies.size / self.makespan if self.makespan > 0 else math.inf

    def as_row(self) -> dict[str, float]:
        return {
            "max_batch": self.max_batch_size,
            "max_wait_ms": 1e3 * self.max_wait,
            "mean_batch": float(self.batch_sizes.mean()),
            "p50_ms": 1e3 * self.percentile(50),
            "p95_ms": 1e3 * self.percentile(95),
            "p99_ms": 1e3 * self.percentile(99),
            "throughput_rps": self.throughput,
        }


def simulate_batching(
    arrival_times: Sequence[float],
    max_batch_size: int,
    max_wait: float,
    service_time: Callable[[int], float],
) -> BatchingReport:
    """Schedule ``arrival_times`` with a dynamic batcher and serve them (see module doc)."""
    a = _check_arrivals(arrival_times)
    if a.size == 0:
        raise ValueError("no requests to serve")
    batches = schedule_batches(a, max_batch_size, max_wait)
    lat = np.asarray(request_latencies(a, batches, service_time))
    finish = a + lat
    return BatchingReport(
        max_batch_size=int(max_batch_size),
        max_wait=float(max_wait),
        latencies=lat,
        batch_sizes=np.array([len(b) for b, _ in batches]),
        makespan=float(finish.max() - a.min()),
    )


def sweep_max_wait(
    arrival_times: Sequence[float],
    max_batch_size: int,
    waits: Sequence[float],
    service_time: Callable[[int], float],
) -> list[BatchingReport]:
    """:func:`simulate_batching` for each ``max_wait`` in ``waits``."""
    return [simulate_batching(arrival_times, max_batch_size, w, service_time) for w in waits]
