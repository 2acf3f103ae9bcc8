"""``python -m course_lib.bench compression``: the chapter's comparison table, measured.

Runs the combined pipeline (:mod:`.pipeline`) and prints, for every variant of the
tiny-CLIP image tower, parameters, size, latency at batch 1 and 64 with the speed-up
over eager fp32 torch measured in the same run (interleaved timing), throughput and
zero-shot accuracy; then the chapter's target figures with the value measured for each.

Options: ``--profile quick|full`` (default: the course profile), ``--threads N`` (torch
and ONNX Runtime intra-op threads for the run; default: torch's current setting),
``--repeats R``, ``--no-experiments`` (skip the distillation-vs-scratch and
gradual-vs-one-shot runs), ``--workdir DIR`` (where ONNX files go; default a temporary
folder), and size overrides ``--pool-size``, ``--probe-size``, ``--finetune-steps``,
``--distill-steps``, ``--batch-size``. ``--int8-anatomy`` runs only the INT8 anatomy:
ONNX Runtime fp32 vs INT8 dynamic (all ops / matrix products only) at batch 64, with the
kernel time split into matrix products, convolution and everything else.

``--only {pipeline,distillation,temperature,structured,pruning}`` runs one of the chapter's
experiments for ``--seeds`` (default 0 1 2; see :mod:`.experiments`), and
``--write-results`` stores what was measured in ``results/ch1_<name>.json`` with the
exact command, profile, seeds, hardware and library versions (also for
``--int8-anatomy``: ``results/ch1_int8_anatomy.json``). ``--rounds R`` repeats the
latency measurement of the pipeline R times (independent interleaved rounds), so the
stored speed-ups come as ranges.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import config as course_config
from ..models import count_parameters, load_clip
from ..results import write_results
from .benchmarking import Table, block_minima, latency_table, torch_threads
from .distillation import parameter_ratio
from .engines import OrtModule, export_onnx, ort_op_profiles, ort_quantize_dynamic, ort_session
from .pipeline import PipelineConfig, gradual_vs_oneshot, measure_variants, run_pipeline, student_vs_scratch

COLUMNS = ["variant", "params", "size_mb", "b1_ms", "b1_speedup", "b64_ms", "b64_speedup", "throughput", "accuracy", "cosine"]


def _row(rows: list[dict], name: str) -> dict:
    for r in rows:
        if r["variant"] == name:
            return r
    raise KeyError(name)


def figures(rows: list[dict], extra: dict[str, object], teacher_acc: float) -> list[dict[str, object]]:
    """The chapter's target figures next to what this run measured."""
    t_fp32, t_int8 = _row(rows, "teacher fp32 (torch)"), _row(rows, "teacher int8 dyn (torch)")
    o_fp32, o_int8 = _row(rows, "teacher fp32 (ORT)"), _row(rows, "teacher int8 dyn (ORT)")
    pruned = next(r for r in rows if str(r["variant"]).startswith("pruned") and r["variant"].endswith("(torch)"))
    student = _row(rows, "student fp32 (torch)")
    out = [
        {"figure": "INT8 dynamic, torch: speed-up at b64 (>= 1.5x)", "measured": t_fp32["b64_ms"] / t_int8["b64_ms"], "target": 1.5},
        {"figure": "INT8 dynamic, ORT int8 vs ORT fp32 at b64 (>= 1.5x)", "measured": o_fp32["b64_ms"] / o_int8["b64_ms"], "target": 1.5},
        {"figure": "INT8 dynamic, torch: accuracy drop (<= 1 point)", "measured": t_fp32["accuracy"] - t_int8["accuracy"], "target": -1.0},
        {"figure": "structured 50%: speed-up at b64 (>= 1.5x)", "measured": pruned["b64_speedup"], "target": 1.5},
        {"figure": "structured 50% + FT: accuracy drop (<= 2 points)", "measured": t_fp32["accuracy"] - pruned["accuracy"], "target": -2.0},
        {"figure": "ORT fp32 vs eager torch at b1 (>= 1.2x)", "measured": o_fp32["b1_speedup"], "target": 1.2},
        {"figure": "student params / teacher params (<= 0.25)", "measured": extra["param_ratio"], "target": -0.25},
        {"figure": "student accuracy / teacher accuracy (>= 0.95)", "measured": student["accuracy"] / teacher_acc, "target": 0.95},
    ]
    if "scratch" in extra:
        out.append({"figure": "distilled minus from-scratch accuracy, same steps (> 0)", "measured": extra["distill_gain"], "target": 1e-9})
    if "gradual" in extra:
        out.append({"figure": "gradual minus one-shot accuracy at 90% sparsity (> 0)", "measured": extra["gradual_gain"], "target": 1e-9})
    for f in out:  # a negative target means "at most |target|"
        target = float(f["target"])
        f["met"] = f["measured"] <= -target if target < 0 else f["measured"] >= target
        f["target"] = f"<= {-target:g}" if target < 0 else (f">= {target:g}" if target > 1e-6 else "> 0")
    return out


