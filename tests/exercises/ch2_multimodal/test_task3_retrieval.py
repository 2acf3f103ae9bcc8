"""Graded tests of task 2.3: topk_cosine, recall_at_k, build_index.

References: FAISS flat (exact) inner-product search and brute-force cosine similarities
in float64 with ``torch.topk``, hand-worked recall values,
and FAISS itself: the submitted index is serialised by the worker
(``faiss.serialize_index``) and deserialised here, then searched with FAISS on this side
(IVF with ``nprobe = nlist`` and HNSW with a large ``efSearch``, which makes both search
(nearly) exhaustively and compares what was indexed, not the learner's speed settings).

Tolerances: a cosine of unit vectors computed in floating point is off by at most about
D * eps (D the width), typically sqrt(D) * eps. Scores are compared with float64
references to within 64 * eps * sqrt(D), eps that of the inputs: float32 inputs (eps
1.2e-7) allow 2e-5 to 4e-5 here, so float32 and float64 arithmetic both pass, and float16
(eps 1e-3) fails; float64 inputs allow about 1e-13, so scores computed in float32 and
converted back fail. Top-k lists are checked up to ties within that tolerance (the items
returned must have the k largest exact cosines, in order), so a correct implementation
may order near-equal items either way. recall@K is a ratio of counts: compared to 1e-6
(float32 results such as 0.6666667 pass; float16 results such as 0.6665 do not). FAISS
indexes hold float32 by contract; their scores are compared to 1e-5.
"""

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.grading.testing import (
    EPS,
    as_float,
    as_tensor,
    assert_close,
    assert_not_mutated,
    assert_precision,
    expect_error,
    input_precision,
)
from course_lib.grading.transport import FaissBlob

TASK = "ch2_multimodal/task3_retrieval"
RECALL_TOL = 1e-6  # see "Tolerances" above


def _data(n, d, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x * (torch.rand(n, 1, generator=g, dtype=dtype) * 5 + 0.2)  # rows of very different lengths


def _exact(queries, gallery, k):
    sims = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    return sims.topk(k, dim=1)


def _faiss_flat(queries, gallery, k):
    """Reference: FAISS exact inner-product search over L2-normalized float32 vectors."""
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(F.normalize(gallery.float(), dim=1).numpy()))
    scores, ids = index.search(np.ascontiguousarray(F.normalize(queries.float(), dim=1).numpy()), k)
    return torch.from_numpy(scores).double(), torch.from_numpy(ids).long()


def _topk(impl, q, g, k):
    out = impl.topk_cosine(q, g, k)
    assert isinstance(out, tuple) and len(out) == 2, "topk_cosine should return a tuple (scores, indices)"
    scores = as_tensor(out[0], "scores", shape=(q.shape[0], k), floating=True)
    indices = as_tensor(out[1], "indices", shape=(q.shape[0], k))
    assert not indices.is_floating_point() and indices.dtype != torch.bool, \
        f"indices should be integers, got {indices.dtype}"
    return scores, indices


def _check_topk(scores, indices, q, g, k, what):
    """Scores are the exact cosines of the returned items, and those items are a top-k (best
    first) up to ties within the tolerance of the inputs' precision."""
    dtype = input_precision(q, g)
    magnitude = q.shape[1] ** 0.5
    tol = 64 * EPS[dtype] * magnitude
    idx = indices.long()
    n = g.shape[0]
    assert bool(((idx >= 0) & (idx < n)).all()), f"{what}: indices must be gallery rows 0..{n - 1}, got {idx.tolist()}"
    assert all(len(set(row)) == len(row) for row in idx.tolist()), f"{what}: a query lists the same gallery item twice"
    sims = F.normalize(q.double(), dim=1) @ F.normalize(g.double(), dim=1).T
    exact = sims.gather(1, idx)
    assert_precision(scores, exact, f"{what}: scores (the cosines of the returned items)", dtype, magnitude,
                     hint="scores[q, r] is the cosine similarity of query q and gallery item indices[q, r]")
    best = sims.topk(k, dim=1).values
    short = best - exact
    bad = short > 2 * tol
    if bool(bad.any()):
        qi, r = (int(v) for v in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: for query {qi} the item at rank {r} (gallery {int(idx[qi, r])}, cosine {float(exact[qi, r]):.6f}) "
            f"is not among the best: rank {r} should have cosine {float(best[qi, r]):.6f} "
            "(best first, by cosine: the lengths of the rows do not matter)")


@pytest.mark.points(2)
def test_topk_cosine_hand_worked(impl):
    q = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -0.2]])
    scores, indices = _topk(impl, q, g, 2)
    assert indices.tolist() == [[0, 2], [3, 0]], (
        f"indices should be [[0, 2], [3, 0]] (best first, by cosine: lengths do not matter), got {indices.tolist()}")
    assert_close(scores, torch.tensor([[1.0, 2 ** -0.5], [0.2 / 1.04 ** 0.5, 0.0]]), "scores", atol=1e-6,
                 hint="scores are cosine similarities, in decreasing order")


