"""The student handout (course-release) and the learner's compact report of failed checks."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.grading.proxy import resolve_impl_root
from course_lib.grading.release import MARKER, PUBLIC_TESTS, WITHHELD, ReleaseError, main, public_module, \
    graded_tests, write_handout
from course_lib.grading.tasks import TASKS
from grading_support import ROOT
from grading_variants import BUGS

ENV = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_IMPL")}


def _pytest(cwd: Path, *args: str, impl: str | None = None) -> subprocess.CompletedProcess:
    env = dict(ENV, HF_HUB_OFFLINE="1", COURSE_PROFILE="quick", PYTHONPATH=str(cwd))
    if impl:
        env["COURSE_IMPL"] = impl
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _failure_blocks(output: str) -> list[list[str]]:
    """The report of each failed test: the lines from its '____ name ____' header to the next."""
    section = output.split(" FAILURES ", 1)[1].split(" short test summary info ", 1)[0]
    blocks: list[list[str]] = []
    for line in section.splitlines()[1:-1]:
        if re.match(r"^_{3,} .+ _{3,}$", line):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    return blocks


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.id)
def test_public_tests_are_real_tests_and_some_stay_hidden(task):
    source = (ROOT / "tests" / "exercises" / task.test_file).read_text()
    names = graded_tests(source)
    public = PUBLIC_TESTS[task.id]
    assert public and set(public) <= set(names), f"renamed or removed: {set(public) - set(names)}"
    assert len(public) < len(names)
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(WITHHELD.get(task.id, ())) <= defined


def test_public_module_keeps_public_tests_and_what_they_use():
    source = '''"""Doc."""
import pytest

TASK = "x/y"
LIMIT = 3
UNUSED = 4


def _ref(x):
    return x + 1


def _check(impl, x):
    assert impl.f(x) == _ref(x)


def _only_hidden(x):
    return x


@pytest.fixture
def data():
    return LIMIT


@pytest.fixture
def other():
    return 1


@pytest.mark.points(1)
def test_public(impl, data):
    _check(impl, data)


@pytest.mark.points(2)
def test_hidden(impl, other):
    assert _only_hidden(impl.f(UNUSED))
'''
    out = public_module(source, ["test_public"], withheld=("_ref",))
    assert graded_tests(out) == ["test_public"]
    tree = ast.parse(out)
    top = {getattr(n, "name", None) or n.targets[0].id for n in tree.body if not isinstance(n, (ast.Expr, ast.Import))}
    assert top == {"TASK", "LIMIT", "_ref", "_check", "data", "test_public"}
    assert "return x + 1" not in out and "withheld from the handout" in out
    assert "@pytest.mark.points(2)" not in out
    with pytest.raises(ReleaseError, match="test_missing"):
        public_module(source, ["test_missing"])


def test_resolve_impl_root_defaults_to_exercises_without_solutions(tmp_path):
    (tmp_path / "exercises").mkdir()
    assert resolve_impl_root(None, tmp_path) == tmp_path / "exercises"
    with pytest.raises(ValueError, match="no solutions/ folder"):
        resolve_impl_root("solutions", tmp_path)
    (tmp_path / "solutions").mkdir()
    assert resolve_impl_root("", tmp_path) == tmp_path / "solutions"
    assert resolve_impl_root("exercises", tmp_path) == tmp_path / "exercises"


@pytest.fixture(scope="module")
def handout(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("release") / "handout"
    return out, write_handout(out, ROOT)


def test_handout_holds_the_course_without_solutions_or_hidden_tests(handout):
    out, summary = handout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, ".gitignore", "README.md", "course_lib", "docs", "environment.yml", "exercises", "notebooks",
         "pyproject.toml", "results", "tests"])
    assert sorted(str(p.relative_to(out)) for p in (out / "tests").rglob("*.py")) == sorted(
        ["tests/conftest.py", "tests/exercises/conftest.py"] + [f"tests/exercises/{t.test_file}" for t in TASKS])
    for task in TASKS:
        text = (out / "tests" / "exercises" / task.test_file).read_text()
        assert sorted(graded_tests(text)) == sorted(PUBLIC_TESTS[task.id]), task.id
    batching = (out / "tests" / "exercises" / "ch1_compression" / "test_task4_batching.py").read_text()
    assert "heapq" not in batching and "open_batch" not in batching  # the reference scheduler is withheld
    solutions = {p.read_bytes() for p in (ROOT / "solutions").rglob("*.py")}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.read_bytes() in solutions]
    assert not [p for p in out.rglob("*") if p.is_symlink() or "__pycache__" in p.parts]
    for stub in (ROOT / "exercises").rglob("*.py"):
        assert (out / stub.relative_to(ROOT)).read_bytes() == stub.read_bytes()
    assert summary["files"] == len(files) and summary["bytes"] < 20e6
    assert "Student handout" in (out / "README.md").read_text().split("\n## ", 1)[0]
    testpaths = re.search(r"(?m)^testpaths = (.*)$", (out / "pyproject.toml").read_text()).group(1)
    assert all((out / p).is_dir() for p in ast.literal_eval(testpaths))


def test_release_refuses_unsafe_targets(handout, tmp_path, capsys):
    out, _ = handout
    assert main([str(out)]) == 2 and "not empty" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([str(other), "--force", "--course", str(ROOT)]) == 2 and "no earlier handout" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"
    for bad in (ROOT, ROOT / "docs" / "handout", ROOT.parent):
        with pytest.raises(ReleaseError, match="overlaps the course"):
            write_handout(bad, ROOT)
    (tmp_path / "link").symlink_to(other)
    with pytest.raises(ReleaseError, match="symbolic link"):
        write_handout(tmp_path / "link", ROOT)


def test_release_skips_links_and_replaces_an_earlier_handout(tmp_path, capsys):
    course = tmp_path / "course"
    for part in ("course_lib", "exercises", "tests/exercises", "docs"):
        shutil.copytree(ROOT / part, course / part, ignore=shutil.ignore_patterns("__pycache__"))
    (course / "docs" / "answer.py").symlink_to(ROOT / "solutions" / "ch1_compression" / "task1_quantization.py")
    (course / "exercises" / "linked").symlink_to(ROOT / "solutions", target_is_directory=True)
    out = tmp_path / "out"
    assert main([str(out), "--course", str(course)]) == 0
    assert "skipped (not a plain file)" in capsys.readouterr().err
    assert not (out / "docs" / "answer.py").exists() and not (out / "exercises" / "linked").exists()
    (out / "stale.txt").write_text("from the last release")
    assert main([str(out), "--force", "--course", str(course)]) == 0
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()


@pytest.mark.slow
def test_stubs_score_zero_on_the_public_checks_with_a_compact_report(handout):
    out, summary = handout
    run = _pytest(out, "tests/exercises")
    n_public = sum(len(v) for v in PUBLIC_TESTS.values())
    assert f"{n_public} failed in" in run.stdout and " passed" not in run.stdout, run.stdout[-3000:]
    assert f"COURSE_IMPL): {out / 'exercises'}" in run.stdout
    blocks = _failure_blocks(run.stdout)
    assert len(blocks) == n_public and max(len(b) for b in blocks) <= 15
    assert "course_lib/grading" not in run.stdout and "Sandbox" not in run.stdout


@pytest.mark.slow
def test_public_checks_pass_on_solutions_and_report_a_wrong_answer_compactly(handout, tmp_path):
    out, _ = handout
    mixed = tmp_path / "mixed"  # one wrong task, the solution for the tasks whose tests withhold a reference
    next(v for v in BUGS if v.name == "round_half_up").write(tmp_path)
    shutil.copytree(tmp_path / "task1_quantization__round_half_up", mixed)
    for task in WITHHELD:
        (mixed / task).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "solutions" / f"{task}.py", mixed / f"{task}.py")
    modules = ["tests/exercises/ch1_compression/test_task1_quantization.py"] + [
        f"tests/exercises/{t.test_file}" for t in TASKS if t.id in WITHHELD]
    run = _pytest(out, *modules, impl=str(mixed))
    assert "1 failed" in run.stdout and "FAILED tests/exercises/ch1_compression/test_task1_quantization.py::" \
        "test_symmetric_hand_worked" in run.stdout, run.stdout[-3000:]
    report = "\n".join(_failure_blocks(run.stdout)[0])
    assert len(report.splitlines()) <= 15, report
    assert "checked: symmetric hand worked (2 points)" in report
    assert "expected [-127, 0, 2, 16, 48]" in report and "got [-127, 1, 2, 16, 48]" in report
    assert "torch.round rounds halves to even" in report  # the hint
    assert "course_lib/grading" not in run.stdout and "Sandbox" not in run.stdout and "def test_" not in run.stdout
