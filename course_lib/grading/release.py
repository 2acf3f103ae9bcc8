"""``course-release OUT``: write the student handout of the course into ``OUT``.

The handout holds the notebooks, ``course_lib``, the stubs in ``exercises/``, ``docs/``,
``results/``, the packaging files and the *public* checks: no ``solutions/`` (so every command
defaults to ``exercises/``), no hidden test. As in otter-grader and nbgrader, the public tests
are a few per task that pin the basic contract (:data:`PUBLIC_TESTS`). Each public module is a
filtered copy of the graded one: hidden tests are removed, then every module-level helper that
nothing left refers to; helpers in :data:`WITHHELD` (re-implementations of a task) lose their body.
Also ``python -m course_lib.grading.release OUT [--force] [--course DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
from pathlib import Path

from .tasks import TASKS

# task id -> the graded tests that are public (the rest of the module stays hidden)
PUBLIC_TESTS: dict[str, tuple[str, ...]] = {
    "ch1_compression/task1_quantization": ("test_symmetric_hand_worked", "test_asymmetric_hand_worked",
                                           "test_dequantize_per_tensor"),
    "ch1_compression/task2_pruning": ("test_hand_worked_two_layers", "test_cubic_hand_worked"),
    "ch1_compression/task3_distillation": ("test_kd_hand_worked", "test_feature_loss_hand_worked"),
    "ch1_compression/task4_batching": ("test_schedule_hand_worked", "test_latencies_hand_worked"),
    "ch2_multimodal/task1_contrastive": ("test_clip_loss_hand_worked", "test_siglip_hand_worked"),
    "ch2_multimodal/task2_sinkhorn": ("test_hand_worked_2x2", "test_barycentric_projection_hand_worked"),
    "ch2_multimodal/task3_retrieval": ("test_topk_cosine_hand_worked", "test_recall_at_k_hand_worked"),
    "ch2_multimodal/task4_cross_attention": ("test_parameters", "test_query_and_context_lengths_differ"),
    "ch3_continual/task1_replay": ("test_len_and_num_seen", "test_keeps_everything_until_full"),
    "ch3_continual/task2_ewc": ("test_fisher_hand_worked", "test_penalty_hand_worked"),
    "ch3_continual/task3_progressive": ("test_add_column_returns_the_index", "test_parameter_count_per_column"),
    "ch3_continual/task4_metrics": ("test_bad_input_is_rejected",),
}
# task id -> helpers of its tests that re-implement the task (a public test may refer to them, never call them)
WITHHELD: dict[str, tuple[str, ...]] = {"ch1_compression/task4_batching": ("_simulate", "_latencies_ref"),
                                        "ch3_continual/task3_progressive": ("_reference",),
                                        "ch3_continual/task4_metrics": ("_reference",)}
TOP_DIRS = ("course_lib", "notebooks", "exercises", "docs", "results")
TOP_FILES = ("README.md", "pyproject.toml", "environment.yml", ".gitignore", "tests/conftest.py",
             "tests/exercises/conftest.py")
SKIP_NAMES = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".DS_Store"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".onnx")
MARKER = ".handout.json"
HANDOUT_NOTE = (
    "> **Student handout.** This copy of the course holds the notebooks, `course_lib`, the practice tasks "
    "in `exercises/` and their public checks in `tests/exercises/` (a few per task; your teacher grades with "
    "more). It has no `solutions/`: every command checks `exercises/`, e.g. "
    "`python -m pytest tests/exercises/ch1_compression/test_task1_quantization.py` or `course-grade`.\n\n")


class ReleaseError(Exception):
    """The handout cannot be written (bad OUT, unknown public test, ...)."""


def _top_level_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Module-level functions, classes and simple assignments, by name."""
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if len(names) == len(targets) == 1:
                out[names[0]] = node
    return out


def graded_tests(source: str) -> list[str]:
    """Names of the module-level ``test_*`` functions of a test module."""
    return [n for n in _top_level_names(ast.parse(source)) if n.startswith("test_")]


def _span(node: ast.stmt) -> tuple[int, int]:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


def public_module(source: str, public: set[str] | tuple[str, ...], withheld: tuple[str, ...] = ()) -> str:
    """The source of a test module keeping only the ``public`` tests (see the module docstring).

    Raises ReleaseError if a public test or withheld helper is not in the module."""
    tree = ast.parse(source)
    names = _top_level_names(tree)
    unknown = (set(public) | set(withheld)) - set(names)
    if unknown:
        raise ReleaseError(f"not in the test module: {sorted(unknown)}")
    drop = {n for n in names if n.startswith("test_") and n not in public}
    while True:  # drop helpers (and fixtures) that nothing kept refers to, until nothing changes
        used: set[str] = set()
        dropped = {id(names[d]) for d in drop}
        for node in tree.body:
            if id(node) in dropped:
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    used.add(sub.id)
                elif isinstance(sub, ast.arg):
                    used.add(sub.arg)  # fixtures are requested by argument name
        unused = {n for n in names if n not in used and n not in drop and not n.startswith("test_")
                  and n not in ("TASK", "pytestmark") and not n.startswith("__")}
        if not unused:
            break
        drop |= unused
    lines = source.splitlines(keepends=True)
    edits = [(*_span(names[n]), None) for n in drop]
    for n in withheld:
        node = names[n]
        if n not in drop and isinstance(node, ast.FunctionDef):
            indent = " " * node.body[0].col_offset
            stub = f'{indent}raise RuntimeError("{n} is withheld from the handout (a reference implementation)")\n'
            edits.append((node.body[0].lineno, node.end_lineno, stub))
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1:end] = [text] if text else []
    out = re.sub(r"\n{4,}", "\n\n\n", "".join(lines))
    ast.parse(out)  # still valid Python
    return out


