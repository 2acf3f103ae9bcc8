import pytest
import torch

from course_lib.compression.attention import unfuse_attention
from course_lib.compression.structured import (
    activation_importance,
    apply_plan,
    block_sizes,
    head_importance,
    neuron_importance,
    plan_structured,
    prune_attention_heads,
    prune_mlp_neurons,
    prune_vit,
)
from course_lib.models import count_parameters


@pytest.mark.parametrize("calibrated", [False, True])
def test_pruned_equals_mask_equivalent(tiny_clip, images, calibrated):
    visual = unfuse_attention(tiny_clip[0].visual)
    plan = plan_structured(visual, 0.5, 0.5, calibration=images if calibrated else None)
    small, masked = apply_plan(visual, plan, physical=True), apply_plan(visual, plan, physical=False)
    assert block_sizes(small) == [(2, 128)] * 4 and block_sizes(masked) == [(4, 256)] * 4
    assert count_parameters(small) < 0.6 * count_parameters(visual)
    with torch.no_grad():
        torch.testing.assert_close(small(images), masked(images), atol=1e-5, rtol=1e-4)
        assert (small(images) - visual(images)).abs().max() > 1e-3, "pruning must change the function"


def test_text_tower_prunes_too(tiny_clip):
    model, tok = tiny_clip
    clip = unfuse_attention(model)
    plan = plan_structured(clip.transformer, 0.5, 0.75)
    small, masked = apply_plan(clip.transformer, plan, True), apply_plan(clip.transformer, plan, False)
    assert block_sizes(small) == [(2, 32)] * 2
    tokens = tok(["a red circle", "a small blue cross"])
    outs = []
    for transformer in (small, masked):
        clip.transformer = transformer
        with torch.no_grad():
            outs.append(clip.encode_text(tokens))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)


def test_importance_keeps_the_strongest(tiny_clip):
    visual = unfuse_attention(tiny_clip[0].visual)
    block = visual.transformer.resblocks[0]
    with torch.no_grad():
        block.mlp.c_proj.weight[:, 7] *= 50
        block.attn.out_proj.weight[:, 64:96] *= 50  # head 2
    assert neuron_importance(block).argmax() == 7 and head_importance(block.attn).argmax() == 2
    plan = plan_structured(visual, 0.75, 255 / 256)
    assert plan.heads[0].tolist() == [2] and plan.neurons[0].tolist() == [7]
    neurons, heads = activation_importance(visual, torch.randn(4, 3, 32, 32))
    assert [n.shape[0] for n in neurons] == [256] * 4 and [h.shape[0] for h in heads] == [4] * 4


def test_prune_vit_gives_a_smaller_faster_shape(tiny_clip, images):
    small = prune_vit(tiny_clip[0].visual, 0.5, 0.5)
    assert block_sizes(small) == [(2, 128)] * 4
    with torch.no_grad():
        assert small(images).shape == (6, 64)


def test_bad_inputs(tiny_clip):
    visual = unfuse_attention(tiny_clip[0].visual)
    block = visual.transformer.resblocks[0]
    with pytest.raises(IndexError):
        prune_mlp_neurons(block, torch.tensor([0, 300]))
    with pytest.raises(ValueError, match="distinct"):
        prune_attention_heads(block, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plan_structured(visual, 1.5, 0.5)
    with pytest.raises(TypeError, match="LinearAttention"):
        head_importance(tiny_clip[0].visual.transformer.resblocks[0].attn)
    with pytest.raises(TypeError):
        plan_structured(torch.nn.Linear(2, 2), 0.5, 0.5)
    with pytest.raises(ValueError):
        activation_importance(visual, torch.randn(0, 3, 32, 32))
