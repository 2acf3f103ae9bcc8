"""Graded tests of task 2.1: clip_contrastive_loss and siglip_loss.

References: ``open_clip.loss.ClipLoss`` and ``open_clip.loss.SigLipLoss`` (single process),
hand-worked values, and autograd through those references for the gradients.

Tolerances: the references run in float64 on the same inputs. A logit
``scale * <image, text>`` of unit vectors carries a rounding error of about
``scale * sqrt(D) * eps`` (at worst ``D`` instead of ``sqrt(D)``); a cross-entropy moves
by at most twice the largest logit error, plus ``eps`` times the log-sum-exp. So a CLIP loss
is compared to within ``64 * eps * (scale * sqrt(D) + |bias| + log B + 1)``, and SigLIP's,
a sum of B*B terms divided by B, to B times that. eps is that of the inputs: float32
inputs (eps 1.2e-7) allow 5e-5 at scale 1 and 4e-3 at scale 100, so float32 and float64
arithmetic both pass while float16 (eps 1e-3) fails; float64 inputs allow ~1e-13 at scale
10, so a loss computed in float32 and converted back fails. Hand-worked cases with exact
inputs use 1e-6. Gradients: 1e-6 absolute plus 1e-4 relative.
"""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.grading.testing import (
    EPS,
    as_scalar,
    assert_gradients,
    assert_not_mutated,
    assert_on_input_device,
    assert_precision,
    expect_error,
)

TASK = "ch2_multimodal/task1_contrastive"


def _magnitude(scale, d, b, bias=0.0, pairs=False):
    """How much rounding errors can grow in these losses (see "Tolerances" above)."""
    return (abs(float(scale)) * d ** 0.5 + abs(float(bias)) + math.log(b) + 1) * (b if pairs else 1)


def _tol(scale, d, b, bias=0.0, pairs=False, dtype=torch.float32):
    return 64 * EPS[dtype] * _magnitude(scale, d, b, bias, pairs)


@functools.cache
def _open_clip_losses():
    from open_clip.loss import ClipLoss, SigLipLoss  # imported on first use: collecting stays fast

    return ClipLoss, SigLipLoss


def ClipLoss():  # noqa: N802 - stands for open_clip.loss.ClipLoss
    return _open_clip_losses()[0]()


def SigLipLoss():  # noqa: N802 - stands for open_clip.loss.SigLipLoss
    return _open_clip_losses()[1]()


def _features(b, d, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(b, d, generator=g, dtype=dtype), dim=-1)  # matching pairs correlate
    return img, txt



def _clip_ref(img, txt, scale):
    return float(ClipLoss()(img.double(), txt.double(), scale))


def _siglip_ref(img, txt, scale, bias):
    return float(SigLipLoss()(img.double(), txt.double(), scale, bias))


@pytest.mark.points(2)
def test_clip_loss_hand_worked(impl):
    eye = torch.eye(2)
    value = as_scalar(impl.clip_contrastive_loss(eye, eye, 1.0), "clip_contrastive_loss")
    expected = math.log(1 + math.exp(-1))  # each row: cross-entropy of logits [1, 0] with target 0
    assert abs(value - expected) < 1e-6, (
        f"with image = text = identity (B=2) and logit_scale=1, every row and column has logits [1, 0], so the loss "
        f"is log(1 + e^-1) = {expected:.6f}; got {value:.6f}")
    value = as_scalar(impl.clip_contrastive_loss(eye, eye, 3.0), "clip_contrastive_loss")
    assert abs(value - math.log(1 + math.exp(-3))) < 1e-6, "multiply the similarities by logit_scale"


@pytest.mark.points(3)
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_matches_open_clip(impl, scale):
    for seed, (b, d) in enumerate([(8, 16), (2, 4), (16, 32)]):
        img, txt = _features(b, d, seed)
        value = as_scalar(impl.clip_contrastive_loss(img, txt, scale), "clip_contrastive_loss")
        ref = _clip_ref(img, txt, scale)
        assert abs(value - ref) <= _tol(scale, d, b), (
            f"clip_contrastive_loss (B={b}, logit_scale={scale}) should equal open_clip's ClipLoss = {ref:.6f}, "
            f"got {value:.6f}")
    value = as_scalar(impl.clip_contrastive_loss(img, txt, torch.tensor(scale)), "clip_contrastive_loss")
    assert abs(value - _clip_ref(img, txt, scale)) <= _tol(scale, d, b), \
        "logit_scale may also be given as a 0-dim tensor"


