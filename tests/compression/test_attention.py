import pytest
import torch
import torch.nn as nn

from course_lib.compression.attention import LinearAttention, UnsupportedAttentionError, unfuse_attention


def _mha(batch_first: bool = True) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha


@pytest.mark.parametrize("batch_first", [True, False])
def test_equals_multihead_attention(batch_first):
    mha = _mha(batch_first)
    lin = LinearAttention.from_multihead(mha).eval()
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    with torch.no_grad():
        ref = mha(x, x, x, need_weights=False)[0]
        out, weights = lin(x, x, x, need_weights=False)
    assert weights is None
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["float", "bool"])
def test_masks_follow_multihead_convention(kind):
    mha = _mha()
    lin = LinearAttention.from_multihead(mha)
    x = torch.randn(2, 5, 32)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)  # True = not allowed
    mask = causal if kind == "bool" else torch.zeros(5, 5).masked_fill(causal, float("-inf"))
    with torch.no_grad():
        torch.testing.assert_close(lin(x, attn_mask=mask)[0], mha(x, x, x, need_weights=False, attn_mask=mask)[0], atol=1e-5, rtol=1e-5)


def test_unfused_tiny_clip_is_the_same_function(tiny_clip, images):
    model, tok = tiny_clip
    unfused = unfuse_attention(model)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in unfused.modules())
    assert any(isinstance(m, nn.MultiheadAttention) for m in model.modules()), "the original must be untouched"
    tokens = tok(["a red circle", "a small blue square left of a green cross"])
    with torch.no_grad():
        torch.testing.assert_close(unfused.encode_image(images), model.encode_image(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(unfused.encode_text(tokens), model.encode_text(tokens), atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise():
    lin = LinearAttention.from_multihead(_mha())
    x = torch.randn(2, 5, 32)
    with pytest.raises(UnsupportedAttentionError, match="self-attention"):
        lin(x, torch.randn(2, 5, 32), x)
    with pytest.raises(UnsupportedAttentionError, match="key_padding_mask"):
        lin(x, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected query"):
        lin(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="attn_mask"):
        lin(x, attn_mask=torch.zeros(5))
    with pytest.raises(TypeError):
        LinearAttention.from_multihead(nn.Linear(3, 3))
    with pytest.raises(UnsupportedAttentionError, match="kdim"):
        LinearAttention.from_multihead(nn.MultiheadAttention(32, 4, kdim=8, vdim=8))


def test_zero_heads_outputs_the_bias():
    lin = LinearAttention(8, 0, 4)
    out, _ = lin(torch.randn(2, 3, 8))
    torch.testing.assert_close(out, lin.out_proj.bias.expand(2, 3, 8))
