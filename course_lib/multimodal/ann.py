"""Approximate nearest-neighbour search at scale: a recall-vs-speed study with FAISS.

A million ShapeWorld images would take a long time to draw and encode on a laptop CPU,
so the large gallery is *synthesised* from real tiny-CLIP embeddings:

1. encode a few thousand real ShapeWorld images with the tiny CLIP (``real``, ``[R, D]``);
2. fit a Gaussian mixture to them (:func:`fit_embedding_mixture`): k-means into ``C``
   components, then per component its weight, mean and a shrunk full covariance of the
   residuals (Ledoit-Wolf style ``(1 - s) Sigma + s tr(Sigma)/D I``);
3. draw ``N`` vectors from the mixture and L2-normalise them (:meth:`EmbeddingMixture.sample`).

The result has the real clusters, their sizes and their local shape (covariance), so
index behaviour (cell occupancy, graph connectivity, quantisation error) matches that of
real embeddings; :func:`neighbor_profile` compares the two at equal size.

Queries are real text embeddings (captions) searched against the image gallery; the
ground truth is exact flat search; speed is queries per second of one batched search.

The full-size study writes a committed results file (see :func:`main`)::

    python -m course_lib.multimodal.ann --size 1000000 --write ch2_ann_1m

Notebook 2.4 runs the same study at the quick profile's size and prints the committed
figures beside its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np
import torch

from ._checks import as_tensor, check_matrix
from .retrieval import (
    _as_float32,
    build_index,
    faiss_threads,
    index_memory_bytes,
    neighbor_recall,
    search,
    set_search_params,
)


@dataclass
class EmbeddingMixture:
    """A Gaussian mixture over embedding space: ``weights [C]``, ``means [C, D]``,
    ``chol [C, D, D]`` (lower Cholesky factors of the component covariances)."""

    weights: np.ndarray
    means: np.ndarray
    chol: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, seed: int = 0, chunk: int = 200_000) -> np.ndarray:
        """``n`` L2-normalised float32 vectors ``[n, D]``, deterministic from ``seed``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=int(n), p=self.weights)
        out = np.empty((int(n), self.dim), dtype=np.float32)
        for start in range(0, int(n), chunk):
            sl = slice(start, min(int(n), start + chunk))
            c = comp[sl]
            z = rng.standard_normal((len(c), self.dim)).astype(np.float32)
            out[sl] = self.means[c] + np.einsum("nij,nj->ni", self.chol[c], z, optimize=True)
        faiss.normalize_L2(out)
        return out


def fit_embedding_mixture(real: torch.Tensor | np.ndarray, n_components: int = 128, shrinkage: float = 0.1,
                          seed: int = 0) -> EmbeddingMixture:
    """Fit the mixture of the module doc to real embeddings ``[R, D]`` (R >= 2 * n_components)."""
    x = _as_float32(real, "real")
    r, d = x.shape
    if n_components < 1 or r < 2 * n_components:
        raise ValueError(f"need at least 2 real vectors per component: {r} vectors, {n_components} components")
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    km = faiss.Kmeans(d, n_components, niter=25, seed=seed, spherical=False, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)
    labels = labels[:, 0]
    counts = np.bincount(labels, minlength=n_components).astype(np.float64)
    means = np.zeros((n_components, d), dtype=np.float32)
    chol = np.zeros((n_components, d, d), dtype=np.float32)
    global_cov = np.cov(x.T)
    for c in range(n_components):
        members = x[labels == c]
        if len(members) == 0:
            means[c] = km.centroids[c]
            cov = 0.01 * global_cov
        else:
            means[c] = members.mean(0)
            cov = np.cov(members.T) if len(members) > 1 else 0.01 * global_cov
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
        chol[c] = np.linalg.cholesky(cov + 1e-9 * np.eye(d))
    return EmbeddingMixture(weights=counts / counts.sum(), means=means, chol=chol)


def neighbor_profile(base: np.ndarray, queries: np.ndarray, k: int = 10) -> dict[str, float]:
    """Summary of the exact k-NN similarities of ``queries`` in ``base``: the mean cosine of
    the 1st and k-th neighbour and the mean gap between them (a small gap = a hard problem)."""
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(_as_float32(base, "base"))
    scores, _ = search(index, queries, k)
    return {"top1": float(scores[:, 0].mean()), f"top{k}": float(scores[:, -1].mean()),
            "gap": float((scores[:, 0] - scores[:, -1]).mean())}


