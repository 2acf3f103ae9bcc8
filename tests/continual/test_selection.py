"""The measured selection guide: candidates per budget, rows from measured figures."""

import pytest

from course_lib.continual.experiments import markdown_table, protocol
from course_lib.continual.selection import (
    SELECTION_COLUMNS, candidate_label, memory_label, run_selection, selection_jobs, selection_rows,
)


def _entry(memory, values):
    return {"memory": memory, "seeds": list(range(len(values))), "average_accuracy": values,
            "forgetting": [0.0] * len(values), "bwt": [0.0] * len(values)}


MEASURED = {"class": {
    "finetune": _entry(0, [16.0, 17.0, 15.0]),
    "ewc": _entry(0, [16.5, 16.0, 17.5]),
    "replay (20)": _entry(20, [70.0, 75.0, 72.0]),
    "replay-balanced (20)": _entry(20, [71.0, 76.0, 73.0]),
    "replay (200)": _entry(200, [85.0, 86.0, 87.0]),
    "joint": _entry("all", [84.0, 86.5, 85.0]),
}}


def test_rows_pick_the_best_that_fits_each_budget():
    rows = selection_rows(MEASURED, "test protocol")
    assert [r["memory"] for r in rows] == ["0", "20 (2 per class)", "200 (20 per class)", "all past data (joint)"]
    assert [r["best_name"] for r in rows] == ["ewc", "replay-balanced (20)", "replay (200)", "replay (200)"]
    # ewc vs finetune: 16.67 +- 0.76 vs 16.0 +- 1.0: inside the spread
    assert rows[0]["tied_names"] == ["finetune"] and not rows[0]["distinguishable"]
    assert rows[1]["tied_names"] == ["replay (20)"]
    # memory buys a real gain in class-IL; joint adds none over replay (200)
    assert rows[1]["gain_distinguishable"] and rows[1]["gain"].startswith("+56.7 over ewc")
    assert rows[2]["gain_distinguishable"]
    assert rows[3]["gain"] == "none (same best)" and rows[3]["tied_names"] == ["joint"]
    assert rows[2]["note"] == "stores raw examples; test protocol"
    table = markdown_table(rows, SELECTION_COLUMNS)
    assert table.count("\n") == 5 and "| class | 0 | ewc: 16.7 ± 0.8 | finetune | — |" in table


def test_rows_refuse_empty_input():
    with pytest.raises(ValueError, match="no measured figures"):
        selection_rows({})


def test_labels_and_jobs():
    assert candidate_label("replay", 20) == "replay (20)" and candidate_label("ewc", 20) == "ewc"
    assert memory_label(0) == "0" and memory_label("all").startswith("all past data")
    proto = protocol("quick", seeds=(0, 1))
    jobs = selection_jobs(["task", "class"], [200, 20], proto)
    labels = {(k, lab) for k, lab, _, _ in jobs}
    assert ("task", "progressive") in labels and ("class", "progressive") not in labels
    assert ("class", "replay (20)") in labels and ("class", "replay-balanced (200)") in labels
    assert len(jobs) == 2 * (5 + 4 + 1) + 2 * (4 + 4 + 1)
    buffers = {lab: job[2].buffer for k, lab, _, job in jobs if lab.startswith("replay")}
    assert buffers["replay (20)"] == 20 and buffers["replay-balanced (200)"] == 200
    with pytest.raises(ValueError, match="unknown scenario"):
        selection_jobs(["online"], [20], proto)
    with pytest.raises(ValueError, match=">= 1 example"):
        selection_jobs(["task"], [0], proto)


def test_run_selection_smoke():
    proto = protocol("quick", iterations=2, seeds=(0,), hidden=8)
    sel = run_selection(("domain",), (10,), proto)
    measured = sel.measured()
    assert set(measured["domain"]) == {"finetune", "ewc", "online-ewc", "lwf", "replay (10)", "replay-balanced (10)", "joint"}
    assert measured["domain"]["replay (10)"]["memory"] == 10 and measured["domain"]["joint"]["memory"] == "all"
    assert sel.result("domain", "replay (10)", 0).acc.shape == (5, 5)
    rows = selection_rows(measured, sel.conditions())
    assert len(rows) == 3 and "MLP 64-8-8, 2 iterations/task" in rows[0]["note"]


def test_measured_from_a_strategy_grid():
    import numpy as np

    from course_lib.continual.selection import measured_from_results
    from course_lib.continual.strategies import ContinualResult

    def res(name, seed):
        return ContinualResult("split-digits/class", name, seed, np.eye(2) * 0.5, np.zeros(2), [1.0])

    measured = measured_from_results([res(n, s) for n in ("finetune", "replay", "joint") for s in (0, 1)], 200)
    assert measured["class"]["replay (200)"]["memory"] == 200 and measured["class"]["joint"]["memory"] == "all"
    assert measured["class"]["finetune"]["seeds"] == [0, 1] and measured["class"]["finetune"]["average_accuracy"] == [25.0, 25.0]
    assert [r["memory"] for r in selection_rows(measured)] == ["0", "200 (20 per class)", "all past data (joint)"]


def test_setting_rows_from_committed_figures():
    from course_lib.continual.selection import SETTING_COLUMNS, setting_rows

    clip = {"steps": 80, "trainable": "text", "values": {
        "original": {"new": [7.0, 7.0], "old": [94.0, 94.0], "old48": [91.0, 91.0]},
        "finetune": {"new": [50.0, 54.0], "old": [80.0, 82.0], "old48": [58.0, 60.0]},
        "replay": {"new": [52.0, 55.0], "old": [90.0, 91.0], "old48": [72.0, 71.0]}}}
    guard = {"phases": [["none", 500], ["mirror", 500], ["none", 250]], "every": 16, "figures": {
        "guard": {f"phase{k}{s}": [90.0, 92.0] for k in range(3) for s in ("", "_first")},
        "plain": {f"phase{k}{s}": [70.0, 75.0] for k in range(3) for s in ("", "_first")}}}
    rows = setting_rows(clip, guard)
    assert [r["criterion"] for r in rows] == ["new concepts (48-way)", "old classes (24-way)", "old classes (48-way)",
                                              "phase 1 (mirror, new)", "phase 1 (mirror, new), first 100 items",
                                              "phase 2 (none, returning)", "phase 2 (none, returning), first 100 items"]
    assert rows[0]["best"].startswith("replay: 53.5") and rows[0]["tied_names"] == ["finetune"]
    assert rows[1]["best"].startswith("replay") and rows[1]["tied"] == "none"
    assert rows[3]["best"] == "guard: 91.0 ± 1.4" and "3 streams" not in rows[3]["note"] and "2 streams" in rows[3]["note"]
    assert "tiny CLIP, 80 steps, text tower + image projection trained, 2 seeds" == rows[0]["note"]
    assert markdown_table(rows, SETTING_COLUMNS).count("\n") == len(rows) + 1
    assert setting_rows() == []
