"""The proofs that the graded tests are right, read from one real grading run (proof_run).

* the solutions get full marks and the untouched stubs fail every single test;
* every typical mistake of grading_variants.BUGS loses points on the tests it names;
* every correct alternative of grading_variants.ALTERNATIVES gets full marks (fairness:
  float32 and float64 work, other update orders and stopping rules, other ways to break ties);
* hostile submissions cost only their own task, and never change the grader's files.
"""

from __future__ import annotations

import collections
import csv
import io

import pytest

from grading_support import AS_ROOT, COMPANION, HANGING, HOSTILES, WRITES_FILES
from course_lib.grading.tasks import TASK_IDS
from grading_variants import ALTERNATIVES, BUGS


def _failed(task_report: dict) -> list[str]:
    return [t["name"] for t in task_report["tests"] if not t["passed"]]


def test_solutions_get_full_marks(proof_run):
    report = proof_run.reports["solutions"]
    failures = {t["task"]: [(x["name"], x["message"][:200]) for x in t["tests"] if not x["passed"]]
                for t in report["tasks"]}
    assert not any(failures.values()), failures
    assert report["score"] == report["max_score"] > 0
    assert [t["task"] for t in report["tasks"]] == list(TASK_IDS)


def test_stubs_fail_every_single_test(proof_run):
    report = proof_run.reports["exercises"]
    passed = [(t["task"], x["name"]) for t in report["tasks"] for x in t["tests"] if x["passed"]]
    assert not passed, f"these tests pass on the untouched stubs: {passed}"
    assert report["score"] == 0
    for task in report["tasks"]:
        for test in task["tests"]:
            assert "NotImplementedError" in test["message"] or "not implemented" in test["message"].lower(), \
                (task["task"], test["name"], test["message"][:300])


def test_every_test_carries_points(proof_run):
    for task in proof_run.reports["solutions"]["tasks"]:
        assert len(task["tests"]) >= 7, task["task"]
        for test in task["tests"]:
            assert isinstance(test["points"], int) and test["points"] >= 1, (task["task"], test["name"])


def test_every_task_has_a_correct_alternative():
    assert {v.task for v in ALTERNATIVES} == set(TASK_IDS)


def test_every_graded_test_file_documents_its_tolerances():
    """Each graded test module says, in its docstring, which comparisons use which tolerance and why."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "exercises"
    for task in TASK_IDS:
        chapter, name = task.split("/")
        doc = ast.get_docstring(ast.parse((root / chapter / f"test_{name}.py").read_text())) or ""
        assert "Tolerances:" in doc, f"the docstring of test_{name}.py has no 'Tolerances:' paragraph"


def test_every_task_lists_at_least_five_typical_mistakes():
    counts = collections.Counter(v.task for v in BUGS)
    assert set(counts) == set(TASK_IDS)
    assert min(counts.values()) >= 5, counts


@pytest.mark.parametrize("variant", BUGS, ids=lambda v: v.label)
def test_typical_mistake_is_caught(proof_run, variant):
    report = proof_run.task(f"bug__{variant.label}", variant.task)
    failed = _failed(report)
    assert report["score"] < report["max_score"], f"{variant.mistake}: full marks"
    for prefix in variant.catches:
        assert any(name == prefix or name.startswith(prefix + "[") for name in failed), (
            f"{variant.mistake}: expected {prefix} to fail; failed: {failed}")
    for test in report["tests"]:
        if not test["passed"]:
            assert test["message"].strip(), f"{test['name']} failed without a message"


@pytest.mark.parametrize("variant", ALTERNATIVES, ids=lambda v: v.label)
def test_correct_alternative_gets_full_marks(proof_run, variant):
    report = proof_run.task(f"alt__{variant.label}", variant.task)
    assert report["score"] == report["max_score"], (
        variant.mistake, [(t["name"], t["message"][:300]) for t in report["tests"] if not t["passed"]])


def test_grader_files_are_untouched(proof_run):
    changed = sorted(k for k in proof_run.digest_before if proof_run.digest_before[k] != proof_run.digest_after.get(k))
    added = sorted(set(proof_run.digest_after) - set(proof_run.digest_before))
    assert not changed and not added, (changed, added)


def test_class_csv_has_one_row_per_student(proof_run):
    rows = list(csv.reader(io.StringIO(proof_run.csv_text)))
    assert rows[0] == ["student", *TASK_IDS, "score", "max_score", "similar_to"]
    students = [r[0] for r in rows[1:]]
    assert sorted(students) == sorted(proof_run.reports)
    solutions = next(r for r in rows[1:] if r[0] == "solutions")
    assert solutions[-2] == solutions[-3] == str(proof_run.reports["solutions"]["max_score"])


# --- hostile submissions ---------------------------------------------------------------
EXPECTED = {  # name -> (score rule, a phrase every failing message of the hostile task contains or None)
    "raise_at_import": ("zero", "RuntimeError"),
    "sys_exit_at_import": ("zero", "sys.exit"),
    "os_exit_at_import": ("zero", "import"),
    "exit_in_calls": ("partial", None),
    "flood_output": ("full", None),
    "mutates_inputs": ("all_but_inputs_test", None),
    "missing_function": ("zero", "continual_metrics"),
    "huge_return": ("zero", None),
    "spawns_children": ("full", None),
    "tamper_libraries": ("zero", None),
    "sys_modules_tricks": ("zero", None),
    "tamper_files": ("zero", None),
}


def test_every_hostile_submission_has_an_expectation():
    assert set(EXPECTED) | HANGING == set(HOSTILES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_submission_costs_only_its_own_task(proof_run, name):
    if name in WRITES_FILES and not AS_ROOT:
        pytest.skip("not root: file tampering is tested on a copy of the course (test_grading_cli.py)")
    hostile = HOSTILES[name]
    student = f"hostile__{name}"
    report = proof_run.task(student, hostile.task)
    rule, phrase = EXPECTED[name]
    failed = _failed(report)
    if rule == "zero":
        assert report["score"] == 0, [t["name"] for t in report["tests"] if t["passed"]]
    elif rule == "full":
        assert report["score"] == report["max_score"], [(t["name"], t["message"][:200]) for t in report["tests"]
                                                        if not t["passed"]]
    elif rule == "partial":
        assert 0 < report["score"] < report["max_score"], report["score"]
    elif rule == "all_but_inputs_test":
        assert failed == ["test_inputs_are_not_modified"], failed
        message = next(t["message"] for t in report["tests"] if not t["passed"])
        assert "modified its input" in message, message
    if phrase:
        for test in report["tests"]:
            assert phrase in test["message"], (test["name"], test["message"][:300])
    companion = proof_run.task(student, COMPANION[hostile.task])
    assert companion["score"] == companion["max_score"], (
        f"the correct task next to the hostile one lost points: {_failed(companion)}")
    # tasks that were not submitted get zero, with their own message
    other = next(t for t in proof_run.reports[student]["tasks"] if t["task"] not in (hostile.task, COMPANION[hostile.task]))
    assert other["score"] == 0 and "has no file" in other["tests"][0]["message"]
