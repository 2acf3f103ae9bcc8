"""Tables and protocols of the Split-Digits comparison."""

import math

import numpy as np
import pytest

from course_lib.continual.experiments import (
    PROTOCOLS, STRATEGY_NAMES, VAN_DE_VEN_SPLIT_MNIST, applicable, make_strategy, markdown_table, ordering_check,
    protocol, run_grid, summary_rows,
)
from course_lib.continual.strategies import ContinualResult


def _result(kind, name, seed, final):
    acc = np.eye(2) * 0.9
    acc[1] = final
    return ContinualResult(f"split-digits/{kind}", name, seed, acc, np.array([0.5, 0.5]), [1.0, 2.0])


def test_summary_rows_mean_and_std_over_seeds():
    rows = summary_rows([_result("class", "finetune", 0, [0.0, 0.9]), _result("class", "finetune", 1, [0.2, 0.9])])
    (row,) = rows
    assert row["scenario"] == "class" and row["seeds"] == 2
    assert row["average_accuracy"] == pytest.approx(50.0) and row["average_accuracy_std"] == pytest.approx(math.sqrt(50))
    assert row["forgetting"] == pytest.approx(80.0) and row["seconds"] == pytest.approx(3.0)
    assert row["reference"] == VAN_DE_VEN_SPLIT_MNIST["class"]["finetune"]
    table = markdown_table(rows, [("strategy", "method"), ("average_accuracy", "acc"), ("reference", "paper")])
    assert "| finetune | 50.0 ± 7.1 | 19.9 |" in table


def test_ordering_check():
    rows = [{"scenario": "task", "strategy": s, "average_accuracy": a} for s, a in
            [("finetune", 90.0), ("ewc", 95.0), ("lwf", 94.0)]]
    assert ordering_check(rows, "task") == [("finetune", "ewc", 90.0, 95.0, True), ("ewc", "lwf", 95.0, 94.0, False)]


def test_protocols_and_factories():
    assert protocol("full").hidden == 400 and protocol("full").batch_size == 128 and protocol("full").lr == 1e-3
    assert protocol("quick", seeds=(7,)).seeds == (7,)
    assert len(PROTOCOLS["quick"].seeds) >= 3 and len(PROTOCOLS["full"].seeds) >= 5
    for name in STRATEGY_NAMES:
        for kind in ("task", "domain", "class"):
            if applicable(name, kind):
                assert make_strategy(name, kind, PROTOCOLS["quick"]) is not None
    assert not applicable("progressive", "class")
    with pytest.raises(ValueError):
        make_strategy("gem", "task", PROTOCOLS["quick"])


def test_run_grid_smoke():
    proto = protocol("quick", iterations=3, seeds=(0,), hidden=16)
    results = run_grid(("task",), ("finetune", "progressive"), proto)
    assert [r.strategy for r in results] == ["finetune", "progressive"]
    assert all(r.acc.shape == (5, 5) for r in results)


def test_seed_values_and_ordering_verdicts():
    from course_lib.continual.experiments import ordering_verdicts, seed_values

    def res(name, seed, final):
        acc = np.full((2, 2), 0.9)
        acc[1, 0] = final
        return ContinualResult("split-digits/task", name, seed, acc, np.array([0.5, 0.5]), [1.0])

    results = [res("finetune", s, f) for s, f in enumerate([0.50, 0.52, 0.48])]
    results += [res("ewc", s, f) for s, f in enumerate([0.51, 0.50, 0.53])]      # inside the spread
    results += [res("lwf", s, f) for s, f in enumerate([0.90, 0.89, 0.91])]      # clearly above
    assert seed_values(results, "task", "finetune") == pytest.approx([70.0, 71.0, 69.0])
    with pytest.raises(KeyError):
        seed_values(results, "class", "finetune")
    verdicts = ordering_verdicts(results, "task")
    assert [(v["worse"], v["better"], v["verdict"]) for v in verdicts] == [
        ("finetune", "ewc", "not distinguishable"), ("ewc", "lwf", "as in the paper")]
    flipped = [res("lwf", s, 0.1) for s in range(3)] + results[:6]
    assert ordering_verdicts(flipped, "task")[1]["verdict"] == "reversed"


def test_sweep_keeps_per_seed_values():
    from course_lib.continual.experiments import sweep

    rows = sweep("task", "finetune", [8, 16], "buffer", protocol("quick", iterations=2, seeds=(0, 1), hidden=8))
    assert [len(r["values"]) for r in rows] == [2, 2] and len(rows[0]["forgetting_values"]) == 2
    assert rows[0]["average_accuracy"] == pytest.approx(sum(rows[0]["values"]) / 2)


def test_versus_rows_name_the_sign_and_the_spread():
    from course_lib.continual.experiments import versus_rows

    def res(kind, name, seed, final):
        acc = np.full((2, 2), 0.9)
        acc[1, 0] = final
        return ContinualResult(f"split-digits/{kind}", name, seed, acc, np.array([0.5, 0.5]), [1.0])

    results = [res("task", "finetune", s, f) for s, f in enumerate([0.50, 0.52, 0.48])]
    results += [res("task", "ewc", s, f) for s, f in enumerate([0.51, 0.50, 0.53])]
    results += [res("task", "replay", s, f) for s, f in enumerate([0.90, 0.89, 0.91])]
    rows = versus_rows(results, kinds=("task", "class"))
    assert [r["strategy"] for r in rows] == ["ewc", "replay"]
    assert rows[0]["task"] == "+0.7 (inside the spread)" and rows[1]["task"] == "+20.0 (more than the spread)"
    assert rows[0]["class"] == "n/a" and rows[1]["task_comparison"].distinguishable


def test_versus_values_for_any_figures():
    from course_lib.continual.experiments import versus_values

    values = {"finetune": {"new": [40.0, 42.0, 44.0], "old": [80.0, 81.0, 79.0]},
              "replay": {"new": [60.0, 61.0, 59.0], "old": [80.5, 81.5, 79.5]}, "other": {"new": [41.0]}}
    rows = versus_values(values, "finetune", ["new", "old"])
    assert rows[0] == {**rows[0], "method": "replay", "new": "+18.0 (more than the spread)", "old": "+0.5 (inside the spread)"}
    assert rows[1]["old"] == "n/a" and rows[1]["old_comparison"] is None
    with pytest.raises(KeyError, match="baseline"):
        versus_values(values, "joint", ["new"])
