"""The course-grade command end to end: formats, options, usage errors, hangs, tampering."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from grading_support import COMPANION, HOSTILES, ROOT, run_grader, write_student

METRICS, BATCHING = "ch3_continual/task4_metrics", "ch1_compression/task4_batching"


def _solution(task: str) -> str:
    return (ROOT / "solutions" / f"{task}.py").read_text()


def test_unknown_task_is_a_usage_error():
    proc, _ = run_grader(["--task", "ch9_nothing/task7_nope"])
    assert proc.returncode == 2, proc.stderr
    assert "unknown task 'ch9_nothing/task7_nope'" in proc.stderr
    assert "ch1_compression/task1_quantization" in proc.stderr  # the valid ids are listed


def test_missing_folders_and_bad_options_are_usage_errors(tmp_path):
    empty = tmp_path / "empty_class"
    empty.mkdir()
    for args, phrase in [(["--submission", str(tmp_path / "nope")], "no such folder"),
                         (["--submissions", str(tmp_path / "nope")], "no such folder"),
                         (["--submissions", str(empty)], "no student folders"),
                         (["--submission", str(tmp_path), "--submissions", str(tmp_path)], "not allowed with"),
                         (["--timeout", "0"], "--timeout must be positive"),
                         (["--jobs", "0"], "--jobs must be at least 1")]:
        proc, _ = run_grader(args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert phrase in proc.stderr, (args, proc.stderr)


def test_console_script_writes_json_and_csv(tmp_path):
    script = Path(sys.executable).parent / "course-grade"
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    proc = subprocess.run([str(script), "--submission", str(ROOT / "solutions"), "--task", METRICS, BATCHING,
                           "--json", str(out_json), "--csv", str(out_csv)], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert METRICS in proc.stdout and BATCHING in proc.stdout and "total" in proc.stdout
    data = json.loads(out_json.read_text())
    assert set(data) == {"score", "max_score", "tasks"}
    assert [t["task"] for t in data["tasks"]] == [METRICS, BATCHING]
    for task in data["tasks"]:
        assert set(task) == {"task", "score", "max_score", "note", "tests"}
        assert task["score"] == task["max_score"] == sum(t["points"] for t in task["tests"])
        for test in task["tests"]:
            assert set(test) == {"name", "passed", "points", "message"}
            assert test["passed"] is True and test["message"] == ""
    assert data["score"] == data["max_score"] == sum(t["max_score"] for t in data["tasks"])
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["task"] for r in rows] == [METRICS, BATCHING]
    assert all(r["score"] == r["max_score"] and r["tests_passed"] == r["tests_total"] for r in rows)


def test_module_entry_point_grades_exercises_by_default(tmp_path):
    for cwd in (ROOT, tmp_path):  # from the course folder, and from elsewhere (found next to the package)
        proc, _ = run_grader(["--task", "task4_metrics", "--json", str(tmp_path / "r.json")], cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        assert f"Grading {ROOT / 'exercises'}" in proc.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["score"] == 0 and report["max_score"] > 0
        assert "NotImplementedError" in report["tasks"][0]["tests"][0]["message"]


def test_a_repo_copy_is_accepted_as_a_submission(tmp_path):
    student = write_student(tmp_path / "student" / "exercises", "", {METRICS: _solution(METRICS)})
    assert student.is_dir()
    proc, _ = run_grader(["--submission", str(tmp_path / "student"), "--task", METRICS, "--json",
                          str(tmp_path / "r.json")])
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"] == report["max_score"]


def test_class_mode_json_and_missing_files(tmp_path):
    klass = tmp_path / "class"
    write_student(klass, "alice", {METRICS: _solution(METRICS)})
    write_student(klass, "bob", {})
    proc, _ = run_grader(["--submissions", str(klass), "--task", METRICS, "--json", str(tmp_path / "c.json"),
                          "--csv", str(tmp_path / "c.csv")])
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    by_student = {s["student"]: s for s in data["submissions"]}
    assert by_student["alice"]["score"] == by_student["alice"]["max_score"] > 0
    assert by_student["bob"]["score"] == 0
    assert "has no file ch3_continual/task4_metrics.py" in by_student["bob"]["tasks"][0]["tests"][0]["message"]
    rows = list(csv.reader((tmp_path / "c.csv").open()))
    assert rows == [["student", METRICS, "score", "max_score", "similar_to"],
                    ["alice", str(by_student["alice"]["score"]), str(by_student["alice"]["score"]),
                     str(by_student["alice"]["max_score"]), f"{METRICS}~solutions 1.00"],
                    ["bob", "0", "0", str(by_student["alice"]["max_score"]), ""]]
    assert by_student["alice"]["similar_to"] == [{"student": "alice", "task": METRICS, "other": "solutions",
                                                  "score": 1.0}]


def test_hanging_submissions_cost_only_their_own_task(tmp_path):
    klass = tmp_path / "class"
    for name in ("loop_in_call", "loop_at_import"):
        HOSTILES[name].write(klass / name)
    proc, _ = run_grader(["--submissions", str(klass), "--task", METRICS, BATCHING, "--timeout", "20",
                          "--json", str(tmp_path / "c.json")])
    assert proc.returncode == 0, proc.stderr
    reports = {s["student"]: {t["task"]: t for t in s["tasks"]}
               for s in json.loads((tmp_path / "c.json").read_text())["submissions"]}
    looping = reports["loop_in_call"][BATCHING]
    assert looping["score"] < looping["max_score"]
    messages = " ".join(t["message"] for t in looping["tests"])
    assert "did not finish within" in messages or "stopped after 20 s" in messages, messages[:500]
    importing = reports["loop_at_import"][METRICS]
    assert importing["score"] == 0
    assert all("did not finish importing" in t["message"] or "stopped after" in t["message"]
               for t in importing["tests"]), [t["message"][:200] for t in importing["tests"]]
    for name, hostile_task in (("loop_in_call", BATCHING), ("loop_at_import", METRICS)):
        companion = reports[name][COMPANION[hostile_task]]
        assert companion["score"] == companion["max_score"], (name, companion)
