"""The measured selection guide: which strategy to use per scenario and memory budget.

A *memory budget* is the number of raw training examples a strategy may keep from earlier
tasks (0 when privacy or storage forbids it; "all past data" is joint training). For each
scenario (task-, domain-, class-incremental Split-Digits) and budget, every strategy that
fits the budget is trained over the same seeds, and the row of the guide names

* the strategy with the highest final average accuracy (mean ± std over seeds),
* the other strategies whose difference to it is inside the spread over seeds
  (:func:`course_lib.conclusions.compare`: means closer than the sum of the two standard
  deviations), i.e. the ones this run cannot tell apart from the best,
* the conditions it was measured under (protocol, seeds, hyper-parameters).

Candidates per budget: without memory ``finetune``, ``ewc``, ``online-ewc``, ``lwf`` and, in
the task scenario only (it needs the task identity at test time), ``progressive``; with a
budget of ``B`` examples also ``replay (B)`` (reservoir) and ``replay-balanced (B)``; with all
past data ``joint``. A larger budget admits every candidate of the smaller ones.

Usage::

    sel = run_selection(budgets=(20, 200), proto=protocol())          # trains every candidate
    rows = selection_rows(sel.measured(), sel.conditions())
    print(markdown_table(rows, SELECTION_COLUMNS))

The measured figures are plain JSON (:meth:`Selection.measured`), so the same rows can be
rebuilt from a committed results file (``python -m course_lib.bench continual --only
selection --write-results`` writes ``results/ch3_selection_<profile>.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from ..conclusions import compare, rank
from .experiments import Protocol, applicable, protocol, run_many
from .metrics import continual_metrics
from .strategies import ContinualResult

__all__ = ["NO_MEMORY", "REPLAY", "SELECTION_COLUMNS", "SETTING_COLUMNS", "Selection", "candidate_label", "run_selection",
           "selection_rows", "memory_label", "describe_protocol", "measured_from_results", "setting_rows"]

#: strategies that keep no raw examples (EWC keeps 2 x #params floats, LwF a frozen copy,
#: progressive networks a frozen column per task)
NO_MEMORY: tuple[str, ...] = ("finetune", "ewc", "online-ewc", "lwf", "progressive")
#: strategies that keep a memory of ``B`` raw examples
REPLAY: tuple[str, ...] = ("replay", "replay-balanced")
ALL = "all"  # the budget "all past data" (joint training)

#: columns of :func:`selection_rows` for :func:`course_lib.continual.experiments.markdown_table`
SELECTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"), ("memory", "stored examples"), ("best", "best final avg accuracy %"),
    ("tied", "not distinguishable from the best"), ("gain", "gain over the best with less memory"),
    ("note", "holds under"),
)


def candidate_label(name: str, buffer: int | None = None) -> str:
    """``"ewc"``, or ``"replay (200)"`` for a strategy with a memory of 200 examples."""
    return f"{name} ({buffer})" if name in REPLAY else name


def memory_label(budget: int | str) -> str:
    """Human-readable budget: ``"0"``, ``"20 (2 per class)"``, ``"all past data"``."""
    if budget == ALL:
        return "all past data (joint)"
    b = int(budget)
    return "0" if b == 0 else f"{b} ({b // 10} per class)" if b % 10 == 0 else str(b)


def describe_protocol(proto: Protocol) -> str:
    """One line naming the protocol a selection was measured under."""
    lams = sorted(set(proto.ewc_lambda.values()))
    lam = f"{lams[0]:g}" if len(lams) == 1 else "/".join(f"{v:g}" for v in proto.ewc_lambda.values())
    return (f"Split-Digits, MLP 64-{proto.hidden}-{proto.hidden}, {proto.iterations} iterations/task, Adam lr "
            f"{proto.lr:g}, batch {proto.batch_size}, {len(proto.seeds)} seeds; EWC lambda {lam}, "
            f"LwF T {proto.lwf_temperature:g} weight {proto.lwf_weight:g}")


def _budgets(budgets: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(b) for b in budgets}))
    if any(b < 1 for b in out):
        raise ValueError(f"memory budgets must be >= 1 example (0 is always included), got {list(budgets)}")
    return out


def selection_jobs(kinds: Sequence[str], budgets: Sequence[int], proto: Protocol) -> list[tuple[str, str, int | str, tuple]]:
    """``(kind, label, memory, job)`` for every candidate and seed; ``job`` is a
    :func:`~course_lib.continual.experiments.run_many` job ``(kind, name, protocol, seed)``."""
    for kind in kinds:
        if kind not in ("task", "domain", "class"):
            raise ValueError(f"unknown scenario {kind!r}: expected task, domain or class")
    out = []
    for kind in kinds:
        cands: list[tuple[str, str, int | str, Protocol]] = [
            (name, candidate_label(name), 0, proto) for name in NO_MEMORY if applicable(name, kind)]
        for b in _budgets(budgets):
            cands += [(name, candidate_label(name, b), b, replace(proto, buffer=b)) for name in REPLAY]
        cands.append(("joint", "joint", ALL, proto))
        for name, label, memory, p in cands:
            out += [(kind, label, memory, (kind, name, p, seed)) for seed in proto.seeds]
    return out


@dataclass
class Selection:
    """The runs of a selection grid.

    Attributes:
        proto: the protocol (seeds, network, steps, hyper-parameters).
        budgets: memory budgets with replay candidates (0 and "all" are implicit).
        runs: ``(kind, label, memory, result)`` for every candidate and seed.
    """

    proto: Protocol
    budgets: tuple[int, ...]
    runs: list[tuple[str, str, int | str, ContinualResult]]

    def result(self, kind: str, label: str, seed: int) -> ContinualResult:
        """One run, e.g. ``sel.result("class", "replay (200)", 0)``."""
        for k, lab, _, r in self.runs:
            if k == kind and lab == label and r.seed == seed:
                return r
        raise KeyError(f"no run {kind}/{label}/seed {seed}")

    def measured(self) -> dict:
        """JSON-able figures: ``{kind: {label: {"memory": 0 | B | "all", "seeds": [...],
        "average_accuracy": [...], "forgetting": [...], "bwt": [...]}}}`` in %, one value per seed."""
        out: dict = {}
        for kind, label, memory, r in self.runs:
            m = continual_metrics(r.acc, r.baseline)
            entry = out.setdefault(kind, {}).setdefault(label, {"memory": memory, "seeds": [], "average_accuracy": [],
                                                                 "forgetting": [], "bwt": []})
            entry["seeds"].append(int(r.seed))
            for key in ("average_accuracy", "forgetting", "bwt"):
                entry[key].append(round(100 * m[key], 4))
        return out

    def conditions(self) -> str:
        return describe_protocol(self.proto)


def run_selection(kinds: Sequence[str] = ("task", "domain", "class"), budgets: Sequence[int] = (20, 200),
                  proto: Protocol | None = None, workers: int = 1, data_seed: int = 0) -> Selection:
    """Train every candidate of every (scenario, budget) over ``proto.seeds``.

    Cost: per scenario ``(4 or 5) + 2 * len(budgets) + 1`` configurations times the seeds
    (the quick protocol: about 0.3-0.7 s per run on one CPU thread).
    """
    proto = proto or protocol()
    jobs = selection_jobs(kinds, budgets, proto)
    results = run_many([j for *_, j in jobs], data_seed=data_seed, workers=workers)
    runs = []
    for (kind, label, memory, _), r in zip(jobs, results):
        r.strategy = label
        runs.append((kind, label, memory, r))
    return Selection(proto, _budgets(budgets), runs)


def measured_from_results(results: Sequence[ContinualResult], buffer: int) -> dict:
    """:meth:`Selection.measured` from a strategy grid (:func:`~course_lib.continual.experiments.run_grid`)
    whose replay strategies kept ``buffer`` examples: the same rows for budgets 0, ``buffer``
    and all past data."""
    out: dict = {}
    for r in results:
        kind = r.scenario.split("/")[-1]
        name = r.strategy
        memory: int | str = ALL if name == "joint" else buffer if name in REPLAY else 0
        label = candidate_label(name, buffer)
        m = continual_metrics(r.acc, r.baseline)
        entry = out.setdefault(kind, {}).setdefault(label, {"memory": memory, "seeds": [], "average_accuracy": [],
                                                             "forgetting": [], "bwt": []})
        entry["seeds"].append(int(r.seed))
        for key in ("average_accuracy", "forgetting", "bwt"):
            entry[key].append(round(100 * m[key], 4))
    return out


def _memory_value(memory: int | str) -> float:
    return math.inf if memory == ALL else float(memory)


def _note(kind: str, best: str, conditions: str) -> str:
    extra = []
    if best.startswith("progressive"):
        extra.append("needs the task identity at test time; parameters grow with every task")
    if best.startswith("replay"):
        extra.append("stores raw examples")
    if best == "joint":
        extra.append("retrains on all past data")
    return "; ".join(extra + ([conditions] if conditions else [])) or "—"


def selection_rows(measured: Mapping[str, Mapping[str, Mapping]], conditions: str = "",
                   key: str = "average_accuracy") -> list[dict]:
    """The rows of the selection guide from :meth:`Selection.measured` (or a results file).

    For each scenario and each budget (0, every replay budget measured, all past data), the
    candidates that fit the budget are ranked by ``key`` (higher is better).

    Returns:
        dicts with ``scenario``, ``memory`` (label), ``budget`` (0, B or "all"), ``best``
        (``"name: mean ± std"``), ``best_name``, ``tied`` (names not distinguishable from
        the best, or "none"), ``tied_names`` (list), ``next`` (next best and its margin),
        ``distinguishable`` (best vs next), ``sentence`` (the :func:`compare` sentence) and
        ``note`` (scenario, caveats of the best strategy, ``conditions``).

    Raises:
        ValueError: an empty ``measured``.
    """
    if not measured:
        raise ValueError("no measured figures: run run_selection or load a results file")
    rows = []
    for kind, cands in measured.items():
        budgets = sorted({c["memory"] for c in cands.values()}, key=_memory_value)
        previous = None  # (name, values) of the best with the next smaller budget
        for budget in budgets:
            pool = {label: c[key] for label, c in cands.items() if _memory_value(c["memory"]) <= _memory_value(budget)}
            ranked = rank(pool)
            best = ranked[0]
            row = {"scenario": kind, "budget": budget, "memory": memory_label(budget), "best_name": best.name,
                   "best": f"{best.name}: {best.text(1)}"}
            tied = [s.name for s in ranked[1:] if not compare({best.name: pool[best.name], s.name: pool[s.name]}).distinguishable]
            row["tied_names"] = tied
            row["tied"] = ", ".join(tied) if tied else "none"
            if len(ranked) > 1:
                c = compare({best.name: pool[best.name], ranked[1].name: pool[ranked[1].name]}, digits=1)
                row["distinguishable"], row["sentence"] = c.distinguishable, c.sentence
            else:
                row["distinguishable"], row["sentence"] = True, f"{best.name} is the only candidate."
            if previous is None:
                row["gain"], row["gain_distinguishable"], row["gain_sentence"] = "—", False, ""
            elif previous[0] == best.name:
                row["gain"], row["gain_distinguishable"], row["gain_sentence"] = "none (same best)", False, ""
            else:
                g = compare({best.name: pool[best.name], previous[0]: previous[1]}, digits=1, unit=" points")
                sign = "+" if g.winner.name == best.name else "-"
                row["gain"] = (f"{sign}{g.margin:.1f} over {previous[0]}"
                               + (" (more than the spread)" if g.distinguishable else " (inside the spread)"))
                row["gain_distinguishable"], row["gain_sentence"] = g.distinguishable, g.sentence
            row["note"] = _note(kind, best.name, conditions)
            previous = (best.name, pool[best.name])
            rows.append(row)
    return rows


#: columns of :func:`setting_rows`
SETTING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("setting", "setting"), ("criterion", "criterion"), ("best", "best (mean ± std %)"),
    ("tied", "not distinguishable from the best"), ("note", "holds under"),
)


def _best_and_tied(values: Mapping[str, Sequence[float]]) -> tuple[str, list[str]]:
    ranked = rank(values)
    best = ranked[0]
    tied = [r.name for r in ranked[1:] if not compare({best.name: values[best.name], r.name: values[r.name]}).distinguishable]
    return f"{best.name}: {best.text(1)}", tied


def setting_rows(clip: Mapping | None = None, guard: Mapping | None = None) -> list[dict]:
    """Selection rows for the two other settings of the chapter, from their committed figures.

    Args:
        clip: the figures of ``results/ch3_clip_<profile>.json`` (``values``: method -> figure
            -> one value per seed; ``steps``, ``trainable``) - the tiny CLIP learning new concepts.
        guard: the figures of ``results/ch3_online_guard.json`` (``phases``, ``figures``: learner
            -> ``phase<k>`` / ``phase<k>_first`` -> one value per stream) - the online learner.

    Returns rows with ``setting``, ``criterion``, ``best`` (``"name: mean ± std"``), ``tied``
    (the others whose difference to the best is inside the spread over seeds), ``note``.
    """
    rows = []
    if clip is not None:
        values = {m: v for m, v in clip["values"].items() if m != "original"}
        n = len(next(iter(values.values()))["new"])
        trained = "text tower + image projection" if clip.get("trainable") == "text" else "all weights"
        note = f"tiny CLIP, {clip.get('steps')} steps, {trained} trained, {n} seeds"
        for key, what in (("new", "new concepts (48-way)"), ("old", "old classes (24-way)"), ("old48", "old classes (48-way)")):
            best, tied = _best_and_tied({m: v[key] for m, v in values.items()})
            rows.append({"setting": "CLIP, new concepts", "criterion": what, "best": best,
                         "tied": ", ".join(tied) or "none", "tied_names": tied, "note": note})
    if guard is not None:
        phases = [p[0] for p in guard["phases"]]
        figs = guard["figures"]
        n = len(next(iter(figs.values()))["phase0"])
        note = f"Digits stream {' → '.join(phases)}, update every {guard.get('every')} items, {n} streams"
        for k, kind in enumerate(phases):
            if k == 0:
                continue
            what = f"phase {k} ({kind}{', returning' if kind in phases[:k] else ', new'})"
            for key, label in ((f"phase{k}", what), (f"phase{k}_first", what + ", first 100 items")):
                best, tied = _best_and_tied({m: v[key] for m, v in figs.items()})
                rows.append({"setting": "online stream with drift", "criterion": label, "best": best,
                             "tied": ", ".join(tied) or "none", "tied_names": tied, "note": note})
    return rows
