"""Seeded experiments, measured-sample comparisons, the empirical service-time model and
the selection table (course_lib.compression.experiments / benchmarking / batching / pipeline)."""

import math

import numpy as np
import pytest
import torch

from course_lib.compression import EmpiricalServiceTime, bench, measure_service_times, simulate_batching
from course_lib.compression import experiments as ex
from course_lib.compression.benchmarking import block_minima, compare_samples, compare_speedup
from course_lib.compression.pipeline import selection_table
from course_lib.compression.training import ZeroShotProbe, make_teacher_pool
from course_lib.config import BenchResult


@pytest.fixture(scope="module")
def small_world(tiny_clip):
    teacher, tok = tiny_clip
    return teacher, tok, make_teacher_pool(teacher, tok, 96, seed=0), ZeroShotProbe(teacher, tok, size=48)


# ---- measured samples -------------------------------------------------------------------


def test_block_minima_takes_the_best_of_each_block():
    r = BenchResult("x", times=[5.0, 1.0, 4.0, 3.0, 9.0, 2.0, 7.0])
    assert block_minima(r, 3) == [1.0, 3.0, 2.0]  # blocks [5, 1], [4, 3, 9], [2, 7]
    assert block_minima(r, 1) == [1.0]
    with pytest.raises(ValueError):
        block_minima(r, 8)
    with pytest.raises(ValueError):
        block_minima(r, 0)


def test_compare_samples_names_the_repetitions_not_seeds():
    c = compare_samples({"fast": [1.0, 1.1, 0.9], "slow": [2.0, 2.1, 1.9]}, higher_is_better=False, unit=" ms")
    assert c.winner.name == "fast" and c.distinguishable
    assert "3 timing blocks each" in c.sentence and "seed" not in c.sentence
    close = compare_samples({"a": [1.0, 1.5], "b": [1.2, 1.4]}, kind="profiled runs")
    assert not close.distinguishable and "spread over profiled runs" in close.sentence
    single = compare_samples({"a": 1.0, "b": 2.0})
    assert "one measurement cannot tell" in single.sentence and "measurement noise" in single.sentence


def test_compare_speedup_pairs_the_samples():
    # the machine slows down between blocks, but within a block int8 is always 2x faster
    c = compare_speedup({"int8": [10.0, 20.0, 40.0], "fp32": [20.0, 40.0, 80.0]}, "fp32", what="batch 64")
    assert c.distinguishable and c.winner.name == "int8" and c.winner.mean == pytest.approx(2.0)
    assert "speed-up 2.00 ± 0.00x over 3 timing blocks (paired) -- int8 is faster" in c.sentence
    # the unpaired comparison of the same samples cannot tell (the drift dominates the spread)
    assert not compare_samples({"int8": [10.0, 20.0, 40.0], "fp32": [20.0, 40.0, 80.0]}, higher_is_better=False).distinguishable
    slow = compare_speedup({"b": [30.0, 31.0], "a": [20.0, 20.5]}, "a", kind="latency rounds")
    assert slow.winner.name == "a" and "a is faster, beyond the spread over latency rounds" in slow.sentence
    noisy = compare_speedup({"b": [10.0, 30.0], "a": [20.0, 20.0]}, "a")
    assert not noisy.distinguishable and "not distinguishable from 1x" in noisy.sentence
    for bad in ({"a": [1.0]}, {"a": [1.0], "b": [1.0, 2.0]}, {"a": [1.0], "c": [1.0]}):
        with pytest.raises(ValueError):
            compare_speedup(bad, "b" if "b" in bad else "a") if "c" not in bad else compare_speedup(bad, "b")


# ---- empirical service times --------------------------------------------------------------


