"""The synthetic gallery and the recall/QPS study on a small scale."""

import numpy as np
import pytest
import torch

from course_lib.multimodal.ann import (
    ann_study,
    cached_array,
    fastest_at_recall,
    fit_embedding_mixture,
    neighbor_profile,
)


@pytest.fixture(scope="module")
def real():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 16))
    x = np.repeat(centers, 60, axis=0) + 0.2 * rng.normal(size=(720, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_mixture_samples_are_unit_vectors_near_the_real_clusters(real):
    mix = fit_embedding_mixture(real, n_components=12, seed=0)
    assert mix.weights.sum() == pytest.approx(1.0)
    x = mix.sample(3000, seed=1)
    assert x.shape == (3000, 16) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, mix.sample(3000, seed=1))  # deterministic
    # every synthetic vector is close to some real vector, as close as real ones are to each other
    synth = neighbor_profile(real, x[:200], k=5)
    held = neighbor_profile(real[::2], real[1::2][:200], k=5)
    assert abs(synth["top1"] - held["top1"]) < 0.1


def test_mixture_validates(real):
    with pytest.raises(ValueError):
        fit_embedding_mixture(real[:10], n_components=12)
    with pytest.raises(ValueError):
        fit_embedding_mixture(real, n_components=4, shrinkage=2.0)
    with pytest.raises(ValueError):
        fit_embedding_mixture(real, 4).sample(0)


def test_study_measures_flat_first_and_a_fast_accurate_ivf(real):
    mix = fit_embedding_mixture(real, n_components=12)
    base = mix.sample(5000, seed=2)
    queries = mix.sample(100, seed=3)
    points = ann_study(base, queries, kinds=("ivf", "hnsw"), sweeps={"ivf": ("nprobe", (1, 64)),
                                                                      "hnsw": ("ef_search", (64,))},
                       index_params={"ivf": {"nlist": 64}}, repeats=1)
    assert points[0].kind == "flat" and points[0].recall == 1.0 and points[0].speedup == 1.0
    ivf = {p.value: p for p in points if p.kind == "ivf"}
    assert ivf[64].recall == pytest.approx(1.0)  # probing every cell is exact
    assert ivf[1].recall < ivf[64].recall
    best = fastest_at_recall(points, 0.9)
    assert best is not None and best.recall >= 0.9
    assert fastest_at_recall(points, 1.01) is None
    with pytest.raises(ValueError, match="dimensions"):
        ann_study(base, queries[:, :8])
    with pytest.raises(ValueError, match="larger than the gallery"):
        ann_study(base[:5], queries, k=10)


def test_cached_array_writes_once(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return np.arange(4.0)

    path = tmp_path / "sub" / "v.npy"
    np.testing.assert_array_equal(cached_array(path, make), np.arange(4.0))
    np.testing.assert_array_equal(cached_array(path, make), np.arange(4.0))
    assert len(calls) == 1
    assert cached_array(None, make).shape == (4,) and len(calls) == 2


def test_study_records_every_repeat_and_round_trips(real):
    from course_lib.multimodal.ann import AnnPoint, point_from_record

    mix = fit_embedding_mixture(real, n_components=12)
    base, queries = mix.sample(3000, seed=2), mix.sample(50, seed=3)
    points = ann_study(base, queries, kinds=("ivf",), sweeps={"ivf": ("nprobe", (2, 8))},
                       index_params={"ivf": {"nlist": 32}}, repeats=3)
    for p in points:
        assert len(p.qps_runs) == 3 and p.qps == pytest.approx(max(p.qps_runs))
        assert point_from_record(p.as_record()) == p
    assert points[0].label == "flat" and points[1].label == "ivf nprobe=2"
    assert AnnPoint("ivf", "nprobe", 4, 0.9, 10.0, 2.0, 0.1, 1.0).qps_runs == ()  # old positional form still works


def test_shared_ivfpq_build_gives_the_same_recalls_as_separate_builds(real):
    mix = fit_embedding_mixture(real, n_components=12)
    base, queries = mix.sample(4000, seed=2), mix.sample(60, seed=3)
    params = {"ivfpq": {"nlist": 16, "pq_m": 4}, "ivfpq_refine": {"nlist": 16, "pq_m": 4}}
    sweeps = {"ivfpq": ("nprobe", (2, 16)), "ivfpq_refine": ("nprobe", (2, 16))}
    shared = ann_study(base, queries, kinds=("ivfpq", "ivfpq_refine"), sweeps=sweeps, index_params=params, repeats=1)
    alone = ann_study(base, queries, kinds=("ivfpq",), sweeps=sweeps, index_params=params, repeats=1)
    refine = ann_study(base, queries, kinds=("ivfpq_refine",), sweeps=sweeps, index_params=params, repeats=1)
    got = {(p.kind, p.value): p.recall for p in shared[1:]}
    want = {(p.kind, p.value): p.recall for p in alone[1:] + refine[1:]}
    assert got == want
    assert got[("ivfpq_refine", 16)] > got[("ivfpq", 16)]  # re-ranking with exact vectors helps
    mem = {p.kind: p.memory_mb for p in shared[1:]}
    assert mem["ivfpq"] < mem["ivfpq_refine"]  # the plain index does not count the exact vectors


def test_build_threads_and_fastest_per_family(real):
    from course_lib.multimodal.ann import fastest_per_family

    mix = fit_embedding_mixture(real, n_components=12)
    base, queries = mix.sample(3000, seed=2), mix.sample(50, seed=3)
    kw = dict(kinds=("ivf", "hnsw"), sweeps={"ivf": ("nprobe", (1, 32)), "hnsw": ("ef_search", (64,))},
              index_params={"ivf": {"nlist": 32}}, repeats=1)
    one = ann_study(base, queries, build_threads="same", **kw)
    two = ann_study(base, queries, build_threads=2, **kw)
    assert [p.recall for p in one if p.kind == "ivf"] == [p.recall for p in two if p.kind == "ivf"]
    with pytest.raises(ValueError, match="build_threads"):
        ann_study(base, queries, build_threads="all", **kw)
    best = fastest_per_family(one, 0.99)
    assert set(best) <= {"ivf", "hnsw"} and all(p.recall >= 0.99 for p in best.values())
    assert best["ivf"].value == 32  # nprobe = nlist is exact; nprobe 1 is not
    assert fastest_per_family(one, 1.01) == {}


def test_scaling_study_figures_are_json_and_consistent(tmp_path):
    import json

    from course_lib.models import load_clip
    from course_lib.multimodal.ann import point_from_record, real_embeddings, scaling_study

    figs = scaling_study(3000, n_real=200, n_queries=20, n_components=4, repeats=1, cache_dir=tmp_path,
                         progress=None, kinds=("ivf", "hnsw"))
    json.dumps(figs, allow_nan=False)
    assert figs["size"] == 3000 and figs["index_params"]["hnsw"]["hnsw_m"] == 16 and figs["nlist"] == 76
    points = [point_from_record(r) for r in figs["points"]]
    assert [p.kind for p in points][:2] == ["flat", "ivf"] and {p.kind for p in points} == {"flat", "ivf", "hnsw"}
    cached = list(tmp_path.glob("ch2_real_embeddings_*_200_20.npy"))
    assert len(cached) == 1  # cached, keyed by the model's weights
    model, _, tokenizer = load_clip("tiny")
    real, queries = real_embeddings(model, tokenizer, 200, 20, tmp_path)
    assert real.shape == (200, 64) and queries.shape == (20, 64)
    np.testing.assert_array_equal(np.concatenate([real, queries]), np.load(cached[0]))


def test_family_summary_and_compare_at_recall():
    from course_lib.multimodal.ann import AnnPoint, compare_at_recall, family_summary

    pts = [AnnPoint("flat", "", 0, 1.0, 100.0, 1.0, 0.0, 1.0, (100.0, 90.0)),
           AnnPoint("ivf", "nprobe", 1, 0.80, 5000.0, 50.0, 1.0, 1.1, (5000.0, 4900.0)),
           AnnPoint("ivf", "nprobe", 4, 0.97, 3000.0, 30.0, 1.0, 1.1, (3000.0, 2950.0)),
           AnnPoint("hnsw", "ef_search", 16, 0.96, 1000.0, 10.0, 2.0, 1.6, (1000.0, 990.0)),
           AnnPoint("ivfpq", "nprobe", 4, 0.60, 8000.0, 80.0, 3.0, 0.2, (8000.0, 7000.0))]
    rows = {r["kind"]: r for r in family_summary(pts, size=1000, target=0.95)}
    assert list(rows) == ["ivf", "hnsw", "ivfpq"]
    assert rows["ivf"]["at_target"].value == 4 and rows["ivf"]["best_recall"] == 0.97
    assert rows["ivfpq"]["at_target"] is None and rows["ivfpq"]["bytes_per_vector"] == pytest.approx(200.0)
    c = compare_at_recall(pts, 0.95)
    assert c.winner.name == "ivf nprobe=4" and c.loser.name == "hnsw ef_search=16" and c.distinguishable
    assert "timed repeats" in c.sentence and "seeds" not in c.sentence
    noisy = pts[:2] + [AnnPoint("ivf", "nprobe", 4, 0.97, 3000.0, 30.0, 1.0, 1.1, (3000.0, 100.0)), pts[3]]
    assert not compare_at_recall(noisy, 0.95).distinguishable  # inside the spread of the repeats
    assert compare_at_recall(pts, 0.99) is None
    with pytest.raises(ValueError):
        family_summary(pts, size=0)


def test_main_validates_and_prints(capsys, monkeypatch):
    from course_lib.multimodal import ann

    with pytest.raises(SystemExit):
        ann.main(["--size", "0"])
    monkeypatch.setattr(ann, "scaling_study", lambda *a, **k: {"points": [
        ann.AnnPoint("flat", "", 0, 1.0, 10.0, 1.0, 0.0, 1.0, (10.0,)).as_record(),
        ann.AnnPoint("ivf", "nprobe", 2, 0.99, 100.0, 10.0, 0.5, 1.0, (100.0,)).as_record()]})
    assert ann.main(["--size", "100"]) == 0
    assert "fastest at recall@10 >= 0.95: ivf nprobe=2" in capsys.readouterr().out