@pytest.mark.points(1)
def test_clip_loss_averages_both_directions(impl):
    img, txt = _features(6, 8, 10)
    txt = F.normalize(txt + 2.0 * img[0], dim=-1)  # make image->text and text->image differ
    value = as_scalar(impl.clip_contrastive_loss(img, txt, 5.0), "clip_contrastive_loss")
    ref = _clip_ref(img, txt, 5.0)
    logits = 5.0 * img.double() @ txt.double().T
    rows = float(F.cross_entropy(logits, torch.arange(6)))
    cols = float(F.cross_entropy(logits.T, torch.arange(6)))
    hint = ""
    tol = _tol(5.0, 8, 6)
    if abs(value - rows) < tol or abs(value - cols) < tol:
        hint = " - that is one direction only; average image->text (rows) and text->image (columns)"
    assert abs(value - ref) <= tol, f"clip_contrastive_loss should be {ref:.6f}, got {value:.6f}{hint}"


@pytest.mark.points(1)
def test_clip_loss_gradient(impl):
    img, txt = _features(5, 6, 11)
    assert_gradients(impl, "clip_contrastive_loss", [img, txt, 7.0], [0, 1], lambda i, t, s: ClipLoss()(i, t, s),
                     ["image_features", "text_features"])


@pytest.mark.points(1)
def test_clip_loss_is_stable_at_large_scale(impl):
    img, _ = _features(4, 8, 12)
    txt = img.clone()
    txt[1] = -img[1]  # one pair points the opposite way
    value = as_scalar(impl.clip_contrastive_loss(img, txt, 100.0), "clip_contrastive_loss")
    ref = _clip_ref(img, txt, 100.0)
    assert math.isfinite(value), ("clip_contrastive_loss is not finite at logit_scale=100: exp(100) overflows "
                                  "float32; use F.cross_entropy / log_softmax")
    assert abs(value - ref) <= _tol(100.0, 8, 4), f"expected {ref:.4f}, got {value:.4f}"


@pytest.mark.points(2)
def test_siglip_hand_worked(impl):
    eye = torch.eye(2)
    value = as_scalar(impl.siglip_loss(eye, eye, 10.0, -5.0), "siglip_loss")
    # positives: logit 10 - 5 = 5, label +1; negatives: logit 0 - 5 = -5, label -1: each costs -logsigmoid(5)
    expected = 4 * math.log1p(math.exp(-5)) / 2
    assert abs(value - expected) < 1e-7, (
        f"with image = text = identity (B=2), scale 10, bias -5: two positives with logit 5 and two negatives with "
        f"logit -5 (label -1) each cost ln(1 + e^-5), so the loss is 4 ln(1 + e^-5) / B = {expected:.6f}; "
        f"got {value:.6f}")


@pytest.mark.points(3)
@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (1.0, 0.0), (30.0, -5.0)])
def test_siglip_matches_open_clip(impl, scale, bias):
    for seed, (b, d) in enumerate([(8, 16), (3, 4), (12, 8)]):
        img, txt = _features(b, d, seed + 20)
        value = as_scalar(impl.siglip_loss(img, txt, scale, bias), "siglip_loss")
        ref = _siglip_ref(img, txt, scale, bias)
        assert abs(value - ref) <= _tol(scale, d, b, bias, pairs=True), (
            f"siglip_loss (B={b}, scale={scale}, bias={bias}) should equal open_clip's SigLipLoss = {ref:.6f}, "
            f"got {value:.6f}")
    value = as_scalar(impl.siglip_loss(img, txt, torch.tensor(scale), torch.tensor(bias)), "siglip_loss")
    assert abs(value - _siglip_ref(img, txt, scale, bias)) <= _tol(scale, d, b, bias, pairs=True), \
        "logit_scale and logit_bias may also be 0-dim tensors"


@pytest.mark.points(1)
def test_siglip_is_divided_by_the_batch_size(impl):
    img, txt = _features(10, 6, 30)
    value = as_scalar(impl.siglip_loss(img, txt, 10.0, -10.0), "siglip_loss")
    ref = _siglip_ref(img, txt, 10.0, -10.0)
    tol = _tol(10.0, 6, 10, -10.0, pairs=True)
    hint = " - that is the mean over all B*B pairs; SigLIP divides the sum by B" if abs(value * 10 - ref) < 10 * tol else ""
    assert abs(value - ref) <= tol, f"siglip_loss should be {ref:.6f}, got {value:.6f}{hint}"


