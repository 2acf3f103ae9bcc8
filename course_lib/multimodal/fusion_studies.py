"""Seeded studies behind notebooks 2.5-2.7 and their committed results files.

A notebook runs one seed of a study in the quick profile; the same functions, run over
several seeds (and, where the quick budget cannot show an effect, with a longer budget),
write ``results/ch2_fusion_*.json`` / ``results/ch2_advanced_*.json`` with provenance
(:mod:`course_lib.results`). The notebooks print their own run beside the stored seeds and
let :func:`course_lib.conclusions.compare` say who wins and whether the margin is larger
than the spread over seeds.

Studies (``python -m course_lib.multimodal.fusion_studies STUDY [options]``; the profile
comes from ``COURSE_PROFILE``):

* ``fusion`` (notebook 2.5): early / middle / late fusion on ShapeWorld VQA, accuracy per
  question kind, per seed, with the majority-answer baseline -> ``ch2_fusion_<profile>``.
* ``matching`` (notebook 2.6): hard-negative matching, the tiny CLIP's dot product (no
  training) against a cross-attention ITM head, per negative kind and seed ->
  ``ch2_fusion_matching_<profile>``.
* ``advanced`` (notebook 2.7): modality normalisation, dynamic weighting under a corrupted
  modality, contrastive-loss variants (``--parts`` selects) -> ``ch2_advanced_<profile>``.

Every figure that varies with the seed is stored as a list, one value per seed, in the order
of ``seeds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from ..conclusions import Comparison, compare, fmt_mean, summarize

__all__ = ["stack_seeds", "compare_at", "markdown_table", "seed_table", "verdict", "fusion_study", "fusion_sentences",
           "fusion_guide", "relation_chance", "matching_study", "advanced_study", "advanced_guide", "chapter_guide", "fusion_doc_tables", "value_range", "fastest_index_at_recall", "ADVANCED_PARTS", "STUDIES", "main"]

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def stack_seeds(per_seed: Sequence[Any]) -> Any:
    """Nested dicts of numbers, one per seed -> the same nesting with a list of values per leaf.

    >>> stack_seeds([{"a": {"x": 1.0}}, {"a": {"x": 2.0}}])
    {'a': {'x': [1.0, 2.0]}}
    """
    if not per_seed:
        raise ValueError("no seeds to stack")
    first = per_seed[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for other in per_seed[1:]:
            if not isinstance(other, Mapping) or list(other) != keys:
                raise ValueError(f"seeds disagree on keys: {keys} vs {list(other) if isinstance(other, Mapping) else other}")
        return {k: stack_seeds([d[k] for d in per_seed]) for k in keys}
    return [float(v) for v in per_seed]


def compare_at(tree: Mapping[str, Any], names: Sequence[str], path: str, higher_is_better: bool = True,
               label: Callable[[str], str] = str, **kwargs: Any) -> Comparison:
    """:func:`~course_lib.conclusions.compare` of ``tree[name][path...]`` for each name (a
    dotted ``path``; values one per seed, or one number)."""
    from ..results import lookup

    return compare({label(n): lookup(tree[n], path) for n in names}, higher_is_better=higher_is_better, **kwargs)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (for ``IPython.display.Markdown``); cells are converted with ``str``."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError("every row needs one cell per column")
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def seed_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], digits: int = 3,
               first: str = "", width: int = 14) -> str:
    """A plain-text table: one line per entry of ``rows``, ``mean ± sd`` over seeds per column
    (a single number as it is, an integer with thousands separators, a missing column as ``-``)."""
    name_w = max([len(first)] + [len(str(n)) for n in rows]) + 2
    lines = [f"{first:<{name_w}}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, row in rows.items():
        cells = ["-" if c not in row else f"{row[c]:,}" if isinstance(row[c], int) else fmt_mean(row[c], digits)
                 for c in columns]
        lines.append(f"{name:<{name_w}}" + "".join(f"{v:>{width}}" for v in cells))
    return "\n".join(lines)


def verdict(c: Comparison) -> str:
    """The choice a comparison supports: the winner's name when it is distinguishable, else
    ``"A or B (not distinguishable)"``."""
    if c.distinguishable:
        return c.winner.name
    return f"{c.winner.name} or {c.loser.name} (not distinguishable)"


def tied_with_best(values: Mapping[str, Any], higher_is_better: bool = True) -> list[str]:
    """The names whose values are not distinguishable from the best one's (the best first):
    what a selection guide may recommend when the spread over seeds cannot separate them."""
    if len(values) < 2:
        raise ValueError("need at least two candidates")
    sign = 1 if higher_is_better else -1
    best = max(values, key=lambda n: sign * summarize(n, values[n]).mean)
    return [best] + [n for n in values if n != best and not compare(
        {best: values[best], n: values[n]}, higher_is_better=higher_is_better).distinguishable]


def _seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"need distinct seeds, got {seeds}")
    return seeds


# ----------------------------------------------------------------------------- notebook 2.5


def fusion_study(seeds: Sequence[int] = (0,), train_images: int | None = None, test_images: int | None = None,
                 steps: int | None = None, batch_size: int | None = None, layers: int | None = None,
                 progress: Say = _quiet) -> dict[str, Any]:
    """Early, middle and late fusion on the same ShapeWorld VQA data with the same budget, once
    per seed (the seed sets the initial weights and the batches; the data stay fixed).

    Defaults come from :func:`~course_lib.multimodal.fusion.fusion_budget` of the profile.

    Returns:
        ``{"budget": {...}, "test_questions": {kind: n}, "majority": {kind: accuracy},
        "train_majority": {kind: accuracy on the training questions}, "families": {family:
        {"color", "shape", "count", "relation", "overall", "train_relation": [one per seed],
        "params": int}}}``. The majority answer is the most frequent training answer of each
        kind; on yes/no relation questions it can score below a coin flip (0.5) when the test
        split leans the other way.
    """
    from ..data import ShapeWorldConfig, ShapeWorldQADataset
    from ..models import load_clip
    from .fusion import compare_fusion, evaluate_vqa, fusion_budget, majority_baseline, vqa_features

    seeds = _seeds(seeds)
    budget = fusion_budget()
    n_train = train_images or budget.train_images
    n_test = test_images or budget.test_images
    settings = dataclasses.replace(budget.settings, steps=steps or budget.settings.steps,
                                   batch_size=batch_size or budget.settings.batch_size)
    model_cfg = {**budget.model, **({"layers": layers} if layers else {})}
    model, _, tokenizer = load_clip("tiny")
    cfg = ShapeWorldConfig(max_objects=3)
    t0 = time.perf_counter()
    train = vqa_features(model, tokenizer, ShapeWorldQADataset("train", n_train, cfg))
    test = vqa_features(model, tokenizer, ShapeWorldQADataset("test", n_test, cfg))
    progress(f"features: {len(train)} training and {len(test)} test questions [{time.perf_counter() - t0:.0f} s]")
    train_rel = train.subset(["relation"])
    per_seed, params = [], {}
    for seed in seeds:
        runs = compare_fusion(train, test, dataclasses.replace(settings, seed=seed), latency_batches=(),
                              progress=lambda m, s=seed: progress(f"seed {s}: {m}"), **model_cfg)
        per_seed.append({kind: {**run.report.by_kind, "overall": run.report.accuracy,
                                "train_relation": evaluate_vqa(run.model, train_rel).accuracy}
                         for kind, run in runs.items()})
        params = {kind: run.params for kind, run in runs.items()}
    families = stack_seeds(per_seed)
    for kind in families:
        families[kind]["params"] = params[kind]
    return {"budget": {"train_images": n_train, "test_images": n_test, "train_questions": len(train),
                       "steps": settings.steps, "batch_size": settings.batch_size, "lr": settings.lr, **model_cfg},
            "test_questions": {k: int((test.kinds == k).sum()) for k in ("color", "shape", "count", "relation")},
            "majority": majority_baseline(train, test),
            "train_majority": majority_baseline(train, train),
            "families": families}


def _family(n: str) -> str:
    return f"{n} fusion"


def fusion_sentences(figures: Mapping[str, Any]) -> list[str]:
    """The comparisons of a :func:`fusion_study`'s figures, as computed sentences: per question
    kind the families against each other, and the best family against the majority answer
    for count and relation questions."""
    fam, out = figures["families"], []
    for kind in ("color", "shape"):
        for a, b in (("early", "late"), ("middle", "late"), ("early", "middle")):
            out.append(compare_at(fam, [a, b], kind, label=_family, what=f"{kind} accuracy").sentence)
    for kind in ("count", "relation"):
        out.append(compare_at(fam, list(fam), kind, label=_family, what=f"{kind} accuracy").sentence)
        best = max(fam, key=lambda n: summarize(n, fam[n][kind]).mean)
        base = relation_chance(figures) if kind == "relation" else figures["majority"][kind]
        name = "chance (a coin flip or the majority answer)" if kind == "relation" else "majority answer"
        out.append(compare({_family(best): fam[best][kind], name: base}, what=f"{kind} accuracy").sentence)
    if "train_majority" in figures:
        best = max(fam, key=lambda n: summarize(n, fam[n]["train_relation"]).mean)
        out.append(compare({_family(best): fam[best]["train_relation"],
                            "majority answer": figures["train_majority"]["relation"]},
                           what="accuracy on the *training* relation questions").sentence)
    return out


def relation_chance(figures: Mapping[str, Any]) -> float:
    """The chance level of the yes/no relation questions: the better of a coin flip (0.5) and the
    majority answer (which can score below 0.5 when the test split leans the other way)."""
    return max(0.5, float(figures["majority"]["relation"]))


def _budget_text(b: Mapping[str, Any]) -> str:
    return (f"{b['train_images']:,} scenes, {b['steps']:,} steps of {b['batch_size']}, {b['layers']} layer"
            + ("s" if b["layers"] > 1 else ""))


def fusion_guide(*stored: Any) -> str:
    """Notebook 2.5's selection guide as a Markdown table built from committed seeds
    (:class:`~course_lib.results.Results` of :func:`fusion_study`, e.g. quick and full): per
    need and budget, the families the measurements support (every family within the spread
    over seeds of the best one is named), the figures, and the conditions they hold under."""
    if not stored:
        raise ValueError("need at least one results file of fusion_study")
    rows = []
    for r in stored:
        f, cond = r.figures, f"{r.profile} budget: {_budget_text(r.figures['budget'])}; seeds {r.seeds}"
        fam = f["families"]
        for need, kind in (("questions answered from the image alone (*how many objects?*)", "count"),
                           ("questions that name one object by its shape (*what color is the circle?*)", "color"),
                           ("questions that name one object by its colour (*what shape is the red object?*)", "shape")):
            tied = tied_with_best({n: fam[n][kind] for n in fam})
            rows.append((need, " or ".join(tied) + (" (not distinguishable)" if len(tied) > 1 else ""),
                         f"{kind}: " + ", ".join(f"{n} {fmt_mean(fam[n][kind])}" for n in fam), cond))
        best = max(fam, key=lambda n: summarize(n, fam[n]["relation"]).mean)
        c = compare({best: fam[best]["relation"], "chance": relation_chance(f)})
        choice = best if (c.winner.name == best and c.distinguishable) else (
            "none: no family is distinguishable from chance")
        rows.append(("relations between two named objects (*is the red circle left of the blue square?*)", choice,
                     f"relation: best family ({best}) {fmt_mean(fam[best]['relation'])}, chance "
                     f"{relation_chance(f):.3f} (majority answer {f['majority']['relation']:.3f})", cond))
    fam = stored[0].figures["families"]
    fewest = min(fam, key=lambda n: fam[n]["params"])
    b = stored[0].figures["budget"]
    rows.append(("fewest parameters", fewest, ", ".join(f"{n} {fam[n]['params']:,}" for n in fam),
                 f"equal width {b['dim']}, {b['heads']} heads, {b['layers']} layer: an exact count"))
    rows.append(("the image side computed once and cached; robust to a missing modality", "late",
                 "not measured here", "by construction: no layer sees both inputs (Baltrušaitis et al. 2019)"))
    rows.append(("relational reasoning", "an inductive bias: object slots, a relation module",
                 "not measured here", "Santoro et al. 2017 (relation networks on CLEVR)"))
    return markdown_table(("need", "choose", "measured (mean ± sd over seeds)", "holds under"), rows)


# ----------------------------------------------------------------------------- notebook 2.6


def matching_study(seeds: Sequence[int] = (0,), train_images: int | None = None, steps: int | None = None,
                   test_images: int = 600, progress: Say = _quiet) -> dict[str, Any]:
    """Hard-negative matching on held-out 1-3 object scenes: the tiny CLIP's dot product (fixed,
    no training) against a cross-attention ITM head trained on (caption, hard negative) pairs of
    ``train_images`` scenes for ``steps`` steps of 64, once per seed.

    Defaults: quick 2,000 scenes / 150 steps; full 20,000 scenes / 2,000 steps.

    Returns:
        ``{"budget": {...}, "pairs": {kind: n}, "dual_encoder": {kind: accuracy},
        "itm": {kind: [one per seed]}}`` (kinds include ``"all"``).
    """
    from ..config import pick
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import load_clip
    from .heads import accuracy_by_kind, dual_encoder_scores, matching_features, matching_scores, train_itm_head

    seeds = _seeds(seeds)
    n_train = train_images or pick(quick=2_000, full=20_000)
    steps = steps or pick(quick=150, full=2_000)
    model, _, tokenizer = load_clip("tiny")
    cfg = ShapeWorldConfig(max_objects=3)
    t0 = time.perf_counter()
    train = matching_features(model, tokenizer, generate(n_train, split_seed("train", 5), cfg))
    test_batch = generate(test_images, split_seed("test", 5), cfg)
    test = matching_features(model, tokenizer, test_batch)
    progress(f"features of {n_train} + {test_images} scenes [{time.perf_counter() - t0:.0f} s]")
    dual = accuracy_by_kind(*dual_encoder_scores(model, tokenizer, test_batch), test.kinds)
    per_seed = []
    for seed in seeds:
        head, _ = train_itm_head(train, steps, seed=seed)
        per_seed.append(accuracy_by_kind(*matching_scores(head, test), test.kinds))
        progress(f"seed {seed}: ITM all {per_seed[-1]['all']:.3f}")
    kinds = list(dual)
    return {"budget": {"train_images": n_train, "test_images": test_images, "steps": steps, "batch_size": 64},
            "pairs": {k: int((test.kinds == k).sum()) if k != "all" else len(test) for k in kinds},
            "dual_encoder": dual, "itm": stack_seeds(per_seed)}


# ----------------------------------------------------------------------------- notebook 2.7

ADVANCED_PARTS: tuple[str, ...] = ("normalisation", "dynamic", "losses")


def advanced_study(seeds: Sequence[int] = (0,), parts: Sequence[str] = ADVANCED_PARTS, head_train: int | None = None,
                   head_steps: int | None = None, lit_train: int | None = None, lit_steps: int | None = None,
                   lit_batch: int | None = None, progress: Say = _quiet) -> dict[str, Any]:
    """Notebook 2.7's three experiments, once per seed (data fixed, the seed sets the initial
    weights and the batches):

    * ``normalisation``: concatenation fusion with the image features x30, per normalisation,
      accuracy with both inputs / image only / text only;
    * ``dynamic``: concat / gated / uncertainty fusion trained on clean data or with modality
      corruption, tested clean / every image noise / every text noise; and the gated unit's
      mean gate and image share per condition;
    * ``losses``: LiT with five contrastive-loss variants: t2i R@1, i2t R@1, hard-negative
      accuracy, final temperature.

    Defaults: quick 3,000 scenes and 300 steps for the heads, LiT on 3,000 scenes for 120 steps
    of 128; full 20,000 / 2,000 and 30,000 scenes, 2,000 steps of 256.
    """
    from ..config import pick
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import load_clip
    from . import advanced
    from .contrastive import make_contrastive_data

    seeds = _seeds(seeds)
    unknown = set(parts) - set(ADVANCED_PARTS)
    if unknown or not parts:
        raise ValueError(f"parts must be some of {ADVANCED_PARTS}, got {list(parts)}")
    head_train = head_train or pick(quick=3_000, full=20_000)
    head_steps = head_steps or pick(quick=300, full=2_000)
    lit_train = lit_train or pick(quick=3_000, full=30_000)
    lit_steps = lit_steps or pick(quick=120, full=2_000)
    lit_batch = lit_batch or pick(quick=128, full=256)
    model, _, tokenizer = load_clip("tiny")
    figures: dict[str, Any] = {"budget": {}}
    if {"normalisation", "dynamic"} & set(parts):
        data = advanced.noisy_caption_data(model, tokenizer, head_train, 1_000)
        figures["budget"].update({"head_train": head_train, "head_test": 1_000, "head_steps": head_steps,
                                  "head_batch": 256})
        if "normalisation" in parts:
            figures["normalisation"] = stack_seeds([advanced.normalisation_study(data, steps=head_steps, seed=s)
                                                    for s in seeds])
            progress("normalisation done")
        if "dynamic" in parts:
            tables, gates = [], []
            for s in seeds:
                table, heads = advanced.dynamic_weighting_study(data, steps=head_steps, seed=s)
                tables.append(table)
                gates.append({c: {"mean": g["mean"], "image_share": g["image_share"]}
                              for c, g in advanced.gate_under_corruption(heads["gated"], data).items()})
                progress(f"dynamic weighting, seed {s} done")
            figures["dynamic"], figures["gate"] = stack_seeds(tables), stack_seeds(gates)
    if "losses" in parts:
        cfg = ShapeWorldConfig(max_objects=3)
        train = make_contrastive_data(model, tokenizer, generate(lit_train, split_seed("train", 22), cfg))
        test = make_contrastive_data(model, tokenizer, generate(500, split_seed("test", 22), cfg))
        figures["budget"].update({"lit_train": lit_train, "lit_test": 500, "lit_steps": lit_steps, "lit_batch": lit_batch})
        runs = []
        for s in seeds:
            run = advanced.loss_variant_study(train, test, tokenizer.vocab_size, lit_steps, lit_batch, seed=s,
                                              progress=lambda n, s=s: progress(f"losses, seed {s}: {n}"))
            runs.append({name: {k: v for k, v in m.items() if k != "seconds"} for name, m in run.items()})
        figures["losses"] = stack_seeds(runs)
    return figures


def _tied_row(need: str, values: Mapping[str, Any], label: str, cond: str, higher_is_better: bool = True) -> tuple:
    tied = tied_with_best(values, higher_is_better)
    choice = " or ".join(tied) + (" (not distinguishable)" if len(tied) > 1 else "")
    return need, choice, f"{label}: " + ", ".join(f"{n} {fmt_mean(v)}" for n, v in values.items()), cond


def advanced_guide(*stored: Any) -> str:
    """Notebook 2.7's selection guide as a Markdown table built from committed seeds
    (:class:`~course_lib.results.Results` of :func:`advanced_study`): per need, the technique the
    measurements support (every option within the spread over seeds of the best one is named),
    the figures, and the conditions they hold under; needs this course cannot measure say so
    and cite their source."""
    if not stored:
        raise ValueError("need at least one results file of advanced_study")
    rows = []
    for r in stored:
        f, b, seeds = r.figures, r.figures["budget"], f"seeds {r.seeds}"
        if "normalisation" in f:
            cond = (f"{r.profile}: image features x30, concatenation head, {b['head_steps']} steps of "
                    f"{b['head_batch']} on {b['head_train']:,} scenes; {seeds}")
            rows.append(_tied_row("one modality's features on a much larger scale than the other's",
                                  {n: v["text only"] for n, v in f["normalisation"].items()},
                                  "accuracy from the smaller-scale input alone (text only)", cond))
        if "dynamic" in f:
            d = f["dynamic"]
            cond = (f"{r.profile}: noisy captions + locked image features, {b['head_steps']} steps of "
                    f"{b['head_batch']} on {b['head_train']:,} scenes, every test image replaced by noise; {seeds}")
            regime = {f"{k}, {reg}": d[k][reg]["image corrupted"] for k in d for reg in d[k]}
            rows.append(_tied_row("an input may fail (a dead sensor) at test time", regime,
                                  "accuracy with every image noise", cond))
            cond_clean = cond.replace("every test image replaced by noise", "clean test inputs")
            rows.append(_tied_row("clean inputs only", {f"{k}, {reg}": d[k][reg]["clean"] for k in d for reg in d[k]},
                                  "clean accuracy", cond_clean))
        if "losses" in f:
            cond = (f"{r.profile}: LiT (locked image tower), {b['lit_steps']:,} steps of {b['lit_batch']} on "
                    f"{b['lit_train']:,} scenes, 500 test scenes; {seeds}")
            for need, metric in (("text-to-image retrieval (R@1)", "t2i_R@1"), ("image-to-text retrieval (R@1)", "i2t_R@1"),
                                 ("telling a caption from its hard negative", "hard_negative_acc")):
                rows.append(_tied_row(need, {n: v[metric] for n, v in f["losses"].items()}, metric, cond))
    rows.append(("very large batches split across many devices", "SigLIP", "not measured here (one device, batch <= 256)",
                 "Zhai et al. 2023: the sigmoid loss needs no batch-wide normalisation"))
    rows.append(("attribute swaps with both towers trainable", "hard-negative captions (NegCLIP)",
                 "not measured here (the image tower is locked)", "Yuksekgonul et al. 2023"))
    return markdown_table(("need", "choose", "measured (mean ± sd over seeds)", "holds under"), rows)


# ----------------------------------------------------------------------------- the chapter guide


def value_range(values: Any, digits: int = 3) -> str:
    """``"0.712–0.731"`` (min–max over seeds) or the single value."""
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    lo, hi = min(vals), max(vals)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f}"


def _load(name: str) -> Any:
    from ..results import load_results

    return load_results(name)


def fastest_index_at_recall(ann_figures: Mapping[str, Any], target: float = 0.95) -> Mapping[str, Any] | None:
    """The approximate index point of a million-vector study (``results/ch2_ann_1m.json``,
    ``points``: ``kind, param, value, recall, speedup``) with the largest speed-up at recall@10
    >= ``target``; None when none reaches it."""
    points = [p for p in ann_figures["points"] if p["kind"] != "flat" and p["recall"] >= target]
    return max(points, key=lambda p: p["speedup"]) if points else None


def chapter_guide() -> str:
    """Chapter 2's selection guide (``docs/ch2_multimodal.md``) as a Markdown table built from the
    committed results files: per need, the choice the measurements support, the figures as
    ranges over seeds, and the conditions; rows this course does not measure say so and cite
    their source."""
    quick, full = _load("ch2_advanced_quick"), _load("ch2_advanced_full")
    fq, ff = _load("ch2_fusion_quick"), _load("ch2_fusion_full")
    mq, mf = _load("ch2_fusion_matching_quick"), _load("ch2_fusion_matching_full")
    rows = []

    def row(need: str, values: Mapping[str, Any], cond: str, source: str, higher: bool = True) -> None:
        tied = tied_with_best(values, higher)
        choice = " or ".join(tied) + (" (not distinguishable)" if len(tied) > 1 else "")
        rows.append((need, choice, ", ".join(f"{n} {value_range(v)}" for n, v in values.items()), cond, source))

    for r in (quick, full):
        b, L = r.figures["budget"], r.figures["losses"]
        row("align a new text tower to a frozen image tower for text→image retrieval (R@1)",
            {n: L[n]["t2i_R@1"] for n in L}, f"LiT, {b['lit_steps']:,} steps of {b['lit_batch']}, "
            f"{b['lit_train']:,} scenes ({r.profile}); seeds {r.seeds}", f"`{r.name}`, notebook 2.7")
    rows.append(("the contrastive loss for very large batches split across devices", "SigLIP", "not measured here",
                 "one device, batches <= 256", "Zhai et al. 2023"))
    for r in (mq, mf):
        b, f = r.figures["budget"], r.figures
        row("tell a caption from its one-fact-changed negative: dot product or a cross-attention re-ranker",
            {"dual encoder (tiny CLIP)": f["dual_encoder"]["all"], "ITM head": f["itm"]["all"]},
            f"ITM trained from scratch on frozen tokens, {b['steps']:,} steps of {b['batch_size']} pairs, "
            f"{b['train_images']:,} scenes ({r.profile}); seeds {r.seeds}", f"`{r.name}`, notebook 2.6")
    for r in (fq, ff):
        b, fam = r.figures["budget"], r.figures["families"]
        cond = f"ShapeWorld VQA, {_budget_text(b)} ({r.profile}); seeds {r.seeds}"
        row("VQA about one object named by its shape (*what color is the circle?*)",
            {f"{n} fusion": fam[n]["color"] for n in fam}, cond, f"`{r.name}`, notebook 2.5")
        row("VQA about one object named by its colour (*what shape is the red object?*)",
            {f"{n} fusion": fam[n]["shape"] for n in fam}, cond, f"`{r.name}`, notebook 2.5")
    r = ff
    fam = r.figures["families"]
    best = max(fam, key=lambda n: summarize(n, fam[n]["relation"]).mean)
    c = compare({best: fam[best]["relation"], "chance": relation_chance(r.figures)})
    rows.append(("relations between two objects (*is the red circle left of the blue square?*)",
                 best + " fusion" if c.distinguishable and c.winner.name == best else
                 "none of early / middle / late beats chance; an inductive bias (relation module, object slots) is "
                 "the literature's answer, not measured here",
                 f"best family ({best}) {value_range(fam[best]['relation'])}, chance {relation_chance(r.figures):.3f}",
                 f"ShapeWorld VQA, {_budget_text(r.figures['budget'])} ({r.profile}); seeds {r.seeds}",
                 f"`{r.name}`, notebook 2.5; Santoro et al. 2017"))
    n = quick.figures["normalisation"]
    b = quick.figures["budget"]
    row("one modality's features on a much larger scale (x30) than the other's: normalise before concatenating?",
        {k: v["text only"] for k, v in n.items()}, f"accuracy from the smaller-scale input alone; concatenation head, "
        f"{b['head_steps']} steps, {b['head_train']:,} scenes (quick); seeds {quick.seeds}", f"`{quick.name}`, notebook 2.7")
    d = quick.figures["dynamic"]
    row("a modality may be dead at test time", {f"{k}, trained on {reg}".replace("on corruption", "with corruption"):
                                                d[k][reg]["image corrupted"] for k in d for reg in d[k]},
        f"accuracy with every image replaced by noise; {b['head_steps']} steps, {b['head_train']:,} scenes (quick); "
        f"seeds {quick.seeds}", f"`{quick.name}`, notebook 2.7")
    ann = _load("ch2_ann_1m")
    best_index = fastest_index_at_recall(ann.figures)
    if best_index is not None:
        flat = next(p for p in ann.figures["points"] if p["kind"] == "flat")
        rows.append(("search 1,000,000 vectors at recall@10 >= 0.95",
                     f"{best_index['kind']} ({best_index['param']} {best_index['value']:g})",
                     f"recall@10 {best_index['recall']:.3f}, {best_index['speedup']:.0f}x the queries per second of "
                     f"exact search ({flat['qps']:.0f} QPS)",
                     f"{ann.figures['size']:,} vectors synthesised from tiny-CLIP embeddings, one FAISS thread",
                     f"`{ann.name}`, notebook 2.4"))
    rows.append(("align two embedding spaces without paired data", "entropic optimal transport / Gromov-Wasserstein",
                 "notebook 2.2's checked cell (the optimal-transport block above)", "unpaired sets with shared classes",
                 "Alvarez-Melis & Jaakkola 2018"))
    return markdown_table(("need", "choose", "measured (range over seeds)", "holds under", "source"), rows)


def fusion_doc_tables() -> dict[str, str]:
    """The tables that ``docs/ch2_multimodal.md`` quotes for notebooks 2.5-2.7, rendered from the
    committed results files (``python -m course_lib.multimodal.fusion_studies doc`` prints them;
    a test checks that the guide contains them verbatim). Figures are ranges over seeds."""
    out = {}
    rows = []
    for r in (_load("ch2_fusion_quick"), _load("ch2_fusion_full")):
        f, b = r.figures, r.figures["budget"]
        budget = f"{r.profile}: {_budget_text(b)}"
        rows.append((budget, "majority answer", *(f"{f['majority'][k]:.3f}" for k in ("color", "shape", "count", "relation")),
                     "", ""))
        for n, v in f["families"].items():
            rows.append((budget, f"{n} fusion", *(value_range(v[k]) for k in ("color", "shape", "count", "relation", "overall")),
                         f"{v['params']:,}"))
    out["fusion"] = markdown_table(("budget (seeds 0-2)", "model", "colour", "shape", "count", "relation", "overall",
                                    "parameters"), rows)
    mq, mf = _load("ch2_fusion_matching_quick"), _load("ch2_fusion_matching_full")
    rows = [(k, mq.figures["pairs"][k], value_range(mq.figures["dual_encoder"][k]), value_range(mq.figures["itm"][k]),
             value_range(mf.figures["itm"][k])) for k in mq.figures["dual_encoder"]]
    out["matching"] = markdown_table(("negative kind", "pairs", "dual encoder (no training)",
                                      f"ITM head, {mq.figures['budget']['steps']} steps (quick)",
                                      f"ITM head, {mf.figures['budget']['steps']:,} steps (full)"), rows)
    q, lf = _load("ch2_advanced_quick"), _load("ch2_advanced_full")
    out["normalisation"] = markdown_table(("normalisation", "both inputs", "image only", "text only"),
                                          [(n, *(value_range(v[c]) for c in ("both", "image only", "text only")))
                                           for n, v in q.figures["normalisation"].items()])
    d = q.figures["dynamic"]
    out["dynamic"] = markdown_table(("fusion", "trained on", "clean", "every image noise", "every text noise"),
                                    [(k, reg, *(value_range(v[c]) for c in ("clean", "image corrupted", "text corrupted")))
                                     for k in d for reg, v in d[k].items()])
    rows = []
    for r in (q, lf):
        b = r.figures["budget"]
        for n, v in r.figures["losses"].items():
            rows.append((f"{b['lit_steps']:,} x {b['lit_batch']}, {b['lit_train']:,} scenes", n,
                         *(value_range(v[m]) for m in ("t2i_R@1", "i2t_R@1", "hard_negative_acc"))))
    out["losses"] = markdown_table(("LiT budget (seeds 0-2)", "loss", "t2i R@1", "i2t R@1", "hard-negative accuracy"),
                                   rows)
    findings = []
    for r in (_load("ch2_fusion_quick"), _load("ch2_fusion_full")):
        fam, tag = r.figures["families"], f"{r.profile}, {_budget_text(r.figures['budget'])}"
        for kind in ("color", "shape"):
            best = max(("early", "middle"), key=lambda n: summarize(n, fam[n][kind]).mean)
            findings.append(f"{tag}: " + compare_at(fam, [best, "late"], kind, label=_family,
                                                     what=f"{kind} accuracy").sentence)
        findings.append(f"{tag}: " + compare_at(fam, ["early", "middle"], "overall", label=_family,
                                                 what="overall accuracy").sentence)
        best = max(fam, key=lambda n: summarize(n, fam[n]["relation"]).mean)
        findings.append(f"{tag}: " + compare({_family(best): fam[best]["relation"],
                                              "chance": relation_chance(r.figures)}, what="relation accuracy").sentence)
    for r in (mq, mf):
        findings.append(f"matching, {r.profile} ({r.figures['budget']['steps']:,} ITM steps): " + compare(
            {"dual encoder": r.figures["dual_encoder"]["all"], "ITM head": r.figures["itm"]["all"]},
            what="accuracy on all hard negatives").sentence)
    n = q.figures["normalisation"]
    findings.append("normalisation (image x30): " + compare({"layernorm": n["layernorm"]["text only"],
                                                             "none": n["none"]["text only"]},
                                                            what="text-only accuracy").sentence)
    for k in d:
        findings.append("dynamic weighting: " + compare({f"{k} trained with corruption": d[k]["corruption"]["image corrupted"],
                                                         f"{k} trained on clean data": d[k]["clean data"]["image corrupted"]},
                                                        what="accuracy with every image noise").sentence)
    findings.append("dynamic weighting: " + compare({f"{k}": d[k]["corruption"]["image corrupted"] for k in d},
                                                    what="accuracy with every image noise, trained with corruption").sentence)
    for r in (q, lf):
        L, b = r.figures["losses"], r.figures["budget"]
        tag = f"losses, {b['lit_steps']:,} steps of {b['lit_batch']}"
        findings.append(f"{tag}: " + compare({m: L[m]["t2i_R@1"] for m in L}, what="t2i R@1").sentence)
        findings.append(f"{tag}: " + compare({m: L[m]["t2i_R@1"] for m in ("InfoNCE", "SigLIP")}, what="t2i R@1").sentence)
        findings.append(f"{tag}: " + compare({m: L[m]["hard_negative_acc"] for m in L},
                                             what="hard-negative accuracy").sentence)
    out["findings"] = "\n".join(f"* {x}" for x in findings)
    out["guide"] = chapter_guide()
    return out


# ----------------------------------------------------------------------------- command line

STUDIES: dict[str, str] = {"fusion": "ch2_fusion", "matching": "ch2_fusion_matching", "advanced": "ch2_advanced"}


def _rounded(tree: Any, digits: int = 6) -> Any:
    """Floats rounded to ``digits`` decimals (float32 accuracies print as 0.1599999964...)."""
    if isinstance(tree, Mapping):
        return {k: _rounded(v, digits) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_rounded(v, digits) for v in tree]
    return round(tree, digits) if isinstance(tree, float) else tree


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.multimodal.fusion_studies STUDY [--seeds 0,1,2] [budget options] [--write]``;
    ``... fusion_studies doc`` prints the tables the chapter guide quotes (from the results files)."""
    from ..config import get_profile
    from ..results import write_results

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doc"]:
        for name, table in fusion_doc_tables().items():
            print(f"<!-- {name} -->\n{table}\n")
        return 0
    p = argparse.ArgumentParser(prog="python -m course_lib.multimodal.fusion_studies",
                                description=__doc__.split("\n")[0])
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest for these small models)")
    p.add_argument("--train", type=int, default=None, help="training scenes (fusion, matching; advanced: LiT)")
    p.add_argument("--steps", type=int, default=None, help="training steps (fusion, matching; advanced: LiT)")
    p.add_argument("--batch", type=int, default=None, help="batch size (fusion; advanced: LiT)")
    p.add_argument("--layers", type=int, default=None, help="fusion: layers of every family")
    p.add_argument("--parts", default=",".join(ADVANCED_PARTS), help=f"advanced: some of {ADVANCED_PARTS}")
    p.add_argument("--write", action="store_true", help="write results/<name>_<profile>.json")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    try:
        seeds = _seeds([int(s) for s in args.seeds.split(",") if s.strip()])
    except ValueError as exc:
        p.error(f"--seeds: {exc}")
    torch.set_num_threads(args.threads)
    profile = get_profile()
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    if args.study == "fusion":
        figures = fusion_study(seeds, train_images=args.train, steps=args.steps, batch_size=args.batch,
                               layers=args.layers, progress=say)
    elif args.study == "matching":
        figures = matching_study(seeds, train_images=args.train, steps=args.steps, progress=say)
    else:
        parts = [s.strip() for s in args.parts.split(",") if s.strip()]
        figures = advanced_study(seeds, parts, lit_train=args.train, lit_steps=args.steps, lit_batch=args.batch,
                                 progress=say)
    figures = _rounded(figures)
    figures["wall_seconds"] = round(time.perf_counter() - t0)
    print(json.dumps(figures, indent=1))
    if args.write:
        command = f"COURSE_PROFILE={profile} python -m course_lib.multimodal.fusion_studies " + shlex.join(argv)
        path = write_results(f"{STUDIES[args.study]}_{profile}", figures, command=command, profile=profile, seeds=seeds)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
