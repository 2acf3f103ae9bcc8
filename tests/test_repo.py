"""Repository rules that a reviewer would otherwise check by hand."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
FORBIDDEN = re.compile(r"^\s*(from|import)\s+(solutions|exercises)\b", re.M)


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert (ROOT / "notebooks" / "00_getting_started.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_hygiene(path):
    nb = json.loads(path.read_text())
    assert path.stat().st_size < 2_000_000, "notebook over 2 MB: shrink figures/outputs"
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        assert not FORBIDDEN.search(src), f"a notebook must not import solutions/ or exercises/: {src[:80]!r}"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"committed with an error output: {out.get('ename')}"
            if out.get("name") == "stderr":
                assert "Warning" not in "".join(out["text"]), f"committed with a warning: {''.join(out['text'])[:200]}"
        if "NBVAL_CHECK_OUTPUT" in src:
            assert not any(o.get("name") == "stderr" for o in cell.get("outputs", [])), (
                f"a checked cell has a stderr output (nbval fails when it is not reproduced): {src[:80]!r}")
            assert not re.search(r"perf_counter|benchmark\(|time\.time\(", src), "timing cells must not be checked by nbval"
    assert any(c["cell_type"] == "code" and c.get("outputs") for c in nb["cells"]), "commit notebooks executed"
    title = "".join(nb["cells"][0]["source"])
    assert title.startswith("# ") and re.search(r"[\u4e00-\u9fff]", title), "first cell: a title with the Chinese chapter title"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_course_lib_never_imports_exercises_or_solutions():
    for path in (ROOT / "course_lib").rglob("*.py"):
        bad = _imports(path) & {"exercises", "solutions"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _stub_functions(path: Path) -> list[str]:
    """Functions whose whole body (after an optional docstring) is ``raise NotImplementedError``.

    A guard such as ``if mha.dropout: raise NotImplementedError(...)`` for an unsupported
    configuration is a legitimate error, not a stub, and is not reported.
    """
    stubs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = list(node.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]
        if len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None:
            exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                stubs.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return stubs


def test_stub_detector_sees_the_exercise_stubs():
    found = [s for path in (ROOT / "exercises").rglob("*.py") for s in _stub_functions(path)]
    assert len(found) >= 12, found


def test_no_stub_left_in_course_lib_or_solutions():
    for folder in ("course_lib", "solutions"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not _stub_functions(path), f"stub functions left: {_stub_functions(path)}"


def test_test_module_names_are_unique():
    """pytest imports test modules by basename (no packages): two equal names stop collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
