"""Task 1.4 - dynamic batching: a batch scheduler and the latencies it produces.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch1_compression/test_task4_batching.py
    course-grade --task ch1_compression/task4_batching
"""

from __future__ import annotations

from typing import Callable, Sequence


def schedule_batches(arrival_times: Sequence[float], max_batch_size: int,
                     max_wait: float) -> list[tuple[list[int], float]]:
    """Group requests into batches the way a dynamic-batching server does.

    Requests ``0, 1, 2, ...`` arrive at nondecreasing ``arrival_times``. There is one open
    batch; each arriving request joins it. The open batch is dispatched

    * as soon as it holds ``max_batch_size`` requests, at the arrival time of the request
      that fills it, or
    * when its *oldest* request has waited ``max_wait``, at ``oldest arrival + max_wait``,

    whichever comes first; the next request then opens a new batch. A request arriving
    exactly at a dispatch time still joins that batch if it has room. A batch left open
    at the end is dispatched by its timer.

    Args:
        arrival_times: nondecreasing times (seconds, e.g. Unix timestamps: keep them as
            Python floats, float32 cannot hold them), possibly repeated; may be empty.
        max_batch_size: an int >= 1.
        max_wait: seconds, a finite number >= 0 (0: dispatch at once, but requests arriving
            at the same instant still share a batch).

    Returns:
        ``[(indices, dispatch_time), ...]`` in dispatch order; ``indices`` is a list of
        request indices (ints), ``dispatch_time`` a float. Every request is in exactly one
        batch.

    Raises:
        ValueError: decreasing arrival times, ``max_batch_size`` not an int ``>= 1``
        (TypeError is accepted for a non-int), ``max_wait < 0`` or not finite (NaN).

    Hint: one pass over the requests suffices: before adding request ``i``, ask whether
    the open batch's timer expired strictly before ``arrival_times[i]``.
    """
    raise NotImplementedError("Task 1.4: implement schedule_batches")


def request_latencies(arrival_times: Sequence[float], batches: Sequence[tuple[Sequence[int], float]],
                      service_time: Callable[[int], float]) -> list[float]:
    """Latency of every request when one worker serves the batches in order.

    A batch starts at ``max(its dispatch time, the previous batch's finish time)`` and
    takes ``service_time(len(batch))`` seconds; a request's latency is its batch's finish
    time minus its own arrival time (so it includes queueing and waiting to be batched).

    Args:
        arrival_times: as for :func:`schedule_batches`.
        batches: ``[(indices, dispatch_time), ...]`` in serving order (e.g. the output of
            :func:`schedule_batches`; indices need not be sorted).
        service_time: a function of the batch *size* (an int) returning seconds.

    Returns:
        A list of floats, one per request, in request order (index ``i`` -> request ``i``).

    Raises:
        ValueError: a request missing from the batches or appearing twice, an index that is
        not a request (outside ``0 .. len(arrival_times) - 1``), or an empty batch.

    Hint: keep the time at which the worker becomes free; fill a list indexed by request.
    """
    raise NotImplementedError("Task 1.4: implement request_latencies")
