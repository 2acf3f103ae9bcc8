"""Fusion diagnostics: object coverage, attribute labels, probes, the relation oracle, attention shares."""

import numpy as np
import pytest
import torch

from course_lib.data import ShapeWorldConfig, ShapeWorldQADataset, generate
from course_lib.data.shapeworld import GRID
from course_lib.multimodal.probes import (attention_on_objects, layer_probes, named_objects, object_patch_coverage,
                                          object_pixel_masks, oracle_object_tokens, patch_attribute_labels,
                                          relation_oracle_features, ridge_probe, train_mlp_probe)


@pytest.fixture(scope="module")
def qa():
    return ShapeWorldQADataset("train", 240, ShapeWorldConfig(max_objects=3))


def test_object_masks_and_coverage_follow_the_drawn_objects(qa):
    batch = qa.batch
    masks = object_pixel_masks(batch)
    present = batch.colors >= 0
    pixels = masks.sum(axis=(2, 3))
    assert (pixels[present] >= 10).all() and (pixels[~present] == 0).all()
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    for i, k in zip(*np.nonzero(present)):  # each mask sits around its object's centre
        cx, cy = batch.centers[i, k]
        assert abs(xs[masks[i, k]].mean() - cx) < 2 and abs(ys[masks[i, k]].mean() - cy) < 2.5
    assert not (masks.sum(axis=1) > 1).any()  # no pixel has two owners
    cov = object_patch_coverage(batch, (4, 4))
    assert cov.shape == (len(batch), 3, 16)
    np.testing.assert_allclose(cov.sum(-1) * 64, pixels, atol=1e-4)
    with pytest.raises(ValueError):
        object_patch_coverage(batch, (5, 5))


def test_patch_labels_name_the_object_that_covers_the_patch(qa):
    batch = qa.batch
    color, shape = patch_attribute_labels(batch, (4, 4))
    cov = object_patch_coverage(batch, (4, 4))
    assert color.shape == shape.shape == (len(batch), 16)
    background = color == len(batch.config.colors)
    assert ((shape == len(batch.config.shapes)) == background).all()
    assert (cov.max(axis=1)[background] < 0.25).all()
    i, p = np.nonzero(~background)
    owner = cov[i, :, p].argmax(axis=1)
    assert (batch.colors[i, owner] == color[i, p]).all() and (batch.shapes[i, owner] == shape[i, p]).all()
    with pytest.raises(ValueError):
        patch_attribute_labels(batch, (4, 4), min_coverage=0)


def test_ridge_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    x = torch.randn(300, 5, generator=g) + 4 * torch.nn.functional.one_hot(y, 5).float()
    assert ridge_probe(x[:200], y[:200], x[200:], y[200:]) > 0.97
    noise = torch.randn(300, 5, generator=g)
    assert ridge_probe(noise[:200], y[:200], noise[200:], y[200:]) < 0.55
    with pytest.raises(ValueError):
        ridge_probe(x[:10], y[:9], x, y)
    with pytest.raises(ValueError):
        ridge_probe(x, y, x[:, :3], y)


def test_named_objects_match_the_question_words(qa):
    batch, named = qa.batch, named_objects(qa)
    for (i, q), (a, b) in zip(qa.items, named):
        words = q.question.split()
        if q.kind == "color":
            assert batch.config.shapes[batch.shapes[i, a]] == words[-2] and b == -1
        elif q.kind == "shape":
            assert batch.config.colors[batch.colors[i, a]] == words[-3] and b == -1
        elif q.kind == "relation":
            phrase_a = f"the {batch.config.colors[batch.colors[i, a]]} {batch.config.shapes[batch.shapes[i, a]]}"
            phrase_b = f"the {batch.config.colors[batch.colors[i, b]]} {batch.config.shapes[batch.shapes[i, b]]}"
            assert q.question.index(phrase_a) < q.question.index(phrase_b)
        else:
            assert a == b == -1


def test_relation_oracle_features_reproduce_every_answer(qa):
    """Recompute each answer from the oracle features with ShapeWorld's rule (a relation
    holds when the centres differ by more than half a grid cell along its axis)."""
    x, y = relation_oracle_features(qa)
    half_cell = (32 / GRID) / 2 / 16  # half a cell in the [-1, 1] units of the features
    d = {"left of": x[:, 2] - x[:, 0], "right of": x[:, 0] - x[:, 2], "above": x[:, 3] - x[:, 1], "below": x[:, 1] - x[:, 3]}
    rel = x[:, 4:].argmax(1)
    holds = torch.stack([d[r] > half_cell for r in ("left of", "right of", "above", "below")], 1)
    assert torch.equal(holds[torch.arange(len(y)), rel].long(), y)
    assert 0.3 < y.float().mean() < 0.7
    test = ShapeWorldQADataset("test", 200, ShapeWorldConfig(max_objects=3))
    xt, yt = relation_oracle_features(test)
    assert train_mlp_probe(x, y, xt, yt, steps=300) > 0.9
    with pytest.raises(ValueError):
        relation_oracle_features(ShapeWorldQADataset("test", 20, ShapeWorldConfig(max_objects=1)))


def test_oracle_object_tokens_and_attention_share():
    batch = generate(5, 3, ShapeWorldConfig(max_objects=3))
    tok = oracle_object_tokens(batch)
    assert tok.shape == (5, 4, 6 + 4 + 3) and (tok[:, 0] == 0).all()
    present = torch.from_numpy(batch.colors >= 0)
    assert torch.equal(tok[:, 1:, -1].bool(), present)
    assert torch.equal(tok[:, 1:, :6].argmax(-1)[present], torch.from_numpy(batch.colors)[present])
    attn = torch.tensor([[0.1, 0.5, 0.2, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    cov = np.array([[1.0, 0.3, 0.0, 0.1], [0.0, 0.0, 0.0, 0.5]])
    share, chance = attention_on_objects(attn, cov)
    np.testing.assert_allclose(share, [0.7, 0.2], atol=1e-6)
    np.testing.assert_allclose(chance, [2 / 5, 1 / 5])
    with pytest.raises(ValueError):
        attention_on_objects(attn[:, 1:], cov)


def test_layer_probes_find_patch_positions(tiny_clip):
    model, _ = tiny_clip
    cfg = ShapeWorldConfig(max_objects=3)
    rows = layer_probes(model, generate(120, 1, cfg), generate(40, 2, cfg), layers=[0, -1])
    assert [r["layer"] for r in rows] == [0, 3]
    assert all(r["position"] > 0.9 and r["color"] > 0.8 for r in rows)
    assert all(0 <= r["shape on objects"] <= 1 for r in rows)


def test_ridge_probe_rejects_nan_and_negative_labels():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ridge_probe(bad, y, x, y)
    with pytest.raises(ValueError, match=">= 0"):
        ridge_probe(x, y - 1, x, y)
