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

Everything here is safe to open: text coming from a submission (messages, student folder
names) has control and format characters escaped (no terminal escape sequences, no
bidirectional overrides), CSV cells that a spreadsheet would read as a formula are
prefixed with ``'``, and files are written atomically (a temporary file in the same
folder, then renamed over the target: a pre-existing link is replaced, never followed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import unicodedata
from pathlib import Path

from .runner import SubmissionReport


def clean(text: object, single_line: bool = False) -> str:
    """``text`` with control/format characters escaped (``\\x1b``); newlines kept unless ``single_line``."""
    out = []
    for ch in str(text):
        if ch in "\n\t" and not single_line:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet evaluates: text starting with = + - @ (or tab/CR) gets a leading '."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = clean(value, single_line=True)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20") else text


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    notes = [f"  {t.task}: {clean(t.note, True)}" for t in report.tasks if t.note and t.note != "file missing"]
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
            out.append(f"  - {test.name}: {clean(first[:200], True)}")
        if len(failed) > limit:
            out.append(f"  ... and {len(failed) - limit} more failing tests")
    return "\n".join(out)


def format_class_table(reports: list[SubmissionReport]) -> str:
    labels = [clean(r.label, True) for r in reports]
    width = max([len("student")] + [len(label) for label in labels])
    lines = [f"{'student':<{width}}  {'points':>9}  tasks with full marks"]
    for label, r in zip(labels, reports):
        full = sum(t.score == t.max_score for t in r.tasks)
        flag = "  similar: " + ", ".join(f"{f['task'].split('/')[-1]}~{clean(f['other'], True)} {f['score']:.2f}"
                                         for f in r.flags[:3]) if r.flags else ""
        lines.append(f"{label:<{width}}  {f'{r.score}/{r.max_score}':>9}  {full}/{len(r.tasks)}{flag}")
    return "\n".join(lines)


def write_json(path: Path, reports: list[SubmissionReport], class_mode: bool) -> None:
    if class_mode:
        data = {"submissions": [{"student": r.label, **r.to_dict()} for r in reports]}
    else:
        data = reports[0].to_dict()
    atomic_write(Path(path), json.dumps(data, indent=2, ensure_ascii=True) + "\n")


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[csv_cell(v) for v in row] for row in rows])
    atomic_write(Path(path), buffer.getvalue())


def write_csv(path: Path, reports: list[SubmissionReport], class_mode: bool) -> None:
    if class_mode:
        tasks = [t.task for t in reports[0].tasks] if reports else []
        rows = [[r.label, *[t.score for t in r.tasks], r.score, r.max_score,
                 "; ".join(f"{f['task']}~{f['other']} {f['score']:.2f}" for f in r.flags)] for r in reports]
        _write_rows(path, ["student", *tasks, "score", "max_score", "similar_to"], rows)
    else:
        rows = [[t.task, t.passed, len(t.tests), t.score, t.max_score, t.note] for t in reports[0].tasks]
        _write_rows(path, ["task", "tests_passed", "tests_total", "score", "max_score", "note"], rows)
