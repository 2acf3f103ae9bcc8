"""The chapter's seeded experiments: each returns plain numbers, one value per seed.

A claim such as "distillation beats training from scratch" or "global pruning keeps more
accuracy than local" is only as good as the noise around it. Every function here runs
one comparison for several seeds and returns JSON-ready dicts ``{method: [value per
seed]}`` that :func:`course_lib.conclusions.compare` turns into a sentence, and that
``python -m course_lib.bench compression --only ... --write-results`` stores in
``results/ch1_*.json`` (with the command, profile, seeds, hardware and versions) so the
notebooks can show full-profile figures beside their quick ones.

What a *seed* changes, per experiment:

* :func:`distillation_arms`: the order of the training batches, the random initial
  weights (from-scratch arms) and the feature projector's initial weights;
* :func:`structured_study`: the fine-tuning batch order and, for activation-based
  importance, which pool images calibrate it;
* :func:`gradual_vs_oneshot_seeds`: the fine-tuning batch order;
* :func:`temperature_sweep`: the order of the training batches;
* :func:`scope_curve`: which test images are drawn (``ZeroShotProbe(seed=...)``); one-shot
  masks involve no randomness, so the only noise is that of the test sample.

Accuracies are zero-shot top-1 in percent.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..models import count_parameters
from .attention import unfuse_attention
from .distillation import DistillConfig, StudentSpec, distill_clip, make_student, random_student
from .pruning import prune_magnitude
from .structured import apply_plan, plan_structured
from .training import TeacherPool, ZeroShotProbe, finetune_visual

__all__ = ["DISTILL_ARMS", "distillation_arms", "temperature_sweep", "structured_study", "gradual_vs_oneshot_seeds", "scope_curve",
           "check_seeds", "pct"]

#: arm name -> (initial weights, training signal)
DISTILL_ARMS: dict[str, tuple[str, str]] = {
    "distilled (inherited init)": ("inherited", "teacher"),
    "contrastive (inherited init)": ("inherited", "labels"),
    "from scratch (random init)": ("random", "labels"),
    "distilled (random init)": ("random", "teacher"),
}


def pct(fraction: float) -> float:
    """A fraction as a percentage rounded to 3 decimals (what the results files store)."""
    return round(100 * float(fraction), 3)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as a list of distinct non-negative ints; raises ValueError otherwise."""
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out) or any(isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)!r}")
    return out


