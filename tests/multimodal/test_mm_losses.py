"""Contrastive losses against open_clip, and the geometry diagnostics against their formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from course_lib.multimodal.losses import (
    ContrastiveLoss,
    alignment,
    clip_contrastive_loss,
    embedding_diagnostics,
    hard_negative_clip_loss,
    modality_gap,
    siglip_loss,
    uniformity,
)


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_infonce_equals_open_clip(unit_pairs, scale):
    x, y = unit_pairs
    ours = clip_contrastive_loss(x, y, torch.tensor(scale))
    ref = ClipLoss()(x, y, torch.tensor(scale))
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (3.0, 0.5)])
def test_siglip_equals_open_clip(unit_pairs, scale, bias):
    x, y = unit_pairs
    ours = siglip_loss(x, y, torch.tensor(scale), torch.tensor(bias))
    ref = SigLipLoss()(x, y, torch.tensor(scale), torch.tensor(bias))
    torch.testing.assert_close(ours, ref)


def test_infonce_hand_worked_two_pairs():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each image: positive logit s, negative 0 -> CE = log(1 + e^-s), both directions equal
    s = 2.0
    assert clip_contrastive_loss(x, x, s).item() == pytest.approx(math.log1p(math.exp(-s)))


def test_label_smoothing_matches_formula(unit_pairs):
    x, y = unit_pairs
    eps, s = 0.1, 5.0
    logits = s * x @ y.T
    n = len(x)
    target = torch.full((n, n), eps / n) + torch.eye(n) * (1 - eps)
    manual = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
    torch.testing.assert_close(clip_contrastive_loss(x, y, s, label_smoothing=eps), manual)


def test_extra_negatives_raise_the_loss_and_only_the_image_side(unit_pairs):
    x, y = unit_pairs
    hard = F.normalize(x + 0.05, dim=1)  # negatives close to the images
    base = clip_contrastive_loss(x, y, 10.0)
    with_neg = clip_contrastive_loss(x, y, 10.0, negative_text_features=hard)
    assert with_neg > base
    logits = 10.0 * x @ torch.cat([y, hard]).T
    i2t = F.cross_entropy(logits, torch.arange(len(x)))
    t2i = F.cross_entropy(10.0 * y @ x.T, torch.arange(len(x)))
    torch.testing.assert_close(with_neg, (i2t + t2i) / 2)
    assert siglip_loss(x, y, 10.0, -5.0, negative_text_features=hard) > siglip_loss(x, y, 10.0, -5.0)


def test_hard_negative_beta_zero_is_infonce_and_beta_weights_hard_ones(unit_pairs):
    x, y = unit_pairs
    torch.testing.assert_close(hard_negative_clip_loss(x, y, 7.0, beta=0.0), clip_contrastive_loss(x, y, 7.0))
    # weighting towards similar negatives increases the denominator when negatives are close
    assert hard_negative_clip_loss(x, y, 7.0, beta=5.0) > hard_negative_clip_loss(x, y, 7.0, beta=0.0)


def test_contrastive_loss_module_learns_temperature(unit_pairs):
    x, y = unit_pairs
    for kind in ("infonce", "siglip", "hard_negative"):
        loss = ContrastiveLoss(kind)
        value = loss(x, y)
        value.backward()
        assert loss.log_scale.grad is not None and torch.isfinite(loss.log_scale.grad)
    assert ContrastiveLoss("infonce").temperature == pytest.approx(0.07, rel=1e-5)
    assert ContrastiveLoss("siglip").bias.item() == -10.0
    with pytest.raises(ValueError, match="hard_negative"):
        ContrastiveLoss("hard_negative")(x, y, y)


def test_scale_is_clamped():
    loss = ContrastiveLoss("infonce", init_temperature=0.001, max_scale=100.0)
    assert loss.scale.item() == pytest.approx(100.0)


def test_alignment_and_uniformity_match_numpy(unit_pairs):
    x, y = unit_pairs
    xn, yn = x.double().numpy(), y.double().numpy()
    assert alignment(x, y) == pytest.approx(np.mean(np.sum((xn - yn) ** 2, 1)), rel=1e-6)
    d2 = [np.sum((xn[i] - xn[j]) ** 2) for i in range(len(xn)) for j in range(len(xn)) if i < j]
    assert uniformity(x) == pytest.approx(np.log(np.mean(np.exp(-2 * np.array(d2)))), rel=1e-6)
    assert modality_gap(x, y) == pytest.approx(np.linalg.norm(xn.mean(0) - yn.mean(0)), rel=1e-6)


def test_diagnostics_order_good_and_bad_spaces():
    g = torch.Generator().manual_seed(1)
    spread = F.normalize(torch.randn(200, 16, generator=g), dim=1)
    collapsed = F.normalize(torch.ones(200, 16) + 0.01 * torch.randn(200, 16, generator=g), dim=1)
    assert uniformity(spread) < uniformity(collapsed)
    assert alignment(spread, spread) == pytest.approx(0.0, abs=1e-12)
    d = embedding_diagnostics(spread, collapsed)
    assert set(d) == {"alignment", "uniformity_image", "uniformity_text", "modality_gap"}
    assert d["modality_gap"] > 0.5


@pytest.mark.parametrize("bad", [
    lambda x, y: clip_contrastive_loss(x, y[:5], 1.0),
    lambda x, y: clip_contrastive_loss(x, y[:, :4], 1.0),
    lambda x, y: clip_contrastive_loss(x[:0], y[:0], 1.0),
    lambda x, y: clip_contrastive_loss(x, y, 0.0),
    lambda x, y: clip_contrastive_loss(x, y, float("nan")),
    lambda x, y: clip_contrastive_loss(x, y, 1.0, label_smoothing=1.0),
    lambda x, y: clip_contrastive_loss(x, y, 1.0, negative_text_features=y[:, :3]),
    lambda x, y: siglip_loss(x, y, 1.0, float("inf")),
    lambda x, y: hard_negative_clip_loss(x[:1], y[:1], 1.0),
    lambda x, y: uniformity(x[:1]),
    lambda x, y: ContrastiveLoss("triplet"),
])
def test_bad_inputs_raise(unit_pairs, bad):
    x, y = unit_pairs
    with pytest.raises((ValueError, TypeError)):
        bad(x, y)


def test_nan_features_are_rejected(unit_pairs):
    x, y = unit_pairs
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        clip_contrastive_loss(x, y, 1.0)
