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


class EmpiricalServiceTime:
    """Service times drawn from measured samples: the model of a *busy* server.

    A table of best times describes an undisturbed machine; a queue feels the typical
    time and its spread (a queue's waiting grows with the second moment of the service
    time, Pollaczek-Khinchine). This model keeps, for each measured batch size, all the
    measured durations of single calls timed the way the server runs them
    (:func:`measure_service_times`). ``model(b)`` draws a quantile level ``u`` from a
    seeded generator and returns the ``u``-quantile of the measured samples, linearly
    interpolated between the two measured batch sizes around ``b`` (extrapolated
    linearly beyond the largest). ``model.mean(b)`` is the same interpolation of the
    sample means.

    Args:
        samples: ``{batch size: [seconds, ...]}`` with at least two batch sizes, each
            with at least one positive, finite duration.
        seed: seed of the quantile draws (the same seed gives the same sequence).
    """

    def __init__(self, samples: dict[int, Sequence[float]], seed: int = 0):
        if len(samples) < 2:
            raise ValueError("need measured times for at least two batch sizes")
        sizes = sorted(int(b) for b in samples)
        if sizes[0] < 1:
            raise ValueError(f"batch sizes must be >= 1, got {sizes}")
        self.batch_sizes = np.asarray(sizes, dtype=np.float64)
        self.samples = {}
        for b in sizes:
            t = np.sort(np.asarray(samples[b], dtype=np.float64))
            if t.size == 0 or not (np.isfinite(t).all() and (t > 0).all()):
                raise ValueError(f"samples for batch size {b} must be non-empty, positive and finite")
            self.samples[b] = t
        self._rng = np.random.default_rng(seed)

    def _interp(self, batch_size: int, value_of: Callable[[np.ndarray], float]) -> float:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        b = self.batch_sizes
        values = np.array([value_of(self.samples[int(k)]) for k in b])
        if batch_size <= b[-1]:
            return float(np.interp(batch_size, b, values))
        slope = (values[-1] - values[-2]) / (b[-1] - b[-2])
        return float(values[-1] + max(slope, 0.0) * (batch_size - b[-1]))

    def __call__(self, batch_size: int) -> float:
        u = float(self._rng.random())
        return self._interp(batch_size, lambda t: float(np.quantile(t, u)))

    def mean(self, batch_size: int) -> float:
        """Mean measured service time at ``batch_size`` (interpolated), seconds."""
        return self._interp(batch_size, lambda t: float(t.mean()))


def measure_service_times(
    serve: Callable[[int], object], batch_sizes: Sequence[int], rounds: int = 20, warmup: int = 2
) -> dict[int, list[float]]:
    """Time ``serve(b)`` (one call that serves a batch of ``b`` requests) for every ``b``
    in ``batch_sizes``, ``rounds`` times, interleaved (1, 2, 4, ..., 1, 2, 4, ...) so drift
    of a busy machine reaches every size alike. Returns ``{b: [seconds per call]}``: the
    samples of :class:`EmpiricalServiceTime`. The caller's ``serve`` should do what the
    server does per batch (slicing the inputs, the call, collecting the outputs), so its
    fixed per-batch overhead is part of the measurement."""
    import time

    if rounds < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"need rounds >= 1, warmup >= 0 and batch sizes >= 1, got {rounds}, {warmup}, {list(batch_sizes)}")
    out: dict[int, list[float]] = {int(b): [] for b in batch_sizes}
    for r in range(warmup + rounds):
        for b in out:
            t0 = time.perf_counter()
            serve(b)
            if r >= warmup:
                out[b].append(time.perf_counter() - t0)
    return out


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
