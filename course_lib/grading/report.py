"""Reports of the grader: the table on stdout, JSON and CSV files.

JSON for one submission (``--submission``)::

    {"score": 171, "max_score": 200,
     "tasks": [{"task": "ch1_compression/task1_quantization", "score": 18, "max_score": 20,
                "tests": [{"name": "test_symmetric_hand_worked", "passed": true, "points": 2,
                           "message": ""}, ...]}, ...]}

``points`` is the test's weight; a task's score is the sum of the points of its passed
tests. For a class (``--submissions``) the JSON is ``{"submissions": [{"student": name,
"score", "max_score", "tasks": [...]}, ...]}``.

CSV for one submission: one row per task (``task, tests_passed, tests_total, score,
max_score, note``). CSV for a class: one row per student (``student``, one column of
points per task, ``score``, ``max_score``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

from .runner import SubmissionReport


def format_table(report: SubmissionReport) -> str:
    width = max([len("task"), len("total")] + [len(t.task) for t in report.tasks])
    lines = [f"{'task':<{width}}  {'tests passed':>12}  {'points':>9}"]
    lines.append("-" * len(lines[0]))
    passed = total = 0
    for task in report.tasks:
        passed += task.passed
        total += len(task.tests)
        lines.append(f"{task.task:<{width}}  {f'{task.passed}/{len(task.tests)}':>12}  "
                     f"{f'{task.score}/{task.max_score}':>9}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'total':<{width}}  {f'{passed}/{total}':>12}  {f'{report.score}/{report.max_score}':>9}")
    notes = [f"  {t.task}: {t.note}" for t in report.tasks if t.note and t.note != "file missing"]
    missing = [t.task for t in report.tasks if t.note == "file missing"]
    if missing:
        notes.append(f"  no file for: {', '.join(missing)}")
    if notes:
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


def format_failures(report: SubmissionReport, limit: int = 3) -> str:
    """The first failure messages of each task (what a learner reads next)."""
    out = []
    for task in report.tasks:
        failed = [t for t in task.tests if not t.passed]
        if not failed or task.note == "file missing":
            continue
        out.append(f"{task.task}:")
        for test in failed[:limit]:
            first = test.message.strip().splitlines()[0] if test.message.strip() else "failed"
            out.append(f"  - {test.name}: {first[:200]}")
        if len(failed) > limit:
            out.append(f"  ... and {len(failed) - limit} more failing tests")
    return "\n".join(out)


def format_class_table(reports: list[SubmissionReport]) -> str:
    width = max([len("student")] + [len(r.label) for r in reports])
    lines = [f"{'student':<{width}}  {'points':>9}  tasks with full marks"]
    for r in reports:
        full = sum(t.score == t.max_score for t in r.tasks)
        lines.append(f"{r.label:<{width}}  {f'{r.score}/{r.max_score}':>9}  {full}/{len(r.tasks)}")
    return "\n".join(lines)


def write_json(path: Path, reports: list[SubmissionReport], class_mode: bool) -> None:
    if class_mode:
        data = {"submissions": [{"student": r.label, **r.to_dict()} for r in reports]}
    else:
        data = reports[0].to_dict()
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        _csv(fh, header, rows)


def _csv(fh: TextIO, header: list[str], rows: list[list]) -> None:
    writer = csv.writer(fh)
    writer.writerow(header)
    writer.writerows(rows)


def write_csv(path: Path, reports: list[SubmissionReport], class_mode: bool) -> None:
    if class_mode:
        tasks = [t.task for t in reports[0].tasks] if reports else []
        rows = [[r.label, *[t.score for t in r.tasks], r.score, r.max_score] for r in reports]
        _write_rows(path, ["student", *tasks, "score", "max_score"], rows)
    else:
        rows = [[t.task, t.passed, len(t.tests), t.score, t.max_score, t.note] for t in reports[0].tasks]
        _write_rows(path, ["task", "tests_passed", "tests_total", "score", "max_score", "note"], rows)