def test_empirical_service_time_draws_measured_quantiles_reproducibly():
    samples = {1: [1.0, 2.0, 3.0], 3: [3.0, 4.0, 5.0]}
    a, b = EmpiricalServiceTime(samples, seed=4), EmpiricalServiceTime(samples, seed=4)
    draws = [a(1) for _ in range(50)]
    assert draws == [b(1) for _ in range(50)]
    assert min(draws) >= 1.0 and max(draws) <= 3.0 and len(set(draws)) > 10
    # batch 2 lies halfway between the measured sizes: its quantiles are the average of theirs
    assert all(2.0 <= a(2) <= 4.0 for _ in range(50))
    assert a.mean(1) == 2.0 and a.mean(3) == 4.0 and a.mean(2) == 3.0
    assert a.mean(5) == 6.0  # linear extrapolation beyond the largest measured size


@pytest.mark.parametrize("bad", [{1: [1.0]}, {1: [1.0], 2: []}, {1: [1.0], 2: [-1.0]}, {0: [1.0], 2: [1.0]},
                                 {1: [1.0], 2: [float("nan")]}])
def test_empirical_service_time_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        EmpiricalServiceTime(bad)


def test_empirical_model_drives_the_simulator_and_matches_a_constant_one():
    arrivals = np.arange(100) * 0.01
    constant = EmpiricalServiceTime({1: [0.002] * 3, 8: [0.002] * 3})
    report = simulate_batching(arrivals, 8, 0.0, constant)
    assert np.allclose(report.latencies, 0.002)  # no queueing: each request served alone in 2 ms


def test_measure_service_times_times_every_size():
    calls = []
    out = measure_service_times(lambda b: calls.append(b), [1, 4, 2], rounds=3, warmup=1)
    assert sorted(out) == [1, 2, 4] and all(len(v) == 3 and all(t >= 0 for t in v) for v in out.values())
    assert calls == [1, 4, 2] * 4  # interleaved, warm-up round included
    with pytest.raises(ValueError):
        measure_service_times(lambda b: None, [0, 1])


# ---- experiments ---------------------------------------------------------------------------


def test_check_seeds():
    assert ex.check_seeds((2, 0)) == [2, 0]
    for bad in ([], [1, 1], [-1], [True]):
        with pytest.raises(ValueError):
            ex.check_seeds(bad)


def test_distillation_arms_one_value_per_seed(small_world):
    teacher, tok, pool, probe = small_world
    arms = ("distilled (inherited init)", "from scratch (random init)")
    out = ex.distillation_arms(teacher, tok, pool, probe, steps=2, seeds=[0, 1], arms=arms, batch_size=16)
    assert list(out) == list(arms) and all(len(v) == 2 and all(0 <= a <= 100 for a in v) for v in out.values())
    again = ex.distillation_arms(teacher, tok, pool, probe, steps=2, seeds=[0], arms=arms[:1], batch_size=16)
    assert again[arms[0]][0] == out[arms[0]][0]  # seeded: the same seed gives the same student
    with pytest.raises(ValueError, match="unknown distillation arms"):
        ex.distillation_arms(teacher, tok, pool, probe, steps=2, seeds=[0], arms=("distilled",))


def test_structured_study_weight_scores_use_no_data(small_world):
    teacher, _, pool, probe = small_world
    out = ex.structured_study(teacher.visual, pool, probe, 0.5, steps=0, seeds=[0, 1, 2], calibration_size=32)
    assert out["after_ft"] == {} and out["pruned_params"] < out["dense_params"]
    assert len(set(out["before_ft"]["weight"])) == 1  # deterministic without calibration data
    assert len(out["before_ft"]["activation"]) == 3
    with pytest.raises(ValueError):
        ex.structured_study(teacher.visual, pool, probe, 0.5, steps=0, seeds=[0], importances=("random",))


def test_scope_curve_and_temperature_sweep_shapes(small_world):
    teacher, tok, pool, probe = small_world
    curve = ex.scope_curve(ex.unfuse_attention(teacher.visual), [probe, probe], [0.0, 0.9])
    assert set(curve) == {"local", "global"} and list(curve["global"]) == ["0", "0.9"]
    assert curve["local"]["0"] == curve["global"]["0"]  # nothing pruned: the same model
    from course_lib.models import zero_shot_classifier
    student = ex.make_student(teacher, ex.StudentSpec())
    sweep = ex.temperature_sweep(student.visual, pool, probe, zero_shot_classifier(teacher, tok, probe.classnames),
                                 [1.0, 4.0], steps=1, seeds=[0, 1], batch_size=16)
    assert list(sweep) == ["T=1", "T=4"] and all(len(v) == 2 for v in sweep.values())
    with pytest.raises(ValueError):
        ex.temperature_sweep(student.visual, pool, probe, torch.zeros(24, 64), [0.0], steps=1, seeds=[0])


