"""``python -m course_lib.bench continual``: the chapter's measured tables.

Sections (``--only`` picks some; all by default):

* ``strategies``: Split-Digits, every strategy in the task-, domain- and class-incremental
  scenarios, mean ± std over seeds, beside van de Ven & Tolias (2019); the ordering check,
  the replay / fine-tuning ratio (class) and the forgetting of progressive networks (task).
* ``ewc``: time of one EWC training step against a plain step, measured side by side.
* ``service``: predictions per second and p50/p99 latency with 50 concurrent clients, and
  the ``kill -9`` trial (acknowledged feedback lost or not learned after a restart).
* ``clip``: the tiny CLIP learning new concepts: fine-tuning vs replay vs distillation vs
  WiSE-FT, over ``--seeds`` seeds (data and batch order).
* ``selection``: the measured selection guide (:mod:`.selection`): every strategy that fits
  each memory budget (``--budgets``), per scenario, over the protocol's seeds.
* ``guard``: the online learner on a drifting stream with and without its replay + EWC
  guard (prequential accuracy of each phase and of its first 100 items), over ``--seeds``
  streams (:func:`.online.guard_trial`).

The profile (``--profile`` or ``COURSE_PROFILE``) picks the protocol; ``--seeds``,
``--iterations`` and ``--hidden`` override it. ``--write-results`` also writes each
section's figures to ``results/ch3_<section>[_<profile>].json`` with their provenance
(the exact command, profile, seeds, hardware, library versions; :mod:`course_lib.results`).
The commands behind the committed files::

    python -m course_lib.bench continual --only selection --write-results
    python -m course_lib.bench continual --only clip --seeds 3 --write-results
    python -m course_lib.bench continual --only guard --seeds 5 --write-results
    python -m course_lib.bench continual --only ewc,service --write-results
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from .. import config as course_config
from .experiments import default_workers, ewc_step_times, markdown_table, ordering_verdicts, protocol, run_grid, summary_rows

SECTIONS = ("strategies", "ewc", "service", "clip", "selection", "guard")


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
        print("\nthe ordering van de Ven & Tolias report, pair by pair (spread = std over seeds):")
        for v in ordering_verdicts(results, kind):
            print(f"* {v['worse']} < {v['better']}: {v['verdict']}. {v['sentence']}")
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


def bench_clip(out: dict, seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    from ..conclusions import compare
    from ..models import load_clip
    from .clip_incremental import compare_over_seeds

    model, _, tok = load_clip("tiny")
    steps = course_config.pick(quick=80, full=400)
    trainable = course_config.pick(quick="text", full="all")
    sizes = {"n_train": course_config.pick(quick=1500, full=4000), "n_test": course_config.pick(quick=300, full=1000),
             "n_replay": course_config.pick(quick=300, full=1000)}
    res = compare_over_seeds(model, tok, seeds, **sizes, steps=steps, trainable=trainable,
                             lr=2e-3 if trainable == "text" else 5e-4, batch_size=64)
    print(f"\n## Tiny CLIP learns orange, pink, diamond, ring ({steps} steps, trainable: {trainable}, "
          f"seeds {list(seeds)}: mean ± std)\n")
    print(markdown_table(res.rows(), [("method", "method"), ("new", "new concepts % (48-way)"), ("old", "old classes % (24-way)"),
                                      ("old48", "old classes % (48-way)")]))
    for key, what in (("new", "new-concept accuracy"), ("old", "old-class accuracy (24-way)"), ("old48", "old-class accuracy (48-way)")):
        trained = {m: v[key] for m, v in res.values.items() if m != "original"}
        print(f"* {compare(trained, digits=1, what=what + ' %').sentence}")
    out["clip"] = {"steps": steps, "trainable": trainable, **sizes, "batch_size": 64, "values": res.values,
                   "wise_alphas": res.wise_alphas, "train_seconds": res.seconds}


def bench_selection(proto, out: dict, budgets: tuple[int, ...], workers: int = 1) -> None:
    from .selection import SELECTION_COLUMNS, run_selection, selection_rows

    t0 = time.perf_counter()
    sel = run_selection(budgets=budgets, proto=proto, workers=workers)
    measured = sel.measured()
    rows = selection_rows(measured, "")
    print(f"\n## Selection guide: strategy per scenario and memory budget ({time.perf_counter() - t0:.0f} s)\n")
    print(markdown_table(rows, SELECTION_COLUMNS))
    print(f"\nMeasured under: {sel.conditions()}.")
    out["selection"] = {"conditions": sel.conditions(), "budgets": list(sel.budgets),
                        "protocol": {"hidden": proto.hidden, "iterations": proto.iterations, "batch_size": proto.batch_size,
                                     "lr": proto.lr, "seeds": list(proto.seeds), "ewc_lambda": proto.ewc_lambda,
                                     "lwf_temperature": proto.lwf_temperature, "lwf_weight": proto.lwf_weight,
                                     "progressive_hidden": proto.progressive_hidden},
                        "measured": measured}


def bench_guard(out: dict, seeds: tuple[int, ...]) -> None:
    from ..conclusions import compare

    phases = course_config.pick(quick=(("none", 500), ("mirror", 500), ("none", 250)),
                                full=(("none", 2000), ("mirror", 2000), ("none", 1000)))
    from .online import guard_figures, guard_trial

    per_seed = [guard_figures(guard_trial(s, phases)) for s in seeds]
    figures = {name: {key: [f[name][key] for f in per_seed] for key in per_seed[0][name]} for name in per_seed[0]}
    print(f"\n## Online learner on a drifting stream {[p for p in phases]}, {len(seeds)} streams\n")
    for k, (kind, _) in enumerate(phases):
        for key, what in ((f"phase{k}", f"phase {k} ({kind}) prequential accuracy"),
                          (f"phase{k}_first", f"phase {k} ({kind}), its first 100 items")):
            print(f"* {compare({n: v[key] for n, v in figures.items()}, digits=1, what=what + ' %').sentence}")
    out["guard"] = {"phases": [list(p) for p in phases], "every": 16, "steps_per_update": 20, "figures": figures}


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
    p.add_argument("--budgets", default="20,200", help="memory budgets (stored examples) of the selection guide")
    p.add_argument("--write-results", action="store_true",
                   help="write each section's figures to results/ch3_<section>[_<profile>].json with provenance")
    args = p.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else ["continual", *argv])
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
    out: dict = {"load_before": _load()}
    t0 = time.perf_counter()
    if "strategies" in sections:
        bench_strategies(proto, out, args.workers if args.workers > 0 else default_workers())
    if "ewc" in sections:
        bench_ewc_step(proto, out)
    if "service" in sections:
        bench_service(out)
    if "clip" in sections:
        bench_clip(out, tuple(range(args.seeds)) if args.seeds is not None else (0, 1, 2))
    if "selection" in sections:
        budgets = tuple(int(b) for b in args.budgets.split(",") if b.strip())
        bench_selection(proto, out, budgets, args.workers if args.workers > 0 else default_workers())
    if "guard" in sections:
        bench_guard(out, tuple(range(args.seeds)) if args.seeds is not None else (0, 1, 2, 3, 4))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    out["load_after"] = _load()
    if args.write_results:
        for path in write_section_results(out, f"python -m course_lib.bench {argv_text}", proto, args.seeds):
            print(f"wrote {path}")
    return 0


def _load() -> float | None:
    """The 1-minute load average (None where the OS does not report it)."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def write_section_results(out: dict, command: str, proto, n_seeds: int | None, folder=None) -> list:
    """Write ``results/ch3_<section>[_<profile>].json`` (or into ``folder``) for the sections that ran."""
    from dataclasses import asdict, is_dataclass

    from ..results import write_results

    profile = course_config.get_profile()
    paths = []
    if "selection" in out:
        paths.append(write_results(f"ch3_selection_{profile}", out["selection"], command, profile, proto.seeds, folder))
    if "clip" in out:
        seeds = list(range(n_seeds)) if n_seeds is not None else [0, 1, 2]
        paths.append(write_results(f"ch3_clip_{profile}", out["clip"], command, profile, seeds, folder))
    if "guard" in out:
        seeds = list(range(n_seeds)) if n_seeds is not None else [0, 1, 2, 3, 4]
        paths.append(write_results("ch3_online_guard", out["guard"], command, profile, seeds, folder))
    timing = {}
    if "ewc_step" in out:
        timing["ewc_step"] = out["ewc_step"]
    if "service" in out:
        crash = out["crash"]
        timing["service"] = {k: float(v) for k, v in out["service"].items()}
        timing["crash"] = {k: (len(v) if isinstance(v, list) else v) for k, v in
                           (asdict(crash).items() if is_dataclass(crash) else crash.items())}
    if timing:
        # timings depend on what else runs on the machine: record the 1-minute load average around the run
        timing["load_average_1min"] = {"before": out.get("load_before"), "after": out.get("load_after")}
        paths.append(write_results("ch3_timing", timing, command, profile, [0], folder))
    return paths
