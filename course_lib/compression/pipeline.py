"""The combined pipeline: prune -> distill -> quantize -> export, and its comparison table.

Starting from the tiny CLIP (the teacher), :func:`run_pipeline` builds every variant
of the chapter side by side:

* ``teacher fp32 (torch)``: the baseline;
* ``teacher int8 dynamic (torch)`` and ``teacher fp32/int8 (ONNX Runtime)``: quantization
  and an inference engine alone;
* ``pruned 50% + FT``: structured pruning of heads and MLP neurons, fine-tuned (torch and ORT);
* ``student``: layer-dropped and pruned (weight inheritance), then distilled, in torch and
  exported to ONNX Runtime fp32 and int8.

:func:`measure_variants` then measures parameters, checkpoint size, latency at batch 1
and 64 (interleaved, so the ratios are fair on a busy machine), throughput and
zero-shot accuracy, like the performance tables of the source document.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import config as course_config
from ..models import count_parameters, zero_shot_classifier
from .attention import unfuse_attention
from .benchmarking import block_minima, latency_table
from .distillation import DistillConfig, StudentSpec, distill_clip, make_student
from .engines import OrtModule, export_onnx, onnx_size_mb, ort_quantize_dynamic, ort_session, verify_onnx
from .quantization import model_size_mb, quantize_dynamic_int8
from .structured import prune_vit
from .training import TeacherPool, ZeroShotProbe, finetune_visual, make_teacher_pool


@dataclass
class PipelineConfig:
    """Sizes of one pipeline run (see :meth:`for_profile`)."""

    pool_size: int = 3000
    probe_size: int = 1000
    prune_ratio: float = 0.5
    finetune_steps: int = 150
    finetune_lr: float = 2e-3
    prune_importance: str = "weight"  # or "activation" (calibration images)
    distill_steps: int = 250
    batch_size: int = 128
    student: StudentSpec = field(default_factory=StudentSpec)
    batch_sizes: tuple[int, ...] = (1, 64)
    repeats: int = 15
    threads: int | None = None
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str | None = None) -> "PipelineConfig":
        """``quick``: about a minute of training on 2 CPU cores; ``full``: the recipe that
        reaches the chapter's accuracy figures."""
        if course_config.get_profile(profile) == "quick":
            return cls()
        return cls(pool_size=12000, probe_size=2000, finetune_steps=600, distill_steps=1200, repeats=40)


@dataclass
class Variant:
    """One compressed model: an image encoder (prepared images ``[B, 3, S, S]`` ->
    features ``[B, D]``), its size, and the class embeddings it must be scored with."""

    name: str
    encoder: Callable[[torch.Tensor], torch.Tensor]
    params: int
    size_mb: float
    classifier: torch.Tensor | None = None  # None: the teacher's class embeddings
    engine: str = "torch"


def _visual_variant(name: str, visual: nn.Module, classifier: torch.Tensor | None = None) -> Variant:
    visual.eval()
    return Variant(name, visual, count_parameters(visual), model_size_mb(visual), classifier)


def _onnx_variants(
    name: str, visual: nn.Module, params: int, workdir: Path, probe: ZeroShotProbe, classifier: torch.Tensor | None, threads: int | None
) -> list[Variant]:
    """Export ``visual`` (verified against torch), quantize it dynamically; fp32 and int8 ORT variants."""
    stem = name.replace(" ", "_").replace("%", "pct")
    fp32 = export_onnx(visual, probe.images[:2], workdir / f"{stem}.onnx", "image", "embedding")
    verify_onnx(visual, ort_session(fp32, threads=threads), [probe.images[:1], probe.images[:64]], atol=1e-4)
    int8 = ort_quantize_dynamic(fp32, workdir / f"{stem}_int8.onnx")
    return [
        Variant(f"{name} fp32 (ORT)", OrtModule(ort_session(fp32, threads=threads)), params, onnx_size_mb(fp32), classifier, "onnxruntime"),
        Variant(f"{name} int8 dyn (ORT)", OrtModule(ort_session(int8, threads=threads)), params, onnx_size_mb(int8), classifier, "onnxruntime"),
    ]


