"""Cross-modal retrieval: exact cosine search, recall@K and mAP, FAISS indexes.

Embeddings are compared by cosine similarity, i.e. the inner product of L2-normalised
vectors. Exact search is a matrix product and ``topk``; FAISS indexes (Johnson et al.,
2019) trade a little recall for speed and memory:

* ``"flat"``: ``IndexFlatIP``, exact, ``4 D`` bytes per vector;
* ``"ivf"``: ``IndexIVFFlat``: k-means into ``nlist`` cells, a query scans the ``nprobe``
  nearest cells (Sivic & Zisserman, 2003; Jegou et al., 2011);
* ``"hnsw"``: ``IndexHNSWFlat``: a navigable small-world graph with ``M`` links per node,
  searched greedily with a beam ``efSearch`` (Malkov & Yashunin, 2018);
* ``"ivfpq"``: ``IndexIVFPQ``: IVF cells whose vectors are product-quantised to ``m``
  bytes (Jegou et al., 2011); ``"ivfpq_refine"`` re-ranks ``k * k_factor`` PQ candidates
  with the exact vectors (``IndexRefineFlat``).

Relevance for ShapeWorld: a caption is relevant to every image whose own caption is the
same string; for image->image search two images are relevant when they hold the same set
of (colour, shape) objects (:func:`scene_keys`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ..models import encode_images, encode_texts, recall_at_ks
from ._checks import as_tensor, check_choice, check_k, check_matrix, check_same_dim

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw", "ivfpq", "ivfpq_refine")


# ----------------------------------------------------------------------------- exact search


def cosine_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by cosine similarity, best first.

    Args:
        queries: float ``[Q, D]``; gallery: float ``[N, D]`` (any scale: both are normalised).
        k: ``1 <= k <= N`` (``N - 1`` with ``exclude``).
        exclude: optional int ``[Q]``: a gallery index each query must not return (itself,
            for image->image search over the same set).

    Returns:
        ``(scores [Q, k], indices [Q, k])``.
    """
    queries = check_matrix(as_tensor(queries, "queries"), "queries")
    gallery = check_matrix(as_tensor(gallery, "gallery"), "gallery")
    check_same_dim(queries, gallery, "queries", "gallery")
    n = gallery.shape[0] - (1 if exclude is not None else 0)
    check_k(k, n)
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    if exclude is not None:
        exclude = as_tensor(exclude, "exclude").long()
        if exclude.shape != (queries.shape[0],):
            raise ValueError(f"exclude must be [Q] = [{queries.shape[0]}] gallery indices, got {tuple(exclude.shape)}")
        sim[torch.arange(len(exclude)), exclude] = float("-inf")
    return sim.topk(k, dim=1)