MATRIX_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul", "DynamicQuantizeMatMul", "MatMulInteger",
                        "MatMulIntegerToFloat", "DynamicQuantizeLinear"})
CONV_OPS = frozenset({"Conv", "ConvInteger"})


def int8_anatomy(visual: torch.nn.Module, workdir: str | Path, batch_size: int = 64, repeats: int = 20,
                 threads: int = 1, profile_runs: int = 10, samples: bool = False) -> list[dict[str, object]]:
    """Why INT8 dynamic quantization speeds a small ViT up less than its matrix products.

    Exports ``visual`` to ONNX, quantizes it dynamically twice (ONNX Runtime's default op
    set, and matrix products only), times the three sessions interleaved at
    ``batch_size`` (best of ``repeats``) and splits their kernel time by op type
    (:func:`~course_lib.compression.engines.ort_op_profiles`, interleaved). Returns one row per
    variant: ``b{batch_size}_ms``, ``speedup`` over fp32, and kernel ms spent in matrix
    products (attention's included), convolution and everything else (medians over
    ``profile_runs`` profiled runs). With ``samples=True`` each row also holds
    ``matrix_runs``, ``conv_runs`` and ``other_runs``: those kernel times per profiled run,
    and ``b{batch_size}_blocks``: the best latency (ms) of each third of the timed rounds.
    """
    if batch_size < 1 or repeats < 1 or profile_runs < 1:
        raise ValueError(f"batch_size, repeats and profile_runs must be >= 1, got {batch_size}, {repeats}, {profile_runs}")
    workdir = Path(workdir)
    example = torch.rand(max(2, batch_size), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fp32 = export_onnx(visual, example, workdir / "anatomy_fp32.onnx")
    paths = {
        "ORT fp32": fp32,
        "ORT int8 dynamic (default ops)": ort_quantize_dynamic(fp32, workdir / "anatomy_int8_all.onnx"),
        "ORT int8 dynamic (MatMul/Gemm only)": ort_quantize_dynamic(fp32, workdir / "anatomy_int8_mm.onnx",
                                                                     op_types=("MatMul", "Gemm")),
    }
    encoders = {name: OrtModule(ort_session(path, threads=threads)) for name, path in paths.items()}
    times = latency_table(encoders, batch_sizes=(batch_size,), repeats=repeats)
    base = times["ORT fp32"][batch_size].min
    rows = []
    profiles = ort_op_profiles(paths, example[:batch_size], runs=profile_runs, threads=threads)
    for name in paths:
        runs = profiles[name]
        matrix = [sum(ms for op, ms in run.items() if op in MATRIX_OPS) for run in runs]
        conv = [sum(ms for op, ms in run.items() if op in CONV_OPS) for run in runs]
        other = [sum(run.values()) - m - c for run, m, c in zip(runs, matrix, conv)]
        row = {"variant": name, f"b{batch_size}_ms": times[name][batch_size].min * 1e3,
               "speedup": base / times[name][batch_size].min, "matrix_ms": float(np.median(matrix)),
               "conv_ms": float(np.median(conv)), "other_ms": float(np.median(other))}
        if samples:
            row.update(matrix_runs=matrix, conv_runs=conv, other_runs=other,
                       **{f"b{batch_size}_blocks": [1e3 * t for t in block_minima(times[name][batch_size], min(3, repeats))]})
        rows.append(row)
    return rows


#: sizes of each ``--only`` experiment per profile (command-line overrides win)
EXPERIMENT_SIZES: dict[str, dict[str, dict[str, int]]] = {
    # notebook 1.3's quick budget; the full recipe of the pipeline
    "distillation": {"quick": dict(pool_size=3000, probe_size=1000, distill_steps=150, batch_size=128),
                     "full": dict(pool_size=12000, probe_size=2000, distill_steps=1200, batch_size=128)},
    # notebook 1.3's temperature sweep (output KD on zero-shot logits)
    "temperature": {"quick": dict(pool_size=3000, probe_size=1000, distill_steps=40, batch_size=128),
                    "full": dict(pool_size=12000, probe_size=2000, distill_steps=300, batch_size=128)},
    # notebook 1.2's quick budget; the full recipe of the pipeline
    "structured": {"quick": dict(pool_size=1500, probe_size=600, finetune_steps=100, batch_size=64),
                   "full": dict(pool_size=12000, probe_size=2000, finetune_steps=600, batch_size=128)},
    # notebook 1.2's quick budget (gradual vs one-shot, and the one-shot sparsity curve)
    "pruning": {"quick": dict(pool_size=1500, probe_size=600, finetune_steps=60, batch_size=64, curve_size=300),
                "full": dict(pool_size=12000, probe_size=2000, finetune_steps=300, batch_size=128, curve_size=2000)},
}
ONLY = ("pipeline", *EXPERIMENT_SIZES)
SCOPE_LEVELS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 64.0)


CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """The instruction-set extensions among :data:`CPU_FEATURES` that this CPU reports
    (``/proc/cpuinfo``; empty elsewhere): INT8 and bf16 speed depends on them (VNNI for
    int8 dot products, AVX512-BF16/AMX for bf16), so results files record them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    return []


def experiment_sizes(only: str, profile: str, overrides: dict[str, int | None]) -> dict[str, int]:
    """The sizes of experiment ``only`` in ``profile``, with non-None ``overrides`` applied."""
    if only not in EXPERIMENT_SIZES:
        raise ValueError(f"unknown experiment {only!r}: expected one of {list(EXPERIMENT_SIZES)}")
    sizes = dict(EXPERIMENT_SIZES[only][profile])
    sizes.update({k: int(v) for k, v in overrides.items() if v is not None and k in sizes})
    return sizes


def run_experiment(only: str, sizes: dict[str, int], seeds: list[int], log=print) -> dict[str, object]:
    """Run one experiment of :mod:`.experiments` at ``sizes``; returns its JSON-ready figures."""
    from . import experiments as ex
    from .training import ZeroShotProbe, make_teacher_pool

    teacher, _, tokenizer = load_clip("tiny")
    probe = ZeroShotProbe(teacher, tokenizer, sizes["probe_size"], seed=0)
    pool = make_teacher_pool(teacher, tokenizer, sizes["pool_size"], seed=0)
    teacher_acc = ex.pct(probe.evaluate(teacher.visual)["accuracy"])
    figures: dict[str, object] = {"sizes": sizes, "teacher_accuracy": teacher_acc}
    if only == "distillation":
        arms = ex.distillation_arms(teacher, tokenizer, pool, probe, sizes["distill_steps"], seeds, batch_size=sizes["batch_size"])
        figures["arms"] = arms
        figures["pct_of_teacher"] = {a: [round(100 * v / teacher_acc, 3) for v in vals] for a, vals in arms.items()}
        student = ex.make_student(teacher, ex.StudentSpec())
        figures["student_params"] = count_parameters(student)
        figures["teacher_params"] = count_parameters(teacher)
        figures["param_ratio"] = count_parameters(student) / count_parameters(teacher)
    elif only == "temperature":
        from ..models import zero_shot_classifier

        student = ex.make_student(teacher, ex.StudentSpec(), calibration=pool.images[:256])
        classifier = zero_shot_classifier(teacher, tokenizer, probe.classnames)
        figures["accuracy"] = ex.temperature_sweep(student.visual, pool, probe, classifier, TEMPERATURES,
                                                   sizes["distill_steps"], seeds, batch_size=sizes["batch_size"])
    elif only == "structured":
        figures.update(ex.structured_study(teacher.visual, pool, probe, 0.5, sizes["finetune_steps"], seeds,
                                           batch_size=sizes["batch_size"]))
    elif only == "pruning":
        figures["gradual_vs_oneshot"] = ex.gradual_vs_oneshot_seeds(teacher.visual, pool, probe, 0.9, sizes["finetune_steps"],
                                                                    seeds, batch_size=sizes["batch_size"])
        probes = [ZeroShotProbe(teacher, tokenizer, sizes["curve_size"], seed=s) for s in seeds]
        figures["scope_curve"] = ex.scope_curve(ex.unfuse_attention(teacher.visual), probes, SCOPE_LEVELS)
    log(f"{only}: done")
    return figures


def pipeline_figures(rounds: list[list[dict]], extra: dict[str, object], cfg: PipelineConfig) -> dict[str, object]:
    """JSON-ready figures of ``rounds`` (one :func:`measure_variants` table per latency round)."""
    variants: dict[str, dict[str, object]] = {}
    for rows in rounds:
        for r in rows:
            v = variants.setdefault(str(r["variant"]), {k: r[k] for k in ("params", "size_mb", "accuracy")})
            v["cosine"] = None if math.isnan(float(r["cosine"])) else float(r["cosine"])
            for k in r:
                if k.startswith("b") and k.endswith(("_ms", "_speedup")) or k == "throughput":
                    v.setdefault(k, []).append(round(float(r[k]), 4))
    return {"variants": variants, "param_ratio": extra["param_ratio"], "batch_sizes": list(cfg.batch_sizes),
            "repeats": cfg.repeats, "rounds": len(rounds),
            "sizes": {k: getattr(cfg, k) for k in ("pool_size", "probe_size", "finetune_steps", "distill_steps", "batch_size")}}


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    p = argparse.ArgumentParser(prog="python -m course_lib.bench compression", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=["quick", "full"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-experiments", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--int8-anatomy", action="store_true", help="only the INT8 anatomy (ONNX Runtime, batch 64)")
    p.add_argument("--only", choices=ONLY, default=None, help="run one experiment (see the module docstring)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of an --only experiment")
    p.add_argument("--rounds", type=int, default=1, help="independent latency rounds of the pipeline table")
    p.add_argument("--write-results", action="store_true", help="store the figures in results/ch1_<name>.json")
    for name in ("pool_size", "probe_size", "finetune_steps", "distill_steps", "batch_size"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"override the profile's {name}")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.write_results and not (args.only or args.int8_anatomy):
        p.error("--write-results needs --only NAME or --int8-anatomy")
    profile = course_config.get_profile(args.profile)
    command = "python -m course_lib.bench compression " + " ".join(argv)

    cfg = PipelineConfig.for_profile(profile)
    cfg.threads = args.threads
    if args.repeats is not None:
        cfg.repeats = args.repeats
    overrides = {name: getattr(args, name) for name in ("pool_size", "probe_size", "finetune_steps", "distill_steps", "batch_size")}
    for name, value in overrides.items():
        if value is not None:
            setattr(cfg, name, value)
    if args.only in EXPERIMENT_SIZES:
        sizes = experiment_sizes(args.only, profile, overrides)
        start = time.perf_counter()
        with torch_threads(args.threads):
            print(f"# {args.only} (profile {profile}, seeds {args.seeds}, torch threads {torch.get_num_threads()}): {sizes}")
            found = run_experiment(args.only, sizes, args.seeds)
        found["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(found, indent=1))
        if args.write_results:
            print("wrote", write_results(f"ch1_{args.only}", found, command, profile, args.seeds))
        return 0
    teacher, _, tokenizer = load_clip("tiny")
    if args.int8_anatomy:
        threads = args.threads or 1
        with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
            rows = int8_anatomy(teacher.visual, args.workdir or tmp, repeats=cfg.repeats, threads=threads, samples=True)
        print(f"# INT8 anatomy: tiny-CLIP image tower, batch 64, {threads} thread(s), "
              f"{platform.processor() or platform.machine()}; latency = best of {cfg.repeats} interleaved runs; "
              "kernel ms per run from ONNX Runtime's profiler")
        print(Table(rows, ["variant", "b64_ms", "speedup", "matrix_ms", "conv_ms", "other_ms"]))
        if args.write_results:
            found = {"rows": {str(r["variant"]): {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v])
                                                  for k, v in r.items() if k != "variant"} for r in rows},
                     "batch_size": 64, "threads": threads, "repeats": cfg.repeats, "cpu_features": cpu_features()}
            print("wrote", write_results("ch1_int8_anatomy", found, command, profile, [0]))
        return 0
    start = time.perf_counter()
    run_experiments = not args.no_experiments and args.only is None
    with torch_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        print(f"# Chapter 1 benchmark (profile {profile}, torch threads "
              f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, torch {torch.__version__})")
        result = run_pipeline(teacher, tokenizer, cfg, args.workdir or tmp)
        rounds = [measure_variants(result.variants, result.probe, cfg.batch_sizes, cfg.repeats, warmup=min(3, cfg.repeats))
                  for _ in range(args.rounds)]
        rows = rounds[0]
        extra: dict[str, object] = {"param_ratio": parameter_ratio(result.models["student"], teacher)}
        if run_experiments:
            runs = student_vs_scratch(teacher, tokenizer, result.pool, result.probe, cfg.student, cfg.distill_steps, cfg.batch_size, cfg.seed)
            extra["scratch"] = runs
            extra["distill_gain"] = runs["distilled (inherited init)"] - runs["from scratch (random init)"]
            gvo = gradual_vs_oneshot(teacher.visual, result.pool, result.probe, 0.9, cfg.finetune_steps, batch_size=cfg.batch_size, seed=cfg.seed)
            extra["gradual"] = gvo
            extra["gradual_gain"] = gvo["gradual"]["accuracy"] - gvo["one-shot"]["accuracy"]
    for i, table_rows in enumerate(rounds):
        print(f"\nlatency round {i + 1} of {len(rounds)}")
        print(Table(table_rows, COLUMNS))
    print(f"\nlatency = best of {cfg.repeats} interleaved runs (timeit's convention); speed-ups are ratios against 'teacher fp32 (torch)'; "
          f"accuracy = zero-shot top-1 (%) on {len(result.probe.labels)} ShapeWorld test images; "
          f"teacher {count_parameters(teacher)} params, student {count_parameters(result.models['student'])} params")
    if "scratch" in extra:
        print()
        print(Table([{"student trained as": k, "accuracy": v} for k, v in extra["scratch"].items()]))
        print()
        print(Table([{"pruning at 90%": k, **v} for k, v in extra["gradual"].items()]))
    print()
    teacher_acc = _row(rows, "teacher fp32 (torch)")["accuracy"]
    print(Table(figures(rows, extra, teacher_acc)))
    seconds = time.perf_counter() - start
    print(f"\ntotal {seconds:.0f} s; stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    if args.write_results:
        out = pipeline_figures(rounds, extra, cfg)
        out["stage_seconds"] = {k: round(v, 1) for k, v in result.timings.items()}
        out["seconds"] = round(seconds, 1)
        out["threads"] = args.threads
        out["cpu_features"] = cpu_features()
        print("wrote", write_results("ch1_pipeline", out, command, profile, [cfg.seed]))
    return 0 if all(math.isfinite(float(r["accuracy"])) for r in rows) else 1
