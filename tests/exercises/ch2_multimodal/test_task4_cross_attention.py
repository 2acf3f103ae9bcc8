"""Graded tests of task 2.4: CrossModalAttention.

Reference: ``torch.nn.MultiheadAttention(dim, num_heads, batch_first=True)`` with random
weights and biases, copied into the submitted module as a state_dict (``in_proj_weight``
split into q, k, v). The module lives in the worker; the tests drive it through a handle.

Tolerances: float32 outputs and weights are compared with the float32 reference to 1e-5
absolute plus 1e-4 relative. Both sides round each of ~D = 16 products of unit-size
numbers in float32 (eps 1.2e-7), so they differ by about 1e-6: the tolerance leaves room
for any order of operations and for float64 work, while float16 (eps 1e-3) fails. A module
converted with ``.double()`` must compute in float64: its output is compared with the
float64 reference to 64 * eps * D (2e-13), so a softmax done in float32 fails. Padded
positions must get exactly zero attention (below 1e-7).
"""

import pytest
import torch
from torch import nn

from course_lib.grading.testing import (
    as_tensor,
    assert_close,
    assert_not_mutated,
    assert_on_input_device,
    assert_precision,
    expect_error,
)

TASK = "ch2_multimodal/task4_cross_attention"

KEYS = ["q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias",
        "out_proj.weight", "out_proj.bias"]