def test_run_experiment_returns_json_ready_figures():
    sizes = bench.experiment_sizes("pruning", "quick", {"pool_size": 96, "probe_size": 32, "finetune_steps": 1,
                                                        "batch_size": 16, "curve_size": 32, "distill_steps": 5})
    assert sizes["finetune_steps"] == 1 and "distill_steps" not in sizes
    figs = bench.run_experiment("pruning", sizes, [0], log=lambda *_: None)
    assert len(figs["gradual_vs_oneshot"]["gradual"]) == 1 and "0.9" in figs["scope_curve"]["local"]
    with pytest.raises(ValueError):
        bench.experiment_sizes("nothing", "quick", {})


def test_write_results_needs_an_experiment():
    with pytest.raises(SystemExit):
        bench.main(["--write-results"])


# ---- the selection table ------------------------------------------------------------------


def _variants():
    return {
        "teacher fp32 (torch)": {"params": 10, "size_mb": 4.0, "accuracy": 90.0, "b1_samples": [2.0, 2.1, 1.9],
                                 "b64_samples": [20.0, 21.0, 19.0]},
        "teacher int8 dyn (torch)": {"params": 10, "size_mb": 1.0, "accuracy": 89.5, "b1_samples": [1.9, 2.2, 2.0],
                                     "b64_samples": [10.0, 10.5, 9.5]},
        "student fp32 (torch)": {"params": 2, "size_mb": 0.5, "accuracy": 80.0, "b1_samples": [0.5, 0.5, 0.5],
                                 "b64_samples": [4.0, 4.0, 4.0]},
    }


def test_selection_table_rows_say_size_speed_accuracy_and_conditions():
    rows = selection_table(_variants(), timing="test CPU, 1 thread", training={"student": "5 steps"},
                           accuracy_seeds={"student fp32 (torch)": [80.0, 82.0, 84.0]})
    by = {r["technique"]: r for r in rows}
    int8 = by["INT8 dynamic quantization"]
    assert int8["size"].startswith("4.0x smaller")
    assert int8["b64 speed-up"] == "2.00x" and int8["b1 speed-up"].endswith("(within noise)")
    assert int8["accuracy change"] == "-0.50 points (one run)" and int8["holds when"] == "test CPU, 1 thread"
    student = by["distilled student (20% of the parameters)"]
    assert student["accuracy change"].startswith("-8.00 ± 2.00 points (3 seeds, beyond the spread")
    assert student["holds when"] == "test CPU, 1 thread; 5 steps"
    base = by["baseline: fp32 teacher, eager PyTorch"]
    assert base["accuracy change"] == "90.00% (reference)" and base["size"] == "4.00 MB (reference)"
    with pytest.raises(KeyError):
        selection_table(_variants(), timing="x", baseline="nope")


def test_pipeline_figures_keep_every_round():
    rows = [{"variant": "a", "params": 1, "size_mb": 1.0, "accuracy": 50.0, "cosine": math.nan, "b1_ms": 1.0,
             "b1_speedup": 1.0, "b1_ms_blocks": [1.0], "throughput": 5.0}]
    cfg = bench.PipelineConfig.for_profile("quick")
    out = bench.pipeline_figures([rows, [{**rows[0], "b1_ms": 2.0}]], {"param_ratio": 0.2}, cfg)
    assert out["variants"]["a"]["b1_ms"] == [1.0, 2.0] and out["variants"]["a"]["cosine"] is None
    assert "b1_ms_blocks" not in out["variants"]["a"] and out["rounds"] == 2
