"""Graded tests of task 1.4: schedule_batches and request_latencies.

References: hand-worked schedules and an independent event-driven simulation (a clock that
advances to the next arrival or the open batch's deadline). All times are dyadic rationals
(multiples of 1/64), so every sum and comparison is exact in floating point and any
correct way of comparing times gives the same schedule. ``service_time`` travels to the
submission as data (a table or an affine function) and is rebuilt there by trusted code.

Tolerances: none; schedules and latencies are compared exactly. Every time is a multiple of
1/64 and needs at most 38 significant bits, so Python floats (float64) hold every time,
sum and difference exactly, whatever the order of operations. One test uses Unix
timestamps (about 1.7e9 s, in steps of 1/64 s): float64 still holds them exactly, float32
(24 bits: steps of 128 s at that size) cannot, so converting the times to a float32 tensor
fails there.
"""

import random

import pytest

from course_lib.grading.testing import expect_error
from course_lib.grading.transport import FnSpec

TASK = "ch1_compression/task4_batching"


def _simulate(arrivals, max_batch, max_wait):
    """Event-driven reference: process events in time order; arrivals at a deadline come first."""
    batches, open_batch, deadline = [], [], None
    i, n = 0, len(arrivals)
    while i < n or open_batch:
        next_arrival = arrivals[i] if i < n else None
        if open_batch and (next_arrival is None or deadline < next_arrival):
            batches.append((open_batch, deadline))
            open_batch, deadline = [], None
            continue
        if not open_batch:
            deadline = next_arrival + max_wait
        open_batch.append(i)
        i += 1
        if len(open_batch) == max_batch:
            batches.append((open_batch, next_arrival))
            open_batch, deadline = [], None
    return batches


def _latencies_ref(arrivals, batches, service):
    out, free = [None] * len(arrivals), float("-inf")
    for idx, t in batches:
        free = max(t, free) + service(len(idx))
        for i in idx:
            out[i] = free - arrivals[i]
    return out


def _normalise(batches, what):
    assert isinstance(batches, (list, tuple)), f"{what} should return a list of (indices, dispatch_time), got " \
                                               f"{type(batches).__name__}"
    out = []
    for b in batches:
        assert isinstance(b, (list, tuple)) and len(b) == 2, \
            f"{what}: each batch should be a pair (indices, dispatch_time), got {b!r}"
        idx, t = b
        assert isinstance(idx, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in idx), \
            f"{what}: indices should be a list of ints, got {idx!r}"
        assert isinstance(t, (int, float)) and not isinstance(t, bool), \
            f"{what}: dispatch_time should be a number, got {t!r}"
        out.append((list(idx), float(t)))
    return out


def _check_schedule(impl, arrivals, max_batch, max_wait, expected=None, hint=""):
    what = f"schedule_batches({arrivals if len(arrivals) <= 12 else '...'}, {max_batch}, {max_wait})"
    got = _normalise(impl.schedule_batches(list(arrivals), max_batch, max_wait), what)
    expected = expected if expected is not None else _simulate(list(arrivals), max_batch, max_wait)
    if got != expected:
        first = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        exp_b = expected[first] if first < len(expected) else "nothing"
        got_b = got[first] if first < len(got) else "nothing"
        raise AssertionError(f"{what}: batch #{first} should be {exp_b}, got {got_b} "
                             f"({len(expected)} batches expected, {len(got)} returned). {hint}".rstrip())


@pytest.mark.points(2)
def test_schedule_hand_worked(impl):
    arrivals = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 30.0]
    expected = [([0, 1, 2], 2.0), ([3, 4, 5], 12.0), ([6], 18.0), ([7], 35.0)]
    _check_schedule(impl, arrivals, 3, 5.0, expected,
                    hint="a full batch leaves when its last request arrives; a partial one at oldest arrival + "
                         "max_wait, and the last batch is dispatched by its timer too")


@pytest.mark.points(1)
def test_arrival_exactly_at_the_deadline_joins(impl):
    _check_schedule(impl, [0.0, 5.0], 4, 5.0, [([0, 1], 5.0)],
                    hint="request 1 arrives exactly when the batch is dispatched, and there is room: it joins")
    _check_schedule(impl, [0.0, 1.0, 1.0, 1.0], 2, 1.0, [([0, 1], 1.0), ([2, 3], 1.0)],
                    hint="a request arriving at a dispatch time joins only if the batch has room")


