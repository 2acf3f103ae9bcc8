"""Plagiarism signal: how much of a submitted task file is near-identical to other code.

For each submitted task file, :func:`similarity_scores` measures its similarity to
``course_lib``'s own implementation of the task (:data:`COURSE_LIB_CODE`), to
``solutions/`` (when present) and to each classmate's file of the same task;
:func:`similarity_flags` keeps the pairs at or above a threshold. The teacher decides.

Method (MOSS-like, with the maintained ``copydetect`` package): each file is parsed and
printed back by :mod:`ast` (formatting, comments and quotes vanish), docstrings are dropped
and numbers become 0; copydetect's tokenizer then replaces names with ``V``/``F``/``O`` and
strings with ``S``, and fingerprints the result by winnowing k-grams. Imports, functions still
raising ``NotImplementedError`` and the fingerprints of the task's stub (the signatures the
course hands out) are ignored. ``score(A, B)`` is the fraction of
A's fingerprinted code found in B (0 to 1). Measured on the 12 tasks
(tests/grading/test_similarity.py): copies of the solution or of course_lib disguised by
renaming, reordering, reformatting, new constants, comments and a dead statement in every
function score 0.94-1.0; the 18 independent correct implementations of grading_variants.py
score 0.0-0.49 against both. The default threshold, 0.7, lies between.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Iterable

NOISE = 25  # k: shortest match (characters of normalised code) that counts
MAX_BYTES = 1_000_000  # larger task files are not compared

COURSE_LIB = Path(__file__).resolve().parents[1]  # the installed course_lib package
# task id -> (the course_lib module implementing it, relative to COURSE_LIB; its functions/classes)
COURSE_LIB_CODE: dict[str, tuple[str, tuple[str, ...]]] = {
    "ch1_compression/task1_quantization": ("compression/quantization.py", ("quantize_affine", "dequantize_affine")),
    "ch1_compression/task2_pruning": ("compression/pruning.py", ("magnitude_masks", "apply_masks", "cubic_sparsity")),
    "ch1_compression/task3_distillation": ("compression/distillation.py", ("kd_loss", "feature_distillation_loss",
                                                                           "relational_kd_loss")),
    "ch1_compression/task4_batching": ("compression/batching.py", ("schedule_batches", "request_latencies")),
    "ch2_multimodal/task1_contrastive": ("multimodal/losses.py", ("clip_contrastive_loss", "siglip_loss")),
    "ch2_multimodal/task2_sinkhorn": ("multimodal/ot.py", ("sinkhorn", "barycentric_projection")),
    "ch2_multimodal/task3_retrieval": ("multimodal/retrieval.py", ("cosine_topk", "recall_at_k", "build_index")),
    "ch2_multimodal/task4_cross_attention": ("multimodal/attention.py", ("CrossModalAttention",)),
    "ch3_continual/task1_replay": ("continual/buffers.py", ("ReservoirBuffer",)),
    "ch3_continual/task2_ewc": ("continual/regularization.py", ("fisher_diagonal", "EWCPenalty")),
    "ch3_continual/task3_progressive": ("continual/models.py", ("ProgressiveNet",)),
    "ch3_continual/task4_metrics": ("continual/metrics.py", ("continual_metrics",)),
}


class _Normaliser(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, (int, float, complex)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(0), node)
        return node

    def _body(self, node: ast.AST) -> ast.AST | None:
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef) and isinstance(node.body[-1], ast.Raise) \
                and "NotImplementedError" in ast.unparse(node.body[-1]):
            return None  # a stub left as handed out
        return node

    def visit_Import(self, node: ast.AST) -> None:
        return None  # imports are shared by everyone

    visit_ImportFrom = visit_Import
    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _body


def _with_helpers(tree: ast.Module, names: Iterable[str]) -> ast.Module:
    """Only the top-level definitions ``names`` and the module-level helpers they use."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    missing = set(names) - set(defs)
    if missing:
        raise KeyError(f"not defined in the module: {sorted(missing)}")
    keep, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [s.id for s in ast.walk(defs[name]) if isinstance(s, ast.Name) and s.id in defs]
    tree.body = [n for n in tree.body if getattr(n, "name", None) in keep]
    return tree


def normalise(source: str, names: Iterable[str] | None = None) -> str:
    """Source printed back by ast without docstrings, imports and untouched stub functions, with
    numbers set to 0 (see the module docstring);
    with ``names``, only those top-level definitions and the helpers they call. Raises SyntaxError."""
    tree = ast.parse(source)
    if names is not None:
        tree = _with_helpers(tree, names)
    return ast.unparse(_Normaliser().visit(tree))


def _fingerprint(code: str, boilerplate=()):
    from copydetect import CodeFingerprint
    return CodeFingerprint("task.py", NOISE, 1, boilerplate=list(boilerplate), language="python",
                           fp=io.StringIO(code))


def _score(mine, other) -> float:
    from copydetect import compare_files
    return float(compare_files(mine, other)[1][0]) if mine.hashes else 0.0


def similarity(code: str, other: str, boilerplate: str = "") -> float:
    """Fraction (0..1) of ``code``'s fingerprinted code found in ``other`` (both normalised);
    fingerprints of ``boilerplate`` do not count. 0 when ``code`` has no fingerprint of its own."""
    skip = _fingerprint(boilerplate).hashes if boilerplate else ()
    return _score(_fingerprint(code, skip), _fingerprint(other, skip))


def _read(path: Path) -> str | None:
    """Normalised task file, or None (missing, not a plain file, too large, not Python)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        return normalise(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, OSError, RecursionError):
        return None


def similarity_scores(submissions: dict[str, Path], task_ids: Iterable[str], course_root: Path) -> list[dict]:
    """Every score: ``{"student", "task", "other", "score"}`` with ``other`` one of
    ``"course_lib"``, ``"solutions"`` or a classmate's name (a key of ``submissions``, each a
    folder laid out like ``exercises/``). ``course_root`` holds ``exercises/`` (the stubs) and
    ``solutions/`` if any. Files that cannot be read or parsed are skipped."""
    course_root = Path(course_root)
    out = []
    for task in task_ids:
        stub = _read(course_root / "exercises" / f"{task}.py") or ""
        others = {}
        if task in COURSE_LIB_CODE:
            module, names = COURSE_LIB_CODE[task]
            others["course_lib"] = normalise((COURSE_LIB / module).read_text(encoding="utf-8"), names)
        solution = _read(course_root / "solutions" / f"{task}.py")
        if solution is not None:
            others["solutions"] = solution
        files = {s: _read(Path(root) / f"{task}.py") for s, root in submissions.items()}
        skip = _fingerprint(stub).hashes if stub else ()
        prints = {("", name): _fingerprint(code, skip) for name, code in others.items()}
        prints.update({("student", s): _fingerprint(code, skip) for s, code in files.items() if code is not None})
        for (kind, student), mine in prints.items():
            if kind:
                out += [{"student": student, "task": task, "other": key[1], "score": round(_score(mine, fp), 3)}
                        for key, fp in prints.items() if key != (kind, student)]
    return out


def similarity_flags(submissions: dict[str, Path], task_ids: Iterable[str], course_root: Path,
                     threshold: float = 0.7) -> list[dict]:
    """The scores of :func:`similarity_scores` at or above ``threshold``, by student and task,
    highest first."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    flags = [s for s in similarity_scores(submissions, task_ids, course_root) if s["score"] >= threshold]
    return sorted(flags, key=lambda s: (s["student"], s["task"], -s["score"]))
