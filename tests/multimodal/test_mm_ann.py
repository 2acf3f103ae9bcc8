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
