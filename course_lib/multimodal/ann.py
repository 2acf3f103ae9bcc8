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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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

    def as_row(self) -> dict[str, Any]:
        return {"index": self.kind, "param": f"{self.param}={self.value:g}" if self.param else "-",
                "recall@10": self.recall, "QPS": self.qps, "speed-up": self.speedup,
                "build_s": self.build_s, "memory_MB": self.memory_mb}


def time_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` wall time (s) of one batched search, and the ids it returned."""
    best, ids = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return best, ids


DEFAULT_SWEEPS: dict[str, tuple[str, Sequence[float]]] = {
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32)),
    "hnsw": ("ef_search", (8, 16, 32, 64, 128)),
    "ivfpq": ("nprobe", (4, 16, 64)),
    "ivfpq_refine": ("nprobe", (4, 8, 16, 32)),
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
) -> list[AnnPoint]:
    """Recall@k against exact search and queries/second for each index and knob value.

    Args:
        base: ``[N, D]`` gallery (normalised inside); queries: ``[Q, D]``.
        kinds: approximate indexes to build (the flat baseline is always measured first).
        sweeps: ``{kind: (knob, values)}``, default :data:`DEFAULT_SWEEPS`.
        index_params: extra :func:`build_index` arguments per kind.
        num_threads: FAISS threads during the timings (1 = single-thread QPS as in
            ann-benchmarks; ``None`` leaves FAISS's setting alone). Restored afterwards.
        repeats: timed searches per point (the best is kept).

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
    points: list[AnnPoint] = []
    with faiss_threads(num_threads):
        t0 = time.perf_counter()
        flat = build_index(xb, "flat")
        build = time.perf_counter() - t0
        flat_s, truth = time_search(flat, xq, k, repeats)
        flat_mem = index_memory_bytes(flat) / 1e6
        points.append(AnnPoint("flat", "", 0, 1.0, len(xq) / flat_s, 1.0, build, flat_mem))
        say(f"flat: {len(xq) / flat_s:,.0f} QPS")
        del flat
        for kind in kinds:
            if kind not in sweeps:
                raise ValueError(f"no sweep defined for index kind {kind!r}")
            t0 = time.perf_counter()
            index = build_index(xb, kind, **index_params.get(kind, {}))
            build = time.perf_counter() - t0
            mem = index_memory_bytes(index) / 1e6
            knob, values = sweeps[kind]
            for value in values:
                if knob == "nprobe":
                    nlist = faiss.try_extract_index_ivf(
                        faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index).nlist
                    if value > nlist:
                        continue
                set_search_params(index, **{knob: value})
                secs, ids = time_search(index, xq, k, repeats)
                points.append(AnnPoint(kind, knob, float(value), neighbor_recall(ids, truth, k), len(xq) / secs,
                                       flat_s / secs, build, mem))
            say(f"{kind}: built in {build:.1f} s, {mem:.1f} MB")
            del index
    return points


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
