"""The chapter-1 guide quotes only figures that come from committed results files.

Every figure in ``docs/ch1_compression.md`` is listed in ``FIGURES`` with the function
that formats it from ``results/ch1_*.json``; the test asserts the guide contains exactly
that text. Editing a number by hand, or regenerating a results file without updating the
guide, fails here. The selection table must be the one :func:`selection_from_results`
builds from the same files, each results file's command must be quoted, and the guide
must read as course material (no dated runs or diary wording).
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from course_lib.compression.benchmarking import Table
from course_lib.compression.pipeline import selection_from_results
from course_lib.conclusions import fmt_mean
from course_lib.results import load_results

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ch1_compression.md"
FILES = ("ch1_pipeline", "ch1_structured", "ch1_distillation", "ch1_pruning", "ch1_temperature", "ch1_int8_anatomy")


def r(name: str):
    return load_results(name)


def rng(values, digits: int = 2, unit: str = "×") -> str:
    """``"1.10–1.20×"`` (min–max), or one value when they coincide at this precision."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def variant(name: str) -> dict:
    return r("ch1_pipeline").figures["variants"][name]


def ratio_rounds(num: str, den: str, batch: int = 64) -> list[float]:
    """Per latency round, latency(num) / latency(den): the speed-up of ``den`` over ``num``."""
    return [a / b for a, b in zip(variant(num)[f"b{batch}_ms"], variant(den)[f"b{batch}_ms"])]


def arms(key: str = "arms") -> dict:
    return r("ch1_distillation").get(key)


def gains() -> dict[str, list[float]]:
    a = arms()
    d, c, s = a["distilled (inherited init)"], a["contrastive (inherited init)"], a["from scratch (random init)"]
    return {"teacher": [x - y for x, y in zip(d, c)], "init": [x - y for x, y in zip(c, s)]}


def anatomy(row: str, key: str) -> float:
    return r("ch1_int8_anatomy").get("rows")[row][key]


def scope(kind: str, level: str) -> list[float]:
    return r("ch1_pruning").figures["scope_curve"][kind][level]


def mean(values) -> float:
    return statistics.fmean(values)


