"""``python -m course_lib.bench multimodal``: the chapter's measured tables.

Sections (``--sections``, default all):

* ``sinkhorn``: course_lib's Sinkhorn (stabilised and plain log domain) against
  ``ot.sinkhorn(method="sinkhorn_log")`` on a 500x500 float64 problem: the largest
  difference between the plans and the speed ratio, timed side by side.
* ``retrieval``: tiny-CLIP recall@1/5/10 and mAP, text->image, image->text, image->image,
  on 1,000 held-out multi-object ShapeWorld scenes.
* ``ann``: the million-vector study (``--ann-size``, default 1,000,000): recall@10
  against exact search and queries per second (one thread) of IVF, HNSW, IVF-PQ and
  IVF-PQ + re-ranking, and the fastest index at recall@10 >= 0.95.
* ``fusion``: early / middle / late fusion trained on the same ShapeWorld VQA data with
  the same budget (:func:`~course_lib.multimodal.fusion.fusion_budget` of the profile):
  accuracy by question kind, parameters, latency; then a ladder on relation questions
  (exact positions, perfect object tokens, CLIP patch tokens).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

SECTIONS: tuple[str, ...] = ("sinkhorn", "retrieval", "ann", "fusion")


def _table(rows: list[dict], floatfmt: str = "{:.3f}") -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(c for r in rows for c in r))  # every key, in first-seen order
    cells = [[c for c in cols]] + [[floatfmt.format(r[c]) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
                                   for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sinkhorn_problem(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A float64 ``n x n`` problem: two 2-D Gaussian clouds, squared distances scaled to [0, 1],
    a random source histogram and a uniform target."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1.0
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    cost /= cost.max()
    a = rng.random(n) + 0.1
    return a / a.sum(), np.full(n, 1.0 / n), cost


def bench_sinkhorn(n: int = 500, regs: tuple[float, ...] = (0.05, 0.01, 0.001), repeats: int = 3,
                   methods: tuple[str, ...] = ("stabilized", "log")) -> list[dict]:
    """Agreement and speed of course_lib's Sinkhorn against POT's ``sinkhorn_log``."""
    import ot

    from .ot import sinkhorn

    a, b, cost = sinkhorn_problem(n)
    rows = []
    for reg in regs:
        def pot():
            return ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=1000, stopThr=1e-9, warn=False)

        def ours(method):
            return lambda: sinkhorn(a, b, cost, reg, num_iters=1000, tol=1e-9, method=method)

        plan_pot = pot()
        t_pot = min(_timed(pot) for _ in range(repeats))
        for method in methods:
            if method == "log" and reg < 0.01:
                continue  # hundreds of full log-sum-exp passes: slow, and the same iterates
            res = ours(method)()
            t = min(_timed(ours(method)) for _ in range(repeats if method == "stabilized" else 1))
            rows.append({"reg": reg, "method": method, "iters": res.n_iter,
                         "max|P-P_pot|": float(np.abs(res.plan.numpy() - plan_pot).max()),
                         "ms": 1e3 * t, "POT_ms": 1e3 * t_pot, "speed-up": t_pot / t})
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_retrieval(n: int = 1000) -> list[dict]:
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import load_clip
    from .retrieval import evaluate_retrieval

    model, _, tok = load_clip("tiny")
    batch = generate(n, split_seed("test", 0), ShapeWorldConfig(max_objects=3))
    return [r.as_row() for r in evaluate_retrieval(model, tok, batch)]


def bench_ann(size: int, n_real: int, n_queries: int, say=print) -> tuple[list[dict], dict]:
    from ..models import load_clip
    from .ann import ann_study, encode_real_embeddings, fastest_at_recall, fit_embedding_mixture

    model, _, tok = load_clip("tiny")
    t0 = time.perf_counter()
    real, queries, _ = encode_real_embeddings(model, tok, n_real, n_queries)
    mixture = fit_embedding_mixture(real, n_components=min(256, n_real // 40))
    base = mixture.sample(size, seed=1)
    say(f"gallery: {size:,} vectors synthesised from {n_real:,} real tiny-CLIP image embeddings "
        f"({len(mixture.weights)}-component Gaussian mixture), {n_queries} real caption queries "
        f"[{time.perf_counter() - t0:.0f} s]")
    points = ann_study(base, queries, progress=say)
    best = fastest_at_recall(points, 0.95)
    summary = {"size": size, "best": best.as_row() if best else None}
    return [p.as_row() for p in points], summary


def bench_fusion(n_train: int, n_test: int, steps: int, ladder_steps: int = 10_000) -> tuple[list[dict], list[dict]]:
    """``(families, ladder)``: the three fusion families trained with the profile's budget
    (``steps`` overrides its step count), and the relation-question ladder: majority answer,
    an MLP given the exact object positions, middle fusion given perfect object tokens,
    middle fusion given the CLIP patch tokens (both trained on relation questions only,
    ``ladder_steps`` steps of 32 at learning rate 1e-3), with their training accuracy."""
    import dataclasses

    from ..data import ShapeWorldConfig, ShapeWorldQADataset
    from ..models import load_clip
    from .fusion import (FusionConfig, TrainSettings, build_fusion_model, compare_fusion, evaluate_vqa,
                         fusion_budget, majority_baseline, train_vqa, vqa_features)
    from .probes import oracle_object_tokens, relation_oracle_features, train_mlp_probe

    model, _, tok = load_clip("tiny")
    cfg = ShapeWorldConfig(max_objects=3)
    budget = fusion_budget()
    settings = dataclasses.replace(budget.settings, steps=steps)
    data = {s: ShapeWorldQADataset(s, n, cfg) for s, n in (("train", n_train), ("test", n_test))}
    feats = {s: vqa_features(model, tok, d) for s, d in data.items()}
    runs = compare_fusion(feats["train"], feats["test"], settings, **budget.model)
    families = [{"fusion": kind, **run.as_row()} for kind, run in runs.items()]
    base = majority_baseline(feats["train"], feats["test"])
    families.insert(0, {"fusion": "majority answer", **base})

    ladder = [{"relation model": "majority answer", "accuracy": base["relation"]}]
    x, y = relation_oracle_features(data["train"])
    xt, yt = relation_oracle_features(data["test"])
    ladder.append({"relation model": "MLP on exact object positions", "accuracy": train_mlp_probe(x, y, xt, yt)})
    rel = {s: f.subset(["relation"]) for s, f in feats.items()}
    oracle = {s: dataclasses.replace(rel[s], image_tokens=oracle_object_tokens(data[s].batch)) for s in rel}
    for name, f in (("middle fusion, perfect object tokens", oracle), ("middle fusion, CLIP patch tokens", rel)):
        grid = (1, f["train"].image_tokens.shape[1] - 1) if f is oracle else (4, 4)
        net = build_fusion_model("middle", FusionConfig(**f["train"].config_dims, grid=grid, **budget.model))
        train_vqa(net, f["train"], TrainSettings(steps=ladder_steps, batch_size=32, lr=1e-3))
        ladder.append({"relation model": name, "accuracy": evaluate_vqa(net, f["test"]).accuracy,
                       "train accuracy": evaluate_vqa(net, f["train"]).accuracy})
    return families, ladder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.bench multimodal", description=__doc__.split("\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--ann-size", type=int, default=1_000_000, help="gallery size of the ANN study")
    p.add_argument("--ann-real", type=int, default=20_000, help="real images encoded to fit the mixture")
    p.add_argument("--ann-queries", type=int, default=500)
    p.add_argument("--fusion-steps", type=int, default=None, help="training steps (default: the profile's budget)")
    p.add_argument("--fusion-train", type=int, default=None, help="training images (default: the profile's budget)")
    p.add_argument("--ladder-steps", type=int, default=10_000, help="training steps of the relation ladder's models")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is faster for the small fusion models on a busy CPU)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}: expected some of {SECTIONS}")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if "sinkhorn" in sections:
        print("== Sinkhorn 500x500 float64 vs ot.sinkhorn(method='sinkhorn_log') (stopThr 1e-9, <= 1000 iterations)")
        print(_table(bench_sinkhorn(), "{:.3g}"), flush=True)
    if "retrieval" in sections:
        print("\n== Tiny CLIP retrieval on 1,000 held-out 1-3 object scenes")
        print(_table(bench_retrieval()), flush=True)
    if "ann" in sections:
        print(f"\n== ANN study: {args.ann_size:,} vectors, recall@10 vs exact flat search, single-thread QPS")
        rows, summary = bench_ann(args.ann_size, args.ann_real, args.ann_queries)
        print(_table(rows, "{:.3g}"))
        best = summary["best"]
        if best:
            print(f"fastest index at recall@10 >= 0.95: {best['index']} ({best['param']}): recall@10 "
                  f"{best['recall@10']:.3f}, {best['speed-up']:.1f}x faster than flat, {best['memory_MB']:.0f} MB")
        else:
            print("no approximate index reached recall@10 >= 0.95")
    if "fusion" in sections:
        from .fusion import fusion_budget

        budget = fusion_budget()
        n_train = args.fusion_train or budget.train_images
        steps = args.fusion_steps or budget.settings.steps
        print(f"\n== Fusion on ShapeWorld VQA ({n_train} training images, {steps} steps of "
              f"{budget.settings.batch_size} each, {budget.model})")
        families, ladder = bench_fusion(n_train, 1000, steps, args.ladder_steps)
        print(_table(families))
        print(f"\n== Relation questions: what is learnable (relation questions only, {args.ladder_steps} steps of 32)")
        print(_table(ladder), flush=True)
    return 0
