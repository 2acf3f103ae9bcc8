import numpy as np
import pytest

from course_lib.compression.batching import (
    InterpolatedServiceTime,
    LinearServiceTime,
    poisson_arrivals,
    request_latencies,
    schedule_batches,
    simulate_batching,
    sweep_max_wait,
)


def test_hand_worked_schedule():
    arrivals = [0.0, 0.1, 0.2, 0.25, 1.0, 1.05, 3.0]
    batches = schedule_batches(arrivals, max_batch_size=3, max_wait=0.5)
    # [0, .1, .2] fills at 0.2; 0.25 waits until 0.75; [1.0, 1.05] until 1.5; 3.0 until 3.5
    assert batches == [([0, 1, 2], 0.2), ([3], 0.75), ([4, 5], 1.5), ([6], 3.5)]


def test_request_at_dispatch_time_joins_if_room():
    assert schedule_batches([0.0, 0.5, 0.5], 3, 0.5) == [([0, 1, 2], 0.5)]
    assert schedule_batches([0.0, 0.5, 0.5], 2, 0.5) == [([0, 1], 0.5), ([2], 1.0)]
    assert schedule_batches([0.0, 0.0, 0.0, 1.0], 8, 0.0) == [([0, 1, 2], 0.0), ([3], 1.0)]
    assert schedule_batches([], 4, 0.1) == []


def test_latencies_with_a_busy_worker():
    arrivals = [0.0, 0.1, 0.2, 0.25]
    batches = [([0, 1, 2], 0.2), ([3], 0.75)]
    lat = request_latencies(arrivals, batches, lambda b: 1.0 + 0.1 * b)
    # batch 1 runs 0.2 -> 1.5; batch 2 waits for the worker: 1.5 -> 2.6
    assert lat == pytest.approx([1.5, 1.4, 1.3, 2.35])


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedule_batches([0.0, 1.0, 0.5], 2, 0.1),
        lambda: schedule_batches([0.0, float("nan")], 2, 0.1),
        lambda: schedule_batches([0.0], 0, 0.1),
        lambda: schedule_batches([0.0], 2.0, 0.1),
        lambda: schedule_batches([0.0], 2, -1.0),
        lambda: request_latencies([0.0, 1.0], [([0], 0.0)], lambda b: 1.0),
        lambda: request_latencies([0.0], [([0], 0.0), ([0], 1.0)], lambda b: 1.0),
        lambda: request_latencies([0.0], [([0], 0.0)], lambda b: float("nan")),
        lambda: poisson_arrivals(0.0, 10),
        lambda: LinearServiceTime.fit([4, 4], [0.1, 0.2]),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_service_time_fit_and_simulation():
    model = LinearServiceTime.fit([1, 8, 32, 64], [0.002 + 0.0005 * b for b in (1, 8, 32, 64)])
    assert model.overhead == pytest.approx(0.002) and model.per_item == pytest.approx(0.0005)
    arrivals = poisson_arrivals(rate=500.0, n=2000, seed=0)
    assert arrivals[0] == 0.0 and np.all(np.diff(arrivals) >= 0)
    assert len(arrivals) / arrivals[-1] == pytest.approx(500, rel=0.1)
    reports = sweep_max_wait(arrivals, 64, [0.0, 0.002, 0.01, 0.05], model)
    means = [r.batch_sizes.mean() for r in reports]
    assert means == sorted(means), "waiting longer forms larger batches"
    assert all(r.batch_sizes.sum() == 2000 and r.batch_sizes.max() <= 64 for r in reports)
    # at 500 req/s, one-by-one service (2.5 ms each) overloads the worker; batching keeps latency bounded
    assert reports[0].percentile(99) > reports[2].percentile(99)
    row = reports[2].as_row()
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["throughput_rps"] > 0
    single = simulate_batching([0.0], 4, 0.01, model)
    assert single.latencies[0] == pytest.approx(0.01 + model(1))


def test_interpolated_service_time_follows_the_measurements():
    model = InterpolatedServiceTime([64, 1, 8], [0.05, 0.002, 0.008])
    assert model(1) == pytest.approx(0.002) and model(8) == pytest.approx(0.008)
    assert model(36) == pytest.approx(0.008 + (0.05 - 0.008) * 28 / 56)
    assert model(128) == pytest.approx(0.05 + (0.05 - 0.008) / 56 * 64)
    with pytest.raises(ValueError):
        InterpolatedServiceTime([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        InterpolatedServiceTime([1, 2], [0.1, -0.2])
    with pytest.raises(ValueError):
        model(0)