@pytest.mark.points(1)
def test_deadline_counts_from_the_oldest_request(impl):
    _check_schedule(impl, [0.0, 3.0, 4.5, 6.0], 10, 4.0, [([0, 1], 4.0), ([2, 3], 8.5)],
                    hint="the timer starts when the batch's oldest request arrives and is not reset by later ones")


@pytest.mark.points(1)
def test_full_batch_leaves_at_the_filling_arrival(impl):
    _check_schedule(impl, [0.0, 0.0, 0.0, 0.0, 0.0], 2, 1.0, [([0, 1], 0.0), ([2, 3], 0.0), ([4], 1.0)])


@pytest.mark.points(1)
def test_max_wait_zero_and_batch_size_one(impl):
    _check_schedule(impl, [0.0, 0.0, 1.0, 2.0, 2.0, 2.0], 2, 0.0,
                    [([0, 1], 0.0), ([2], 1.0), ([3, 4], 2.0), ([5], 2.0)],
                    hint="with max_wait=0 a batch leaves at once, but requests arriving at that instant join it")
    _check_schedule(impl, [0.5, 0.5, 3.0], 1, 10.0, [([0], 0.5), ([1], 0.5), ([2], 3.0)])


@pytest.mark.points(1)
def test_schedule_of_no_requests(impl):
    got = impl.schedule_batches([], 4, 1.0)
    assert isinstance(got, (list, tuple)) and len(got) == 0, f"no requests should give no batches, got {got!r}"
    _check_schedule(impl, [7.25], 4, 1.5, [([0], 8.75)])


@pytest.mark.points(3)
def test_schedule_random_against_simulation(impl):
    rng = random.Random(1234)
    for _ in range(60):
        n = rng.randint(1, 40)
        gaps = [rng.choice([0, 0, 1, 2, 3, 5, 8, 16, 40]) / 64 for _ in range(n)]
        arrivals = [sum(gaps[: k + 1]) for k in range(n)]
        _check_schedule(impl, arrivals, rng.randint(1, 6), rng.choice([0, 1, 4, 8, 16, 64]) / 64)


@pytest.mark.points(1)
def test_schedule_rejects_bad_input(impl):
    impl.schedule_batches([0.0, 1.0], 2, 1.0)  # valid call first
    expect_error(impl.schedule_batches, [0.0, 2.0, 1.0], 2, 1.0, what="decreasing arrival times")
    expect_error(impl.schedule_batches, [0.0, 1.0], 0, 1.0, what="max_batch_size = 0")
    expect_error(impl.schedule_batches, [0.0, 1.0], 2, -1.0, what="max_wait < 0")
    expect_error(impl.schedule_batches, [0.0, 1.0], 2.5, 1.0, errors=("ValueError", "TypeError"),
                 what="max_batch_size = 2.5 (a batch holds a whole number of requests)")
    expect_error(impl.schedule_batches, [0.0, 1.0], 2, float("nan"), what="max_wait = nan")


def _lat(impl, arrivals, batches, spec):
    out = impl.request_latencies(list(arrivals), batches, spec)
    assert isinstance(out, (list, tuple)) and len(out) == len(arrivals), \
        f"request_latencies should return one latency per request ({len(arrivals)}), got {out!r}"
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in out), \
        f"latencies should be numbers, got {out!r}"
    return [float(v) for v in out]


def _affine(base, per_item):
    return FnSpec("affine", {"base": base, "per_item": per_item}), lambda n: base + per_item * n


@pytest.mark.points(2)
def test_latencies_hand_worked(impl):
    spec, _ = _affine(1.0, 1.0)  # service_time(n) = 1 + n
    got = _lat(impl, [0.0, 1.0, 2.0, 10.0], [([0, 1, 2], 2.0), ([3], 15.0)], spec)
    assert got == [6.0, 5.0, 4.0, 7.0], (
        f"latencies should be [6, 5, 4, 7] (batch 1: starts 2, takes 4, ends 6; batch 2: starts 15, ends 17), "
        f"got {got}; latency = finish of the request's batch - its own arrival")


@pytest.mark.points(1)
def test_latencies_wait_for_a_busy_worker(impl):
    spec = FnSpec("table", {1: 5.0, 2: 5.0})
    got = _lat(impl, [0.0, 0.0, 1.0], [([0, 1], 0.0), ([2], 1.0)], spec)
    assert got == [5.0, 5.0, 9.0], (
        f"latencies should be [5, 5, 9], got {got}: the second batch is dispatched at 1 but the worker is busy "
        "until 5, so it starts at 5 and ends at 10")


