"""Task 1.4 - dynamic batching: a batch scheduler and the latencies it produces. Solution."""

from __future__ import annotations

import math
from typing import Callable, Sequence


def _times(arrival_times: Sequence[float]) -> list[float]:
    times = [float(t) for t in arrival_times]
    if any(not math.isfinite(t) for t in times):
        raise ValueError("arrival times must be finite numbers")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("arrival times must be nondecreasing")
    return times


def schedule_batches(arrival_times: Sequence[float], max_batch_size: int,
                     max_wait: float) -> list[tuple[list[int], float]]:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if not (isinstance(max_wait, (int, float)) and math.isfinite(max_wait) and max_wait >= 0):
        raise ValueError(f"max_wait must be a finite number >= 0, got {max_wait!r}")
    times = _times(arrival_times)
    batches: list[tuple[list[int], float]] = []
    current: list[int] = []
    for i, t in enumerate(times):
        if current and t > times[current[0]] + max_wait:  # the open batch timed out before t
            batches.append((current, times[current[0]] + max_wait))
            current = []
        current.append(i)
        if len(current) == max_batch_size:
            batches.append((current, t))
            current = []
    if current:
        batches.append((current, times[current[0]] + max_wait))
    return batches


def request_latencies(arrival_times: Sequence[float], batches: Sequence[tuple[Sequence[int], float]],
                      service_time: Callable[[int], float]) -> list[float]:
    times = _times(arrival_times)
    seen = [0] * len(times)
    for indices, _ in batches:
        if len(indices) == 0:
            raise ValueError("a batch is empty")
        for i in indices:
            if not 0 <= i < len(times):
                raise ValueError(f"request index {i} is out of range")
            seen[i] += 1
    if any(count != 1 for count in seen):
        raise ValueError("every request must appear in exactly one batch")
    latencies = [0.0] * len(times)
    worker_free = -math.inf
    for indices, dispatch_time in batches:
        start = max(float(dispatch_time), worker_free)
        finish = start + service_time(len(indices))
        worker_free = finish
        for i in indices:
            latencies[i] = finish - times[i]
    return latencies
