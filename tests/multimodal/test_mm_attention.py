"""Cross-modal attention equals nn.MultiheadAttention; masks; co-attention; heat maps."""

import pytest
import torch
from torch import nn

from course_lib.multimodal.attention import (
    CoAttentionLayer,
    CrossAttentionBlock,
    CrossModalAttention,
    attention_heatmap,
)


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 5, 32, generator=g)
    c = torch.randn(3, 17, 32, generator=g)
    mask = torch.ones(3, 17, dtype=torch.bool)
    mask[1, 10:] = False
    return q, c, mask


def test_equals_multihead_attention_with_mask(tokens):
    q, c, mask = tokens
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    ours = CrossModalAttention.from_multihead(mha)
    ref_out, ref_w = mha(q, c, c, key_padding_mask=~mask)
    out, w = ours(q, c, mask, return_weights=True)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)


def test_weights_are_distributions_that_skip_padding(tokens):
    q, c, mask = tokens
    attn = CrossModalAttention(32, 4)
    _, w = attn(q, c, mask, return_weights=True, average_weights=False)
    assert w.shape == (3, 4, 5, 17)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 5))
    assert w[1, :, :, 10:].abs().max() == 0
    # padded context tokens cannot change the output
    c2 = c.clone()
    c2[1, 10:] = 100.0
    torch.testing.assert_close(attn(q, c2, mask)[1], attn(q, c, mask)[1])


def test_output_depends_on_context_not_on_other_queries(tokens):
    q, c, _ = tokens
    attn = CrossModalAttention(32, 4)
    full = attn(q, c)
    torch.testing.assert_close(attn(q[:, :2], c), full[:, :2])  # queries are independent


@pytest.mark.parametrize("bad", [
    lambda a, q, c, m: a(q[0], c),  # 2-D
    lambda a, q, c, m: a(q, c[..., :16]),  # wrong width
    lambda a, q, c, m: a(q, c[:2]),  # batch mismatch
    lambda a, q, c, m: a(q, c, m.float()),  # mask dtype
    lambda a, q, c, m: a(q, c, m[:, :5]),  # mask shape
    lambda a, q, c, m: a(q, c, torch.zeros_like(m)),  # all padding
    lambda a, q, c, m: a(q * float("nan"), c),
])
def test_bad_inputs_raise(tokens, bad):
    q, c, m = tokens
    with pytest.raises((ValueError, TypeError)):
        bad(CrossModalAttention(32, 4), q, c, m)


def test_constructor_validates():
    with pytest.raises(ValueError, match="divisible"):
        CrossModalAttention(30, 4)
    with pytest.raises(ValueError):
        CrossModalAttention(0, 1)


def test_blocks_keep_shapes(tokens):
    q, c, mask = tokens
    out, w = CrossAttentionBlock(32, 4)(q, c, mask, return_weights=True)
    assert out.shape == q.shape and w.shape == (3, 5, 17)
    text_mask = torch.ones(3, 5, dtype=torch.bool)
    img, txt = CoAttentionLayer(32, 4)(c, q, text_mask)
    assert img.shape == c.shape and txt.shape == q.shape


def test_heatmap_upsamples_and_rescales():
    w = torch.zeros(2, 16)
    w[0, 0] = 1.0  # top-left patch
    w[1, 15] = 1.0  # bottom-right patch
    maps = attention_heatmap(w, (4, 4), 32)
    assert maps.shape == (2, 32, 32)
    assert maps[0, :8, :8].mean() > maps[0, 24:, 24:].mean()
    assert maps[1, 24:, 24:].mean() > maps[1, :8, :8].mean()
    assert float(maps.max()) == pytest.approx(1.0) and float(maps.min()) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        attention_heatmap(torch.zeros(2, 15), (4, 4), 32)