@pytest.mark.points(2)
def test_topk_cosine_matches_faiss_flat_search(impl):
    for seed, (nq, n, d, k) in enumerate([(7, 50, 8, 5), (1, 10, 3, 10), (20, 200, 32, 1)]):
        q, g = _data(nq, d, seed), _data(n, d, seed + 100)
        scores, indices = _topk(impl, q, g, k)
        _, ref_indices = _faiss_flat(q, g, k)
        hint = ""
        if indices.shape == ref_indices.shape and int((indices.long() != ref_indices).sum()) > indices.numel() // 4:
            hint = "; normalize each row (dim=1) of both queries and gallery"
        try:
            _check_topk(scores, indices, q, g, k, f"top-{k} of Q={nq} queries in N={n} items of width D={d}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}{hint}") from None


@pytest.mark.points(1)
def test_topk_cosine_rejects_bad_input(impl):
    q, g = _data(3, 4, 1), _data(6, 4, 2)
    _topk(impl, q, g, 2)  # valid call first
    expect_error(impl.topk_cosine, q, g, 7, what="k = 7 with a gallery of 6")
    expect_error(impl.topk_cosine, q, g, 0, what="k = 0")
    expect_error(impl.topk_cosine, q, _data(6, 5, 3), 2, what="queries of width 4, gallery of width 5")