def average_precision(similarity: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Average precision of each query: ``[Q]`` float (NaN for a query with nothing relevant).

    ``AP = (1 / R) sum_{r: item at rank r is relevant} precision@r`` over the full ranking
    of the gallery by decreasing similarity (``-inf`` entries are excluded from ranking).
    """
    similarity = as_tensor(similarity, "similarity")
    relevant = as_tensor(relevant, "relevant")
    if similarity.ndim != 2 or similarity.shape != relevant.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} must be equal [Q, N]")
    if relevant.dtype != torch.bool:
        raise TypeError(f"relevant must be a bool tensor, got {relevant.dtype}")
    if similarity.numel() == 0:
        raise ValueError("empty query set or gallery")
    if bool(torch.isnan(similarity).any()):
        raise ValueError("similarity contains NaN")
    order = similarity.argsort(dim=1, descending=True, stable=True)
    hits = relevant.gather(1, order) & torch.isfinite(similarity.gather(1, order))
    cum = hits.cumsum(dim=1).double()
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    n_rel = hits.sum(dim=1).double()
    ap = (cum / ranks * hits).sum(dim=1) / n_rel
    return torch.where(n_rel > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(similarity: torch.Tensor, relevant: torch.Tensor) -> float:
    """mAP over the queries that have at least one relevant gallery item."""
    ap = average_precision(similarity, relevant)
    valid = ~torch.isnan(ap)
    if not bool(valid.any()):
        raise ValueError("no query has a relevant item in the gallery: mAP is undefined")
    return float(ap[valid].mean())


def recall_at_k(retrieved: torch.Tensor | np.ndarray, relevant: Sequence[set[int]], k: int) -> float:
    """Fraction of queries with a relevant item among their first ``k`` retrieved indices.

    Args:
        retrieved: int ``[Q, >= k]`` gallery indices, best first (e.g. from an index).
        relevant: one set of relevant gallery indices per query.
    """
    retrieved = as_tensor(retrieved, "retrieved")
    if retrieved.ndim != 2 or retrieved.shape[0] != len(relevant):
        raise ValueError(f"retrieved must be [Q, n] with one relevant set per query; got "
                         f"{tuple(retrieved.shape)} and {len(relevant)} sets")
    if retrieved.shape[0] == 0:
        raise ValueError("no queries")
    check_k(k, retrieved.shape[1], "retrieved list")
    rows = retrieved[:, :k].tolist()
    return sum(bool(set(r) & rel) for r, rel in zip(rows, relevant)) / len(rows)


def neighbor_recall(found: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, k: int | None = None) -> float:
    """ANN recall@k: mean over queries of ``|found[:k] & truth[:k]| / k`` (ids; -1 = missing)."""
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or found.shape[0] != truth.shape[0]:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must be [Q, k] with the same Q")
    k = k or truth.shape[1]
    check_k(k, min(found.shape[1], truth.shape[1]), "result list")
    f, t = found[:, :k], truth[:, :k]
    hits = (f[:, :, None] == t[:, None, :]).any(axis=2) & (f >= 0)
    return float(hits.sum() / (k * len(f)))


# ----------------------------------------------------------------------------- ShapeWorld relevance


def scene_keys(batch: Any) -> list[str]:
    """One key per image of a :class:`~course_lib.data.ShapeWorldBatch`: its sorted
    (colour, shape) objects, e.g. ``"blue square|red circle"`` (positions and sizes ignored)."""
    keys = []
    for i in range(len(batch)):
        objs = sorted(f"{c} {s}" for c, s in zip(batch.color_names(i), batch.shape_names(i)))
        keys.append("|".join(objs))
    return keys


def relevance_matrix(query_keys: Sequence[str], gallery_keys: Sequence[str]) -> torch.Tensor:
    """bool ``[Q, G]``: True where a query's key equals a gallery item's key."""
    if not query_keys or not gallery_keys:
        raise ValueError("empty query or gallery keys")
    _, inverse = np.unique(np.asarray(list(query_keys) + list(gallery_keys)), return_inverse=True)
    q = torch.from_numpy(inverse[: len(query_keys)])
    g = torch.from_numpy(inverse[len(query_keys):])
    return q[:, None] == g[None, :]


def chance_recall(num_relevant: torch.Tensor | np.ndarray, gallery_size: int, k: int) -> float:
    """Expected recall@k of a random ranking: mean over queries of
    ``1 - C(G - r, k) / C(G, k)`` (``r`` relevant items among ``G``).

    Args:
        num_relevant: int ``[Q]``, relevant gallery items per query (each in ``[0, G]``).
        gallery_size: ``G``, the ranked items per query.
        k: cut-off, ``1 <= k <= G``.
    """
    r = np.asarray(num_relevant, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("no queries")
    check_k(k, gallery_size, "gallery")
    if (r < 0).any() or (r > gallery_size).any():
        raise ValueError(f"relevant counts must be in [0, {gallery_size}]")
    miss = np.ones_like(r)
    for i in range(k):
        miss *= np.clip((gallery_size - r - i) / (gallery_size - i), 0.0, None)
    return float((1.0 - miss).mean())


@dataclass
class RetrievalReport:
    """Recall@K and mAP of one retrieval direction, and recall@K of a random ranking
    on the same queries and relevance (``chance``)."""

    direction: str
    recall: dict[int, float]
    map: float
    num_queries: int
    chance: dict[int, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"direction": self.direction, "queries": self.num_queries}
        row.update({f"R@{k}": v for k, v in self.recall.items()})
        row["mAP"] = self.map
        return row


def evaluate_directions(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    captions: Sequence[str],
    image_keys: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> list[RetrievalReport]:
    """Text->image, image->text and image->image retrieval on paired embeddings.

    Args:
        image_emb, text_emb: ``[N, D]`` embeddings of N images and their N captions.
        captions: the N captions (equal strings are mutually relevant).
        image_keys: N scene keys (:func:`scene_keys`) for image->image relevance; the
            query image itself is excluded from its own ranking.
    """
    image_emb, text_emb, n = _paired(image_emb, text_emb, captions, image_keys)
    img = F.normalize(image_emb.float(), dim=1)
    txt = F.normalize(text_emb.float(), dim=1)
    rel_cap = relevance_matrix(captions, captions)
    rel_img = relevance_matrix(image_keys, image_keys)
    eye = torch.eye(n, dtype=torch.bool)
    sim_it = img @ txt.T
    sim_ii = (img @ img.T).masked_fill(eye, float("-inf"))
    rel_ii = rel_img & ~eye
    reports = []
    for name, sim, rel in (("text->image", sim_it.T.contiguous(), rel_cap.T.contiguous()),
                           ("image->text", sim_it, rel_cap),
                           ("image->image", sim_ii, rel_ii)):
        has_rel = rel.any(dim=1)
        sim_q, rel_q = sim[has_rel], rel[has_rel]
        rec = recall_at_ks(sim_q.clamp_min(-2.0), rel_q, ks)  # -inf (self) -> -2: ranked last
        ranked = n - 1 if name == "image->image" else n
        chance = {k: chance_recall(rel_q.sum(dim=1), ranked, k) for k in ks}
        reports.append(RetrievalReport(name, rec, mean_average_precision(sim_q, rel_q), int(has_rel.sum()), chance))
    return reports


def _paired(image_emb, text_emb, captions: Sequence[str], image_keys: Sequence[str]) -> tuple:
    """Validate N paired image/text embeddings with N captions and N keys; returns (img, txt, N)."""
    image_emb = check_matrix(as_tensor(image_emb, "image_emb"), "image_emb")
    text_emb = check_matrix(as_tensor(text_emb, "text_emb"), "text_emb")
    check_same_dim(image_emb, text_emb, "image_emb", "text_emb")
    n = image_emb.shape[0]
    if text_emb.shape[0] != n or len(captions) != n or len(image_keys) != n:
        raise ValueError(f"need N paired items: {n} images, {text_emb.shape[0]} texts, "
                         f"{len(captions)} captions, {len(image_keys)} keys")
    return image_emb, text_emb, n


def top1_misses(image_emb: torch.Tensor, text_emb: torch.Tensor, captions: Sequence[str],
                image_keys: Sequence[str]) -> dict[str, float]:
    """What text->image search gets wrong at rank 1.

    Caption ``i`` queries the images; its top-1 image ``j`` is a *miss* when image ``j``'s
    caption differs from caption ``i``. A miss holds the *same objects* when image ``j`` has
    image ``i``'s scene key (:func:`scene_keys`: the same colour-shape objects), i.e. it differs
    only in sizes, positions or the relation the caption states.

    Returns:
        ``{"queries", "misses", "same_objects", "share_same_objects"}`` (the share is of the
        misses; 0 when there is none).
    """
    image_emb, text_emb, n = _paired(image_emb, text_emb, captions, image_keys)
    top = (F.normalize(text_emb.float(), dim=1) @ F.normalize(image_emb.float(), dim=1).T).argmax(dim=1).tolist()
    misses = [(i, j) for i, j in enumerate(top) if captions[j] != captions[i]]
    same = sum(image_keys[j] == image_keys[i] for i, j in misses)
    return {"queries": n, "misses": len(misses), "same_objects": same,
            "share_same_objects": same / len(misses) if misses else 0.0}


def evaluate_retrieval(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    batch: Any,
    ks: Sequence[int] = (1, 5, 10),
) -> list[RetrievalReport]:
    """Encode a ShapeWorld batch with a CLIP model and run :func:`evaluate_directions`."""
    img = encode_images(model, batch.images)
    txt = encode_texts(model, tokenizer, batch.captions)
    return evaluate_directions(img, txt, batch.captions, scene_keys(batch), ks)


# ----------------------------------------------------------------------------- FAISS


def _as_float32(x: torch.Tensor | np.ndarray, name: str, normalize: bool = True) -> np.ndarray:
    t = check_matrix(as_tensor(x, name), name)
    arr = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32, copy=True))
    if normalize:
        norms = np.linalg.norm(arr, axis=1)
        if bool((norms == 0).any()):
            raise ValueError(f"{name} has zero vectors, which have no direction (cosine undefined)")
        faiss.normalize_L2(arr)
    return arr


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: about ``4 sqrt(n)``, and at least 39 training points per cell."""
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def build_index(
    embeddings: torch.Tensor | np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    pq_m: int = 16,
    pq_bits: int = 8,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    train_size: int | None = None,
    seed: int = 0,
    k_factor: float = 4.0,
) -> faiss.Index:
    """A FAISS index over the L2-normalised rows of ``embeddings`` (cosine via inner product).

    Args:
        embeddings: ``[N, D]`` float, any scale (a normalised float32 copy is indexed).
        kind: one of :data:`INDEX_KINDS`.
        nlist: IVF cells (default :func:`default_nlist`).
        pq_m, pq_bits: product quantiser: ``pq_m`` sub-vectors (must divide D) of ``pq_bits`` bits.
        hnsw_m, ef_construction: HNSW graph degree and construction beam.
        k_factor: ``"ivfpq_refine"`` re-ranks ``k * k_factor`` PQ candidates exactly.
        train_size: vectors used to train IVF/PQ (default ``min(N, 64 * nlist)``), drawn with ``seed``.

    Callers normalise their queries (or use :func:`search`, which does).
    """
    check_choice(kind, INDEX_KINDS, "index kind")
    x = _as_float32(embeddings, "embeddings")
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        return index
    nlist = nlist or default_nlist(n)
    if nlist < 1 or nlist > n:
        raise ValueError(f"nlist={nlist} must be in [1, N={n}]")
    quantizer = faiss.IndexFlatIP(d)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        if d % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension D={d}")
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, pq_bits, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    n_train = min(n, train_size or 64 * nlist)
    sample = x if n_train >= n else x[np.sort(rng.choice(n, n_train, replace=False))]
    index.train(sample)
    if kind == "ivfpq_refine":
        index = faiss.IndexRefineFlat(index)
        index.k_factor = float(k_factor)
    index.add(x)
    return index


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None,
                      k_factor: float | None = None) -> None:
    """Set the speed/recall knob of an index: IVF ``nprobe``, HNSW ``efSearch``, refine ``k_factor``."""
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    if k_factor is not None:
        if not isinstance(index, faiss.IndexRefine):
            raise ValueError("k_factor applies only to a refine index ('ivfpq_refine')")
        index.k_factor = float(k_factor)
    if nprobe is not None:
        ivf = faiss.try_extract_index_ivf(base)
        if ivf is None:
            raise ValueError(f"nprobe applies only to IVF indexes, not {type(base).__name__}")
        if not 1 <= nprobe <= ivf.nlist:
            raise ValueError(f"nprobe={nprobe} must be in [1, nlist={ivf.nlist}]")
        ivf.nprobe = int(nprobe)
    if ef_search is not None:
        if not hasattr(base, "hnsw"):
            raise ValueError(f"ef_search applies only to HNSW indexes, not {type(base).__name__}")
        if ef_search < 1:
            raise ValueError(f"ef_search must be >= 1, got {ef_search}")
        base.hnsw.efSearch = int(ef_search)


