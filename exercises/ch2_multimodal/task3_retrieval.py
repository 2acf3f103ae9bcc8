"""Task 2.3 - cross-modal retrieval: exact cosine top-k, recall@K and FAISS indexes.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch2_multimodal/test_task3_retrieval.py
    course-grade --task ch2_multimodal/task3_retrieval
"""

from __future__ import annotations

import faiss
import numpy as np  # noqa: F401 - available for your solution
import torch
import torch.nn.functional as F  # noqa: F401 - available for your solution


def topk_cosine(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest neighbours by cosine similarity (brute force).

    Args:
        queries: ``[Q, D]``; gallery: ``[N, D]`` (any lengths: cosine ignores them). A zero
            row has cosine 0 with everything, as with ``F.normalize`` and
            ``F.cosine_similarity`` (they divide by ``max(norm, eps)``): never NaN.
        k: number of neighbours, ``1 <= k <= N``.

    Returns:
        ``(scores, indices)``, both ``[Q, k]``, best first: ``scores[q, r]`` is the cosine
        similarity of query ``q`` to gallery item ``indices[q, r]``. ``indices`` are int64
        (as ``torch.topk`` returns them); ``scores`` are floats as accurate as the inputs'
        dtype (float64 inputs: float64 scores), on the inputs' device.

    Raises:
        ValueError: widths differ, inputs not 2-D, or ``k`` out of range (``k < 1`` or
        ``k > N``, so also an empty gallery).

    Hint: L2-normalize the rows of both, one matrix product, then ``topk`` along the gallery.
    """
    raise NotImplementedError("Task 2.3: implement topk_cosine")


def recall_at_k(retrieved: torch.Tensor, relevant: list[set[int]], k: int) -> float:
    """Recall@K: the fraction of queries with at least one relevant item in their top k.

    Args:
        retrieved: ``[Q, n]`` gallery indices per query, best first, ``n >= k``.
        relevant: ``Q`` sets of relevant gallery indices (a query may have several).
        k: how many of the retrieved items count, ``1 <= k <= n``.

    Returns:
        A Python float in [0, 1]. A query counts once, however many relevant items it finds.

    Raises:
        ValueError: no queries (``Q = 0``: the fraction is undefined), ``len(relevant) != Q``
        or ``k`` out of range (``k < 1`` or ``k > n``).

    Hint: ``retrieved.tolist()`` gives plain ints to test with ``in``.
    """
    raise NotImplementedError("Task 2.3: implement recall_at_k")


def build_index(embeddings: torch.Tensor, kind: str) -> faiss.Index:
    """A FAISS index over the embeddings, searched by cosine similarity.

    L2-normalize a float32 *copy* of the embeddings (any scale; the caller's tensor must
    not change) and add it to an inner-product index (``faiss.METRIC_INNER_PRODUCT``):
    for unit vectors the inner product is the cosine. Callers normalize their queries.

    * ``"flat"``: exact search (``IndexFlatIP``); its top-k equals :func:`topk_cosine`'s.
    * ``"ivf"``: an inverted file (``IndexIVFFlat`` with an IP quantizer), trained on the
      embeddings; choose ``nlist`` (e.g. about sqrt(N)) and ``nprobe``.
    * ``"hnsw"``: a graph index (``IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)``).

    Args:
        embeddings: ``[N, D]`` float tensor.
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.

    Returns:
        The index, holding all ``N`` vectors (``index.ntotal == N``).

    Raises:
        ValueError: an unknown ``kind``, or ``embeddings`` not ``[N, D]`` with ``N >= 1``.

    Hint: ``faiss.normalize_L2`` works in place on a float32 numpy array; make sure that
    array is not a view of the caller's tensor (``.numpy()`` shares memory).
    """
    raise NotImplementedError("Task 2.3: implement build_index")