#: figure name -> the exact text the guide quotes
FIGURES = {
    # the pipeline (full profile, latency rounds)
    "teacher_accuracy": lambda: f"{variant('teacher fp32 (torch)')['accuracy']:.2f}%",
    "int8_torch_b64": lambda: rng(variant("teacher int8 dyn (torch)")["b64_speedup"]),
    "int8_ort_b64": lambda: rng(ratio_rounds("teacher fp32 (ORT)", "teacher int8 dyn (ORT)")),
    "int8_accuracy_change": lambda: f"{variant('teacher int8 dyn (torch)')['accuracy'] - variant('teacher fp32 (torch)')['accuracy']:+.2f} points",
    "ort_b1": lambda: rng(variant("teacher fp32 (ORT)")["b1_speedup"]),
    "pruned_torch_b64": lambda: rng(variant("pruned 50% + FT (torch)")["b64_speedup"]),
    "pruned_ort_b64": lambda: rng(variant("pruned 50% + FT fp32 (ORT)")["b64_speedup"]),
    "student_int8_b64": lambda: rng(variant("student int8 dyn (ORT)")["b64_speedup"]),
    "student_int8_b1": lambda: rng(variant("student int8 dyn (ORT)")["b1_speedup"]),
    # structured pruning (full profile, 3 seeds)
    "structured_dense": lambda: f"{r('ch1_structured').get('dense_accuracy'):.2f}%",
    "structured_weight_ft": lambda: f"{fmt_mean(r('ch1_structured').get('after_ft.weight'), 2)}%",
    "structured_activation_ft": lambda: f"{fmt_mean(r('ch1_structured').get('after_ft.activation'), 2)}%",
    "structured_weight_before": lambda: f"{mean(r('ch1_structured').get('before_ft.weight')):.2f}%",
    "structured_activation_before": lambda: f"{fmt_mean(r('ch1_structured').get('before_ft.activation'), 2)}%",
    "structured_change": lambda: f"{mean(r('ch1_structured').get('after_ft.weight')) - r('ch1_structured').get('dense_accuracy'):+.2f} points",
    # distillation (full profile, 3 seeds)
    "student_pct": lambda: f"{fmt_mean(arms('pct_of_teacher')['distilled (inherited init)'], 1)}%",
    "student_pct_range": lambda: rng(arms("pct_of_teacher")["distilled (inherited init)"], 1, "%"),
    "param_ratio": lambda: f"{100 * r('ch1_distillation').get('param_ratio'):.1f}%",
    "distilled": lambda: f"{fmt_mean(arms()['distilled (inherited init)'], 1)}%",
    "contrastive_inherited": lambda: f"{fmt_mean(arms()['contrastive (inherited init)'], 1)}%",
    "scratch": lambda: f"{fmt_mean(arms()['from scratch (random init)'], 1)}%",
    "gain_teacher": lambda: f"{fmt_mean(gains()['teacher'], 1)} points",
    "gain_init": lambda: f"{fmt_mean(gains()['init'], 1)} points",
    "distill_teacher_accuracy": lambda: f"{r('ch1_distillation').get('teacher_accuracy'):.2f}%",
    # unstructured pruning (quick profile, 3 seeds / 3 test splits)
    "gradual": lambda: f"{fmt_mean(r('ch1_pruning').get('gradual_vs_oneshot.gradual'), 1)}%",
    "oneshot": lambda: f"{fmt_mean(r('ch1_pruning').get('gradual_vs_oneshot.one-shot'), 1)}%",
    "oneshot_before": lambda: f"{mean(r('ch1_pruning').get('gradual_vs_oneshot.one-shot before FT')):.1f}%",
    "local_90": lambda: f"{fmt_mean(scope('local', '0.9'), 1)}%",
    "global_90": lambda: f"{fmt_mean(scope('global', '0.9'), 1)}%",
    "local_70": lambda: f"{fmt_mean(scope('local', '0.7'), 1)}%",
    "global_70": lambda: f"{fmt_mean(scope('global', '0.7'), 1)}%",
    # temperature sweep (quick profile, 3 seeds)
    "t1": lambda: f"{fmt_mean(r('ch1_temperature').get('accuracy')['T=1'], 1)}%",
    "t16": lambda: f"{fmt_mean(r('ch1_temperature').get('accuracy')['T=16'], 1)}%",
    "t64": lambda: f"{fmt_mean(r('ch1_temperature').get('accuracy')['T=64'], 1)}%",
    # INT8 anatomy (ONNX Runtime profiler)
    "anatomy_fp32_ms": lambda: f"{anatomy('ORT fp32', 'b64_ms'):.1f} ms",
    "anatomy_mm_speedup": lambda: f"{anatomy('ORT int8 dynamic (MatMul/Gemm only)', 'speedup'):.2f}×",
    "anatomy_default_speedup": lambda: f"{anatomy('ORT int8 dynamic (default ops)', 'speedup'):.2f}×",
    "anatomy_matrix_share": lambda: f"{100 * anatomy('ORT fp32', 'matrix_ms') / sum(anatomy('ORT fp32', k) for k in ('matrix_ms', 'conv_ms', 'other_ms')):.0f}%",
    "anatomy_matrix_fp32": lambda: f"{anatomy('ORT fp32', 'matrix_ms'):.1f} ms",
    "anatomy_matrix_int8": lambda: f"{anatomy('ORT int8 dynamic (MatMul/Gemm only)', 'matrix_ms'):.1f} ms",
    "anatomy_conv_fp32": lambda: f"{anatomy('ORT fp32', 'conv_ms'):.2f} ms",
    "anatomy_conv_int8": lambda: f"{anatomy('ORT int8 dynamic (default ops)', 'conv_ms'):.2f} ms",
    "anatomy_other_fp32": lambda: f"{anatomy('ORT fp32', 'other_ms'):.1f} ms",
    "anatomy_other_int8": lambda: f"{anatomy('ORT int8 dynamic (MatMul/Gemm only)', 'other_ms'):.1f} ms",
    "anatomy_features": lambda: ", ".join(r("ch1_int8_anatomy").get("cpu_features")),
}


