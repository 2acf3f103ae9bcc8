"""Exact search, recall@K and mAP against independent references; FAISS indexes; the engine."""

import faiss
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from course_lib.multimodal.retrieval import (
    Retriever,
    average_precision,
    build_index,
    cosine_topk,
    evaluate_directions,
    evaluate_retrieval,
    index_memory_bytes,
    mean_average_precision,
    neighbor_recall,
    recall_at_k,
    relevance_matrix,
    scene_keys,
    search,
    search_widget,
    set_search_params,
)


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    x = np.repeat(centers, 100, axis=0) + 0.3 * rng.normal(size=(2000, 16))
    q = centers[rng.integers(0, 20, 50)] + 0.3 * rng.normal(size=(50, 16))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(q, dtype=torch.float32)


def test_cosine_topk_matches_faiss_flat(clustered):
    x, q = clustered
    scores, ids = cosine_topk(q, x * 7.0, 10)  # scale does not matter
    xs, qs = x.numpy().copy(), q.numpy().copy()
    faiss.normalize_L2(xs)
    faiss.normalize_L2(qs)
    index = faiss.IndexFlatIP(16)
    index.add(xs)
    ref_s, ref_i = index.search(qs, 10)
    np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-5)
    assert (ids.numpy() == ref_i).mean() > 0.99  # ties may swap


def test_cosine_topk_can_exclude_the_query_itself(clustered):
    x, _ = clustered
    _, ids = cosine_topk(x[:5], x, 3, exclude=torch.arange(5))
    assert not (ids == torch.arange(5)[:, None]).any()


