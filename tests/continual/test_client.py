"""Stream helpers, the benchmark CLI and process-parallel grids."""

import numpy as np
import pytest

from course_lib.continual import bench
from course_lib.continual.client import apply_drift, drift_stream, windowed_accuracy
from course_lib.continual.experiments import ewc_step_times, protocol, run_many


def test_drifts():
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.testing.assert_array_equal(apply_drift(apply_drift(x, "mirror"), "mirror"), x)
    np.testing.assert_array_equal(apply_drift(x, "mirror").reshape(5, 8, 8)[:, :, 0], x.reshape(5, 8, 8)[:, :, 7])
    np.testing.assert_allclose(apply_drift(x, "invert"), 1 - x)
    shifted = apply_drift(x, "shift").reshape(5, 8, 8)
    assert np.all(shifted[:, :, 0] == 0) and np.array_equal(shifted[:, :, 1:], x.reshape(5, 8, 8)[:, :, :-1])
    with pytest.raises(ValueError):
        apply_drift(x, "rotate")


def test_drift_stream_and_windowed_accuracy():
    s = drift_stream((("none", 30), ("mirror", 20)), seed=1)
    assert s.x.shape == (50, 64) and s.phases == ["none", "mirror"] and (s.phase == 1).sum() == 20
    assert s.x.dtype == np.float32 and s.x.min() >= 0 and s.x.max() <= 1
    np.testing.assert_allclose(windowed_accuracy(np.array([1, 0, 1, 1]), 2), [0.5, 0.5, 1.0])
    with pytest.raises(ValueError):
        windowed_accuracy(np.array([1, 0]), 3)
    with pytest.raises(ValueError):
        drift_stream((("none", 0),))


def test_parallel_runs_give_the_same_results():
    proto = protocol("quick", iterations=3, hidden=16, seeds=(0,))
    jobs = [("class", "replay", proto, 0), ("task", "ewc", proto, 1)]
    serial = run_many(jobs, workers=1)
    parallel = run_many(jobs, workers=2)
    for a, b in zip(serial, parallel):
        assert a.strategy == b.strategy and a.seed == b.seed
        np.testing.assert_array_equal(a.acc, b.acc)
    with pytest.raises(ValueError):
        run_many(jobs, workers=0)


def test_ewc_step_times_and_bench_cli(capsys):
    t = ewc_step_times(16, rounds=2, repeats=2)
    assert set(t) == {"plain", "ewc (fused)", "ewc (penalty in loss)"} and t["plain"]["ratio"] == 1.0
    assert all(v["ms"] > 0 for v in t.values())
    with pytest.raises(SystemExit):
        bench.main(["--only", "nothing"])
