"""Task 2.3 - cross-modal retrieval: exact cosine top-k, recall@K and FAISS indexes. Solution."""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def topk_cosine(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected queries [Q, D] and gallery [N, D], got {list(queries.shape)} and "
                         f"{list(gallery.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be an int in [1, {gallery.shape[0]}], got {k!r}")
    similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    return similarity.topk(k, dim=1)


def recall_at_k(retrieved: torch.Tensor, relevant: list[set[int]], k: int) -> float:
    retrieved = torch.as_tensor(retrieved)
    if retrieved.dim() != 2 or len(relevant) != retrieved.shape[0]:
        raise ValueError("retrieved must be [Q, n] with one set of relevant items per query")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= retrieved.shape[1]:
        raise ValueError(f"k must be an int in [1, {retrieved.shape[1]}], got {k!r}")
    if retrieved.shape[0] == 0:
        raise ValueError("no queries")
    hits = [any(item in rel for item in row[:k]) for row, rel in zip(retrieved.tolist(), relevant)]
    return sum(hits) / len(hits)


def build_index(embeddings: torch.Tensor, kind: str) -> faiss.Index:
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] tensor, got {list(embeddings.shape)}")
    vectors = np.ascontiguousarray(embeddings.detach().cpu().to(torch.float32).numpy().copy())
    faiss.normalize_L2(vectors)
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, min(int(math.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(nlist, 8)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        raise ValueError(f"kind must be 'flat', 'ivf' or 'hnsw', got {kind!r}")
    index.add(vectors)
    return index