@dataclass
class AnnPoint:
    """One measured operating point of an index."""

    kind: str
    param: str
    value: float
    recall: float
    qps: float
    speedup: float
    build_s: float
    memory_mb: float
    qps_runs: tuple[float, ...] = field(default=())  # QPS of every timed repeat (``qps`` is the best)

    @property
    def label(self) -> str:
        """E.g. ``"ivf nprobe=8"`` or ``"flat"``."""
        return f"{self.kind} {self.param}={self.value:g}" if self.param else self.kind

    def as_row(self) -> dict[str, Any]:
        return {"index": self.kind, "param": f"{self.param}={self.value:g}" if self.param else "-",
                "recall@10": self.recall, "QPS": self.qps, "speed-up": self.speedup,
                "build_s": self.build_s, "memory_MB": self.memory_mb}

    def as_record(self) -> dict[str, Any]:
        """Every field, JSON-ready (the form stored in a results file; see :func:`point_from_record`)."""
        return {"kind": self.kind, "param": self.param, "value": self.value, "recall": self.recall,
                "qps": self.qps, "speedup": self.speedup, "build_s": self.build_s, "memory_mb": self.memory_mb,
                "qps_runs": list(self.qps_runs)}


def point_from_record(record: dict[str, Any]) -> AnnPoint:
    """The inverse of :meth:`AnnPoint.as_record`."""
    return AnnPoint(**{**record, "qps_runs": tuple(record.get("qps_runs", ()))})


def time_search_runs(index: faiss.Index, queries: np.ndarray, k: int,
                     repeats: int = 3) -> tuple[list[float], np.ndarray]:
    """Wall time (s) of each of ``repeats`` batched searches, and the ids the last returned."""
    times, ids = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        times.append(time.perf_counter() - t0)
    return times, ids


