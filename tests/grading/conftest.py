"""Fixtures of the grader's own tests: ``proof_run`` (see grading_support.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from grading_support import AS_ROOT, HANGING, HOSTILES, ROOT, WRITES_FILES, ProofRun, run_grader, trusted_digest
from grading_variants import ALTERNATIVES, BUGS


@pytest.fixture(scope="session")
def proof_run(tmp_path_factory) -> ProofRun:
    klass = tmp_path_factory.mktemp("class")
    shutil.copytree(ROOT / "solutions", klass / "solutions", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "exercises", klass / "exercises", ignore=shutil.ignore_patterns("__pycache__"))
    for variant in BUGS:
        variant.write(klass / "bug")
    for variant in ALTERNATIVES:
        variant.write(klass / "alt")
    for name in (klass / "bug").iterdir():
        name.rename(klass / f"bug__{name.name}")
    for name in (klass / "alt").iterdir():
        name.rename(klass / f"alt__{name.name}")
    (klass / "bug").rmdir()
    (klass / "alt").rmdir()
    for hostile in HOSTILES.values():
        if hostile.name not in HANGING and (AS_ROOT or hostile.name not in WRITES_FILES):
            hostile.write(klass / f"hostile__{hostile.name}")
    out = tmp_path_factory.mktemp("out")
    before = trusted_digest()
    proc, seconds = run_grader(["--submissions", str(klass), "--json", str(out / "class.json"),
                                "--csv", str(out / "class.csv"), "--timeout", "120", "--jobs", "2", "-q"])
    after = trusted_digest()
    assert proc.returncode == 0, f"the grader failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    data = json.loads((out / "class.json").read_text())
    reports = {s["student"]: s for s in data["submissions"]}
    return ProofRun(reports, (out / "class.csv").read_text(), seconds, before, after, proc.stdout, proc.stderr)