@pytest.mark.points(1)
def test_latencies_use_the_batch_size(impl):
    spec = FnSpec("table", {1: 1.0, 2: 1.5, 3: 7.0})
    got = _lat(impl, [0.0, 0.0, 0.0, 20.0, 20.0], [([0, 1, 2], 0.0), ([3, 4], 20.0)], spec)
    assert got == [7.0, 7.0, 7.0, 1.5, 1.5], (
        f"latencies should be [7, 7, 7, 1.5, 1.5], got {got}: service_time takes the batch size, len(indices)")


@pytest.mark.points(1)
def test_latencies_are_in_request_order(impl):
    spec = FnSpec("table", {1: 1.0, 2: 2.0})
    got = _lat(impl, [0.0, 0.0, 0.0], [([2], 0.0), ([1, 0], 0.5)], spec)
    assert got == [3.0, 3.0, 1.0], (
        f"latencies should be [3, 3, 1], got {got}: entry i belongs to request i, whatever the batch order")


@pytest.mark.points(2)
def test_latencies_random_against_reference(impl):
    rng = random.Random(99)
    for _ in range(40):
        n = rng.randint(1, 30)
        gaps = [rng.choice([0, 1, 2, 4, 16]) / 64 for _ in range(n)]
        arrivals = [sum(gaps[: k + 1]) for k in range(n)]
        batches = _simulate(arrivals, rng.randint(1, 5), rng.choice([0, 2, 8]) / 64)
        spec, fn = _affine(rng.choice([1, 2, 4]) / 64, rng.choice([0, 1, 3]) / 64)
        got = _lat(impl, arrivals, batches, spec)
        expected = _latencies_ref(arrivals, batches, fn)
        assert got == expected, f"latencies differ from the reference for {n} requests: expected {expected[:6]}..., " \
                                f"got {got[:6]}..."


@pytest.mark.points(1)
def test_scheduler_and_latencies_together(impl):
    rng = random.Random(7)
    arrivals = sorted(rng.randint(0, 640) / 64 for _ in range(50))
    batches = impl.schedule_batches(arrivals, 4, 0.25)
    _normalise(batches, "schedule_batches")
    spec, fn = _affine(0.125, 0.0625)
    got = _lat(impl, arrivals, [(list(b[0]), b[1]) for b in batches], spec)
    expected = _latencies_ref(arrivals, _simulate(arrivals, 4, 0.25), fn)
    assert got == expected, "feeding your schedule into your latencies should reproduce the reference latencies"


@pytest.mark.points(1)
def test_latencies_reject_inconsistent_batches(impl):
    spec, _ = _affine(1.0, 0.0)
    _lat(impl, [0.0, 1.0], [([0, 1], 1.0)], spec)  # valid call first
    expect_error(impl.request_latencies, [0.0, 1.0], [([0], 1.0)], spec, what="a request that is in no batch")
    expect_error(impl.request_latencies, [0.0, 1.0], [([0, 1], 1.0), ([1], 2.0)], spec,
                 what="a request that is in two batches")
    expect_error(impl.request_latencies, [0.0, 1.0], [([0, 1], 1.0), ([], 2.0)], spec, what="an empty batch")
    expect_error(impl.request_latencies, [0.0, 1.0], [([0, 1, 2], 1.0)], spec,
                 what="request index 2 with only 2 requests")


@pytest.mark.points(1)
def test_unix_timestamps(impl):
    rng = random.Random(1700)
    gaps = [rng.choice([0, 1, 3, 8, 20]) / 64 for _ in range(30)]
    arrivals = [1_700_000_000.0 + sum(gaps[: k + 1]) for k in range(30)]
    _check_schedule(impl, arrivals, 4, 10 / 64,
                    hint="times are Unix timestamps here (1.7e9 s in steps of 1/64 s): keep them as Python floats "
                         "(float64); a float32 tensor rounds them to multiples of 128 s")
    batches = _simulate(arrivals, 4, 10 / 64)
    spec, fn = _affine(1 / 64, 1 / 128)
    got = _lat(impl, arrivals, batches, spec)
    expected = _latencies_ref(arrivals, batches, fn)
    assert got == expected, (
        f"latencies for Unix-timestamp arrivals should be {expected[:4]}..., got {got[:4]}...: keep times as Python "
        "floats (float64); float32 cannot hold 1.7e9 + 1/64")
