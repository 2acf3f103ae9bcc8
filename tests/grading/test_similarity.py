"""The plagiarism signal (course_lib.grading.similarity): disguised copies of the solution, of
course_lib's implementation or of a classmate score high; independent correct
implementations (the ALTERNATIVES of grading_variants.py) score low."""

from __future__ import annotations

import ast
import builtins
import shutil

import pytest

from course_lib.grading.similarity import (
    COURSE_LIB_CODE,
    normalise,
    similarity,
    similarity_flags,
    similarity_scores,
)
from course_lib.grading.tasks import TASK_IDS
from grading_support import ROOT
from grading_variants import ALTERNATIVES


def _disguise(source: str) -> str:
    """What a copier does: rename every local name, reorder the definitions, change the
    constants, reformat and add comments and a dead statement to each function."""
    tree = ast.parse(source)
    keep = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    keep |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    keep |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names}
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in keep and not hasattr(builtins, node.id):
            node.id = names.setdefault(node.id, f"my_value_{len(names)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value not in (0.0, 1.0):
            node.value *= 1.5
        elif isinstance(node, ast.FunctionDef):
            node.body.insert(0, ast.parse("unused_counter = 0").body[0])
    head = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))]  # docstring, imports
    tree.body = head + [n for n in reversed(tree.body) if n not in head]
    lines = ast.unparse(ast.fix_missing_locations(tree)).splitlines()
    return "\n".join(line + ("  # my own work" if i % 3 == 0 else "") for i, line in enumerate(lines)) + "\n"


def _read(*parts: str) -> str:
    return ROOT.joinpath(*parts).read_text()


def _course_lib(task: str) -> str:
    module, names = COURSE_LIB_CODE[task]
    return normalise(_read("course_lib", module), names)


def _alternative(variant) -> str:
    """An alternative on its own: the stub's imports plus the alternative's code."""
    stub = _read("exercises", f"{variant.task}.py")
    imports = [line for line in stub.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(imports) + "\n" + variant.append


def test_every_task_names_course_lib_code_that_exists():
    assert sorted(COURSE_LIB_CODE) == sorted(TASK_IDS)
    for task in TASK_IDS:
        assert len(_course_lib(task)) > 200, task  # raises KeyError if a symbol was renamed


def test_normalise_drops_docstrings_formatting_and_numbers():
    a = normalise('def f(x):\n    """Doc."""\n    # comment\n    return   x * 2.5 + 1  \n')
    b = normalise("def f(x):\n    return (x*7 + 3)\n")
    assert a == b == "def f(x):\n    return x * 0 + 0"
    module = "import torch\n\ndef _h(x):\n    return x\n\ndef g(x):\n    return _h(x)\n\ndef other(y):\n    return y\n"
    assert normalise(module, ["g"]) == "def _h(x):\n    return x\n\ndef g(x):\n    return _h(x)"
    with pytest.raises(KeyError, match="missing_name"):
        normalise(module, ["missing_name"])
    for task in TASK_IDS:  # untouched stubs leave nothing to compare: two of them never look alike
        stub = normalise(_read("exercises", f"{task}.py"))
        assert "NotImplementedError" not in stub and similarity(stub, stub) == 0, task


@pytest.mark.parametrize("task", TASK_IDS)
def test_disguised_copies_score_high(task):
    stub = normalise(_read("exercises", f"{task}.py"))
    solution = normalise(_read("solutions", f"{task}.py"))
    assert similarity(normalise(_disguise(_read("solutions", f"{task}.py"))), solution, stub) >= 0.8
    assert similarity(normalise(_disguise(_course_lib(task))), _course_lib(task), stub) >= 0.8
    assert similarity(stub, solution, stub) == 0  # the handed-out stub never counts


@pytest.mark.parametrize("variant", ALTERNATIVES, ids=lambda v: v.label)
def test_independent_implementations_score_low(variant):
    stub = normalise(_read("exercises", f"{variant.task}.py"))
    alternative = normalise(_alternative(variant))
    assert similarity(alternative, normalise(_read("solutions", f"{variant.task}.py")), stub) < 0.55
    assert similarity(alternative, _course_lib(variant.task), stub) < 0.55


def test_flags_of_a_class(tmp_path):
    task, other_task = "ch1_compression/task1_quantization", "ch3_continual/task4_metrics"
    alternative = next(v for v in ALTERNATIVES if v.task == task)

    def submit(student: str, t: str, text: str) -> None:
        (tmp_path / student / t).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / student / f"{t}.py").write_text(text)

    submit("alice", task, _disguise(_read("solutions", f"{task}.py")))
    submit("bob", task, _alternative(alternative))
    submit("carol", task, _disguise((tmp_path / "alice" / f"{task}.py").read_text()))
    submit("dave", task, _read("exercises", f"{task}.py"))  # the untouched stub
    submit("erin", task, "def quantize_affine(x:\n")  # does not parse: skipped
    submit("frank", other_task, _disguise(_course_lib(other_task)))
    (tmp_path / "gina" / "ch1_compression").mkdir(parents=True)
    (tmp_path / "gina" / f"{task}.py").symlink_to(ROOT / "solutions" / f"{task}.py")  # not a plain file: skipped
    students = {p.name: p for p in sorted(tmp_path.iterdir())}
    flags = similarity_flags(students, [task, other_task], ROOT)
    pairs = {(f["student"], f["task"], f["other"]) for f in flags}
    assert pairs == {("alice", task, "solutions"), ("alice", task, "carol"), ("carol", task, "solutions"),
                     ("carol", task, "alice"), ("frank", other_task, "course_lib")}, flags
    assert all(0.8 <= f["score"] <= 1 for f in flags)
    scores = similarity_scores(students, [task], ROOT)
    assert {s["student"] for s in scores} == {"alice", "bob", "carol", "dave"}
    assert max(s["score"] for s in scores if s["student"] in ("bob", "dave")) < 0.55
    with pytest.raises(ValueError, match="threshold"):
        similarity_flags(students, [task], ROOT, threshold=0)


def test_without_solutions_compares_with_course_lib_and_classmates(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "exercises", course / "exercises")  # the stubs; course_lib is the installed one
    task = "ch3_continual/task4_metrics"
    (tmp_path / "ann" / "ch3_continual").mkdir(parents=True)
    (tmp_path / "ann" / f"{task}.py").write_text(_read("solutions", f"{task}.py"))
    others = {s["other"] for s in similarity_scores({"ann": tmp_path / "ann"}, [task], course)}
    assert others == {"course_lib"}
