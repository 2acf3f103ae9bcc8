"""The guide's tables rendered from results figures."""

from course_lib.continual import report


def _entry(memory, values):
    return {"memory": memory, "seeds": [0, 1], "average_accuracy": values, "forgetting": [0.0, 0.0], "bwt": [0.0, 0.0]}


def test_strategy_and_versus_tables():
    measured = {kind: {"finetune": _entry(0, [16.0, 18.0]), "replay (200)": _entry(200, [85.0, 87.0])}
                for kind in ("task", "domain", "class")}
    table = report.strategy_table(measured, labels=("finetune", "replay (200)", "progressive"))
    assert "| finetune | 17.0 ± 1.4 | 87.2 | 17.0 ± 1.4 | 17.0 ± 1.4 | 19.9 |" in table
    assert "| progressive | n/a | — | n/a | n/a | — |" in table
    vs = report.versus_table(measured, labels=("finetune", "replay (200)"))
    assert "| replay (200) | +69.0 (more than the spread) |" in vs


def test_guard_and_timing_tables():
    guard = {"phases": [["none", 4], ["mirror", 4]], "figures": {
        "guard": {"phase0": [90.0, 91.0], "phase0_first": [50.0, 70.0], "phase1": [80.0, 81.0], "phase1_first": [60.0, 61.0]},
        "plain": {"phase0": [70.0, 71.0], "phase0_first": [40.0, 60.0], "phase1": [80.5, 80.0], "phase1_first": [50.0, 51.0]}}}
    table = report.guard_table(guard)
    assert "| phase 0 (none) | 90.5 ± 0.7 | 70.5 ± 0.7 | guard ahead by 20.0 |" in table
    assert "| phase 0 (none), first 100 items | 60.0 ± 14.1 | 50.0 ± 14.1 | inside the spread (10.0) |" in table
    timing = report.timing_table({
        "ewc_step": [{"hidden": 100, "step": "ewc (fused)", "ms": 1.234, "ratio": 1.05}],
        "service": {"requests": 1000.0, "errors": 0.0, "predictions_per_s": 805.2, "p50_ms": 59.4, "p99_ms": 89.0},
        "crash": {"acknowledged": 60, "missing": 0, "corrupted": 0, "restored": True, "watermark": 61, "max_acknowledged": 60}})
    assert "| ewc (fused) step, hidden 100 | 1.23 ms, 1.05x plain |" in timing
    assert "805 predictions/s, p50 59 ms, p99 89 ms, 0 errors" in timing
    assert "60 items acknowledged, 0 missing, 0 altered; restored from the checkpoint: True; all learned after the restart: True" in timing
