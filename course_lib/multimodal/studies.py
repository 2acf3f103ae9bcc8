"""Seeded and full-size runs behind the committed figures of notebooks 2.1-2.3.

One command per results file (each records its command, profile, seeds, hardware and
library versions; see :mod:`course_lib.results`)::

    python -m course_lib.multimodal.studies alignment --seeds 0 1 2 --write ch2_alignment
    python -m course_lib.multimodal.studies retrieval --scenes 1000 5000 --write ch2_retrieval
    python -m course_lib.multimodal.studies sinkhorn --runs 3 --write ch2_sinkhorn

(The million-vector study of notebook 2.4 is ``python -m course_lib.multimodal.ann``.)

* :func:`lit_seeds`: LiT with InfoNCE and with SigLIP (notebook 2.1's budget), one run
  per seed: final retrieval, hard-negative accuracy, geometry and temperature.
* :func:`matching_seeds`: the cross-attention ITM head of notebook 2.1 trained with
  several seeds, against the tiny CLIP's dot product, on the same hard negatives.
* :func:`retrieval_figures`: tiny-CLIP recall@K / mAP / chance recall in three directions
  at several gallery sizes (notebook 2.3: 1,000 scenes quick, 5,000 full).
* :func:`sinkhorn_runs`: repeated course_lib vs POT Sinkhorn timings (notebook 2.2), so
  a speed-up is quoted as the range over runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["lit_seeds", "matching_seeds", "noun_localisation", "retrieval_figures", "sinkhorn_runs", "main"]

LIT_METRICS: tuple[str, ...] = ("t2i_R@1", "i2t_R@1", "hard_negative_acc", "alignment", "uniformity_image",
                                "modality_gap")


def lit_seeds(train: Any, test: Any, vocab_size: int, steps: int, seeds: Sequence[int],
              kinds: Sequence[str] = ("infonce", "siglip"), batch_size: int = 256) -> dict[str, dict[str, list[float]]]:
    """``{kind: {metric: [one value per seed]}}`` after ``steps`` LiT steps
    (:func:`~course_lib.multimodal.contrastive.train_dual_encoder`, the same call as
    notebook 2.1), metrics :data:`LIT_METRICS` on ``test`` and the final ``temperature``."""
    from .contrastive import evaluate_dual_encoder, train_dual_encoder
    from .losses import ContrastiveLoss

    if not seeds:
        raise ValueError("give at least one seed")
    out: dict[str, dict[str, list[float]]] = {}
    for kind in kinds:
        per: dict[str, list[float]] = {m: [] for m in (*LIT_METRICS, "temperature")}
        for seed in seeds:
            loss = ContrastiveLoss(kind)
            net, hist = train_dual_encoder(train, loss, vocab_size, steps=steps, batch_size=batch_size, seed=int(seed))
            final = evaluate_dual_encoder(net, test)
            for m in LIT_METRICS:
                per[m].append(float(final[m]))
            per["temperature"].append(float(hist["temperature"][-1]))
        out[kind] = per
    return out


@torch.no_grad()
def noun_localisation(head: torch.nn.Module, features: Any, batch: Any) -> tuple[float, int, torch.Tensor]:
    """Where an ITM head's object nouns look: the share of nouns whose most-attended patch
    (last cross-attention layer, mean over heads) is the patch holding that object's centre.

    Args:
        head: a :class:`~course_lib.multimodal.heads.MatchingHead` over ``g x g`` patches.
        features: its :class:`~course_lib.multimodal.heads.MatchingFeatures` of ``batch``.
        batch: the ShapeWorld batch (captions, object shapes and centres in pixels).

    Returns:
        ``(accuracy, number of nouns, maps [N, L, P])``; chance is ``1 / P``.
    """
    _, maps = head(features.image, features.positive, features.positive_mask, return_attention=True)
    maps = maps[-1][:, :, 1:]                               # [N, L, P] over patches (class token dropped)
    grid = int(round(maps.shape[-1] ** 0.5))
    if grid * grid != maps.shape[-1]:
        raise ValueError(f"expected a square patch grid, got {maps.shape[-1]} patches")
    patch = batch.images.shape[1] // grid
    hits = total = 0
    for i in range(len(batch)):
        words = ["<sot>"] + batch.captions[i].split()
        for obj, shape in enumerate(batch.shape_names(i)):
            cx, cy = batch.centers[i, obj]
            target = int(cy // patch) * grid + int(cx // patch)
            pos = words.index(shape)
            hits += int(maps[i, pos].argmax()) == target
            total += 1
    if total == 0:
        raise ValueError("the batch has no objects")
    return hits / total, total, maps


def matching_seeds(model: torch.nn.Module, tokenizer: Callable, train_batch: Any, test_batch: Any, steps: int,
                   seeds: Sequence[int], batch_size: int = 64) -> dict[str, Any]:
    """The ITM head of notebook 2.1 (:class:`~course_lib.multimodal.heads.MatchingHead`, width
    64, 4 heads, one layer) trained once per seed, and the tiny CLIP's dot product, scored on
    the hard negatives of ``test_batch`` (a caption beats its negative).

    Returns:
        ``{"kinds": [kind names], "counts": {kind: n}, "dot": {kind or "all": accuracy},
        "itm": {kind or "all": [accuracy per seed]}, "localisation": [per seed], "nouns": n,
        "localisation_chance": 1 / P (see :func:`noun_localisation`), "heads": [the trained heads],
        "maps": [attention maps per seed], "features": the test MatchingFeatures}`` (``heads``,
        ``maps`` and ``features`` are for plots; they are not JSON).
    """
    from ..models import encode_images, encode_texts
    from .heads import MatchingHead, matching_features, matching_scores, train_matching_head

    if not seeds:
        raise ValueError("give at least one seed")
    tr, te = matching_features(model, tokenizer, train_batch), matching_features(model, tokenizer, test_batch)
    kinds = np.asarray(test_batch.negative_kinds)
    names = sorted(set(kinds.tolist()))
    img = encode_images(model, test_batch.images)
    dot_pos = (img * encode_texts(model, tokenizer, test_batch.captions)).sum(1)
    dot_neg = (img * encode_texts(model, tokenizer, test_batch.negatives)).sum(1)

    def by_kind(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
        win = (pos > neg).float()
        acc = {k: float(win[torch.from_numpy(kinds == k)].mean()) for k in names}
        acc["all"] = float(win.mean())
        return acc

    itm: dict[str, list[float]] = {k: [] for k in (*names, "all")}
    heads, localisation, maps = [], [], []
    for seed in seeds:
        torch.manual_seed(int(seed))
        head = MatchingHead(tr.image.shape[-1], tr.positive.shape[-1], dim=64, heads=4, layers=1)
        train_matching_head(head, tr, steps=steps, batch_size=batch_size, seed=int(seed))
        for k, v in by_kind(*matching_scores(head, te)).items():
            itm[k].append(v)
        acc, nouns, seed_maps = noun_localisation(head, te, test_batch)
        localisation.append(acc)
        maps.append(seed_maps)
        heads.append(head)
    return {"kinds": names, "counts": {k: int((kinds == k).sum()) for k in names}, "dot": by_kind(dot_pos, dot_neg),
            "itm": itm, "localisation": localisation, "nouns": nouns, "localisation_chance": 1 / maps[0].shape[-1],
            "heads": heads, "maps": maps, "features": te}


def retrieval_figures(sizes: Sequence[int]) -> dict[str, Any]:
    """Tiny-CLIP retrieval on ``n`` held-out 1-3 object scenes for each ``n`` in ``sizes``
    (the scenes of notebook 2.3): ``{str(n): {"rows": [RetrievalReport as a row with
    chance_R@K], "top1_misses": top1_misses(...)}}``."""
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import encode_images, encode_texts, load_clip
    from .retrieval import evaluate_directions, scene_keys, top1_misses

    model, _, tokenizer = load_clip("tiny")
    out: dict[str, Any] = {}
    for n in sizes:
        batch = generate(int(n), split_seed("test", 0), ShapeWorldConfig(max_objects=3))
        img, txt, keys = encode_images(model, batch.images), encode_texts(model, tokenizer, batch.captions), scene_keys(batch)
        rows = []
        for rep in evaluate_directions(img, txt, batch.captions, keys, ks=(1, 5, 10)):
            row = rep.as_row()
            row.update({f"chance_R@{k}": v for k, v in rep.chance.items()})
            rows.append(row)
        out[str(int(n))] = {"rows": rows, "top1_misses": top1_misses(img, txt, batch.captions, keys)}
    return out


def sinkhorn_runs(runs: int = 3, n: int = 500, regs: Sequence[float] = (0.05, 0.01, 0.001)) -> dict[str, Any]:
    """:func:`~course_lib.multimodal.bench.bench_sinkhorn` (stabilised method, best of 3 per
    run) repeated ``runs`` times: per ``reg`` the iterations, the largest plan difference to
    POT and, per run, course_lib ms, POT ms and the speed-up (``torch_threads``: the torch
    threads course_lib ran with; POT runs in NumPy)."""
    from .bench import bench_sinkhorn

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    table: dict[str, dict[str, Any]] = {}
    for _ in range(runs):
        for row in bench_sinkhorn(n=n, regs=tuple(regs), repeats=3, methods=("stabilized",)):
            entry = table.setdefault(f"{row['reg']:g}", {"reg": row["reg"], "iters": row["iters"],
                                                        "max_abs_diff": 0.0, "ms": [], "pot_ms": [], "speedup": []})
            entry["max_abs_diff"] = max(entry["max_abs_diff"], row["max|P-P_pot|"])
            entry["ms"].append(row["ms"])
            entry["pot_ms"].append(row["POT_ms"])
            entry["speedup"].append(row["speed-up"])
    return {"n": n, "runs": runs, "method": "stabilized", "torch_threads": torch.get_num_threads(),
            "rows": list(table.values())}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.multimodal.studies {alignment,retrieval,sinkhorn} [--write NAME]``."""
    from ..config import pick
    from ..results import write_results

    p = argparse.ArgumentParser(prog="python -m course_lib.multimodal.studies",
                                description="seeded and full-size runs behind notebooks 2.1-2.3")
    sub = p.add_subparsers(dest="study", required=True)
    a = sub.add_parser("alignment", help="LiT InfoNCE vs SigLIP and ITM head vs dot product, one run per seed")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r = sub.add_parser("retrieval", help="tiny-CLIP retrieval at several gallery sizes")
    r.add_argument("--scenes", type=int, nargs="+", default=[1000, 5000])
    s = sub.add_parser("sinkhorn", help="course_lib vs POT Sinkhorn, repeated timings")
    s.add_argument("--runs", type=int, default=3)
    for q in (a, r, s):
        q.add_argument("--write", metavar="NAME", default=None, help="write results/NAME.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the notebooks: small models, steadier on a shared CPU
    seeds: list[int] = [0]
    profile = "quick"
    if args.study == "alignment":
        from ..data import ShapeWorldConfig, generate, split_seed
        from ..models import load_clip
        from .contrastive import lit_data

        seeds = list(args.seeds)
        model, _, tokenizer = load_clip("tiny")
        n_train, steps = pick(quick=3_000, full=30_000), pick(quick=150, full=2_000)
        n_itm = pick(quick=2_000, full=20_000)
        train, test = lit_data(model, tokenizer, n_train)
        lit = lit_seeds(train, test, tokenizer.vocab_size, steps, seeds)
        itm_train = generate(n_itm, split_seed("train", 5), ShapeWorldConfig(max_objects=3))
        itm_test = generate(500, split_seed("test", 5), ShapeWorldConfig(max_objects=3))
        match = matching_seeds(model, tokenizer, itm_train, itm_test, steps, seeds)
        figures = {"lit": {"train_pairs": n_train, "test_pairs": len(test), "steps": steps, "batch_size": 256,
                           "runs": lit},
                   "matching": {"train_scenes": n_itm, "test_scenes": 500, "steps": steps, "batch_size": 64,
                                **{k: match[k] for k in ("kinds", "counts", "dot", "itm", "localisation", "nouns",
                                                         "localisation_chance")}}}
        from ..config import get_profile
        profile = get_profile()
    elif args.study == "retrieval":
        figures = retrieval_figures(args.scenes)
        profile = "full" if max(args.scenes) >= 5000 else "quick"
    else:
        figures = sinkhorn_runs(args.runs)
    print(figures)
    if args.write:
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        prefix = f"COURSE_PROFILE={profile} " if args.study == "alignment" else ""
        path = write_results(args.write, figures, command=f"{prefix}python -m course_lib.multimodal.studies {argv_text}",
                             profile=profile, seeds=seeds)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
