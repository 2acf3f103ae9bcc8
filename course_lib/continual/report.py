"""The chapter-3 guide's tables, rendered from committed results files.

``docs/ch3_continual.md`` quotes measured figures only through these tables, and
``tests/test_docs_figures_ch3.py`` renders them again from ``results/ch3_*.json`` and checks
that the guide contains them verbatim. To refresh the guide after re-running a benchmark::

    python -m course_lib.continual.report          # prints every table with its provenance

and paste the printed tables into the guide.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..conclusions import compare
from ..results import Results, load_results
from .experiments import VAN_DE_VEN_SPLIT_MNIST, markdown_table, versus_values
from .selection import SELECTION_COLUMNS, SETTING_COLUMNS, selection_rows, setting_rows

__all__ = ["strategy_table", "versus_table", "selection_table", "clip_table", "settings_table", "guard_table",
           "timing_table", "all_tables"]

#: the strategies of notebook 02's grid, by their labels in a selection results file (budget 200)
GRID = ("finetune", "joint", "replay (200)", "replay-balanced (200)", "ewc", "online-ewc", "lwf", "progressive")
KINDS = ("task", "domain", "class")


def _cell(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def strategy_table(measured: Mapping, labels=GRID) -> str:
    """Final average accuracy (%, mean ± std over seeds) per strategy and scenario, beside van
    de Ven & Tolias' split-MNIST figures."""
    rows = []
    for label in labels:
        name = label.split(" (")[0]
        row = {"strategy": label}
        for kind in KINDS:
            entry = measured.get(kind, {}).get(label)
            row[kind] = _cell(entry["average_accuracy"]) if entry else "n/a"
        for kind in ("task", "class"):
            ref = VAN_DE_VEN_SPLIT_MNIST[kind].get(name)
            row[f"vdv_{kind}"] = "—" if ref is None else f"{ref:.1f}"
        rows.append(row)
    return markdown_table(rows, [("strategy", "strategy"), ("task", "task-IL"), ("vdv_task", "van de Ven task-IL"),
                                 ("domain", "domain-IL"), ("class", "class-IL"), ("vdv_class", "van de Ven class-IL")])


def versus_table(measured: Mapping, labels=GRID) -> str:
    """Each strategy minus fine-tuning (points of final average accuracy) per scenario, and
    whether the difference exceeds the spread over seeds."""
    values = {label: {kind: measured[kind][label]["average_accuracy"] for kind in KINDS if label in measured.get(kind, {})}
              for label in labels}
    rows = versus_values(values, "finetune", KINDS)
    return markdown_table(rows, [("method", "strategy"), ("task", "task-IL"), ("domain", "domain-IL"), ("class", "class-IL")])


def selection_table(res: Results) -> str:
    """The selection guide (strategy per scenario and memory budget) of a selection results file."""
    rows = selection_rows(res.figures["measured"], f"{res.profile} protocol, {len(res.seeds)} seeds")
    return markdown_table(rows, SELECTION_COLUMNS)


def clip_table(figures: Mapping) -> str:
    """New-concept and retention accuracy (%, mean ± std over seeds) of the tiny CLIP, and each
    method minus fine-tuning with the spread verdict."""
    values = figures["values"]
    keys = ("new", "old", "old48")
    cols = [("method", "method"), ("new", "new concepts (48-way)"), ("old", "old classes (24-way)"),
            ("old48", "old classes (48-way)")]
    rows = [{"method": m, **{k: _cell(v[k]) for k in keys}} for m, v in values.items()]
    vs = versus_values(values, "finetune", keys)
    return markdown_table(rows, cols) + "\n\nEach method minus fine-tuning (points):\n\n" + markdown_table(vs, cols)


def settings_table(clip: Mapping, guard: Mapping) -> str:
    """The selection rows of the CLIP and online settings (:func:`.selection.setting_rows`)."""
    return markdown_table(setting_rows(clip, guard), SETTING_COLUMNS)


def guard_table(figures: Mapping) -> str:
    """Prequential accuracy (%) per phase with and without the online learner's guard."""
    phases = [p[0] for p in figures["phases"]]
    figs = figures["figures"]
    rows = []
    for k, kind in enumerate(phases):
        for key, what in ((f"phase{k}", f"phase {k} ({kind})"), (f"phase{k}_first", f"phase {k} ({kind}), first 100 items")):
            vals = {m: v[key] for m, v in figs.items()}
            c = compare(vals, digits=1)
            rows.append({"phase": what, **{m: _cell(v) for m, v in vals.items()},
                         "verdict": f"{c.winner.name} ahead by {c.margin:.1f}" if c.distinguishable
                         else f"inside the spread ({c.margin:.1f})"})
    cols = [("phase", "stream segment"), *[(m, m) for m in figs], ("verdict", "difference vs the spread over streams")]
    return markdown_table(rows, cols)


def timing_table(figures: Mapping) -> str:
    """The EWC step ratio, the service under load and the ``kill -9`` trial of one timing run."""
    rows = []
    for r in figures.get("ewc_step", []):
        rows.append({"figure": f"{r['step']} step, hidden {r['hidden']}", "measured": f"{r['ms']:.2f} ms, {r['ratio']:.2f}x plain"})
    s = figures.get("service")
    if s:
        rows.append({"figure": f"service, 50 concurrent clients, {int(s['requests'])} single-row requests",
                     "measured": f"{s['predictions_per_s']:.0f} predictions/s, p50 {s['p50_ms']:.0f} ms, "
                                 f"p99 {s['p99_ms']:.0f} ms, {int(s['errors'])} errors"})
    c = figures.get("crash")
    if c:
        rows.append({"figure": "kill -9 during an update, restart on the same folder",
                     "measured": f"{c['acknowledged']} items acknowledged, {c['missing']} missing, {c['corrupted']} altered; "
                                 f"restored from the checkpoint: {c['restored']}; all learned after the restart: "
                                 f"{c['watermark'] >= c['max_acknowledged']}"})
    return markdown_table(rows, [("figure", "figure"), ("measured", "measured")])


def all_tables() -> dict[str, str]:
    """Every table of the guide, keyed by name, from the committed results files (a file that is
    missing is skipped)."""
    out: dict[str, str] = {}
    loaders = {"selection": "ch3_selection_quick", "clip": "ch3_clip_quick", "guard": "ch3_online_guard",
               "timing": "ch3_timing"}
    res: dict[str, Results] = {}
    for key, name in loaders.items():
        try:
            res[key] = load_results(name)
        except FileNotFoundError:
            continue
    if "selection" in res:
        measured = res["selection"].figures["measured"]
        out["strategies"] = strategy_table(measured)
        out["versus"] = versus_table(measured)
        out["selection"] = selection_table(res["selection"])
    if "clip" in res:
        out["clip"] = clip_table(res["clip"].figures)
    if "guard" in res:
        out["guard"] = guard_table(res["guard"].figures)
    if "clip" in res and "guard" in res:
        out["settings"] = settings_table(res["clip"].figures, res["guard"].figures)
    if "timing" in res:
        out["timing"] = timing_table(res["timing"].figures)
    for key, r in res.items():
        out[f"provenance_{key}"] = r.provenance()
    return out


if __name__ == "__main__":
    for name, text in all_tables().items():
        print(f"<!-- {name} -->\n{text}\n")
