"""The figures that docs/ch2_multimodal.md quotes for notebooks 2.1-2.4 are the committed ones.

Each quoted block sits between ``<!-- figures: NAME -->`` and ``<!-- /figures -->`` in the guide
and is checked against ``results/NAME.json`` (or, for the OT alignment, against notebook 2.2's
checked output): every table row must be the row this file formats from the results, and the
block must name the command that wrote them. Regenerating a results file without updating the
guide (or typing a figure by hand) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.conclusions import compare, fmt_mean
from course_lib.results import load_results

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ch2_multimodal.md"
DIARY = re.compile(r"\btoday\b|quiet machine|loaded machine|\b20\d\d-\d\d-\d\d\b|what made the difference|"
                   r"tried without effect|re-executed", re.I)


def block(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- figures: {name} -->(.*?)<!-- /figures -->", text, re.S)
    assert m, f"docs/ch2_multimodal.md has no block <!-- figures: {name} --> ... <!-- /figures -->"
    return m.group(1)


def table_rows(text: str) -> list[str]:
    """The body rows of the markdown tables in ``text`` (header and separator rows dropped)."""
    rows = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    body, previous = [], None
    for ln in rows:
        if re.fullmatch(r"\|[\s|:-]+\|", ln):
            if body and body[-1] == previous:
                body.pop()  # the header above a separator
        else:
            body.append(ln)
        previous = ln
    return body


def rng(values, fmt: str) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}–{hi:{fmt}}" if f"{lo:{fmt}}" != f"{hi:{fmt}}" else f"{lo:{fmt}}"


# ----------------------------------------------------------------------------- row formats


def sinkhorn_rows(res) -> list[str]:
    return [f"| {r['reg']:g} | {r['iters']} | {r['max_abs_diff']:.1e} | {rng(r['ms'], ',.0f')} | "
            f"{rng(r['pot_ms'], ',.0f')} | {rng(r['speedup'], '.1f')}x |" for r in res.figures["rows"]]


def retrieval_rows(res) -> list[str]:
    out = []
    for size in sorted(res.figures, key=int):
        for r in res.figures[size]["rows"]:
            out.append(f"| {int(size):,} | {r['direction']} | {r['queries']} | {r['R@1']:.3f} | {r['R@5']:.3f} | "
                       f"{r['R@10']:.3f} | {r['mAP']:.3f} | {r['chance_R@10']:.3f} |")
    return out


def retrieval_misses(res) -> list[str]:
    return [f"{int(size):,} scenes: {res.figures[size]['top1_misses']['share_same_objects']:.0%}"
            for size in sorted(res.figures, key=int)]


def ann_row(p: dict, flat_qps_best: float) -> str:
    knob = f"{p['param']}={p['value']:g}" if p["param"] else "–"
    runs = p["qps_runs"] or [p["qps"]]
    return (f"| {p['kind']} | {knob} | {p['recall']:.3f} | {rng(runs, ',.0f')} | {p['speedup']:.0f}x | "
            f"{p['build_s']:.0f} | {p['memory_mb']:.0f} |")


def ann_rows(res) -> dict[tuple[str, str], str]:
    pts = res.figures["points"]
    flat = pts[0]["qps"]
    return {(p["kind"], f"{p['param']}={p['value']:g}" if p["param"] else "–"): ann_row(p, flat) for p in pts}


ALIGN_METRICS = (("t2i_R@1", True, "text→image R@1"), ("hard_negative_acc", True, "hard-negative accuracy"),
                 ("alignment", False, "alignment (lower = closer)"), ("modality_gap", False, "modality gap"),
                 ("temperature", None, "final temperature"))


def alignment_rows(res) -> list[str]:
    lit = res.figures["lit"]["runs"]
    out = []
    for key, higher, label in ALIGN_METRICS:
        a, b = lit["infonce"][key], lit["siglip"][key]
        if higher is None:
            verdict = "–"
        else:
            c = compare({"InfoNCE": a, "SigLIP": b}, higher_is_better=higher)
            verdict = f"{c.winner.name}, by {c.margin:.3f}" if c.distinguishable else "not distinguishable"
        out.append(f"| {label} | {fmt_mean(a)} | {fmt_mean(b)} | {verdict} |")
    return out


def matching_sentence(res) -> list[str]:
    m = res.figures["matching"]
    c = compare({"dot product": [m["dot"]["all"]], "ITM head": m["itm"]["all"]})
    loc = compare({"nouns": m["localisation"], "chance": [m["localisation_chance"]]})
    return [f"dot product {m['dot']['all']:.3f}, cross-attention ITM head {fmt_mean(m['itm']['all'])}",
            f"{c.winner.name} ahead by {c.margin:.3f}" if c.distinguishable else "not distinguishable",
            f"{fmt_mean([100 * v for v in m['localisation']], 1)}% of {m['nouns']:,} nouns",
            f"chance {100 * m['localisation_chance']:.1f}%",
            "above chance by more than the spread over seeds" if loc.distinguishable and loc.winner.name == "nouns"
            else "not distinguishable from chance"]


# ----------------------------------------------------------------------------- tests


def test_sinkhorn_block_quotes_the_committed_runs():
    res = load_results("ch2_sinkhorn")
    text = block("ch2_sinkhorn")
    assert res.command in text
    assert table_rows(text) == sinkhorn_rows(res)
    slowest = min(s for r in res.figures["rows"] for s in r["speedup"])
    assert f"at least {slowest:.1f}x" in text


def test_retrieval_block_quotes_the_committed_figures():
    res = load_results("ch2_retrieval")
    text = block("ch2_retrieval")
    assert res.command in text
    assert table_rows(text) == retrieval_rows(res)
    for phrase in retrieval_misses(res):
        assert phrase in text


@pytest.mark.parametrize("name", ["ch2_ann_50k", "ch2_ann_1m"])
def test_ann_blocks_quote_the_committed_studies(name):
    res = load_results(name)
    text = block(name)
    assert res.command in text
    fig = res.figures
    assert f"N = {fig['size']:,}" in text
    assert f"HNSW M = {fig['index_params']['hnsw']['hnsw_m']}" in text  # the M that was actually built
    assert f"nlist = {fig['nlist']:,}" in text
    expected = ann_rows(res)
    rows = table_rows(text)
    assert rows, "no table rows"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        key = (cells[0], cells[1])
        assert key in expected, f"{name}: row {row!r} names no measured point"
        assert row == expected[key], f"{name}: {row!r} != committed {expected[key]!r}"


@pytest.mark.parametrize("name", ["ch2_ann_50k", "ch2_ann_1m"])
def test_ann_blocks_verdict_and_prose_figures_are_computed(name):
    from course_lib.multimodal.ann import compare_at_recall, point_from_record

    res = load_results(name)
    text = block(name)
    verdict = compare_at_recall([point_from_record(r) for r in res.figures["points"]], 0.95)
    assert verdict is not None and verdict.sentence in text
    recalls = {f"{p['recall']:.3f}" for n in ("ch2_ann_50k", "ch2_ann_1m") for p in load_results(n).figures["points"]}
    prose = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("|")).replace(verdict.sentence, "")
    for number in re.findall(r"\b0\.\d{3}\b", prose):
        assert number in recalls, f"{name}: {number} quoted in the prose is no committed recall"


def test_ann_1m_block_lists_every_point():
    res = load_results("ch2_ann_1m")
    assert len(table_rows(block("ch2_ann_1m"))) == len(res.figures["points"])


def test_alignment_block_quotes_the_committed_seeds():
    res = load_results("ch2_alignment")
    text = block("ch2_alignment")
    assert res.command in text
    assert table_rows(text) == alignment_rows(res)
    for phrase in matching_sentence(res):
        assert phrase in text, phrase


def test_ot_block_quotes_notebook_2_2_checked_output():
    nb = json.loads((ROOT / "notebooks" / "ch2_multimodal" / "02_optimal_transport.ipynb").read_text())
    checked = [c for c in nb["cells"] if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])
               and "matching_accuracy" in "".join(c["source"])]
    assert len(checked) == 1
    out = "".join("".join(o.get("text", "")) for o in checked[0]["outputs"])
    quoted = re.findall(r"\d+\.\d%", block("ch2_ot"))
    assert len(quoted) >= 4
    for q in quoted:
        assert q in out, f"{q} is not in notebook 2.2's checked output"


@pytest.mark.parametrize("name", ["ch2_sinkhorn", "ch2_retrieval", "ch2_ann_50k", "ch2_ann_1m", "ch2_alignment",
                                  "ch2_ot"])
def test_blocks_read_as_course_material(name):
    hit = DIARY.search(block(name))
    assert not hit, f"diary wording in the {name} block: {hit.group(0)!r}"


@pytest.mark.parametrize("name", ["01_alignment", "02_optimal_transport", "03_retrieval", "04_million_vectors"])
def test_notebook_run_times_are_the_ones_the_notebooks_printed(name):
    nb = json.loads((ROOT / "notebooks" / "ch2_multimodal" / f"{name}.ipynb").read_text(encoding="utf-8"))
    out = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    printed = re.search(r"this notebook: (\d+) s wall, (\d+) s of CPU", out)
    assert printed, f"{name} does not print its run time in its last cell"
    row = re.search(rf"^\| {name} \| (\d+) \| (\d+) \|", DOC.read_text(encoding="utf-8"), re.M)
    assert row, f"no run-time row for {name} in docs/ch2_multimodal.md"
    assert row.groups() == printed.groups(), f"{name}: the guide says {row.groups()}, the notebook printed {printed.groups()}"