def search(index: faiss.Index, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [Q, k], ids [Q, k])`` of the normalised ``queries`` in ``index``."""
    q = _as_float32(queries, "queries")
    if q.shape[1] != index.d:
        raise ValueError(f"embedding dimensions differ: queries have D={q.shape[1]} but the index has D={index.d}")
    check_k(k, index.ntotal, "index")
    return index.search(q, k)


def index_memory_bytes(index: faiss.Index) -> int:
    """Bytes of the serialised index (vectors or codes, graph links, centroids)."""
    return int(faiss.serialize_index(index).nbytes)


@contextlib.contextmanager
def faiss_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with FAISS's OpenMP thread count set to ``num_threads`` (``None``:
    unchanged), restoring the previous value afterwards."""
    if num_threads is None:
        yield
        return
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(num_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


# ----------------------------------------------------------------------------- search engine


class Retriever:
    """A text/image search engine over a gallery of images embedded by a CLIP model.

    Args:
        model, tokenizer: an open_clip CLIP and its tokenizer (e.g. ``load_clip("tiny")``).
        images: uint8 ``[N, H, W, 3]`` gallery.
        kind, index_params: FAISS index (see :func:`build_index`).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[[Sequence[str]], torch.Tensor],
                 images: np.ndarray, kind: str = "flat", **index_params: Any) -> None:
        if len(images) == 0:
            raise ValueError("the gallery is empty: give at least one image")
        self.model, self.tokenizer, self.images = model, tokenizer, images
        self.embeddings = encode_images(model, images)
        self.index = build_index(self.embeddings, kind, **index_params)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search_text(self, text: str, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery images for a caption: ``(scores [k], ids [k])``.

        Raises:
            KeyError: a word the tokenizer does not know (it names the word).
            ValueError: empty text, or k outside ``[1, N]``.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("type a caption, e.g. 'a red circle left of a blue square'")
        q = encode_texts(self.model, self.tokenizer, [text])
        scores, ids = search(self.index, q, k)
        return scores[0], ids[0]

    def search_image(self, image: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery images for an image query (uint8 ``[H, W, 3]``)."""
        q = encode_images(self.model, image[None] if image.ndim == 3 else image)
        scores, ids = search(self.index, q, k)
        return scores[0], ids[0]


def search_widget(retriever: Retriever, k: int = 8, initial: str = "a red circle", captions: Sequence[str] | None = None):
    """An ipywidgets search box: type a caption, press Enter, see the top-k images.

    Returns the widget (a ``VBox``); it works headless too (nothing blocks, the first
    query is rendered immediately into its output area).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    box = widgets.Text(value=initial, description="caption:", continuous_update=False,
                       layout=widgets.Layout(width="480px"))
    out = widgets.Output()

    def render(text: str) -> None:
        out.clear_output(wait=True)
        with out:
            try:
                scores, ids = retriever.search_text(text, min(k, len(retriever)))
            except (KeyError, ValueError) as exc:
                print(f"cannot search: {exc}")
                return
            fig, axes = plt.subplots(1, len(ids), figsize=(1.6 * len(ids), 2.2), dpi=72)  # ~80 px thumbnails
            for ax, s, i in zip(np.atleast_1d(axes), scores, ids):
                ax.imshow(retriever.images[i], interpolation="nearest")
                ax.set_title(f"{s:.2f}", fontsize=8)
                ax.axis("off")
            fig.suptitle(text, fontsize=9)
            plt.show()
            if captions is not None:
                print("\n".join(f"{r + 1}. {captions[i]}" for r, i in enumerate(ids)))

    box.observe(lambda change: render(change["new"]), names="value")
    render(initial)
    return widgets.VBox([box, out])