def _mha(dim, heads, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mha = nn.MultiheadAttention(dim, heads, batch_first=True)
        with torch.no_grad():
            mha.in_proj_bias.normal_(0, 0.5)
            mha.out_proj.bias.normal_(0, 0.5)
    return mha.eval()


def _state_from(mha):
    d = mha.embed_dim
    w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    return {"q_proj.weight": w[:d], "q_proj.bias": b[:d], "k_proj.weight": w[d:2 * d], "k_proj.bias": b[d:2 * d],
            "v_proj.weight": w[2 * d:], "v_proj.bias": b[2 * d:], "out_proj.weight": mha.out_proj.weight.detach(),
            "out_proj.bias": mha.out_proj.bias.detach()}


def _module(impl, dim, heads, seed):
    """The submitted module with the weights of a reference nn.MultiheadAttention."""
    mha = _mha(dim, heads, seed)
    attn = impl.CrossModalAttention(dim, heads)
    result = impl.helper("load_state_dict", attn, _state_from(mha), False)
    missing, unexpected = result["missing"], result["unexpected"]
    assert not missing and not unexpected, (
        "CrossModalAttention should have exactly the parameters q_proj, k_proj, v_proj, out_proj "
        f"(nn.Linear(dim, dim) with bias); missing {missing}, unexpected {unexpected}")
    return attn, mha


def _inputs(b, lq, lc, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, lq, d, generator=g), torch.randn(b, lc, d, generator=g)


def _ref(mha, q, c, mask=None):
    with torch.no_grad():
        out, w = mha(q, c, c, key_padding_mask=None if mask is None else ~mask, need_weights=True,
                     average_attn_weights=True)
    return out, w


@pytest.mark.points(1)
def test_parameters(impl):
    attn = impl.CrossModalAttention(12, 3)
    info = {name: shape for name, shape, _ in impl.helper("param_info", attn)}
    expected = {k: [12, 12] if k.endswith("weight") else [12] for k in KEYS}
    assert info == expected, (
        f"CrossModalAttention(12, 3) should have exactly q_proj, k_proj, v_proj, out_proj = nn.Linear(12, 12) with "
        f"bias; got parameters {info}")


@pytest.mark.points(3)
@pytest.mark.parametrize("heads", [1, 4, 16])
def test_matches_multihead_attention(impl, heads):
    attn, mha = _module(impl, 16, heads, seed=heads)
    q, c = _inputs(3, 5, 7, 16, seed=heads + 10)
    out = as_tensor(attn(q, c), "the output", shape=(3, 5, 16))
    ref, _ = _ref(mha, q, c)
    assert_close(out, ref, f"output with {heads} head(s)", atol=1e-5, rtol=1e-4, show=False,
                 hint="scale scores by 1/sqrt(head_dim); split heads as [B, L, H, head_dim] then transpose")


@pytest.mark.points(2)
def test_context_mask(impl):
    attn, mha = _module(impl, 8, 2, seed=20)
    q, c = _inputs(3, 4, 6, 8, seed=21)
    mask = torch.tensor([[True] * 6, [True, True, False, True, False, False], [False, False, False, False, False, True]])
    out = as_tensor(attn(q, c, mask), "the output", shape=(3, 4, 8))
    ref, _ = _ref(mha, q, c, mask)
    assert_close(out, ref, "output with a context_mask", atol=1e-5, rtol=1e-4, show=False,
                 hint="context_mask True = a real token; False = padding that gets no attention "
                      "(nn.MultiheadAttention's key_padding_mask is the opposite)")


@pytest.mark.points(2)
def test_attention_weights(impl):
    attn, mha = _module(impl, 8, 4, seed=30)
    q, c = _inputs(2, 3, 5, 8, seed=31)
    mask = torch.tensor([[True, True, True, False, True], [True, False, True, True, True]])
    result = attn(q, c, mask, return_weights=True)
    assert isinstance(result, tuple) and len(result) == 2, \
        "with return_weights=True, forward should return (output, weights)"
    out, weights = result
    weights = as_tensor(weights, "the attention weights")
    assert tuple(weights.shape) == (2, 3, 5), (
        f"the attention weights should be [B, Lq, Lc] = [2, 3, 5], averaged over the heads; got {list(weights.shape)}")
    ref_out, ref_w = _ref(mha, q, c, mask)
    assert_close(weights.sum(-1), torch.ones(2, 3), "row sums of the attention weights", atol=1e-5,
                 hint="softmax over the context positions (the last dimension)")
    assert_close(weights, ref_w, "attention weights", atol=1e-5, rtol=1e-4, show=False,
                 hint="average the per-head softmax weights over the heads")
    assert float(weights[0, :, 3].abs().max()) < 1e-7, "padded context positions must get zero attention"
    assert_close(out, ref_out, "output with return_weights=True", atol=1e-5, rtol=1e-4, show=False)
    plain = attn(q, c, mask)
    assert isinstance(plain, torch.Tensor), "with return_weights=False (the default), return only the output tensor"


@pytest.mark.points(1)
def test_padding_is_ignored(impl):
    attn, _ = _module(impl, 8, 2, seed=40)
    q, c = _inputs(2, 3, 4, 8, seed=41)
    padded = torch.cat([c, 100 * torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(42))], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    assert_close(attn(q, padded, mask), attn(q, c), "output with 3 masked garbage tokens appended", atol=1e-5,
                 rtol=1e-4, show=False, hint="masked tokens must not change the result at all")


@pytest.mark.points(1)
def test_query_and_context_lengths_differ(impl):
    attn, mha = _module(impl, 12, 3, seed=50)
    for lq, lc in [(1, 7), (9, 2), (4, 1)]:
        q, c = _inputs(2, lq, lc, 12, seed=51 + lq)
        out = as_tensor(attn(q, c), f"output for Lq={lq}, Lc={lc}", shape=(2, lq, 12))
        assert_close(out, _ref(mha, q, c)[0], f"output for Lq={lq}, Lc={lc}", atol=1e-5, rtol=1e-4, show=False)


@pytest.mark.points(1)
def test_gradients_reach_every_projection(impl):
    attn, _ = _module(impl, 8, 2, seed=60)
    q, c = _inputs(2, 3, 4, 8, seed=61)
    out = impl.helper("method_with_param_grads", attn, "__call__", [q, c], {})
    assert "error" not in out, f"the output must be differentiable: {out.get('error')}"
    for name in KEYS:
        grad = out["grads"].get(name)
        assert grad is not None and float(grad.abs().sum()) > 0, (
            f"no gradient reaches {name}; every projection must take part in the forward pass")


@pytest.mark.points(1)
def test_bad_arguments_are_rejected(impl):
    impl.CrossModalAttention(12, 4)  # valid construction first
    expect_error(impl.CrossModalAttention, 10, 3, what="CrossModalAttention(10, 3) (10 is not a multiple of 3)")
    expect_error(impl.CrossModalAttention, 12, 0, what="CrossModalAttention(12, 0) (no heads)")
    attn, _ = _module(impl, 8, 2, seed=70)
    q, c = _inputs(2, 3, 4, 8, seed=71)
    expect_error(attn, q, c[:1], what="query with batch 2 and context with batch 1")
    expect_error(attn, q, c, torch.ones(2, 5, dtype=torch.bool), what="a context_mask of shape [2, 5] for Lc = 4")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    attn, mha = _module(impl, 8, 2, seed=80)
    q, c = _inputs(2, 3, 4, 8, seed=81)
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]])
    out = attn(q, c, mask)
    assert_not_mutated(impl, "CrossModalAttention.forward")
    assert_close(out, _ref(mha, q, c, mask)[0], "output", atol=1e-5, rtol=1e-4, show=False)


@pytest.mark.points(1)
def test_float64_module(impl):
    attn, mha = _module(impl, 16, 4, seed=90)
    attn = attn.call_method("double")
    q, c = (x.double() for x in _inputs(2, 3, 5, 16, seed=91))
    mask = torch.tensor([[True, True, False, True, True], [True, True, True, True, False]])
    result = attn(q, c, mask, return_weights=True)
    assert isinstance(result, tuple) and len(result) == 2, "with return_weights=True, forward returns (output, weights)"
    ref_out, ref_w = _ref(mha.double(), q, c, mask)
    assert_precision(result[0], ref_out, "output of the module after .double(), for float64 inputs", torch.float64, 16)
    assert_precision(result[1], ref_w, "attention weights after .double(), for float64 inputs", torch.float64, 16)


@pytest.mark.points(1)
def test_on_the_inputs_device(impl):
    attn, mha = _module(impl, 8, 2, seed=92)
    q, c = _inputs(2, 3, 4, 8, seed=93)
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]])
    assert_close(attn(q, c, mask), _ref(mha, q, c, mask)[0], "output", atol=1e-5, rtol=1e-4, show=False)
    assert_on_input_device(impl, "CrossModalAttention.forward", attn, [q, c, mask], {"return_weights": True})