def course_root() -> Path:
    """The course holding this package (a source checkout: course_lib/ next to exercises/)."""
    for cand in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (cand / "course_lib").is_dir() and (cand / "exercises").is_dir():
            return cand.resolve()
    raise ReleaseError("cannot find the course (a folder with course_lib/ and exercises/); pass --course DIR")


def _copy_tree(src: Path, dst: Path, skipped: list[str]) -> None:
    """Copy the plain files under ``src``; links (never followed) and special files go to ``skipped``."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in SKIP_NAMES and not d.endswith(SKIP_SUFFIXES)]
        for name in dirnames + [f for f in filenames if f not in SKIP_NAMES and not f.endswith(SKIP_SUFFIXES)]:
            path = Path(dirpath) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                skipped.append(str(path))
            elif path.is_file():
                (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst / path.relative_to(src), follow_symlinks=False)


def _prepare_out(out: Path, root: Path, force: bool) -> Path:
    if out.is_symlink():
        raise ReleaseError(f"{out} is a symbolic link; pass a real folder")
    out = out.resolve()
    if root.is_relative_to(out) or any(out.is_relative_to(root / d) for d in TOP_DIRS + ("tests", "solutions")):
        raise ReleaseError(f"{out} overlaps the course itself ({root}); choose a folder outside its sources")
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ReleaseError(f"{out} is not empty (pass --force to replace an earlier handout)")
        if not (out / MARKER).is_file():
            raise ReleaseError(f"{out} is not empty and holds no earlier handout ({MARKER}); choose an empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _handout_pyproject(text: str, out: Path) -> str:
    """pytest's testpaths limited to the folders that exist in the handout."""
    match = re.search(r"(?m)^testpaths\s*=\s*(\[.*\])\s*$", text)
    if not match:
        return text
    kept = ", ".join(f'"{p}"' for p in ast.literal_eval(match.group(1)) if (out / p).exists())
    return text[:match.start(1)] + f"[{kept}]" + text[match.end(1):]


def write_handout(out: Path, root: Path | None = None, force: bool = False) -> dict:
    """Write the handout into ``out``; returns a summary: files, bytes, [public, all] graded
    tests per task, skipped links. Raises ReleaseError (before writing anything if a public test
    or withheld helper is not in its module)."""
    root = (root or course_root()).resolve()
    modules, counts = {}, {}
    for task in TASKS:
        src = root / "tests" / "exercises" / task.test_file
        try:
            text = src.read_text(encoding="utf-8")
            modules[task.test_file] = public_module(text, PUBLIC_TESTS[task.id], WITHHELD.get(task.id, ()))
        except (KeyError, OSError, ReleaseError) as exc:
            raise ReleaseError(f"{src}: {exc} (see PUBLIC_TESTS, WITHHELD in course_lib/grading/release.py)") from None
        counts[task.id] = [len(PUBLIC_TESTS[task.id]), len(graded_tests(text))]
    out = _prepare_out(Path(out), root, force)
    skipped: list[str] = []
    for d in TOP_DIRS:
        if (root / d).is_dir() and not (root / d).is_symlink():
            _copy_tree(root / d, out / d, skipped)
    for f in TOP_FILES:
        if (root / f).is_file() and not (root / f).is_symlink():
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / f, out / f, follow_symlinks=False)
    for name, text in modules.items():
        (out / "tests" / "exercises" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "tests" / "exercises" / name).write_text(text, encoding="utf-8")
    if (out / "README.md").is_file():
        title, rest = (out / "README.md").read_text(encoding="utf-8").split("\n", 1)
        (out / "README.md").write_text(f"{title}\n\n{HANDOUT_NOTE}{rest.lstrip()}", encoding="utf-8")
    if (out / "pyproject.toml").is_file():
        (out / "pyproject.toml").write_text(_handout_pyproject((out / "pyproject.toml").read_text(), out))
    (out / MARKER).write_text(json.dumps({"course_release": 1, "public_tests": PUBLIC_TESTS}, indent=1))
    files = [p for p in out.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "public_tests": counts,
            "skipped_links": skipped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="course-release", description="Write the student handout of the course "
                                "(no solutions/, only the public checks) into OUT.")
    p.add_argument("out", metavar="OUT", help="an empty folder (created if missing)")
    p.add_argument("--force", action="store_true", help="replace an earlier handout in OUT")
    p.add_argument("--course", metavar="DIR", help="the teacher's course (default: the one holding course_lib)")
    args = p.parse_args(argv)
    try:
        summary = write_handout(Path(args.out).expanduser(), Path(args.course) if args.course else None, args.force)
    except ReleaseError as exc:
        print(f"course-release: error: {exc}", file=sys.stderr)
        return 2
    public = sum(c[0] for c in summary["public_tests"].values())
    total = sum(c[1] for c in summary["public_tests"].values())
    print(f"wrote the handout to {Path(args.out).expanduser()}: {summary['files']} files, "
          f"{summary['bytes'] / 1e6:.1f} MB; public checks: {public} of {total} graded test functions")
    for link in summary["skipped_links"]:
        print(f"  skipped (not a plain file): {link}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