@pytest.mark.points(1)
def test_siglip_is_stable_for_very_negative_margins(impl):
    img, _ = _features(4, 8, 31)
    txt = img.clone()
    txt[2] = -img[2]  # a positive pair with cosine -1: labels * logits = -200
    value = as_scalar(impl.siglip_loss(img, txt, 100.0, -100.0), "siglip_loss")
    ref = _siglip_ref(img, txt, 100.0, -100.0)
    assert math.isfinite(value), ("siglip_loss is not finite when labels * logits = -200: sigmoid underflows to 0 and "
                                  "log(0) = -inf; use F.logsigmoid")
    assert abs(value - ref) <= _tol(100.0, 8, 4, -100.0, pairs=True), f"expected {ref:.4f}, got {value:.4f}"


@pytest.mark.points(1)
def test_siglip_gradient(impl):
    img, txt = _features(5, 6, 32)
    assert_gradients(impl, "siglip_loss", [img, txt, 10.0, -10.0], [0, 1],
                     lambda i, t, s, b: SigLipLoss()(i, t, s, b), ["image_features", "text_features"])


@pytest.mark.points(1)
def test_float64_precision(impl):
    img, txt = _features(8, 16, 50, dtype=torch.float64)
    value = impl.clip_contrastive_loss(img, txt, 14.3)
    as_scalar(value, "clip_contrastive_loss")
    assert_precision(value, _clip_ref(img, txt, 14.3), "clip_contrastive_loss of float64 features", torch.float64,
                     _magnitude(14.3, 16, 8))
    value = impl.siglip_loss(img, txt, 10.0, -10.0)
    as_scalar(value, "siglip_loss")
    assert_precision(value, _siglip_ref(img, txt, 10.0, -10.0), "siglip_loss of float64 features", torch.float64,
                     _magnitude(10.0, 16, 8, -10.0, pairs=True))


@pytest.mark.points(1)
def test_on_the_inputs_device(impl):
    img, txt = _features(5, 8, 51)
    as_scalar(impl.clip_contrastive_loss(img, txt, 10.0), "clip_contrastive_loss")  # valid calls first
    as_scalar(impl.siglip_loss(img, txt, 10.0, -10.0), "siglip_loss")
    assert_on_input_device(impl, "clip_contrastive_loss", "clip_contrastive_loss", [img, txt, 10.0])
    assert_on_input_device(impl, "siglip_loss", "siglip_loss", [img, txt, 10.0, -10.0])


@pytest.mark.points(1)
def test_empty_batch_is_rejected(impl):
    img, txt = _features(3, 8, 52)
    impl.clip_contrastive_loss(img, txt, 1.0)  # valid calls first
    impl.siglip_loss(img, txt, 1.0, 0.0)
    expect_error(impl.clip_contrastive_loss, img[:0], txt[:0], 1.0, what="clip_contrastive_loss with B = 0")
    expect_error(impl.siglip_loss, img[:0], txt[:0], 1.0, 0.0, what="siglip_loss with B = 0")


@pytest.mark.points(1)
def test_bad_input_is_rejected(impl):
    img, txt = _features(4, 8, 40)
    impl.clip_contrastive_loss(img, txt, 1.0)  # valid calls first
    impl.siglip_loss(img, txt, 1.0, 0.0)
    expect_error(impl.clip_contrastive_loss, img, txt[:3], 1.0, what="clip_contrastive_loss with B=4 images, 3 texts")
    expect_error(impl.siglip_loss, img, txt[:3], 1.0, 0.0, what="siglip_loss with B=4 images, 3 texts")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    img, txt = _features(4, 8, 41)
    img, txt = img * 1.5, txt * 0.5  # not normalized: a loss that normalizes must not do it in place
    value = as_scalar(impl.clip_contrastive_loss(img, txt, 2.0), "clip_contrastive_loss")
    assert_not_mutated(impl, "clip_contrastive_loss")
    assert abs(value - _clip_ref(img, txt, 2.0)) <= _tol(2.0 * 1.5 * 0.5, 8, 4), \
        "clip_contrastive_loss is wrong for these (unnormalized) features: use them as given"
    value = as_scalar(impl.siglip_loss(img, txt, 2.0, -1.0), "siglip_loss")
    assert_not_mutated(impl, "siglip_loss")
    assert abs(value - _siglip_ref(img, txt, 2.0, -1.0)) <= _tol(2.0 * 1.5 * 0.5, 8, 4, -1.0, pairs=True), \
        "siglip_loss is wrong for these (unnormalized) features: use them as given"
