"""The chapter-3 benchmark sections that write committed results files."""

import numpy as np

from course_lib.continual import bench
from course_lib.continual.experiments import protocol
from course_lib.results import load_results


def test_selection_section_and_its_results_file(tmp_path, capsys):
    proto = protocol("quick", iterations=1, hidden=8, seeds=(0, 1))
    out = {}
    bench.bench_selection(proto, out, budgets=(10,))
    printed = capsys.readouterr().out
    assert "| class | 10 (1 per class) |" in printed and "Measured under: Split-Digits, MLP 64-8-8" in printed
    measured = out["selection"]["measured"]
    assert measured["task"]["progressive"]["seeds"] == [0, 1] and "progressive" not in measured["class"]
    (path,) = bench.write_section_results(out, "python -m course_lib.bench continual --only selection", proto, None,
                                          folder=tmp_path)
    res = load_results(path.stem, folder=tmp_path)
    assert res.profile == "quick" and res.seeds == [0, 1] and res.command.endswith("--only selection")
    assert res.get("measured.class.replay (10).memory") == 10


def test_guard_figures_per_phase():
    from course_lib.continual.online import guard_figures

    trial = {"phase": np.array([0] * 4 + [1] * 4 + [2] * 4),
             "a": np.array([0, 0, 1, 1] + [1] * 4 + [1, 1, 0, 0], dtype=bool), "b": np.zeros(12, dtype=bool)}
    figs = guard_figures(trial, head=2)
    assert figs["a"] == {"phase0": 50.0, "phase0_first": 0.0, "phase1": 100.0, "phase1_first": 100.0,
                         "phase2": 50.0, "phase2_first": 100.0}
    assert set(figs["b"].values()) == {0.0}


def test_cli_rejects_unknown_sections(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench.main(["--only", "selection,nothing"])
