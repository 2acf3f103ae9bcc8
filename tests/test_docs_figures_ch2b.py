"""The chapter-2 guide's figures for notebooks 2.5-2.7 and its selection guide come from committed
results files or notebook outputs, never from hand-typed numbers.

``docs/ch2_multimodal.md`` quotes tables rendered by
``python -m course_lib.multimodal.fusion_studies doc`` from ``results/ch2_fusion_*.json`` and
``results/ch2_advanced_*.json``; these tests render them again and require them verbatim, require
every decimal number of those sections to be one of the committed figures (or printed by the
notebooks), and require the run times to be the ones the notebooks printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.multimodal.fusion_studies import STUDIES, fusion_doc_tables
from course_lib.results import RESULTS_DIR, load_results

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ch2_multimodal.md"
NOTEBOOKS = {name: ROOT / "notebooks" / "ch2_multimodal" / f"{name}.ipynb"
             for name in ("05_fusion_architectures", "06_applications", "07_advanced_techniques")}
SECTIONS = ("### Fusion architectures (notebook 2.5)", "### Applications (notebook 2.6)",
            "### Advanced techniques (notebook 2.7)", "## Selection guide")
RESULTS = sorted(f"{STUDIES[s]}_{p}" for s in STUDIES for p in ("quick", "full"))
DIARY = re.compile(r"\btoday\b|what made the difference|tried without effect|quiet machine|\b20\d\d-\d\d-\d\d\b", re.I)
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    ends = [text.find(h, start + len(heading)) for h in (*SECTIONS, "### Notebook run times", "\n## ")]
    ends = [e for e in ends if e > start]
    return text[start: min(ends) if ends else len(text)]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def mine(doc) -> str:
    return "\n".join(_section(doc, h) for h in SECTIONS)


def _leaves(tree) -> list[float]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _leaves(v)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def _notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            out.append("".join(o.get("text", "")))
            out.append("".join(o.get("data", {}).get("text/plain", "")))
            out.append("".join(o.get("data", {}).get("text/markdown", "")))
    return "\n".join(out)


@pytest.mark.parametrize("name", RESULTS)
def test_results_files_have_provenance_and_their_command_is_in_the_guide(name, doc):
    r = load_results(name)
    assert r.command.startswith(f"COURSE_PROFILE={r.profile} python -m course_lib.multimodal.fusion_studies ")
    assert len(r.seeds) >= 3, f"{name}: an effect over seeds needs at least 3 seeds"
    assert r.command in doc, f"the guide must quote the command that wrote results/{name}.json"


def test_the_guide_quotes_the_tables_rendered_from_the_results(doc):
    for name, table in fusion_doc_tables().items():
        parts = table.splitlines() if name == "findings" else [table]  # the findings are spread over sections
        for part in parts:
            assert part in doc, (f"docs/ch2_multimodal.md is out of date for {name!r}: {part[:120]!r}; "
                                 "regenerate it with `python -m course_lib.multimodal.fusion_studies doc`")


def test_every_number_in_these_sections_is_a_committed_or_printed_figure(mine):
    allowed = set()
    for name in RESULTS:
        for v in _leaves(load_results(name).figures):
            allowed.update({f"{v:.3f}", f"{v:.2f}", f"{v:.1f}"})
    for table in fusion_doc_tables().values():
        allowed.update(NUMBER.findall(table))
    for path in NOTEBOOKS.values():
        allowed.update(NUMBER.findall(_notebook_text(path)))
    allowed.update({"0.5", "0.95"})  # a coin flip; the recall target of the ANN row
    stray = sorted(set(NUMBER.findall(mine)) - allowed)
    assert not stray, f"numbers in the guide that no results file or notebook output contains: {stray}"


def test_no_diary_wording_in_these_sections(mine):
    assert not DIARY.findall(mine)


def test_notebook_run_times_are_the_ones_the_notebooks_printed(doc):
    times = _section(doc, "### Notebook run times")
    for name, path in NOTEBOOKS.items():
        printed = re.search(r"this notebook: (\d+) s wall, (\d+) s of CPU", _notebook_text(path))
        assert printed, f"{name} does not print its run time in its last cell"
        row = re.search(rf"^\| {name} \| (\d+) \| (\d+) \|", times, re.M)
        assert row, f"no run-time row for {name}"
        assert row.groups() == printed.groups(), f"{name}: guide says {row.groups()}, notebook printed {printed.groups()}"


def test_results_files_are_in_the_repository():
    for name in RESULTS:
        assert (RESULTS_DIR / f"{name}.json").is_file()
