import pytest
import torch

from course_lib.compression.structured import prune_vit
from course_lib.compression.training import ZeroShotProbe, cosine_lr, finetune_visual, make_teacher_pool, visual_loss
from course_lib.data import ShapeWorldConfig, generate, split_seed
from course_lib.models import zero_shot_evaluate


@pytest.fixture(scope="module")
def probe(tiny_clip):
    model, tok = tiny_clip
    return ZeroShotProbe(model, tok, size=200)


def test_probe_matches_zero_shot_evaluate(tiny_clip, probe):
    model, tok = tiny_clip
    test = generate(200, split_seed("test", 0), ShapeWorldConfig())
    ref = zero_shot_evaluate(model, tok, test.images, test.labels, ShapeWorldConfig().class_names)
    scores = probe.evaluate(model.visual)
    assert scores["accuracy"] == pytest.approx(ref.accuracy)
    assert scores["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert probe.evaluate_clip(model, tok)["accuracy"] == pytest.approx(ref.accuracy)


def test_probe_rejects_broken_encoders(probe):
    with pytest.raises(ValueError, match="NaN"):
        probe.evaluate(lambda x: torch.full((x.shape[0], 64), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        probe.evaluate(lambda x: torch.zeros(x.shape[0]))


def test_finetune_recovers_a_pruned_tower(tiny_clip, probe):
    model, tok = tiny_clip
    pool = make_teacher_pool(model, tok, 128, seed=0)
    pruned = prune_vit(model.visual, 0.5, 0.5)
    before = probe.evaluate(pruned)["cosine"]
    calls = []
    losses = finetune_visual(pruned, pool, steps=15, lr=5e-4, batch_size=32, after_step=calls.append)
    assert calls == list(range(15)) and len(losses) == 15 and not pruned.training
    assert probe.evaluate(pruned)["cosine"] > before + 0.02, "fine-tuning must pull the features towards the teacher's"
    with pytest.raises(ValueError):
        finetune_visual(pruned, pool, steps=1, batch_size=1000)


def test_visual_loss_and_schedule():
    f = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert visual_loss(f, f, f, 1.0, 1.0, 0.0).abs() < 1e-6
    assert visual_loss(f, f, f, 100.0, 0.0, 1.0) < visual_loss(f, f, f.roll(1, 0), 100.0, 0.0, 1.0)
    assert cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.0)