def _distinguishable(a, b) -> bool:
    from course_lib.conclusions import compare
    return compare({"a": a, "b": b}).distinguishable


#: a sentence of the guide that states an outcome -> the check of that outcome on the committed results
CLAIMS = {
    "one-shot local pruning keeps at least as much\naccuracy as global pruning at every level measured":
        lambda: all(mean(scope("local", k)) >= mean(scope("global", k)) for k in r("ch1_pruning").figures["scope_curve"]["local"]),
    "at this\nbudget the inherited weights are the larger win, beyond the spread over seeds":
        lambda: mean(gains()["init"]) > mean(gains()["teacher"]) and _distinguishable(gains()["init"], gains()["teacher"]),
    "Both add accuracy\nbeyond the spread":
        lambda: _distinguishable(arms()["distilled (inherited init)"], arms()["contrastive (inherited init)"])
        and _distinguishable(arms()["contrastive (inherited init)"], arms()["from scratch (random init)"]),
    "among the high temperatures this budget does\nnot separate the best one from its neighbours":
        lambda: not _distinguishable(r("ch1_temperature").get("accuracy")["T=64"], r("ch1_temperature").get("accuracy")["T=16"]),
}


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_guide_quotes_the_results(doc, name):
    text = FIGURES[name]()
    assert text in doc, f"docs/ch1_compression.md should quote {name} as {text!r} (formatted from results/ch1_*.json)"


def test_the_selection_table_is_built_from_the_results(doc):
    table = Table(selection_from_results(r("ch1_pipeline"), r("ch1_structured"), r("ch1_distillation"))).to_markdown()
    assert table in doc, "the guide's selection table must be selection_from_results(...) of the committed files:\n" + table


@pytest.mark.parametrize("name", FILES)
def test_each_results_file_is_named_with_its_command(doc, name):
    res = r(name)
    assert f"results/{name}.json" in doc and f"`{res.command}`" in doc


def test_no_number_in_the_measured_sections_is_typed_by_hand(doc):
    """Every decimal figure after "## Measured figures" is part of a quoted figure or the table."""
    section = doc[doc.index("## Measured figures"):]
    allowed = " ".join([FIGURES[n]() for n in FIGURES]
                       + [Table(selection_from_results(r("ch1_pipeline"), r("ch1_structured"), r("ch1_distillation"))).to_markdown()])
    section = re.sub(r"`[^`]*`", "", section)  # commands and code may hold numbers (seeds, sizes)
    for number in re.findall(r"(?<![\w.])[-+]?\d+\.\d+", section):
        assert number in allowed, f"{number} in the guide's measured sections comes from no results file"


def test_the_guide_reads_as_course_material(doc):
    for pattern in (r"\b20\d\d-\d\d-\d\d\b", r"\btoday\b", r"quiet machine", r"What made the difference",
                    r"Tried without effect", r"\bwe tried\b"):
        assert not re.search(pattern, doc, re.I), f"diary wording in the guide: {pattern}"


@pytest.mark.parametrize("sentence", list(CLAIMS), ids=range(len(CLAIMS)))
def test_the_guide_states_only_outcomes_the_results_show(doc, sentence):
    assert sentence in doc, f"the guide no longer says {sentence!r}: update CLAIMS with the sentence that replaced it"
    assert CLAIMS[sentence](), f"the committed results no longer support {sentence!r}"