@pytest.mark.points(2)
def test_recall_at_k_hand_worked(impl):
    retrieved = torch.tensor([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    relevant = [{1}, {5, 4}, {0}]
    for k, expected in [(1, 0.0), (2, 2 / 3), (3, 2 / 3)]:
        value = impl.recall_at_k(retrieved, relevant, k)
        assert isinstance(value, float), f"recall_at_k should return a Python float, got {type(value).__name__}"
        assert abs(value - expected) <= RECALL_TOL, (
            f"recall_at_k(k={k}) should be {expected:.8f}, got {value:.8f}: a query counts (once) if any of its "
            f"first k retrieved items is relevant" + (" (off by less than 1e-3: compute the fraction in float32 or "
                                                      "float64, not float16)" if abs(value - expected) < 1e-3 else ""))


@pytest.mark.points(1)
def test_recall_at_k_random(impl):
    g = torch.Generator().manual_seed(5)
    retrieved = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(25)])
    relevant = [set(torch.randint(0, 30, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist())
                for _ in range(25)]
    for k in (1, 3, 10):
        expected = sum(bool(set(row[:k]) & rel) for row, rel in zip(retrieved.tolist(), relevant)) / 25
        value = as_float(impl.recall_at_k(retrieved, relevant, k), "recall_at_k")
        assert abs(value - expected) <= RECALL_TOL, f"recall_at_k(k={k}) should be {expected}, got {value}"


@pytest.mark.points(1)
def test_recall_at_k_rejects_bad_input(impl):
    retrieved = torch.tensor([[0, 1], [1, 0]])
    impl.recall_at_k(retrieved, [{0}, {0}], 2)  # valid call first
    expect_error(impl.recall_at_k, retrieved, [{0}, {0}], 3, what="k = 3 with 2 retrieved items per query")
    expect_error(impl.recall_at_k, retrieved, [{0}, {0}], 0, what="k = 0")
    expect_error(impl.recall_at_k, retrieved, [{0}], 1, what="2 queries but 1 set of relevant items")


@pytest.mark.points(1)
def test_topk_indices_are_int64(impl):
    q, g = _data(3, 4, 19), _data(9, 4, 20)
    scores, indices = _topk(impl, q, g, 4)
    _check_topk(scores, indices, q, g, 4, "top-4")
    assert indices.dtype == torch.int64, (
        f"indices should be int64 (torch.long), as torch.topk returns them, got {indices.dtype}; other integer "
        "types are not accepted as indices everywhere and int32 overflows beyond 2**31 items")


@pytest.mark.points(1)
def test_topk_cosine_of_zero_vectors(impl):
    q, g = _data(3, 5, 21), _data(8, 5, 22)
    q[1] = 0.0
    g[2] = 0.0
    scores, indices = _topk(impl, q, g, 8)
    assert bool(torch.isfinite(scores).all()), (
        f"scores contain NaN or inf for a zero query or gallery row: {scores.tolist()}. A zero vector has cosine 0 with "
        "everything (as with F.normalize / F.cosine_similarity, which divide by max(norm, eps)); do not divide by the "
        "bare norm")
    _check_topk(scores, indices, q, g, 8, "top-8 with a zero query (row 1) and a zero gallery item (row 2)")


@pytest.mark.points(1)
def test_topk_cosine_float64_precision(impl):
    q, g = _data(6, 24, 23, torch.float64), _data(40, 24, 24, torch.float64)
    g[7] = g[3] * 2.5 + 1e-9 * _data(1, 24, 25, torch.float64)[0]  # nearly the same direction as item 3
    scores, indices = _topk(impl, q, g, 5)
    _check_topk(scores, indices, q, g, 5, "top-5 of float64 inputs")


@pytest.mark.points(1)
def test_empty_inputs_are_rejected(impl):
    q, g = _data(3, 4, 26), _data(6, 4, 27)
    _topk(impl, q, g, 2)  # valid calls first
    impl.recall_at_k(torch.tensor([[0, 1]]), [{1}], 1)
    expect_error(impl.topk_cosine, q, g[:0], 1, what="topk_cosine with an empty gallery (N = 0)")
    expect_error(impl.recall_at_k, torch.zeros(0, 3, dtype=torch.int64), [], 1,
                 what="recall_at_k with no queries (the fraction of 0 queries is undefined)")
    expect_error(impl.build_index, g[:0], "flat", what="build_index with no embeddings (N = 0)")


def _index(impl, emb, kind):
    value = impl.build_index(emb, kind)
    assert isinstance(value, FaissBlob), (
        f"build_index(..., {kind!r}) should return a faiss index, got {getattr(value, 'type_name', type(value).__name__)}")
    index = value.load()
    assert index.ntotal == emb.shape[0], f"the {kind} index should hold all {emb.shape[0]} vectors, holds {index.ntotal}"
    assert index.d == emb.shape[1], f"the {kind} index should have dimension {emb.shape[1]}, has {index.d}"
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT, (
        f"the {kind} index should use faiss.METRIC_INNER_PRODUCT (inner product of unit vectors = cosine), "
        f"not metric {index.metric_type}")
    return index


def _search(index, queries, k):
    q = F.normalize(queries.to(torch.float32), dim=1).numpy()
    scores, ids = index.search(np.ascontiguousarray(q), k)
    return torch.from_numpy(scores).double(), torch.from_numpy(ids).long()


@pytest.mark.points(2)
def test_flat_index_is_exact(impl):
    gallery, queries = _data(300, 16, 10), _data(20, 16, 11)
    for dtype in (torch.float32, torch.float64):
        index = _index(impl, gallery.to(dtype), "flat")
        scores, ids = _search(index, queries, 10)
        ref_scores, ref_ids = _exact(queries, gallery, 10)
        bad = int((ids != ref_ids).sum())
        assert bad == 0, (f"the flat index's top-10 differs from exact cosine search in {bad} places ({dtype} input); "
                          "index L2-normalized vectors by inner product")
        assert_close(scores, ref_scores, f"flat index scores ({dtype} input)", atol=1e-5,
                     hint="the index should hold unit vectors, so that scores are cosines")


@pytest.mark.points(2)
def test_ivf_index(impl):
    gallery, queries = _data(600, 16, 12), _data(15, 16, 13)
    index = _index(impl, gallery, "ivf")
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        raise AssertionError(f"the 'ivf' index should be an inverted-file index, got {type(index).__name__}") from None
    assert ivf.is_trained, "the IVF index must be trained (index.train(vectors)) before vectors are added"
    ivf.nprobe = ivf.nlist  # visit every list: exhaustive, so results must be exact
    scores, ids = _search(index, queries, 10)
    ref_scores, ref_ids = _exact(queries, gallery, 10)
    assert int((ids != ref_ids).sum()) == 0, (
        "with every list probed, the IVF index's top-10 should equal exact cosine search; index normalized vectors "
        "with an inner-product quantizer")
    assert_close(scores, ref_scores, "IVF index scores", atol=1e-5)


@pytest.mark.points(2)
def test_hnsw_index(impl):
    gallery, queries = _data(500, 16, 14), _data(30, 16, 15)
    index = _index(impl, gallery, "hnsw")
    assert "HNSW" in type(index).__name__, f"the 'hnsw' index should be an HNSW index, got {type(index).__name__}"
    index.hnsw.efSearch = 512
    _, ids = _search(index, queries, 10)
    _, ref_ids = _exact(queries, gallery, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref_ids.tolist())])
    assert recall >= 0.9, (f"with efSearch=512 the HNSW index finds only {recall:.0%} of the exact cosine top-10; "
                           "index normalized vectors by inner product")


@pytest.mark.points(1)
def test_unknown_kind_is_rejected(impl):
    gallery = _data(50, 4, 16)
    _index(impl, gallery, "flat")  # valid call first
    expect_error(impl.build_index, gallery, "annoy", what="build_index(..., kind='annoy')")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    q, g = _data(4, 8, 17), _data(40, 8, 18)
    scores, indices = _topk(impl, q, g, 3)
    assert_not_mutated(impl, "topk_cosine")
    _check_topk(scores, indices, q, g, 3, "top-3")
    for kind in ("flat", "hnsw"):
        _index(impl, g, kind)
        assert_not_mutated(impl, f"build_index(..., {kind!r})")
