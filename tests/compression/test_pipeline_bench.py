import math

import numpy as np
import pytest

from course_lib.compression import bench
from course_lib.compression.distillation import StudentSpec
from course_lib.compression.pipeline import PipelineConfig, gradual_vs_oneshot, student_vs_scratch
from course_lib.compression.training import ZeroShotProbe, make_teacher_pool


def test_bench_prints_the_table_and_the_figures(capsys, tmp_path):
    argv = ["--pool-size", "256", "--probe-size", "64", "--finetune-steps", "2", "--distill-steps", "2",
            "--batch-size", "32", "--repeats", "1", "--no-experiments", "--workdir", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    for name in ("teacher fp32 (torch)", "teacher int8 dyn (ORT)", "pruned 50% + FT (torch)", "student int8 dyn (ORT)"):
        assert name in out
    assert "student params / teacher params (<= 0.25)" in out and "b64_speedup" in out
    assert (tmp_path / "student_int8.onnx").is_file()


def test_figures_judge_targets_both_ways():
    rows = [{"variant": v, "b1_ms": 1.0, "b64_ms": 10.0, "b1_speedup": 1.3, "b64_speedup": 1.6, "accuracy": 90.0}
            for v in ("teacher fp32 (torch)", "teacher int8 dyn (torch)", "teacher fp32 (ORT)", "teacher int8 dyn (ORT)",
                      "pruned 50% + FT (torch)", "student fp32 (torch)")]
    figs = {f["figure"]: f for f in bench.figures(rows, {"param_ratio": 0.3}, teacher_acc=95.0)}
    assert figs["student params / teacher params (<= 0.25)"]["met"] is False
    assert figs["ORT fp32 vs eager torch at b1 (>= 1.2x)"]["met"] is True
    assert figs["INT8 dynamic, torch: speed-up at b64 (>= 1.5x)"]["met"] is False  # 10 ms / 10 ms


def test_experiments_run_with_tiny_budgets(tiny_clip):
    teacher, tok = tiny_clip
    pool = make_teacher_pool(teacher, tok, 128, seed=0)
    probe = ZeroShotProbe(teacher, tok, size=64)
    runs = student_vs_scratch(teacher, tok, pool, probe, StudentSpec(), steps=2, batch_size=32)
    assert set(runs) == {"distilled (inherited init)", "contrastive (inherited init)", "from scratch (random init)"}
    assert all(0 <= v <= 100 for v in runs.values())
    gvo = gradual_vs_oneshot(teacher.visual, pool, probe, 0.9, steps=4, batch_size=32)
    assert gvo["one-shot"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert gvo["gradual"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert math.isnan(gvo["gradual"]["accuracy_before_ft"])


def test_profiles_differ():
    quick, full = PipelineConfig.for_profile("quick"), PipelineConfig.for_profile("full")
    assert full.distill_steps > quick.distill_steps and full.pool_size > quick.pool_size


def test_int8_anatomy_rows(tiny_clip, tmp_path):
    from course_lib.compression.bench import int8_anatomy

    rows = int8_anatomy(tiny_clip[0].visual, tmp_path, batch_size=8, repeats=2, profile_runs=2)
    assert [r["variant"] for r in rows] == ["ORT fp32", "ORT int8 dynamic (default ops)", "ORT int8 dynamic (MatMul/Gemm only)"]
    assert rows[0]["speedup"] == 1.0
    for r in rows:
        assert r["b8_ms"] > 0 and r["matrix_ms"] > 0 and r["conv_ms"] > 0 and r["other_ms"] >= 0
    sampled = int8_anatomy(tiny_clip[0].visual, tmp_path, batch_size=8, repeats=3, profile_runs=2, samples=True)
    for r in sampled:
        assert len(r["matrix_runs"]) == len(r["conv_runs"]) == len(r["other_runs"]) == 2 and len(r["b8_blocks"]) == 3
        assert r["matrix_ms"] == pytest.approx(float(np.median(r["matrix_runs"])))


def test_int8_anatomy_rejects_bad_sizes(tiny_clip, tmp_path):
    from course_lib.compression.bench import int8_anatomy

    with pytest.raises(ValueError, match="batch_size"):
        int8_anatomy(tiny_clip[0].visual, tmp_path, batch_size=0)