def distillation_arms(
    teacher: nn.Module,
    tokenizer: Callable,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    steps: int,
    seeds: Sequence[int],
    arms: Sequence[str] = ("distilled (inherited init)", "contrastive (inherited init)", "from scratch (random init)"),
    spec: StudentSpec = StudentSpec(),
    batch_size: int = 128,
    on_eval: Callable[[str, int, int, nn.Module], None] | None = None,
    eval_every: int = 0,
) -> dict[str, list[float]]:
    """Train the same student architecture several ways for ``steps`` steps each.

    Args:
        arms: names from :data:`DISTILL_ARMS`: inherited (layer selection + structured
            pruning of the teacher, activation-based on ``pool.images[:256]``) or random
            initial weights, crossed with the teacher's signal (relational + feature KD,
            :class:`DistillConfig` defaults) or the CLIP loss on the ground-truth pairs.
        seeds: one run of every arm per seed.
        on_eval: ``on_eval(arm, seed, step, student)`` every ``eval_every`` steps and at the end.

    Returns:
        ``{arm: [zero-shot accuracy (%) of the student's own towers, one per seed]}``.
    """
    seeds = check_seeds(seeds)
    unknown = [a for a in arms if a not in DISTILL_ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown distillation arms {unknown}; choose from {list(DISTILL_ARMS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    inherited = make_student(teacher, spec, calibration=pool.images[:256])
    out: dict[str, list[float]] = {a: [] for a in arms}
    for seed in seeds:
        for arm in arms:
            init, signal = DISTILL_ARMS[arm]
            student = copy.deepcopy(inherited) if init == "inherited" else random_student(spec, seed=seed)
            weights = {} if signal == "teacher" else dict(relational_weight=0, feature_weight=0, contrastive_weight=1)
            torch.manual_seed(seed)  # the feature projector's initial weights
            hook = None if on_eval is None else (lambda step, m, arm=arm, seed=seed: on_eval(arm, seed, step, m))
            distill_clip(student, pool, DistillConfig(steps=steps, batch_size=batch_size, seed=seed, **weights),
                         on_eval=hook, eval_every=eval_every)
            out[arm].append(pct(probe.evaluate_clip(student, tokenizer)["accuracy"]))
    return out


def structured_study(
    visual: nn.Module,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    ratio: float,
    steps: int,
    seeds: Sequence[int],
    importances: Sequence[str] = ("weight", "activation"),
    batch_size: int = 128,
    lr: float = 2e-3,
    calibration_size: int = 256,
) -> dict[str, object]:
    """Structured pruning of ``ratio`` of the heads and MLP neurons of every block, per
    importance score, before and after ``steps`` steps of recovery fine-tuning.

    Returns:
        ``{"dense_accuracy", "dense_params", "pruned_params", "before_ft": {importance:
        [per seed]}, "after_ft": {importance: [per seed]}}``; ``after_ft`` is empty when
        ``steps`` is 0. Weight-based scores use no data, so their ``before_ft`` values
        repeat across seeds; activation-based ones calibrate on ``calibration_size``
        pool images drawn with the seed.
    """
    seeds = check_seeds(seeds)
    if any(i not in ("weight", "activation") for i in importances) or not importances:
        raise ValueError(f"importances must be 'weight' and/or 'activation', got {list(importances)}")
    source = unfuse_attention(visual)
    before: dict[str, list[float]] = {i: [] for i in importances}
    after: dict[str, list[float]] = {i: [] for i in importances} if steps else {}
    pruned_params = 0
    weight_plan = plan_structured(source, ratio, ratio) if "weight" in importances else None
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        calib = pool.images[torch.randperm(len(pool), generator=gen)[:calibration_size]]
        for imp in importances:
            plan = weight_plan if imp == "weight" else plan_structured(source, ratio, ratio, calibration=calib)
            small = apply_plan(source, plan, physical=True).eval()
            pruned_params = count_parameters(small)
            if imp == "weight" and before[imp]:  # no data involved: the same tower for every seed
                before[imp].append(before[imp][0])
            else:
                before[imp].append(pct(probe.evaluate(small)["accuracy"]))
            if steps:
                finetune_visual(small, pool, steps, lr, batch_size, seed=seed)
                after[imp].append(pct(probe.evaluate(small)["accuracy"]))
    return {"dense_accuracy": pct(probe.evaluate(source)["accuracy"]), "dense_params": count_parameters(source),
            "pruned_params": pruned_params, "before_ft": before, "after_ft": after}


def gradual_vs_oneshot_seeds(
    visual: nn.Module,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    target_sparsity: float,
    steps: int,
    seeds: Sequence[int],
    batch_size: int = 128,
) -> dict[str, list[float]]:
    """:func:`.pipeline.gradual_vs_oneshot` for each seed.

    Returns:
        ``{"one-shot": [...], "gradual": [...], "one-shot before FT": [...]}`` (accuracy, %).
    """
    from .pipeline import gradual_vs_oneshot

    seeds = check_seeds(seeds)
    out: dict[str, list[float]] = {"one-shot": [], "gradual": [], "one-shot before FT": []}
    for seed in seeds:
        r = gradual_vs_oneshot(visual, pool, probe, target_sparsity, steps, batch_size=batch_size, seed=seed)
        out["one-shot"].append(round(r["one-shot"]["accuracy"], 3))
        out["gradual"].append(round(r["gradual"]["accuracy"], 3))
        out["one-shot before FT"].append(round(r["one-shot"]["accuracy_before_ft"], 3))
    return out


def scope_curve(
    visual: nn.Module,
    probes: Sequence[ZeroShotProbe],
    levels: Sequence[float],
    scopes: Sequence[str] = ("local", "global"),
) -> dict[str, dict[str, list[float]]]:
    """One-shot magnitude pruning (no fine-tuning) at each sparsity in ``levels``,
    scored on every probe (one per test-split seed).

    Returns:
        ``{scope: {f"{level:g}": [accuracy (%) per probe]}}``.
    """
    if not probes:
        raise ValueError("need at least one probe")
    out: dict[str, dict[str, list[float]]] = {s: {} for s in scopes}
    for level in levels:
        for scope in scopes:
            pruned, _ = prune_magnitude(visual, level, scope)
            out[scope][f"{level:g}"] = [pct(p.evaluate(pruned)["accuracy"]) for p in probes]
    return out


def temperature_sweep(
    student_visual: nn.Module,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    classifier: torch.Tensor,
    temperatures: Sequence[float],
    steps: int,
    seeds: Sequence[int],
    batch_size: int = 128,
) -> dict[str, list[float]]:
    """Output KD on zero-shot logits (:func:`.distillation.distill_zero_shot_logits`) from
    the same initial image tower at each temperature, for each seed.

    Returns:
        ``{f"T={t:g}": [accuracy (%) of the trained tower with the teacher's class
        embeddings, one per seed]}``.
    """
    from .distillation import distill_zero_shot_logits

    seeds = check_seeds(seeds)
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
    out: dict[str, list[float]] = {f"T={t:g}": [] for t in temperatures}
    for seed in seeds:
        for t in temperatures:
            visual = copy.deepcopy(student_visual)
            distill_zero_shot_logits(visual, pool, classifier, temperature=t, steps=steps, batch_size=batch_size, seed=seed)
            out[f"T={t:g}"].append(pct(probe.evaluate(visual)["accuracy"]))
    return out
