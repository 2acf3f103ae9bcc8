"""Shared pieces of the grader's own tests (hostile submissions, running the CLI).

The ``proof_run`` fixture (conftest.py) grades, in ONE run of the real grader (``python -m course_lib.grading
--submissions``), a whole "class" built for the proofs: the solutions, the untouched
stubs, every buggy variant and every correct alternative of tests/grading/grading_variants.py, and
the hostile submissions of tests/grading/hostile/ (each next to a correct task). The
individual tests then read its JSON report.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_DIR = Path(__file__).resolve().parent / "hostile"
COMPANION = {"ch3_continual/task4_metrics": "ch1_compression/task4_batching",
             "ch1_compression/task4_batching": "ch3_continual/task4_metrics"}
# hostile submissions that hang: graded separately with a short time limit (test_grading_cli.py)
HANGING = {"loop_in_call", "loop_at_import"}
# Hostile submissions that write files: none needs special treatment any more, since the sandbox
# has nothing writable but its private /tmp (as root and as a normal user alike).
WRITES_FILES: set[str] = set()
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Hostile:
    name: str
    task: str
    mode: str
    path: Path

    def source(self) -> str:
        text = self.path.read_text()
        if self.mode == "append":
            return (ROOT / "solutions" / f"{self.task}.py").read_text() + "\n\n" + text
        return text

    def write(self, student_dir: Path) -> None:
        target = student_dir / f"{self.task}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.source())
        companion = COMPANION[self.task]
        (student_dir / companion).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "solutions" / f"{companion}.py", student_dir / f"{companion}.py")


def load_hostiles() -> dict[str, Hostile]:
    out = {}
    for path in sorted(HOSTILE_DIR.glob("*.py")):
        head = dict(line[2:].split(": ", 1) for line in path.read_text().splitlines()[:2])
        out[path.stem] = Hostile(path.stem, head["task"], head["mode"], path)
    return out


HOSTILES = load_hostiles()


def trusted_digest() -> dict[str, str]:
    """Hashes of the files a submission must never change (graded tests, grading package)."""
    paths = sorted([*(ROOT / "tests" / "exercises").rglob("*.py"), *(ROOT / "course_lib" / "grading").rglob("*.py"),
                    ROOT / "tests" / "conftest.py"])
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths
            if "__pycache__" not in p.parts}


def run_grader(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 3600):
    """Run ``python -m course_lib.grading ARGS``; returns (CompletedProcess, seconds)."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1")
    full_env.pop("COURSE_IMPL", None)
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "course_lib.grading", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def write_student(root: Path, name: str, files: dict[str, str]) -> Path:
    student = root / name
    for task, text in files.items():
        path = student / f"{task}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    student.mkdir(parents=True, exist_ok=True)
    return student


@dataclass
class ProofRun:
    reports: dict[str, dict]  # student -> report (score, max_score, tasks)
    csv_text: str
    seconds: float
    digest_before: dict[str, str]
    digest_after: dict[str, str]
    stdout: str
    stderr: str

    def task(self, student: str, task: str) -> dict:
        return next(t for t in self.reports[student]["tasks"] if t["task"] == task)


