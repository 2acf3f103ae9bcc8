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
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from .. import config as course_config
from ..models import count_parameters, load_clip
from .benchmarking import Table, latency_table, torch_threads
from .distillation import parameter_ratio
from .engines import OrtModule, export_onnx, ort_op_profile, ort_quantize_dynamic, ort_session
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
                 threads: int = 1, profile_runs: int = 10) -> list[dict[str, object]]:
    """Why INT8 dynamic quantization speeds a small ViT up less than its matrix products.

    Exports ``visual`` to ONNX, quantizes it dynamically twice (ONNX Runtime's default op
    set, and matrix products only), times the three sessions interleaved at
    ``batch_size`` (best of ``repeats``) and splits their kernel time by op type
    (:func:`~course_lib.compression.engines.ort_op_profile`). Returns one row per
    variant: ``b{batch_size}_ms``, ``speedup`` over fp32, and kernel ms spent in matrix
    products (attention's included), convolution and everything else.
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
    for name, path in paths.items():
        ops = ort_op_profile(path, example[:batch_size], runs=profile_runs, threads=threads)
        matrix = sum(ms for op, ms in ops.items() if op in MATRIX_OPS)
        conv = sum(ms for op, ms in ops.items() if op in CONV_OPS)
        rows.append({"variant": name, f"b{batch_size}_ms": times[name][batch_size].min * 1e3,
                     "speedup": base / times[name][batch_size].min, "matrix_ms": matrix, "conv_ms": conv,
                     "other_ms": sum(ops.values()) - matrix - conv})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.bench compression", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=["quick", "full"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-experiments", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--int8-anatomy", action="store_true", help="only the INT8 anatomy (ONNX Runtime, batch 64)")
    for name in ("pool_size", "probe_size", "finetune_steps", "distill_steps", "batch_size"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"override the profile's {name}")
    args = p.parse_args(argv)

    cfg = PipelineConfig.for_profile(args.profile)
    cfg.threads = args.threads
    if args.repeats is not None:
        cfg.repeats = args.repeats
    for name in ("pool_size", "probe_size", "finetune_steps", "distill_steps", "batch_size"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    teacher, _, tokenizer = load_clip("tiny")
    if args.int8_anatomy:
        threads = args.threads or 1
        with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
            rows = int8_anatomy(teacher.visual, args.workdir or tmp, repeats=cfg.repeats, threads=threads)
        print(f"# INT8 anatomy: tiny-CLIP image tower, batch 64, {threads} thread(s), "
              f"{platform.processor() or platform.machine()}; latency = best of {cfg.repeats} interleaved runs; "
              "kernel ms per run from ONNX Runtime's profiler")
        print(Table(rows))
        return 0
    start = time.perf_counter()
    with torch_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        print(f"# Chapter 1 benchmark (profile {course_config.get_profile(args.profile)}, torch threads "
              f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, torch {torch.__version__})")
        result = run_pipeline(teacher, tokenizer, cfg, args.workdir or tmp)
        rows = measure_variants(result.variants, result.probe, cfg.batch_sizes, cfg.repeats, warmup=min(3, cfg.repeats))
        extra: dict[str, object] = {"param_ratio": parameter_ratio(result.models["student"], teacher)}
        if not args.no_experiments:
            runs = student_vs_scratch(teacher, tokenizer, result.pool, result.probe, cfg.student, cfg.distill_steps, cfg.batch_size, cfg.seed)
            extra["scratch"] = runs
            extra["distill_gain"] = runs["distilled (inherited init)"] - runs["from scratch (random init)"]
            gvo = gradual_vs_oneshot(teacher.visual, result.pool, result.probe, 0.9, cfg.finetune_steps, batch_size=cfg.batch_size, seed=cfg.seed)
            extra["gradual"] = gvo
            extra["gradual_gain"] = gvo["gradual"]["accuracy"] - gvo["one-shot"]["accuracy"]
    print()
    print(Table(rows, COLUMNS))
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
    print(f"\ntotal {time.perf_counter() - start:.0f} s; stage seconds: "
          + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return 0 if all(math.isfinite(float(r["accuracy"])) for r in rows) else 1
