import pytest
import torch
import torch.nn.functional as F

from course_lib.compression.distillation import (
    DistillConfig,
    FeatureProjector,
    StudentSpec,
    distill_clip,
    feature_distillation_loss,
    kd_loss,
    make_student,
    parameter_ratio,
    random_student,
    relational_kd_loss,
)
from course_lib.compression.structured import block_sizes
from course_lib.compression.training import make_teacher_pool


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kd_loss_equals_torch_kl_div(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 3
    ref = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean") * temperature**2
    torch.testing.assert_close(kd_loss(s, t, temperature), ref)
    assert kd_loss(t, t, temperature).abs() < 1e-6


def test_kd_loss_gradient_flows_to_student_only():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_relational_kd_is_kd_over_rows_and_columns():
    g = torch.Generator().manual_seed(1)
    si, st, ti, tt = (torch.randn(6, 16, generator=g) for _ in range(4))
    n = lambda x: F.normalize(x, dim=-1)  # noqa: E731
    s, t = n(si) @ n(st).T, n(ti) @ n(tt).T
    expected = 0.5 * (kd_loss(s, t, 0.1) + kd_loss(s.T, t.T, 0.1))
    torch.testing.assert_close(relational_kd_loss(si, st, ti, tt, temperature=0.1), expected)
    assert relational_kd_loss(ti * 5, tt, ti, tt, 0.1).abs() < 1e-6  # scale-invariant: normalised first
    scaled = relational_kd_loss(si, st, ti, tt, temperature=1.0, logit_scale=10.0)
    torch.testing.assert_close(scaled, relational_kd_loss(si, st, ti, tt, temperature=0.1) * 100)


def test_feature_distillation_loss():
    x = torch.randn(5, 8)
    assert feature_distillation_loss(x, 3 * x).abs() < 1e-6
    assert feature_distillation_loss(x, -x) == pytest.approx(2.0)
    e = torch.eye(2)
    assert feature_distillation_loss(e, e.flip(0)) == pytest.approx(1.0)
    proj = FeatureProjector(8, 8)
    torch.testing.assert_close(proj(x), x)
    assert FeatureProjector(4, 8)(torch.randn(3, 4)).shape == (3, 8)


@pytest.mark.parametrize(
    "call",
    [
        lambda: kd_loss(torch.randn(3, 4), torch.randn(3, 5), 1.0),
        lambda: kd_loss(torch.randn(0, 4), torch.randn(0, 4), 1.0),
        lambda: kd_loss(torch.randn(3, 4), torch.randn(3, 4), 0.0),
        lambda: kd_loss(torch.randn(3, 4), torch.randn(3, 4), -1.0),
        lambda: feature_distillation_loss(torch.randn(3, 4), torch.randn(3, 8)),
        lambda: relational_kd_loss(torch.randn(3), torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)),
    ],
)
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call()


def test_student_inherits_weights_and_fits_the_budget(tiny_clip):
    teacher, tok = tiny_clip
    spec = StudentSpec()
    student = make_student(teacher, spec)
    assert parameter_ratio(student, teacher) <= 0.25
    assert block_sizes(student.visual) == [(1, 64)] * 2 and block_sizes(student.transformer) == [(1, 32)] * 2
    torch.testing.assert_close(student.visual.conv1.weight, teacher.visual.conv1.weight)
    scratch = random_student(spec, seed=0)
    assert [p.shape for p in scratch.parameters()] == [p.shape for p in student.parameters()]
    assert not torch.equal(scratch.visual.conv1.weight, student.visual.conv1.weight)
    with pytest.raises(ValueError, match="layers"):
        make_student(teacher, StudentSpec(visual_layers=(0, 9)))


def test_a_few_distillation_steps_reduce_the_loss(tiny_clip):
    teacher, tok = tiny_clip
    pool = make_teacher_pool(teacher, tok, 48, seed=0)
    assert pool.image_features.shape == (48, 64) and torch.allclose(pool.image_features.norm(dim=1), torch.ones(48), atol=1e-5)
    student = make_student(teacher, StudentSpec())
    seen = []
    history = distill_clip(student, pool, DistillConfig(steps=8, batch_size=16, lr=3e-3), on_eval=lambda s, m: seen.append(s), eval_every=3)
    assert len(history) == 8 and sum(history[-2:]) < sum(history[:2])
    assert seen == [3, 6, 8] and not student.training
    with pytest.raises(ValueError, match="weights"):
        distill_clip(student, pool, DistillConfig(steps=1, batch_size=8, relational_weight=0, feature_weight=0))
    with pytest.raises(ValueError, match="batch_size"):
        distill_clip(student, pool, DistillConfig(steps=1, batch_size=500))


def test_output_kd_on_zero_shot_logits_trains_the_image_tower(tiny_clip):
    from course_lib.compression.distillation import distill_zero_shot_logits
    from course_lib.models import zero_shot_classifier
    from course_lib.data import ShapeWorldConfig

    teacher, tok = tiny_clip
    pool = make_teacher_pool(teacher, tok, 48, seed=0)
    classifier = zero_shot_classifier(teacher, tok, ShapeWorldConfig().class_names)
    visual = make_student(teacher, StudentSpec()).visual
    losses = distill_zero_shot_logits(visual, pool, classifier, temperature=4.0, steps=6, batch_size=16)
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2]) and not visual.training
    with pytest.raises(ValueError, match="classifier"):
        distill_zero_shot_logits(visual, pool, classifier[:, :10], temperature=4.0, steps=1)
