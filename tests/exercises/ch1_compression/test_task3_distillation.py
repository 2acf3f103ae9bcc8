"""Graded tests of task 1.3: kd_loss, feature_distillation_loss, clip_distillation_loss.

References: hand-worked KL values, ``F.kl_div(..., log_target=True, reduction="batchmean")``
in float64, ``F.cosine_similarity``, and autograd on those references for the gradients
(the submission's gradients are computed next to it by a trusted helper).

Tolerances: each value is compared with its float64 reference to within
``64 * eps * magnitude``, eps that of the inputs (float32: 1.2e-7, float64: 2.2e-16), and
``magnitude`` a bound on how much rounding errors grow. A log-softmax of ``x / T`` is off
by about ``eps * (max|x| / T + log C)`` per entry and the KL sums such differences weighted
by probabilities, times ``T**2``: kd_loss uses ``T**2 * (1 + log C) + T * (max|s| + max|t|)``.
A cosine of D-wide rows is off by about ``sqrt(D) * eps`` (feature loss:
``sqrt(D) + 1``); the CLIP distillation adds the normalisations to a kd_loss of logits in
[-1, 1]: ``T**2 * (1 + log B) + T * (2 + sqrt(D_s) + sqrt(D_t))``. float32 inputs thus allow
1e-5 to 2e-2 (the latter for logits of size 1000), so float32 and float64 arithmetic both
pass and float16 fails; float64 inputs allow 1e-13 to 1e-12, so float32 work converted
back fails. Gradients: 1e-6 absolute plus 1e-4 relative (1e-3 for the CLIP loss).
Zero feature rows follow ``F.normalize`` / ``F.cosine_similarity``: their cosine with
anything is 0.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.grading.testing import (
    EPS,
    as_float,
    as_scalar,
    assert_close,
    assert_gradients,
    assert_not_mutated,
    assert_precision,
    expect_error,
)

TASK = "ch1_compression/task3_distillation"


def _kd_magnitude(s, t, T):
    return T * T * (1 + math.log(s.shape[1])) + T * float(s.abs().max() + t.abs().max())


def _feature_magnitude(s):
    return s.shape[1] ** 0.5 + 1


def _clip_magnitude(si, ti, T):
    return T * T * (1 + math.log(si.shape[0])) + T * (2 + si.shape[1] ** 0.5 + ti.shape[1] ** 0.5)


def _tol(magnitude, dtype=torch.float32):
    return 64 * EPS[dtype] * magnitude


def _kd_ref(s, t, T):
    s, t = s.double(), t.double()
    return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                    reduction="batchmean") * T * T


def _clip_ref(si, st, ti, tt, T):
    n = lambda x: F.normalize(x.double(), dim=-1)  # noqa: E731
    s = n(si) @ n(st).T
    t = n(ti) @ n(tt).T
    return (_kd_ref(s, t, T) + _kd_ref(s.T, t.T, T)) / 2


def _randn(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale



@pytest.mark.points(2)
def test_kd_hand_worked(impl):
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher probabilities [0.75, 0.25], student [0.5, 0.5]
    forward_kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    value = as_scalar(impl.kd_loss(s, t, 1.0), "kd_loss")
    assert abs(value - forward_kl) < 1e-5, (
        f"kd_loss([[0, 0]], [[ln 3, 0]], T=1) should be KL(teacher || student) = {forward_kl:.6f}, got {value:.6f}"
        + (" - that is KL(student || teacher); the teacher's distribution is the one you average over"
           if abs(value - (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))) < 1e-5 else ""))
    s2 = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    t2 = torch.tensor([[math.log(3.0), 0.0], [1.0, -1.0]])  # second row: identical, KL 0
    value = as_scalar(impl.kd_loss(s2, t2, 1.0), "kd_loss")
    assert abs(value - forward_kl / 2) < 1e-5, (
        f"with a second, identical row the loss should halve to {forward_kl / 2:.6f} (mean over the batch, sum "
        f"over classes), got {value:.6f}")


@pytest.mark.points(2)
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_kd_matches_reference(impl, T):
    for seed, (b, c) in enumerate([(8, 10), (3, 5), (16, 2)]):
        s, t = _randn((b, c), seed, 2.0), _randn((b, c), seed + 100, 3.0)
        value = as_scalar(impl.kd_loss(s, t, T), "kd_loss")
        ref = float(_kd_ref(s, t, T))
        assert abs(value - ref) <= _tol(_kd_magnitude(s, t, T)), (
            f"kd_loss for B={b}, C={c}, T={T} should be {ref:.6f}, got {value:.6f}: sum over classes, mean over "
            "the batch, times T**2")


@pytest.mark.points(1)
def test_kd_is_scaled_by_T_squared(impl):
    s, t = _randn((6, 7), 3), _randn((6, 7), 4, 2.0)
    for T in (1.0, 4.0):
        value = as_scalar(impl.kd_loss(s, t, T), "kd_loss")
        ref = float(_kd_ref(s, t, T))
        assert abs(value - ref) <= _tol(_kd_magnitude(s, t, T)), (
            f"kd_loss at T={T} should be {ref:.6f}, got {value:.6f}; the loss should be scaled by T**2 - compare "
            "at T=1 and T=4")


@pytest.mark.points(1)
def test_kd_is_zero_for_identical_logits_and_never_negative(impl):
    s = _randn((5, 9), 5, 3.0)
    value = as_scalar(impl.kd_loss(s, s.clone(), 2.0), "kd_loss")
    assert abs(value) <= _tol(_kd_magnitude(s, s, 2.0)), f"kd_loss of identical logits should be 0, got {value}"
    for seed in range(5):
        s, t = _randn((4, 6), seed), _randn((4, 6), seed + 50)
        value = as_scalar(impl.kd_loss(s, t, 3.0), "kd_loss")
        assert value >= -_tol(_kd_magnitude(s, t, 3.0)), f"a KL divergence is never negative, got {value}"


@pytest.mark.points(2)
def test_kd_gradient_reaches_the_student(impl):
    s, t, T = _randn((5, 6), 6, 2.0), _randn((5, 6), 7, 2.0), 3.0
    out = impl.helper("call_with_grad", "kd_loss", [s, t, T], {}, [0])
    assert "error" not in out, f"kd_loss must be differentiable with respect to student_logits: {out.get('error')}"
    grad = out["grads"][0]
    assert grad is not None, "no gradient reached student_logits (did you detach it or use .item()?)"
    expected = T * (torch.softmax(s.double() / T, -1) - torch.softmax(t.double() / T, -1)) / s.shape[0]
    assert_close(grad, expected, "d kd_loss / d student_logits", atol=1e-6, rtol=1e-4,
                 hint="it should equal T * (softmax(s/T) - softmax(t/T)) / B")


@pytest.mark.points(1)
def test_kd_is_stable_for_large_logits(impl):
    s = torch.tensor([[1000.0, 0.0, -1000.0], [50.0, 20.0, -30.0]])
    t = torch.tensor([[0.0, 1000.0, -1000.0], [-30.0, 60.0, 0.0]])
    for T in (1.0, 2.0):
        value = as_scalar(impl.kd_loss(s, t, T), "kd_loss")
        ref = float(_kd_ref(s, t, T))
        assert math.isfinite(value), (
            f"kd_loss is {value} for large logits (T={T}); softmax underflows to 0 and log(0) = -inf: use log_softmax")
        assert abs(value - ref) <= _tol(_kd_magnitude(s, t, T)), \
            f"kd_loss for large logits (T={T}) should be {ref:.3f}, got {value:.3f}"


@pytest.mark.points(1)
def test_kd_rejects_bad_input(impl):
    s, t = _randn((3, 4), 8), _randn((3, 4), 9)
    impl.kd_loss(s, t, 2.0)  # valid call first
    for T in (0.0, -1.0, float("nan")):
        expect_error(impl.kd_loss, s, t, T, what=f"kd_loss(..., temperature={T})")
    expect_error(impl.kd_loss, s, _randn((3, 5), 10), 2.0, what="kd_loss with logits of shapes [3, 4] and [3, 5]")


@pytest.mark.points(1)
def test_feature_loss_hand_worked(impl):
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])  # cosines 1, 0, -1 -> 1 - cos = 0, 1, 2
    value = as_scalar(impl.feature_distillation_loss(s, t), "feature_distillation_loss")
    assert abs(value - 1.0) <= _tol(_feature_magnitude(s)), (
        f"feature_distillation_loss should be mean(1 - cos) = (0 + 1 + 2) / 3 = 1 for this example, got {value}")


@pytest.mark.points(2)
def test_feature_loss_matches_reference(impl):
    for seed, (b, d) in enumerate([(6, 16), (16, 3), (1, 5)]):
        s, t = _randn((b, d), seed + 20), _randn((b, d), seed + 40)
        ref = float((1 - F.cosine_similarity(s.double(), t.double(), dim=-1)).mean())
        value = as_scalar(impl.feature_distillation_loss(s, t), "feature_distillation_loss")
        assert abs(value - ref) <= _tol(_feature_magnitude(s)), (
            f"feature_distillation_loss for B={b}, D={d} should be {ref:.6f}, got {value:.6f}: cosine of each row "
            "pair (along the feature dimension), then the mean over the batch")
        scaled = s * torch.rand(b, 1, generator=torch.Generator().manual_seed(seed)).add(0.1) * 7
        value = as_scalar(impl.feature_distillation_loss(scaled, t), "feature_distillation_loss")
        assert abs(value - ref) <= _tol(_feature_magnitude(s)), \
            "the loss must not depend on the lengths of the rows (it is a cosine)"


@pytest.mark.points(1)
def test_feature_loss_gradient(impl):
    assert_gradients(impl, "feature_distillation_loss", [_randn((4, 5), 30), _randn((4, 5), 31)], [0],
                     lambda s, t: (1 - F.cosine_similarity(s, t.double(), dim=-1)).mean(), ["student_features"])


def _clip_inputs(seed, b=6, ds=8, dt=16):
    return (_randn((b, ds), seed, 2.0), _randn((b, ds), seed + 1, 0.5), _randn((b, dt), seed + 2, 3.0),
            _randn((b, dt), seed + 3))


@pytest.mark.points(2)
@pytest.mark.parametrize("T", [1.0, 0.5])
def test_clip_distillation_matches_reference(impl, T):
    for seed in (50, 60):
        args = _clip_inputs(seed)
        value = as_scalar(impl.clip_distillation_loss(*args, T), "clip_distillation_loss")
        ref = float(_clip_ref(*args, T))
        assert abs(value - ref) <= _tol(_clip_magnitude(args[0], args[2], T)), (
            f"clip_distillation_loss (T={T}) should be {ref:.6f}, got {value:.6f}; student width 8, teacher width "
            "16: only the B x B similarity matrices are compared")


@pytest.mark.points(1)
def test_clip_distillation_uses_both_directions(impl):
    si, st, ti, tt = _clip_inputs(70)
    T = 0.7
    value = as_scalar(impl.clip_distillation_loss(si, st, ti, tt, T), "clip_distillation_loss")
    ref = float(_clip_ref(si, st, ti, tt, T))
    n = lambda x: F.normalize(x.double(), dim=-1)  # noqa: E731
    one_way = float(_kd_ref(n(si) @ n(st).T, n(ti) @ n(tt).T, T))
    tol = _tol(_clip_magnitude(si, ti, T))
    hint = (" - that is only the image->text term; average it with the text->image term (the transposed logits)"
            if abs(value - one_way) <= tol else "")
    assert abs(value - ref) <= tol, f"clip_distillation_loss should be {ref:.6f}, got {value:.6f}{hint}"


@pytest.mark.points(1)
def test_clip_distillation_normalises_features(impl):
    si, st, ti, tt = _clip_inputs(80)
    base = as_scalar(impl.clip_distillation_loss(si, st, ti, tt, 1.0), "clip_distillation_loss")
    g = torch.Generator().manual_seed(81)
    scale = lambda x: x * (torch.rand(x.shape[0], 1, generator=g) * 10 + 0.1)  # noqa: E731
    value = as_scalar(impl.clip_distillation_loss(scale(si), scale(st), scale(ti), scale(tt), 1.0),
                    "clip_distillation_loss")
    assert abs(value - base) <= 2 * _tol(_clip_magnitude(si, ti, 1.0)), (
        "clip_distillation_loss changed when rows were rescaled: L2-normalize all four feature tensors first")


@pytest.mark.points(1)
def test_clip_distillation_gradient(impl):
    si, st, ti, tt = _clip_inputs(90, b=4, ds=5, dt=7)
    assert_gradients(impl, "clip_distillation_loss", [si, st, ti, tt, 2.0], [0, 1], _clip_ref,
                     ["student_image", "student_text"], rtol=1e-3)


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    s, t = _randn((4, 6), 100), _randn((4, 6), 101)
    value = as_scalar(impl.kd_loss(s, t, 2.0), "kd_loss")
    assert_not_mutated(impl, "kd_loss")
    assert abs(value - float(_kd_ref(s, t, 2.0))) <= _tol(_kd_magnitude(s, t, 2.0)), \
        "kd_loss is wrong (see the other tests)"
    value = as_scalar(impl.feature_distillation_loss(s, t), "feature_distillation_loss")
    assert_not_mutated(impl, "feature_distillation_loss")
    ref = float((1 - F.cosine_similarity(s.double(), t.double(), dim=-1)).mean())
    assert abs(value - ref) <= _tol(_feature_magnitude(s)), "feature_distillation_loss is wrong (see the other tests)"
    args = _clip_inputs(102)
    value = as_float(impl.clip_distillation_loss(*args, 1.0), "clip_distillation_loss")
    assert_not_mutated(impl, "clip_distillation_loss")
    assert abs(value - float(_clip_ref(*args, 1.0))) <= _tol(_clip_magnitude(args[0], args[2], 1.0)), \
        "clip_distillation_loss is wrong (see the other tests)"


@pytest.mark.points(1)
@pytest.mark.parametrize("function", ["kd_loss", "feature_distillation_loss", "clip_distillation_loss"])
def test_float64_precision(impl, function):
    f64 = torch.float64
    if function == "kd_loss":
        s, t = _randn((6, 9), 110, 3.0).double(), _randn((6, 9), 111, 2.0).double()
        s = s + 1e-9 * _randn((6, 9), 112).double()  # digits that float32 cannot hold
        value, ref, magnitude = impl.kd_loss(s, t, 2.0), _kd_ref(s, t, 2.0), _kd_magnitude(s, t, 2.0)
    elif function == "feature_distillation_loss":
        s, t = _randn((7, 12), 113).double(), _randn((7, 12), 114).double()
        s = s + 1e-9 * _randn((7, 12), 115).double()
        value = impl.feature_distillation_loss(s, t)
        ref, magnitude = (1 - F.cosine_similarity(s, t, dim=-1)).mean(), _feature_magnitude(s)
    else:
        args = [x.double() + 1e-9 * _randn(x.shape, 116 + i).double() for i, x in enumerate(_clip_inputs(117))]
        value = impl.clip_distillation_loss(*args, 0.7)
        ref, magnitude = _clip_ref(*args, 0.7), _clip_magnitude(args[0], args[2], 0.7)
    as_scalar(value, function)
    assert_precision(value, ref, f"{function} of float64 inputs", f64, magnitude)


@pytest.mark.points(1)
def test_zero_feature_vectors(impl):
    s, t = _randn((4, 6), 120), _randn((4, 6), 121)
    s[1] = 0.0
    t[3] = 0.0
    value = as_scalar(impl.feature_distillation_loss(s, t), "feature_distillation_loss")
    ref = float((1 - F.cosine_similarity(s.double(), t.double(), dim=-1)).mean())
    assert math.isfinite(value), (
        f"feature_distillation_loss is {value} when a row is all zeros: a zero vector has cosine 0 with anything (as "
        "F.cosine_similarity computes it, dividing by max(|s| |t|, eps)), so that row contributes 1 - 0 = 1")
    assert abs(value - ref) <= _tol(_feature_magnitude(s)), (
        f"feature_distillation_loss with zero rows should be {ref:.6f} (each zero row contributes 1 - 0), got {value:.6f}")
    si, st, ti, tt = _clip_inputs(122)
    si[0] = 0.0
    tt[2] = 0.0
    value = as_scalar(impl.clip_distillation_loss(si, st, ti, tt, 1.0), "clip_distillation_loss")
    ref = float(_clip_ref(si, st, ti, tt, 1.0))
    assert math.isfinite(value), (
        f"clip_distillation_loss is {value} when a feature row is all zeros: F.normalize leaves a zero row zero (it "
        "divides by max(norm, eps)), so its similarities are 0; do not divide by the bare norm")
    assert abs(value - ref) <= _tol(_clip_magnitude(si, ti, 1.0)), (
        f"clip_distillation_loss with zero rows should be {ref:.6f} (a zero row normalizes to zeros), got {value:.6f}")


@pytest.mark.points(1)
def test_empty_batch_is_rejected(impl):
    s, t = _randn((3, 4), 130), _randn((3, 4), 131)
    impl.kd_loss(s, t, 1.0)  # valid call first
    expect_error(impl.kd_loss, s[:0], t[:0], 1.0, what="kd_loss of an empty batch ([0, 4] logits)")
    expect_error(impl.feature_distillation_loss, s[:0], t[:0], what="feature_distillation_loss of an empty batch")
    args = [x[:0] for x in _clip_inputs(132)]
    expect_error(impl.clip_distillation_loss, *args, 1.0, what="clip_distillation_loss of an empty batch")


@pytest.mark.points(1)
def test_feature_and_clip_losses_reject_bad_input(impl):
    si, st, ti, tt = _clip_inputs(140)
    impl.feature_distillation_loss(si, st)  # valid calls first
    impl.clip_distillation_loss(si, st, ti, tt, 1.0)
    expect_error(impl.feature_distillation_loss, si, ti, what="feature_distillation_loss of [6, 8] and [6, 16] features")
    expect_error(impl.clip_distillation_loss, si, st, ti[:5], tt[:5], 1.0,
                 what="clip_distillation_loss with a student batch of 6 and a teacher batch of 5")
    expect_error(impl.clip_distillation_loss, si, st[:, :5], ti, tt, 1.0,
                 what="clip_distillation_loss with student image width 8 and student text width 5")
    for T in (0.0, -2.0):
        expect_error(impl.clip_distillation_loss, si, st, ti, tt, T, what=f"clip_distillation_loss(..., temperature={T})")