def test_recall_at_k_hand_worked():
    retrieved = torch.tensor([[3, 1, 2], [0, 2, 1], [2, 0, 1]])
    relevant = [{1}, {5}, {2, 0}]
    assert recall_at_k(retrieved, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, relevant, 2) == pytest.approx(2 / 3)


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(1)
    sim = torch.tensor(rng.normal(size=(6, 30)))
    rel = torch.tensor(rng.random((6, 30)) < 0.2)
    rel[:, 0] = True
    ours = average_precision(sim, rel).numpy()
    ref = [average_precision_score(rel[i].numpy(), sim[i].numpy()) for i in range(6)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert mean_average_precision(sim, rel) == pytest.approx(np.mean(ref))


def test_map_skips_queries_without_relevant_items_and_rejects_none():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    rel = torch.tensor([[True, False], [False, False]])
    assert mean_average_precision(sim, rel) == 1.0
    with pytest.raises(ValueError, match="undefined"):
        mean_average_precision(sim, torch.zeros(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("kind,knob", [("ivf", {"nprobe": 8}), ("hnsw", {"ef_search": 64}),
                                       ("ivfpq", {"nprobe": 8}), ("ivfpq_refine", {"nprobe": 8, "k_factor": 4})])
def test_approximate_indexes_find_the_exact_neighbours(clustered, kind, knob):
    x, q = clustered
    flat = build_index(x, "flat")
    _, truth = search(flat, q, 10)
    index = build_index(x, kind, nlist=20, pq_m=8)
    set_search_params(index, **knob)
    _, found = search(index, q, 10)
    recall = neighbor_recall(found, truth)
    assert recall > (0.5 if kind == "ivfpq" else 0.9)
    assert index.ntotal == len(x)


def test_flat_index_is_exact_and_memory_is_reported(clustered):
    x, q = clustered
    _, ids = search(build_index(x, "flat"), q, 5)
    _, ref = cosine_topk(q, x, 5)
    assert (ids == ref.numpy()).mean() > 0.99
    mem_flat = index_memory_bytes(build_index(x, "flat"))
    mem_pq = index_memory_bytes(build_index(x, "ivfpq", nlist=20, pq_m=8))
    assert mem_flat >= x.numel() * 4 and mem_pq < mem_flat


def test_neighbor_recall_counts_overlap():
    truth = np.array([[1, 2, 3, 4]])
    assert neighbor_recall(np.array([[4, 3, 9, 8]]), truth) == 0.5
    assert neighbor_recall(np.array([[1, -1, -1, -1]]), truth) == 0.25


@pytest.mark.parametrize("bad", [
    lambda x, q: cosine_topk(q[:, :8], x, 3),  # dimension mismatch
    lambda x, q: cosine_topk(q, x[:0], 3),  # empty gallery
    lambda x, q: cosine_topk(q, x[:5], 6),  # k > gallery
    lambda x, q: cosine_topk(q, x, 0),
    lambda x, q: cosine_topk(q * float("nan"), x, 3),
    lambda x, q: search(build_index(x[:50], "flat"), q[:, :8], 3),
    lambda x, q: search(build_index(x[:50], "flat"), q, 51),
    lambda x, q: build_index(x[:0], "flat"),
    lambda x, q: build_index(x, "lsh"),
    lambda x, q: build_index(torch.zeros(10, 16), "flat"),
    lambda x, q: build_index(x, "ivfpq", pq_m=5),
    lambda x, q: set_search_params(build_index(x[:100], "flat"), nprobe=4),
    lambda x, q: set_search_params(build_index(x[:100], "ivf", nlist=2), nprobe=3),
    lambda x, q: recall_at_k(torch.tensor([[1, 2]]), [{1}], 3),
])
def test_bad_inputs_raise_clear_errors(clustered, bad):
    x, q = clustered
    with pytest.raises((ValueError, TypeError)):
        bad(x, q)


def test_scene_keys_and_relevance(scenes):
    keys = scene_keys(scenes)
    assert len(keys) == len(scenes)
    i = int(np.argmax(scenes.num_objects))
    assert keys[i].count("|") == scenes.num_objects[i] - 1
    rel = relevance_matrix(["a", "b", "a"], ["a", "c"])
    assert rel.tolist() == [[True, False], [False, False], [True, False]]


def test_three_directions_on_synthetic_embeddings():
    # embeddings that identify the caption exactly: perfect text<->image retrieval
    captions = ["x", "y", "x", "z"]
    emb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    reports = evaluate_directions(emb, emb, captions, captions, ks=(1, 2))
    by_dir = {r.direction: r for r in reports}
    assert by_dir["text->image"].recall[1] == 1.0 and by_dir["image->text"].map == 1.0
    assert by_dir["image->image"].num_queries == 2  # only the two "x" images have another relevant image
    assert by_dir["image->image"].recall[1] == 1.0


def test_tiny_clip_retrieval_is_far_above_chance(tiny_clip, scenes):
    model, tok = tiny_clip
    reports = {r.direction: r for r in evaluate_retrieval(model, tok, scenes, ks=(1, 5))}
    chance_r5 = 5 / len(scenes)
    for r in reports.values():
        assert r.recall[5] > 3 * chance_r5, r


def test_retriever_and_widget(tiny_clip, scenes):
    model, tok = tiny_clip
    engine = Retriever(model, tok, scenes.images)
    scores, ids = engine.search_text(scenes.captions[0], k=5)
    assert len(ids) == 5 and np.all(np.diff(scores) <= 1e-6)
    with pytest.raises(KeyError, match="unknown words"):
        engine.search_text("a magenta hexagon")
    with pytest.raises(ValueError):
        engine.search_text("  ")
    with pytest.raises(ValueError):
        engine.search_text("a red circle", k=len(scenes) + 1)
    _, ids = engine.search_image(scenes.images[3], k=1)
    assert ids[0] == 3
    widget = search_widget(engine, k=4, initial="a red circle")
    assert widget.children[0].value == "a red circle"
    widget.children[0].value = "a bogus word"  # re-renders without raising
    with pytest.raises(ValueError, match="empty"):
        Retriever(model, tok, scenes.images[:0])


def test_chance_recall_is_the_hypergeometric_hit_probability():
    from math import comb

    from course_lib.multimodal.retrieval import chance_recall

    # one relevant item among 10, top 3: 3/10; two relevant: 1 - C(8,3)/C(10,3)
    assert chance_recall([1], 10, 3) == pytest.approx(0.3)
    assert chance_recall([2], 10, 3) == pytest.approx(1 - comb(8, 3) / comb(10, 3))
    assert chance_recall([1, 2], 10, 3) == pytest.approx((0.3 + 1 - comb(8, 3) / comb(10, 3)) / 2)
    assert chance_recall([0], 10, 3) == 0.0 and chance_recall([10], 10, 1) == 1.0
    # a Monte-Carlo check of a random ranking
    rng = np.random.default_rng(0)
    hits = np.mean([(rng.permutation(20)[:4] < 3).any() for _ in range(20_000)])
    assert chance_recall([3], 20, 4) == pytest.approx(hits, abs=0.01)
    with pytest.raises(ValueError):
        chance_recall([11], 10, 3)
    with pytest.raises(ValueError):
        chance_recall([1], 10, 11)
    with pytest.raises(ValueError):
        chance_recall([], 10, 1)


def test_reports_carry_chance_on_their_own_queries():
    captions = ["x", "y", "x", "z"]
    emb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    by_dir = {r.direction: r for r in evaluate_directions(emb, emb, captions, captions, ks=(1, 2))}
    # text->image: queries x, y, x, z have 2, 1, 2, 1 relevant images among 4
    assert by_dir["text->image"].chance[1] == pytest.approx((2 + 1 + 2 + 1) / 4 / 4)
    # image->image: the two "x" queries have one relevant among the 3 others
    assert by_dir["image->image"].chance[1] == pytest.approx(1 / 3)
    assert by_dir["image->image"].chance[2] == pytest.approx(2 / 3)


def test_top1_misses_counts_same_object_confusions():
    from course_lib.multimodal.retrieval import top1_misses

    captions = ["a red circle left of a blue square", "a red circle right of a blue square", "a green cross"]
    keys = ["blue square|red circle", "blue square|red circle", "green cross"]
    img = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0.05, 0], [0, 0, 1.0]])  # caption 1 lands on image 0: a same-object miss
    out = top1_misses(img, txt, captions, keys)
    assert out == {"queries": 3, "misses": 1, "same_objects": 1, "share_same_objects": 1.0}
    keys_differ = ["blue square|red circle", "green square|red circle", "green cross"]
    assert top1_misses(img, txt, captions, keys_differ)["same_objects"] == 0
    assert top1_misses(img, img, captions, keys)["misses"] == 0
    with pytest.raises(ValueError, match="paired"):
        top1_misses(img, txt[:2], captions, keys)