def time_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` wall time (s) of one batched search, and the ids it returned."""
    times, ids = time_search_runs(index, queries, k, repeats)
    return min(times), ids


DEFAULT_SWEEPS: dict[str, tuple[str, Sequence[float]]] = {
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32)),
    "hnsw": ("ef_search", (8, 16, 32, 64, 128)),
    "ivfpq": ("nprobe", (4, 16, 64)),
    "ivfpq_refine": ("nprobe", (4, 8, 16, 32)),
}

#: :func:`build_index` arguments of the study (notebook 2.4 and :func:`main`); the other
#: arguments keep :func:`build_index`'s defaults (IVF ``nlist`` = :func:`default_nlist`,
#: PQ 8 bits, HNSW ``ef_construction`` 40, refine ``k_factor`` 4).
STUDY_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "hnsw": {"hnsw_m": 16},
    "ivfpq": {"pq_m": 16},
    "ivfpq_refine": {"pq_m": 16},
}


def ann_study(
    base: np.ndarray,
    queries: np.ndarray,
    kinds: Sequence[str] = ("ivf", "hnsw", "ivfpq", "ivfpq_refine"),
    k: int = 10,
    sweeps: dict[str, tuple[str, Sequence[float]]] | None = None,
    index_params: dict[str, dict[str, Any]] | None = None,
    num_threads: int | None = 1,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
    build_threads: int | None | str = "same",
) -> list[AnnPoint]:
    """Recall@k against exact search and queries/second for each index and knob value.

    Args:
        base: ``[N, D]`` gallery (normalised inside); queries: ``[Q, D]``.
        kinds: approximate indexes to build (the flat baseline is always measured first).
        sweeps: ``{kind: (knob, values)}``, default :data:`DEFAULT_SWEEPS`.
        index_params: extra :func:`build_index` arguments per kind.
        num_threads: FAISS threads during the timings (1 = single-thread QPS as in
            ann-benchmarks; ``None`` leaves FAISS's setting alone). Restored afterwards.
        repeats: timed searches per point (the best is ``qps``; all are in ``qps_runs``).
        build_threads: FAISS threads while building the indexes: ``"same"`` (default) as
            ``num_threads`` (one thread: builds, and so recalls, are reproducible run to
            run), ``None`` FAISS's default (all cores: faster, but a multi-threaded HNSW
            build inserts in a varying order, so its recall varies slightly run to run).

    When "ivfpq" and "ivfpq_refine" share their build arguments, one IVF-PQ index is built
    and trained once: plain IVF-PQ is measured on the refine index's base (same codes,
    same recall as a separate build), and both rows report that build's time.

    Returns:
        A list of :class:`AnnPoint`; the first is the flat index (recall 1, speed-up 1).
    """
    xb = _as_float32(base, "base")
    xq = _as_float32(queries, "queries")
    if xb.shape[1] != xq.shape[1]:
        raise ValueError(f"embedding dimensions differ: base D={xb.shape[1]}, queries D={xq.shape[1]}")
    if xb.shape[0] < k:
        raise ValueError(f"k={k} is larger than the gallery ({xb.shape[0]} vectors)")
    sweeps = {**DEFAULT_SWEEPS, **(sweeps or {})}
    index_params = index_params or {}
    say = progress or (lambda _msg: None)
    if isinstance(build_threads, str) and build_threads != "same":
        raise ValueError(f"build_threads must be an int, None or 'same', got {build_threads!r}")
    build_with = num_threads if build_threads == "same" else build_threads
    points: list[AnnPoint] = []

    def measure(index: faiss.Index, kind: str, knob: str, value: float, truth: np.ndarray | None,
                flat_s: float | None, build: float, mem: float) -> tuple[AnnPoint, np.ndarray]:
        with faiss_threads(num_threads):
            times, ids = time_search_runs(index, xq, k, repeats)
        best = min(times)
        recall = 1.0 if truth is None else neighbor_recall(ids, truth, k)
        speedup = 1.0 if flat_s is None else flat_s / best
        return AnnPoint(kind, knob, float(value), recall, len(xq) / best, speedup, build, mem,
                        tuple(len(xq) / t for t in times)), ids

    with faiss_threads(build_with):
        t0 = time.perf_counter()
        flat = build_index(xb, "flat")
        build = time.perf_counter() - t0
    flat_point, truth = measure(flat, "flat", "", 0, None, None, build, index_memory_bytes(flat) / 1e6)
    flat_s = len(xq) / flat_point.qps
    points.append(flat_point)
    say(f"flat: {flat_point.qps:,.0f} QPS")
    del flat
    shared_refine: tuple[faiss.Index, float] | None = None
    for kind in kinds:
        if kind not in sweeps:
            raise ValueError(f"no sweep defined for index kind {kind!r}")
        if kind == "ivfpq_refine" and shared_refine is not None:
            index, build = shared_refine
        else:
            share = kind == "ivfpq" and "ivfpq_refine" in kinds and _same_pq(index_params)
            with faiss_threads(build_with):
                t0 = time.perf_counter()
                index = build_index(xb, "ivfpq_refine" if share else kind, **index_params.get(kind, {}))
                build = time.perf_counter() - t0
            if share:  # one build serves both: plain IVF-PQ is the refine index's base
                shared_refine = (index, build)
                index = faiss.downcast_index(index.base_index)
        mem = index_memory_bytes(index) / 1e6
        knob, values = sweeps[kind]
        for value in values:
            if knob == "nprobe":
                nlist = faiss.try_extract_index_ivf(
                    faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index).nlist
                if value > nlist:
                    continue
            set_search_params(index, **{knob: value})
            point, _ = measure(index, kind, knob, value, truth, flat_s, build, mem)
            points.append(point)
        say(f"{kind}: built in {build:.1f} s, {mem:.1f} MB")
        del index
    return points


def _same_pq(index_params: dict[str, dict[str, Any]]) -> bool:
    """Whether "ivfpq" and "ivfpq_refine" have the same build arguments (``k_factor`` aside)."""
    strip = lambda d: {k: v for k, v in d.items() if k != "k_factor"}  # noqa: E731
    return strip(index_params.get("ivfpq", {})) == strip(index_params.get("ivfpq_refine", {}))


def fastest_at_recall(points: Sequence[AnnPoint], target: float = 0.95) -> AnnPoint | None:
    """The approximate operating point with the highest QPS among those with recall >= target."""
    ok = [p for p in points if p.kind != "flat" and p.recall >= target]
    return max(ok, key=lambda p: p.qps) if ok else None


def cached_array(path: str | Path | None, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``path`` (``.npy``) if it exists, else ``make()`` and save it there (``None``: no cache)."""
    if path is None:
        return make()
    path = Path(path)
    if path.exists():
        return np.load(path)
    arr = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)
    return arr


def encode_real_embeddings(model: torch.nn.Module, tokenizer: Callable, n_images: int, n_queries: int,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Real tiny-CLIP embeddings of ShapeWorld (1-3 objects): ``n_images`` image vectors
    (the mixture's data) and ``n_queries`` caption vectors of *other* images (the queries)."""
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import encode_images, encode_texts

    cfg = ShapeWorldConfig(max_objects=3)
    gallery = generate(n_images, split_seed("train", seed + 100), cfg)
    held_out = generate(n_queries, split_seed("test", seed + 100), cfg)
    img = encode_images(model, gallery.images).numpy()
    txt = encode_texts(model, tokenizer, held_out.captions).numpy()
    return img, txt, held_out.captions


def fastest_per_family(points: Sequence[AnnPoint], target: float = 0.95) -> dict[str, AnnPoint]:
    """For each approximate index kind, its fastest operating point with recall >= ``target``
    (kinds that never reach it are absent), in the order the kinds were measured."""
    best: dict[str, AnnPoint] = {}
    for p in points:
        if p.kind != "flat" and p.recall >= target and (p.kind not in best or p.qps > best[p.kind].qps):
            best[p.kind] = p
    return best


def family_summary(points: Sequence[AnnPoint], size: int, target: float = 0.95) -> list[dict[str, Any]]:
    """One row per approximate index kind, for a selection table: the fastest operating point
    with recall >= ``target`` (``None`` if no knob value reached it), the best recall any knob
    reached, bytes per vector of a gallery of ``size`` vectors, and the build time (s)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    fastest = fastest_per_family(points, target)
    rows = []
    for kind in dict.fromkeys(p.kind for p in points if p.kind != "flat"):
        mine = [p for p in points if p.kind == kind]
        rows.append({"kind": kind, "at_target": fastest.get(kind), "best_recall": max(p.recall for p in mine),
                     "bytes_per_vector": mine[0].memory_mb * 1e6 / size, "build_s": mine[0].build_s})
    return rows


def compare_at_recall(points: Sequence[AnnPoint], target: float = 0.95):
    """:func:`~course_lib.conclusions.compare` of the two index kinds that are fastest at
    recall >= ``target`` (each at its fastest such knob), on the QPS of every timed repeat;
    ``None`` when fewer than two kinds reach ``target``."""
    from ..conclusions import compare

    best = fastest_per_family(points, target)
    if len(best) < 2:
        return None
    c = compare({p.label: list(p.qps_runs) or [p.qps] for p in best.values()}, higher_is_better=True, digits=0,
                unit=" QPS", what=f"at recall@10 >= {target:g}")
    # the series are timed repeats of one search, not training seeds: say so in the sentence
    sentence = c.sentence.replace(" seeds each)", " timed repeats each)").replace("spread over seeds",
                                                                                  "spread over timed repeats")
    return dataclasses.replace(c, sentence=sentence)


def real_embeddings(model: torch.nn.Module, tokenizer: Callable, n_images: int, n_queries: int,
                    cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(real [n_images, D], queries [n_queries, D])`` from :func:`encode_real_embeddings`,
    cached under ``cache_dir`` in a file keyed by the model's weights
    (:func:`~course_lib.models.model_fingerprint`), so a retrained model never reads another
    model's embeddings. ``cache_dir=None``: no cache."""
    from ..models import model_fingerprint

    def make() -> np.ndarray:
        img, txt, _ = encode_real_embeddings(model, tokenizer, n_images, n_queries)
        return np.concatenate([img, txt])

    path = None if cache_dir is None else \
        Path(cache_dir) / f"ch2_real_embeddings_{model_fingerprint(model)}_{n_images}_{n_queries}.npy"
    both = cached_array(path, make)
    return both[:n_images], both[n_images:]


def scaling_study(size: int, n_real: int = 20_000, n_queries: int = 500, n_components: int = 256,
                  index_params: dict[str, dict[str, Any]] | None = None, build_threads: int | None | str = None,
                  repeats: int = 3, cache_dir: str | Path | None = "cache",
                  progress: Callable[[str], None] | None = print,
                  kinds: Sequence[str] = ("ivf", "hnsw", "ivfpq", "ivfpq_refine")) -> dict[str, Any]:
    """The whole study at one gallery size, as JSON-ready figures (what :func:`main` writes).

    Encodes ``n_real`` real images and ``n_queries`` real captions with the tiny CLIP, fits a
    ``n_components`` mixture (seed 0), samples ``size`` vectors (seed 1), compares neighbour
    profiles of real and synthetic vectors at equal size (``n_real // 2``), then runs
    :func:`ann_study` (one FAISS thread for the timed searches).

    Returns:
        ``{"size", "n_real", "n_queries", "n_components", "index_params", "nlist",
        "build_threads", "repeats", "neighbor_profile": {"real", "synthetic"},
        "points": [AnnPoint.as_record()], "seconds"}``.
    """
    from ..models import load_clip
    from .retrieval import default_nlist

    say = progress or (lambda _msg: None)
    params = {kind: dict(v) for kind, v in (index_params or STUDY_INDEX_PARAMS).items()}
    t0 = time.perf_counter()
    model, _, tokenizer = load_clip("tiny")
    real, queries = real_embeddings(model, tokenizer, n_real, n_queries, cache_dir)
    mixture = fit_embedding_mixture(real, n_components=n_components, seed=0)
    base = mixture.sample(size, seed=1)
    half = n_real // 2
    profile = {"real": neighbor_profile(real[:half], queries, k=10),
               "synthetic": neighbor_profile(base[:half], queries, k=10)}
    say(f"gallery: {size:,} vectors synthesised from {n_real:,} real tiny-CLIP image embeddings "
        f"({n_components}-component mixture), {n_queries} real caption queries [{time.perf_counter() - t0:.0f} s]")
    points = ann_study(base, queries, kinds=kinds, index_params=params, num_threads=1, repeats=repeats, progress=say,
                       build_threads=build_threads)
    return {"size": int(size), "n_real": int(n_real), "n_queries": int(n_queries), "n_components": int(n_components),
            "index_params": params, "nlist": default_nlist(size),
            "build_threads": "all cores" if build_threads is None else build_threads,
            "repeats": int(repeats), "neighbor_profile": profile, "points": [p.as_record() for p in points],
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.multimodal.ann``: run :func:`scaling_study`, print its table and,
    with ``--write NAME``, write ``results/NAME.json`` with its provenance."""
    from ..results import write_results

    p = argparse.ArgumentParser(prog="python -m course_lib.multimodal.ann", description=main.__doc__.split(":")[0])
    p.add_argument("--size", type=int, default=1_000_000, help="gallery size N")
    p.add_argument("--real", type=int, default=20_000, help="real images encoded to fit the mixture")
    p.add_argument("--queries", type=int, default=500, help="real caption queries")
    p.add_argument("--components", type=int, default=256, help="mixture components")
    p.add_argument("--repeats", type=int, default=3, help="timed searches per operating point")
    p.add_argument("--build-threads", type=int, default=None,
                   help="FAISS threads for building the indexes (default: all cores); searches use one")
    p.add_argument("--cache", default="cache", help="folder caching the real embeddings ('' = no cache)")
    p.add_argument("--write", metavar="NAME", default=None, help="write results/NAME.json")
    args = p.parse_args(argv)
    for name in ("size", "real", "queries", "components", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    figures = scaling_study(args.size, args.real, args.queries, args.components, build_threads=args.build_threads,
                            repeats=args.repeats, cache_dir=args.cache or None)
    points = [point_from_record(r) for r in figures["points"]]
    print(f"{'index':<13} {'knob':<13} {'recall@10':>9} {'QPS':>9} {'speed-up':>9} {'build s':>8} {'MB':>7}")
    for pt in points:
        r = pt.as_row()
        print(f"{r['index']:<13} {r['param']:<13} {r['recall@10']:>9.3f} {r['QPS']:>9.0f} {r['speed-up']:>8.1f}x "
              f"{r['build_s']:>8.1f} {r['memory_MB']:>7.1f}")
    best = fastest_at_recall(points, 0.95)
    print("fastest at recall@10 >= 0.95:", best.label if best else "none")
    if args.write:
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        path = write_results(args.write, figures, command=f"python -m course_lib.multimodal.ann {argv_text}".strip(),
                             profile="full" if args.size >= 1_000_000 else "quick", seeds=[0, 1])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
