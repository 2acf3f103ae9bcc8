"""``course-grade``: grade the practice tasks of one submission or of a whole class.

Examples::

    course-grade                                   # grades ./exercises (your work)
    course-grade --task ch1_compression/task1_quantization
    course-grade --submission path/to/student --json report.json --csv report.csv
    course-grade --submissions path/to/class --csv class.csv   # one sub-folder per student

Exit status: 0 whenever grading ran (whatever the scores); 2 for usage errors (unknown
task, missing folder, bad option).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .report import clean, format_class_table, format_failures, format_table, write_csv, write_json
from .runner import DEFAULT_TIMEOUT, PACKAGE_ROOT, Grader, UsageError, default_submission, find_tests_dir
from .sandbox import sandbox_status
from .tasks import TASK_IDS, TASKS, find_task, submission_root


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit with 2 (argparse's own convention)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="course-grade", description="Grade the 12 practice tasks of the course.",
                epilog="Task ids: " + ", ".join(TASK_IDS))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--submission", metavar="DIR",
                     help="a folder laid out like exercises/ (default: ./exercises)")
    src.add_argument("--submissions", metavar="DIR",
                     help="a class: one sub-folder per student, each laid out like exercises/")
    p.add_argument("--task", action="append", nargs="+", metavar="ID",
                   help="grade only these tasks (e.g. ch1_compression/task1_quantization); repeatable")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds per task (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="tasks graded in parallel (default: number of CPU cores, at most 4)")
    p.add_argument("--json", metavar="FILE", help="write the detailed report as JSON")
    p.add_argument("--csv", metavar="FILE", help="write a CSV (per task; per student with --submissions)")
    p.add_argument("--tests", metavar="DIR", help=argparse.SUPPRESS)  # graded tests folder (default: found)
    p.add_argument("--mode", choices=("auto", "fork", "spawn"), default="auto", help=argparse.SUPPRESS)
    p.add_argument("--logs", metavar="DIR", help=argparse.SUPPRESS)  # keep each task's pytest output
    p.add_argument("--similarity", type=float, default=0.7, metavar="T",
                   help="with --submissions: flag task files whose similarity to course_lib's implementation, "
                        "solutions/ or a classmate's file is at least T (0-1; default 0.7; 0 switches it off)")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="grade a class even where the bubblewrap sandbox cannot start (submissions then run "
                        "with resource limits only and can read what your user can read)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    return p


def _selected_tasks(args) -> list:
    if not args.task:
        return list(TASKS)
    chosen = []
    for name in [n for group in args.task for n in group]:
        try:
            task = find_task(name)
        except KeyError:
            raise UsageError(f"unknown task {name!r}; known tasks: {', '.join(TASK_IDS)}") from None
        if task not in chosen:
            chosen.append(task)
    return chosen


def _submissions(args) -> tuple[list[tuple[str, Path]], bool]:
    if args.submissions:
        base = Path(args.submissions).expanduser()
        if not base.is_dir():
            raise UsageError(f"--submissions: no such folder: {base}")
        students = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        if not students:
            raise UsageError(f"--submissions: {base} has no student folders")
        # a student folder that is a link stays unresolved: the grader refuses it with the reason
        return [(p.name, p if p.is_symlink() else submission_root(p)) for p in students], True
    if args.submission:
        path = Path(args.submission).expanduser()
        if not path.is_dir():
            raise UsageError(f"--submission: no such folder: {path}")
        return [("", submission_root(path))], False
    return [("", default_submission())], False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if not 0 <= args.similarity <= 1:
            raise UsageError("--similarity must be between 0 and 1")
        if args.jobs is not None and args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        tasks = _selected_tasks(args)
        submissions, class_mode = _submissions(args)
        tests_dir = find_tests_dir(args.tests)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"course-grade: error: {exc}", file=sys.stderr)
        return 2
    jobs = args.jobs or max(1, min(4, os.cpu_count() or 1))
    say = (lambda msg: None) if args.quiet else (lambda msg: print(clean(msg), file=sys.stderr, flush=True))
    sandboxed, why = sandbox_status()
    if not sandboxed:
        print(f"course-grade: warning: no sandbox: {why}", file=sys.stderr)
        if class_mode and not args.allow_unsandboxed:
            print("course-grade: error: refusing to grade a class without the sandbox (submissions could read "
                  "each other's files and yours); fix the sandbox or pass --allow-unsandboxed", file=sys.stderr)
            return 2
    else:
        say(f"Sandbox: {why}")
    if not class_mode:
        say(f"Grading {submissions[0][1]} ({len(tasks)} task{'s' if len(tasks) != 1 else ''}, "
            f"{args.timeout:g} s per task, {jobs} in parallel)")
    else:
        say(f"Grading {len(submissions)} submissions in {args.submissions} ({len(tasks)} tasks each)")
    grader = Grader(tests_dir, timeout=args.timeout, jobs=jobs, mode=args.mode,
                    log_dir=Path(args.logs) if args.logs else None)
    start = time.monotonic()
    try:
        reports = grader.grade(submissions, tasks)
        if class_mode and args.similarity > 0:
            from .similarity import similarity_flags

            flags = similarity_flags(grader.staged, [t.id for t in tasks], PACKAGE_ROOT, args.similarity)
            for report in reports:
                report.flags = [f for f in flags if f["student"] == report.label]
    except UsageError as exc:
        print(f"course-grade: error: {exc}", file=sys.stderr)
        return 2
    finally:
        grader.close()
    elapsed = time.monotonic() - start
    if class_mode:
        print(format_class_table(reports))
    else:
        print(format_table(reports[0]))
        if not args.quiet:
            failures = format_failures(reports[0])
            if failures:
                print("\nFirst failures (run `pytest tests/exercises/<chapter>/test_<task>.py` with "
                      "COURSE_IMPL=exercises for all details):")
                print(failures)
    say(f"graded in {elapsed:.1f} s")
    if args.json:
        write_json(Path(args.json), reports, class_mode)
    if args.csv:
        write_csv(Path(args.csv), reports, class_mode)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
