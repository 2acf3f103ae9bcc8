"""The chapter-3 guide quotes only measured figures: every table in docs/ch3_continual.md is
rendered again from the committed results files and must appear verbatim, every command it
names must be the command recorded in that file, and the guide holds no diary wording."""

import re
from pathlib import Path

import numpy as np
import pytest

from course_lib.conclusions import compare
from course_lib.continual import report
from course_lib.continual.experiments import VAN_DE_VEN_SPLIT_MNIST
from course_lib.results import load_results

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "ch3_continual.md").read_text(encoding="utf-8")
FILES = {"selection": "ch3_selection_quick", "clip": "ch3_clip_quick", "guard": "ch3_online_guard", "timing": "ch3_timing"}
TABLES = report.all_tables()


@pytest.mark.parametrize("name", ["strategies", "versus", "selection", "clip", "guard", "settings"])
def test_guide_shows_the_tables_of_the_results_files(name):
    assert name in TABLES, f"results file for {name!r} missing from results/"
    assert TABLES[name] in GUIDE, (
        f"docs/ch3_continual.md does not show the {name!r} table of the committed results file; "
        "refresh it from `python -m course_lib.continual.report`")


def test_timing_table_matches_when_quoted():
    if "### Timing" not in GUIDE:
        pytest.skip("the guide quotes no timing")
    assert TABLES.get("timing") and TABLES["timing"] in GUIDE


@pytest.mark.parametrize("key", list(FILES))
def test_each_quoted_command_is_the_one_recorded(key):
    path = ROOT / "results" / f"{FILES[key]}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not committed")
    res = load_results(FILES[key])
    if f"results/{FILES[key]}.json" in GUIDE:
        assert f"`{res.command}` (`results/{FILES[key]}.json`" in GUIDE, (
            f"the guide must name {FILES[key]}.json with the command that wrote it: {res.command}")


def test_every_table_number_is_measured():
    """Numbers in the guide's tables appear in the rendered tables (no hand-typed table rows)."""
    rendered = "\n".join(v for k, v in TABLES.items() if not k.startswith("provenance"))
    assert "## Measured figures" in GUIDE
    for line in GUIDE.split("## Measured figures", 1)[1].splitlines():
        if line.startswith("|") and re.search(r"\d+\.\d", line) and "---" not in line:
            assert line in rendered, f"a table row of the guide that no results file produces: {line[:100]}"


def test_prose_claims_follow_the_figures():
    measured = load_results(FILES["selection"]).figures["measured"]
    base = measured["class"]["finetune"]["average_accuracy"]
    beyond = sorted(label for label, c in measured["class"].items() if label != "finetune"
                    and compare({label: c["average_accuracy"], "finetune": base}).distinguishable)
    # "in class-IL only the strategies that store examples (replay) or all data (joint) move away ..."
    assert beyond and all(b.startswith(("replay", "joint")) for b in beyond), beyond
    # "EWC, online EWC and LwF stay inside it"
    assert not any(b.startswith(("ewc", "online-ewc", "lwf")) for b in beyond)
    # "... fine-tuning, EWC and LwF end between 19.9% and 23.9%"
    ref = VAN_DE_VEN_SPLIT_MNIST["class"]
    assert (min(ref[k] for k in ("finetune", "ewc", "lwf")), max(ref[k] for k in ("finetune", "ewc", "lwf"))) == (19.9, 23.9)
    # "In task-IL ... most differences between methods are inside the spread"
    task = measured["task"]
    labels = [k for k in task if k != "finetune"]
    inside = [k for k in labels if not compare({k: task[k]["average_accuracy"], "finetune": task["finetune"]["average_accuracy"]}).distinguishable]
    assert len(inside) > len(labels) / 2
    # "fine-tuning forgets much less than on split-MNIST": ours vs van de Ven's 87.2
    assert np.mean(task["finetune"]["average_accuracy"]) > VAN_DE_VEN_SPLIT_MNIST["task"]["finetune"] + 5


def test_guide_reads_as_course_material():
    for pattern in [r"\b20\d\d-\d\d-\d\d\b", r"load average", r"quiet machine", r"\btoday\b", r"Latest run",
                    r"What made the difference", r"Tried without effect"]:
        assert not re.search(pattern, GUIDE, re.I), f"diary wording in docs/ch3_continual.md: {pattern}"


def test_protocol_stated_in_the_guide_is_the_recorded_one():
    proto = load_results(FILES["selection"]).figures["protocol"]
    h, it = proto["hidden"], proto["iterations"]
    assert f"MLP 64-{h}-{h}" in GUIDE and f"{it} iterations per task" in GUIDE
    lam = sorted(set(proto["ewc_lambda"].values()))
    assert len(lam) == 1 and f"EWC λ = {lam[0]:,.0f}" in GUIDE
    assert f"LwF T = {proto['lwf_temperature']:g} and weight {proto['lwf_weight']:g}" in GUIDE
    assert f"seeds {', '.join(str(s) for s in proto['seeds'])}" in GUIDE
