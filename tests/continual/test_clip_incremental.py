"""Incremental tiny-CLIP training: data, what is trained, WiSE-FT."""

import numpy as np
import pytest
import torch

from course_lib.continual.clip_incremental import (
    NEW_COLORS, NEW_SHAPES, IncrementalConfig, concept_data, evaluate_concepts, interpolate_weights,
    pooled_features, train_incremental,
)
from course_lib.models import encode_images, load_clip


@pytest.fixture(scope="module")
def clip():
    model, _, tok = load_clip("tiny")
    return model, tok


@pytest.fixture(scope="module")
def data():
    return concept_data(n_train=96, n_test=48, n_replay=32)


def test_concept_data_holds_only_new_concepts_for_training(data):
    assert set(NEW_COLORS) == {"orange", "pink"} and set(NEW_SHAPES) == {"diamond", "ring"}
    assert len(data.new_classes) == 24 and len(data.all_classes) == 48 and len(data.old_classes) == 24
    new_words = set(NEW_COLORS) | set(NEW_SHAPES)
    assert all(new_words & set(c.split()) for c in data.train_captions)
    assert all(not new_words & set(c.split()) for c in data.replay_captions)
    assert all(data.all_classes[k] in data.new_classes for k in data.new_test_labels)
    assert data.train_images.dtype == np.uint8 and data.train_images.shape == (96, 32, 32, 3)


def test_original_model_knows_old_not_new(clip, data):
    model, tok = clip
    acc = evaluate_concepts(model, tok, data)
    assert acc["old"] > 0.8 and acc["new"] < 0.3


def test_text_mode_trains_text_and_projection_only(clip, data):
    model, tok = clip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for method in ("replay", "lwf", "feature"):
        student, losses = train_incremental(model, tok, data, IncrementalConfig(method=method, steps=3, batch_size=16))
        assert len(losses) == 3 and np.isfinite(losses).all()
        sd = dict(student.named_parameters())
        assert torch.equal(sd["visual.conv1.weight"], before["visual.conv1.weight"])
        assert not torch.equal(sd["visual.proj"], before["visual.proj"])
        assert not torch.equal(sd["token_embedding.weight"], before["token_embedding.weight"])
    for n, p in model.named_parameters():  # the teacher is untouched
        assert torch.equal(p, before[n])


def test_pooled_features_reproduce_encode_image(clip, data):
    model, _ = clip
    pooled = pooled_features(model, data.train_images[:8])
    full = encode_images(model, data.train_images[:8])
    torch.testing.assert_close(torch.nn.functional.normalize(pooled @ model.visual.proj, dim=-1), full,
                               rtol=1e-4, atol=1e-5)
    assert model.visual.proj is not None


def test_all_mode_trains_the_image_trunk(clip, data):
    model, tok = clip
    student, _ = train_incremental(model, tok, data, IncrementalConfig(steps=1, batch_size=8, trainable="all"))
    assert not torch.equal(student.visual.conv1.weight, model.visual.conv1.weight)


def test_interpolate_weights_endpoints(clip, data):
    model, tok = clip
    student, _ = train_incremental(model, tok, data, IncrementalConfig(steps=2, batch_size=16))
    for alpha, ref in ((0.0, model), (1.0, student)):
        mixed = interpolate_weights(model, student, alpha)
        for (n, a), b in zip(mixed.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b)
    half = interpolate_weights(model, student, 0.5)
    torch.testing.assert_close(half.visual.proj, (model.visual.proj + student.visual.proj) / 2)
    with pytest.raises(ValueError):
        interpolate_weights(model, student, 1.5)


@pytest.mark.parametrize("kwargs", [{"method": "ewc"}, {"trainable": "visual"}, {"steps": 0},
                                    {"replay_fraction": 1.0}, {"temperature": 0.0}])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        IncrementalConfig(**kwargs)


def test_compare_over_seeds_collects_one_value_per_seed(clip):
    from course_lib.continual.clip_incremental import compare_over_seeds, wise_label

    model, tok = clip
    res = compare_over_seeds(model, tok, [0, 1], n_train=32, n_test=16, n_replay=16, methods=("finetune", "replay"),
                             wise_alphas=(0.5,), steps=2, batch_size=8)
    assert set(res.values) == {"original", "finetune", "replay", wise_label(0.5)}
    assert all(len(v) == 2 for figs in res.values.values() for v in figs.values())
    assert res.wise_alphas == [0.0, 0.5, 1.0] and set(res.models) == {"original", "finetune", "replay"}
    rows = {r["method"]: r for r in res.rows()}
    assert rows["original"]["new_std"] >= 0 and 0 <= rows["finetune"]["old"] <= 100
    with pytest.raises(ValueError, match="strictly between"):
        compare_over_seeds(model, tok, [0], 8, 8, 8, wise_alphas=(1.0,), steps=1)
    with pytest.raises(ValueError, match="seeds"):
        compare_over_seeds(model, tok, [], 8, 8, 8)