@dataclass
class PipelineResult:
    """Variants, the models behind them, and what each stage cost (seconds)."""

    variants: list[Variant]
    models: dict[str, nn.Module]
    timings: dict[str, float]
    pool: TeacherPool
    probe: ZeroShotProbe


def run_pipeline(
    teacher: nn.Module,
    tokenizer: Callable,
    cfg: PipelineConfig,
    workdir: str | Path,
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """Build every variant of the chapter (see the module docstring) into ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    course_config.seed_everything(cfg.seed)
    teacher.eval()
    probe = ZeroShotProbe(teacher, tokenizer, cfg.probe_size, seed=cfg.seed)
    pool = make_teacher_pool(teacher, tokenizer, cfg.pool_size, seed=cfg.seed)
    timings["data"] = time.perf_counter() - t0
    visual = teacher.visual
    params = count_parameters(visual)
    variants = [_visual_variant("teacher fp32 (torch)", visual)]
    variants[0].params = params

    t = time.perf_counter()
    q = quantize_dynamic_int8(visual)
    variants.append(Variant("teacher int8 dyn (torch)", q, params, model_size_mb(q)))
    variants += _onnx_variants("teacher", visual, params, workdir, probe, None, cfg.threads)
    timings["quantize+export teacher"] = time.perf_counter() - t
    log(f"teacher: quantized and exported ({timings['quantize+export teacher']:.1f} s)")

    t = time.perf_counter()
    calib = pool.images[:256]
    if cfg.prune_importance not in ("weight", "activation"):
        raise ValueError(f"prune_importance must be 'weight' or 'activation', got {cfg.prune_importance!r}")
    pruned = prune_vit(visual, cfg.prune_ratio, cfg.prune_ratio, calibration=calib if cfg.prune_importance == "activation" else None)
    finetune_visual(pruned, pool, cfg.finetune_steps, cfg.finetune_lr, cfg.batch_size, seed=cfg.seed)
    timings["prune+finetune"] = time.perf_counter() - t
    tag = f"pruned {round(100 * cfg.prune_ratio)}% + FT"
    variants.append(_visual_variant(f"{tag} (torch)", pruned))
    variants += _onnx_variants(tag, pruned, count_parameters(pruned), workdir, probe, None, cfg.threads)[:1]
    log(f"structured pruning + {cfg.finetune_steps} fine-tuning steps ({timings['prune+finetune']:.1f} s)")

    t = time.perf_counter()
    student = make_student(teacher, cfg.student, calibration=calib)
    distill_clip(student, pool, DistillConfig(steps=cfg.distill_steps, batch_size=cfg.batch_size, seed=cfg.seed))
    student_clf = zero_shot_classifier(student, tokenizer, probe.classnames)
    timings["distill"] = time.perf_counter() - t
    s_params = count_parameters(student.visual)
    variants.append(_visual_variant("student fp32 (torch)", student.visual, student_clf))
    variants += _onnx_variants("student", student.visual, s_params, workdir, probe, student_clf, cfg.threads)
    log(f"student distilled for {cfg.distill_steps} steps ({timings['distill']:.1f} s)")
    models = {"teacher": teacher, "pruned": pruned, "student": student}
    return PipelineResult(variants, models, timings, pool, probe)


def measure_variants(
    variants: list[Variant],
    probe: ZeroShotProbe,
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 15,
    baseline: str | None = None,
    warmup: int = 3,
    blocks: int = 0,
) -> list[dict[str, object]]:
    """One row per variant: ``params``, ``size_mb``, ``b{B}_ms`` (best of ``repeats``
    interleaved runs, see :mod:`.benchmarking`) and
    ``b{B}_speedup`` (vs ``baseline``, default the first variant) for each batch size,
    ``throughput`` (images/s at the largest batch), ``accuracy`` (%) and ``cosine`` to the
    reference features (NaN for students, whose embedding space differs).

    With ``blocks`` > 0 each row also holds ``b{B}_ms_blocks``: the best time (ms) of each
    of ``blocks`` consecutive groups of the repeats (:func:`.benchmarking.block_minima`),
    the samples that :func:`.benchmarking.compare_samples` weighs a difference against."""
    if not variants:
        raise ValueError("no variants to measure")
    baseline = baseline or variants[0].name
    lat = latency_table({v.name: v.encoder for v in variants}, batch_sizes, tuple(probe.images.shape[1:]), repeats=repeats, warmup=warmup)
    rows = []
    for v in variants:
        scores = probe.evaluate(v.encoder, v.classifier)
        row: dict[str, object] = {"variant": v.name, "params": v.params, "size_mb": v.size_mb}
        for b in batch_sizes:
            row[f"b{b}_ms"] = 1e3 * lat[v.name][b].min
            row[f"b{b}_speedup"] = lat[baseline][b].min / lat[v.name][b].min
            if blocks:
                row[f"b{b}_ms_blocks"] = [1e3 * t for t in block_minima(lat[v.name][b], blocks)]
        row["throughput"] = max(batch_sizes) / lat[v.name][max(batch_sizes)].min
        row["accuracy"] = 100 * scores["accuracy"]
        row["cosine"] = scores["cosine"] if v.classifier is None else math.nan
        rows.append(row)
    return rows


def student_vs_scratch(
    teacher: nn.Module,
    tokenizer: Callable,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    spec: StudentSpec,
    steps: int,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy (%) of the same student architecture trained for ``steps`` steps three
    ways: distilled from inherited weights, contrastive from inherited weights (no
    teacher signal), and contrastive from random weights (from scratch)."""
    from .distillation import random_student

    out = {}
    runs = {
        "distilled (inherited init)": (make_student(teacher, spec, pool.images[:256]), DistillConfig(steps=steps, batch_size=batch_size, seed=seed)),
        "contrastive (inherited init)": (
            make_student(teacher, spec, pool.images[:256]),
            DistillConfig(steps=steps, batch_size=batch_size, seed=seed, relational_weight=0, feature_weight=0, contrastive_weight=1),
        ),
        "from scratch (random init)": (
            random_student(spec, seed),
            DistillConfig(steps=steps, batch_size=batch_size, seed=seed, relational_weight=0, feature_weight=0, contrastive_weight=1),
        ),
    }
    for name, (student, cfg) in runs.items():
        distill_clip(student, pool, cfg)
        out[name] = 100 * probe.evaluate_clip(student, tokenizer)["accuracy"]
    return out


def gradual_vs_oneshot(
    visual: nn.Module,
    pool: TeacherPool,
    probe: ZeroShotProbe,
    target_sparsity: float,
    steps: int,
    lr: float = 2e-3,
    batch_size: int = 128,
    ramp_fraction: float = 0.5,
    frequency: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Unstructured global magnitude pruning to ``target_sparsity`` two ways, with the
    same number of fine-tuning steps:

    * one-shot: prune at once, then fine-tune ``steps`` steps (pruned weights stay zero);
    * gradual: the cubic schedule ramps from 0 to the target over the first
      ``ramp_fraction`` of the steps, re-pruning every ``frequency`` steps (default
      ``steps // 40``), fine-tuning throughout.

    Returns ``{"one-shot": {...}, "gradual": {...}}`` with ``accuracy`` (%),
    ``accuracy_before_ft`` (one-shot only) and the final ``sparsity``.
    """
    from .pruning import GradualPruner, magnitude_masks, apply_masks, sparsity

    out: dict[str, dict[str, float]] = {}
    oneshot = unfuse_attention(visual)
    masks = magnitude_masks(oneshot, target_sparsity, "global")
    apply_masks(oneshot, masks)
    before = 100 * probe.evaluate(oneshot)["accuracy"]
    finetune_visual(oneshot, pool, steps, lr, batch_size, seed=seed, after_step=lambda _: apply_masks(oneshot, masks))
    out["one-shot"] = {"accuracy": 100 * probe.evaluate(oneshot)["accuracy"], "accuracy_before_ft": before, "sparsity": sparsity(oneshot)}

    gradual = unfuse_attention(visual)
    end = max(1, round(ramp_fraction * steps))
    pruner = GradualPruner(gradual, target_sparsity, begin_step=0, end_step=end, frequency=frequency or max(1, steps // 40))
    finetune_visual(gradual, pool, steps, lr, batch_size, seed=seed, before_step=pruner.update, after_step=lambda _: pruner.enforce())
    out["gradual"] = {"accuracy": 100 * probe.evaluate(gradual)["accuracy"], "accuracy_before_ft": math.nan, "sparsity": sparsity(gradual)}
    return out


# ---------------------------------------------------------------------------------------
# The selection table: one row per technique or combination, built from measurements
# ---------------------------------------------------------------------------------------

#: pipeline variant -> the technique or combination it stands for
TECHNIQUES: dict[str, str] = {
    "teacher fp32 (torch)": "baseline: fp32 teacher, eager PyTorch",
    "teacher int8 dyn (torch)": "INT8 dynamic quantization",
    "teacher fp32 (ORT)": "ONNX Runtime (inference engine)",
    "teacher int8 dyn (ORT)": "ONNX Runtime + INT8 dynamic",
    "pruned 50% + FT (torch)": "structured pruning 50% + fine-tuning",
    "pruned 50% + FT fp32 (ORT)": "structured pruning + ONNX Runtime",
    "student fp32 (torch)": "distilled student (20% of the parameters)",
    "student fp32 (ORT)": "distilled student + ONNX Runtime",
    "student int8 dyn (ORT)": "distilled student + ONNX Runtime + INT8 dynamic",
}


def _training_of(variant: str) -> str:
    return "pruned" if variant.startswith("pruned") else ("student" if variant.startswith("student") else "")


def selection_table(
    variants: dict[str, dict[str, object]],
    timing: str,
    training: dict[str, str] | None = None,
    accuracy_seeds: dict[str, list[float]] | None = None,
    baseline: str = "teacher fp32 (torch)",
    batch_sizes: tuple[int, ...] = (1, 64),
    samples: str = "timing blocks",
) -> list[dict[str, str]]:
    """One row per technique or combination: size, speed-ups, accuracy change, and when it holds.

    Args:
        variants: ``{variant: {"params", "size_mb", "accuracy", "b{B}_samples": [ms, ...]}}``
            for each batch size ``B`` (latency samples: timing blocks of one run, or
            independent latency rounds) -- sample ``i`` of every variant from the same
            interleaved rounds, e.g. from :func:`measure_variants` rows.
        timing: the conditions of the latency figures (hardware, threads), repeated in
            each row's "holds when".
        training: ``{"pruned": "...", "student": "..."}``: the training budget behind those
            variants' accuracy.
        accuracy_seeds: ``{variant: [accuracy (%) per seed]}`` for variants whose model was
            trained over several seeds (fp32 copies of one model share the list); their
            accuracy change is then the mean ± spread over seeds and says whether it is
            beyond the spread. Other variants show this run's single change.
        baseline: the reference variant (speed-ups and changes are against it).
        samples: what the latency samples are, for the wording of the comparisons.

    Returns:
        Rows with ``technique``, ``size``, ``b{B} speed-up``, ``accuracy change`` and
        ``holds when`` (all formatted strings). The speed-up is the mean of the paired
        per-sample speed-ups; one that is not distinguishable from 1x by
        :func:`.benchmarking.compare_speedup` is marked "(within noise)".
    """
    from ..conclusions import compare, summarize
    from .benchmarking import compare_speedup

    if baseline not in variants:
        raise KeyError(f"baseline {baseline!r} not among the variants {list(variants)}")
    base = variants[baseline]
    training = training or {}
    accuracy_seeds = accuracy_seeds or {}
    rows: list[dict[str, str]] = []
    for name, v in variants.items():
        row = {"technique": TECHNIQUES.get(name, name),
               "size": (f"{float(v['size_mb']):.2f} MB (reference)" if name == baseline else
                        f"{float(base['size_mb']) / float(v['size_mb']):.1f}x smaller ({float(v['size_mb']):.2f} MB)")}
        for b in batch_sizes:
            mine, ref = list(v[f"b{b}_samples"]), list(base[f"b{b}_samples"])
            ratio = sum(r_ / m_ for r_, m_ in zip(ref, mine)) / len(ref)  # mean of the paired speed-ups
            if name == baseline:
                row[f"b{b} speed-up"] = f"1x ({sum(ref) / len(ref):.2f} ms)"
                continue
            c = compare_speedup({name: mine, baseline: ref}, baseline, kind=samples)
            row[f"b{b} speed-up"] = f"{ratio:.2f}x" + ("" if c.distinguishable else " (within noise)")
        kind = _training_of(name)
        seeds = accuracy_seeds.get(name)
        if name == baseline:
            row["accuracy change"] = f"{float(base['accuracy']):.2f}% (reference)"
        elif seeds:
            delta = summarize(name, [s - float(base["accuracy"]) for s in seeds])
            c = compare({name: seeds, baseline: [float(base["accuracy"])]}, min_margin=0.0)
            row["accuracy change"] = (f"{delta.mean:+.2f} ± {delta.spread:.2f} points ({len(seeds)} seeds, "
                                      f"{'beyond' if c.distinguishable else 'within'} the spread)")
        else:
            row["accuracy change"] = f"{float(v['accuracy']) - float(base['accuracy']):+.2f} points (one run)"
        row["holds when"] = "; ".join(x for x in (timing, training.get(kind, "")) if x)
        rows.append(row)
    return rows


def selection_from_results(pipeline, structured=None, distillation=None) -> list[dict[str, str]]:
    """:func:`selection_table` from committed results (:class:`course_lib.results.Results`).

    ``pipeline`` is ``results/ch1_pipeline.json`` (``--only pipeline --rounds R``): its
    latency rounds are the samples. ``structured`` (``ch1_structured.json``) and
    ``distillation`` (``ch1_distillation.json``) supply accuracy over seeds for the pruned
    and student fp32 variants when their training budget equals the pipeline's.
    """
    fig = pipeline.figures
    batch_sizes = tuple(int(b) for b in fig["batch_sizes"])
    variants = {name: {"params": v["params"], "size_mb": v["size_mb"], "accuracy": v["accuracy"],
                       **{f"b{b}_samples": v[f"b{b}_ms"] for b in batch_sizes}} for name, v in fig["variants"].items()}
    sizes = fig["sizes"]
    threads = fig.get("threads")
    threads_text = f"{threads} thread{'s' if threads != 1 else ''}" if threads else "torch's default threads"
    timing = f"{pipeline.hardware}, {threads_text}, {fig['rounds']} latency rounds"
    training = {"pruned": f"{sizes['finetune_steps']} fine-tuning steps", "student": f"{sizes['distill_steps']} distillation steps"}
    seeds: dict[str, list[float]] = {}
    if structured is not None and structured.figures["sizes"]["finetune_steps"] == sizes["finetune_steps"]:
        for name in variants:
            if _training_of(name) == "pruned" and "int8" not in name:
                seeds[name] = list(structured.figures["after_ft"]["weight"])
    if distillation is not None and distillation.figures["sizes"]["distill_steps"] == sizes["distill_steps"]:
        for name in variants:
            if _training_of(name) == "student" and "int8" not in name:
                seeds[name] = list(distillation.figures["arms"]["distilled (inherited init)"])
    return selection_table(variants, timing, training, seeds, batch_sizes=batch_sizes, samples="latency rounds")
