"""``python -m course_lib.bench continual``: the chapter's measured tables.

Sections (``--only`` picks some; all by default):

* ``strategies``: Split-Digits, every strategy in the task-, domain- and class-incremental
  scenarios, mean ± std over seeds, beside van de Ven & Tolias (2019); the ordering check,
  the replay / fine-tuning ratio (class) and the forgetting of progressive networks (task).
* ``ewc``: time of one EWC training step against a plain step, measured side by side.
* ``service``: predictions per second and p50/p99 latency with 50 concurrent clients, and
  the ``kill -9`` trial (acknowledged feedback lost or not learned after a restart).
* ``clip``: the tiny CLIP learning new concepts: fine-tuning vs replay vs distillation.

The profile (``--profile`` or ``COURSE_PROFILE``) picks the protocol; ``--seeds``,
``--iterations`` and ``--hidden`` override it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from .. import config as course_config
from .experiments import default_workers, ewc_step_times, markdown_table, ordering_check, protocol, run_grid, summary_rows

SECTIONS = ("strategies", "ewc", "service", "clip")


def bench_strategies(proto, out: dict, workers: int = 1) -> None:
    t0 = time.perf_counter()
    results = run_grid(proto=proto, workers=workers)
    rows = summary_rows(results)
    print(f"\n## Split-Digits strategies ({len(proto.seeds)} seeds, hidden {proto.hidden}, "
          f"{proto.iterations} iterations/task, batch {proto.batch_size}, Adam lr {proto.lr:g}; "
          f"{time.perf_counter() - t0:.0f} s)\n")
    cols = [("strategy", "strategy"), ("average_accuracy", "avg acc %"), ("forgetting", "forgetting %"),
            ("bwt", "BWT %"), ("fwt", "FWT %"), ("reference", "van de Ven split-MNIST %"), ("seconds", "train s/run")]
    for kind in ("task", "domain", "class"):
        print(f"### {kind}-incremental\n")
        print(markdown_table([r for r in rows if r["scenario"] == kind], cols))
        checks = ordering_check(rows, kind)
        print("\nordering as in van de Ven & Tolias: " + ", ".join(
            f"{a} {'<=' if ok else '>'} {b} ({x:.1f} vs {y:.1f}){'' if ok else ' DIFFERS'}" for a, b, x, y, ok in checks))
        print()
    acc = {(r["scenario"], r["strategy"]): r["average_accuracy"] for r in rows}
    ratio = acc[("class", "replay")] / max(acc[("class", "finetune")], 1e-9)
    pnn = [r for r in results if r.strategy == "progressive"]
    worst = max(float(np.max(r.acc[j:, j].max() - r.acc[j:, j].min())) for r in pnn for j in range(r.acc.shape[0]))
    print(f"class-incremental replay / fine-tuning accuracy: {ratio:.2f}x (target >= 3x)")
    print(f"progressive networks, task-incremental: largest change of any task's accuracy after it was learned: "
          f"{worst:.6f} (target exactly 0)")
    out.update(strategies=rows, replay_ratio=ratio, progressive_max_change=worst)


def bench_ewc_step(proto, out: dict) -> None:
    rows = []
    for hidden in sorted({proto.hidden, 400}):
        rows += [{"hidden": hidden, "step": name, **v} for name, v in ewc_step_times(hidden).items()]
    print("\n## EWC training step vs plain step (Split-Digits MLP, batch 128, 30 interleaved rounds; "
          "ratio = median of per-round ratios)\n")
    print(markdown_table(rows, [("hidden", "hidden"), ("step", "step"), ("ms", "ms/step"), ("ratio", "x plain")], digits=2))
    out["ewc_step"] = rows


def bench_service(out: dict, clients: int = 50, requests_per_client: int = 40) -> None:
    from ..data import load_digits_split
    from .client import ServerProcess, crash_recovery_trial, load_test

    x, y, _, _ = load_digits_split(0)
    x, y = x.numpy(), y.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        with ServerProcess(f"{tmp}/load") as srv:
            stats = load_test(srv.url, x, clients=clients, requests_per_client=requests_per_client)
        report = crash_recovery_trial(f"{tmp}/crash", x, y, ["--min-batch", "8", "--steps-per-update", "150",
                                                             "--hidden", "64"])
    print(f"\n## Online service ({clients} concurrent clients on loopback, single-row POST /predict, "
          f"client and server on the same machine)\n")
    print(markdown_table([stats], [("requests", "requests"), ("errors", "errors"), ("predictions_per_s", "predictions/s"),
                                   ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]))
    print(f"\nkill -9 during an update (version {report.killed_version}, update running: {report.killed_updating}): "
          f"{report.acknowledged} feedback items acknowledged, {len(report.missing)} missing and "
          f"{len(report.corrupted)} altered after the restart; watermark {report.watermark} >= largest acknowledged id "
          f"{report.max_acknowledged}: {report.watermark >= report.max_acknowledged}; restored from checkpoint: "
          f"{report.restored}; accuracy of the restarted model on them {100 * report.accuracy_on_acknowledged:.1f}%; "
          f"caught up {report.recovery_seconds:.1f} s after the restart")
    out.update(service=stats, crash=report)


def bench_clip(out: dict) -> None:
    from ..models import load_clip
    from .clip_incremental import compare_methods, concept_data

    model, _, tok = load_clip("tiny")
    steps = course_config.pick(quick=80, full=400)
    trainable = course_config.pick(quick="text", full="all")
    data = concept_data(n_train=course_config.pick(quick=1500, full=4000), n_test=course_config.pick(quick=300, full=1000),
                        n_replay=course_config.pick(quick=300, full=1000))
    rows, _ = compare_methods(model, tok, data, steps=steps, trainable=trainable, lr=2e-3 if trainable == "text" else 5e-4)
    print(f"\n## Tiny CLIP learns orange, pink, diamond, ring ({steps} steps, trainable: {trainable})\n")
    print(markdown_table(rows, [("method", "method"), ("new", "new concepts % (48-way)"), ("old", "old classes % (24-way)"),
                                ("old48", "old classes % (48-way)"), ("seconds", "train s")]))
    out["clip"] = rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.bench continual", description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--profile", choices=["quick", "full"], default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..n-1)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per task")
    p.add_argument("--hidden", type=int, default=None, help="hidden units per layer")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: these networks are tiny; 0 = torch's choice)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the strategy grid (one torch thread each); 0 = one per core (max 4)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.profile:
        import os
        os.environ["COURSE_PROFILE"] = args.profile
    proto = protocol()
    if args.seeds is not None:
        proto = replace(proto, seeds=tuple(range(args.seeds)))
    if args.iterations is not None:
        proto = replace(proto, iterations=args.iterations)
    if args.hidden is not None:
        proto = replace(proto, hidden=args.hidden)
    print(f"# Chapter 3 benchmarks — {course_config.describe()}")
    out: dict = {}
    t0 = time.perf_counter()
    if "strategies" in sections:
        bench_strategies(proto, out, args.workers if args.workers > 0 else default_workers())
    if "ewc" in sections:
        bench_ewc_step(proto, out)
    if "service" in sections:
        bench_service(out)
    if "clip" in sections:
        bench_clip(out)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0
