"""Graded tests of task 3.2: fisher_diagonal and ewc_penalty.

References: per-sample gradients computed here with autograd, one sample at a time, in
float64 (an independent loop, whatever method the submission uses), a hand-worked
one-layer example, and the penalty's closed form and gradient ``2 F (p - a)``. Models
travel to the worker as architecture + state_dict; gradients of the submitted penalty are
computed next to it by a trusted helper and come back as data.

Tolerances: float32 models are compared with the float64 references to 1e-7 absolute plus
1e-4 relative (Fisher entries, gradients) and 1e-5 relative (the penalty): a squared
gradient of a small MLP computed in float32 is accurate to ~1e-6 relative, so float32 and
float64 work both pass and float16 fails. A float64 model (weights and inputs with digits
beyond float32) must give float64-accurate results: Fisher entries to 64 * eps * 100 times
their largest value (about 1e-12 relative), the penalty to 64 * eps times the sum of its
terms; accumulating in float32 fails. Results also live on the parameters' device
(checked with PyTorch's "meta" device, which stands in for a GPU).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.grading import modelspec
from course_lib.grading.testing import (
    as_scalar,
    assert_close,
    assert_not_mutated,
    assert_on_input_device,
    assert_precision,
    expect_error,
)

TASK = "ch3_continual/task2_ewc"


def _model(sizes, seed, frozen=()):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return modelspec.build("mlp", sizes=sizes, frozen=list(frozen))


def _remote(impl, model, sizes, frozen=()):
    return impl.helper("build_model", "mlp", {"sizes": sizes, "frozen": list(frozen)}, model.state_dict())


def _data(n, d, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _fisher_ref(model, x, y):
    m = _double(model)
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(x.shape[0]):
        loss = F.cross_entropy(m(x[i : i + 1].double()), y[i : i + 1])
        for (n, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            out[n] += g ** 2
    return {n: v / x.shape[0] for n, v in out.items()}


def _double(model):
    import copy

    return copy.deepcopy(model).double()


def _check_fisher(fisher, ref, what, hint=""):
    assert isinstance(fisher, dict), f"fisher_diagonal should return a dict {{name: tensor}}, got {type(fisher).__name__}"
    assert set(fisher) == set(ref), (
        f"{what}: the keys should be the names of the parameters that require grad, {sorted(ref)}; got {sorted(fisher)}")
    for name, value in ref.items():
        assert_close(fisher[name], value, f"{what}: Fisher of {name!r}", atol=1e-7, rtol=1e-4, show=False, hint=hint)


@pytest.mark.points(2)
def test_fisher_hand_worked(impl):
    model = _model([1, 2], 0)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
    x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1])
    fisher = impl.fisher_diagonal(_remote(impl, model, [1, 2]), x, y)
    s2, s4 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-4))
    g1, g2 = 1 - s2, s4  # |dCE/dlogit| of sample 1 (target 0) and sample 2 (target 1)
    expected_w = (g1 ** 2 * 1 + g2 ** 2 * 4) / 2  # weight gradients are dlogit * x, x = 1 and 2
    expected_b = (g1 ** 2 + g2 ** 2) / 2
    _check_fisher(fisher, {"0.weight": torch.full((2, 1), expected_w), "0.bias": torch.full((2,), expected_b)},
                  "the 1-layer example",
                  hint=f"per sample: gradient of that sample's cross-entropy (with its own target), squared; then the "
                       f"mean over the 2 samples: weight {expected_w:.4f}, bias {expected_b:.4f}")


@pytest.mark.points(3)
def test_fisher_matches_per_sample_autograd(impl):
    sizes = [5, 8, 3]
    for seed, n in [(1, 16), (2, 5)]:
        model = _model(sizes, seed)
        x, y = _data(n, 5, 3, seed + 10)
        fisher = impl.fisher_diagonal(_remote(impl, model, sizes), x, y)
        ref = _fisher_ref(model, x, y)
        hint = ""
        if isinstance(fisher, dict) and "0.weight" in fisher and isinstance(fisher["0.weight"], torch.Tensor):
            m = _double(model)
            loss = F.cross_entropy(m(x.double()), y)
            batch_sq = torch.autograd.grad(loss, [m[0].weight])[0] ** 2
            if fisher["0.weight"].shape == batch_sq.shape and torch.allclose(fisher["0.weight"].double(), batch_sq,
                                                                              rtol=1e-4, atol=1e-9):
                hint = ("that is the squared gradient of the batch loss; square each sample's gradient, then "
                        "average")
            elif fisher["0.weight"].shape == batch_sq.shape and torch.allclose(
                    fisher["0.weight"].double(), ref["0.weight"] * n, rtol=1e-4, atol=1e-9):
                hint = "that is the sum over samples; take the mean"
        _check_fisher(fisher, ref, f"Fisher of a 2-layer MLP on {n} samples", hint=hint or
                      "use each sample's given target (not the model's prediction)")


@pytest.mark.points(1)
def test_fisher_skips_frozen_parameters(impl):
    sizes, frozen = [4, 6, 2], ["0.weight", "0.bias"]
    model = _model(sizes, 3, frozen)
    x, y = _data(6, 4, 2, 13)
    fisher = impl.fisher_diagonal(_remote(impl, model, sizes, frozen), x, y)
    _check_fisher(fisher, _fisher_ref(model, x, y), "Fisher with the first layer frozen",
                  hint="only parameters with requires_grad=True get an entry")


@pytest.mark.points(2)
def test_fisher_leaves_the_model_as_it_was(impl):
    sizes = [4, 5, 3]
    model = _model(sizes, 4)
    remote = _remote(impl, model, sizes)
    preset = {"0.weight": torch.full((5, 4), 0.25), "0.bias": None, "2.weight": torch.full((3, 5), -1.5),
              "2.bias": None}
    impl.helper("set_grads", remote, preset)
    x, y = _data(7, 4, 3, 14)
    fisher = impl.fisher_diagonal(remote, x, y)
    _check_fisher(fisher, _fisher_ref(model, x, y), "Fisher")
    grads = impl.helper("get_grads", remote)
    for name, value in preset.items():
        if value is None:
            assert grads[name] is None, (
                f"{name}.grad was None before fisher_diagonal and is not None after: compute gradients with "
                "torch.autograd.grad, or restore .grad")
        else:
            assert grads[name] is not None and torch.equal(grads[name], value), (
                f"fisher_diagonal changed the existing {name}.grad; leave .grad as it was")
    after = impl.helper("state_dict", remote)
    for name, value in model.state_dict().items():
        assert torch.equal(after[name], value), f"fisher_diagonal changed the parameter {name}"


@pytest.mark.points(1)
def test_fisher_of_a_single_sample(impl):
    sizes = [3, 4]
    model = _model(sizes, 5)
    x, y = _data(1, 3, 4, 15)
    fisher = impl.fisher_diagonal(_remote(impl, model, sizes), x, y)
    _check_fisher(fisher, _fisher_ref(model, x, y), "Fisher of one sample",
                  hint="for one sample the Fisher is that sample's squared gradient")


@pytest.mark.points(1)
def test_fisher_rejects_bad_input(impl):
    sizes = [3, 2]
    remote = _remote(impl, _model(sizes, 6), sizes)
    x, y = _data(4, 3, 2, 16)
    impl.fisher_diagonal(remote, x, y)  # valid call first
    expect_error(impl.fisher_diagonal, remote, x, y[:3], what="4 inputs with 3 targets")
    expect_error(impl.fisher_diagonal, remote, x[:0], y[:0], what="no samples (the mean over 0 samples is undefined)")


def _penalty_ref(model, fisher, anchor):
    params = dict(model.named_parameters())
    return sum(float((fisher[n].double() * (params[n].detach().double() - anchor[n].double()) ** 2).sum()) for n in fisher)



@pytest.mark.points(2)
def test_penalty_hand_worked(impl):
    model = _model([2, 1], 7)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model[0].bias.copy_(torch.tensor([0.5]))
    remote = _remote(impl, model, [2, 1])
    anchor = {"0.weight": torch.zeros(1, 2), "0.bias": torch.zeros(1)}
    value = as_scalar(impl.ewc_penalty(remote, {"0.weight": torch.tensor([[0.5, 0.25]])}, anchor), "ewc_penalty")
    assert abs(value - 1.5) < 1e-6, (
        f"ewc_penalty should be 0.5 * 1**2 + 0.25 * 2**2 = 1.5 (the bias has no Fisher entry, so it is not "
        f"penalised), got {value}")
    fisher = {"0.weight": torch.tensor([[0.5, 0.25]]), "0.bias": torch.tensor([2.0])}
    value = as_scalar(impl.ewc_penalty(remote, fisher, anchor), "ewc_penalty")
    assert abs(value - 2.0) < 1e-6, f"with a bias Fisher of 2: 1.5 + 2 * 0.5**2 = 2.0, got {value} (no factor 1/2)"


@pytest.mark.points(2)
def test_penalty_matches_formula(impl):
    sizes = [6, 5, 4]
    for seed in (8, 9):
        model, anchor_model = _model(sizes, seed), _model(sizes, seed + 100)
        g = torch.Generator().manual_seed(seed)
        fisher = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()}
        anchor = {n: p.detach() for n, p in anchor_model.named_parameters()}
        value = as_scalar(impl.ewc_penalty(_remote(impl, model, sizes), fisher, anchor), "ewc_penalty")
        ref = _penalty_ref(model, fisher, anchor)
        assert abs(value - ref) < 1e-5 * ref, f"ewc_penalty should be {ref:.6f}, got {value:.6f}"


@pytest.mark.points(2)
def test_penalty_gradient(impl):
    sizes = [3, 4, 2]
    model, anchor_model = _model(sizes, 10), _model(sizes, 11)
    remote = _remote(impl, model, sizes)
    g = torch.Generator().manual_seed(12)
    fisher = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters() if n != "2.bias"}
    anchor = {n: p.detach() for n, p in anchor_model.named_parameters()}
    out = impl.helper("call_with_param_grads", "ewc_penalty", [remote, fisher, anchor], {}, remote)
    assert "error" not in out, (
        f"ewc_penalty must be differentiable in the parameters ({out.get('error')}); avoid .item(), .detach() and "
        "torch.no_grad() on the parameters")
    params = dict(model.named_parameters())
    for name, f in fisher.items():
        grad = out["grads"].get(name)
        assert grad is not None, f"no gradient reaches {name}"
        assert_close(grad, 2 * f * (params[name].detach() - anchor[name]), f"d penalty / d {name}", atol=1e-6,
                     rtol=1e-4, hint="the gradient is 2 * fisher * (param - anchor)")
    grad = out["grads"].get("2.bias")
    assert grad is None or float(grad.abs().max()) == 0, "a parameter without a Fisher entry must get no gradient"


@pytest.mark.points(1)
def test_penalty_is_zero_at_the_anchor(impl):
    sizes = [3, 2]
    model = _model(sizes, 13)
    fisher = {n: torch.rand(p.shape) + 0.5 for n, p in model.named_parameters()}
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    value = as_scalar(impl.ewc_penalty(_remote(impl, model, sizes), fisher, anchor), "ewc_penalty")
    assert value == 0.0, f"at the anchor the penalty is exactly 0, got {value}"


@pytest.mark.points(1)
def test_penalty_rejects_unknown_names(impl):
    sizes = [3, 2]
    model = _model(sizes, 14)
    remote = _remote(impl, model, sizes)
    anchor = {n: p.detach() for n, p in model.named_parameters()}
    impl.ewc_penalty(remote, {"0.weight": torch.ones(2, 3)}, anchor)  # valid call first
    expect_error(impl.ewc_penalty, remote, {"fc.weight": torch.ones(2, 3)}, anchor,
                 errors=("ValueError", "KeyError"), what="a Fisher entry for a parameter the model does not have")
    expect_error(impl.ewc_penalty, remote, {"0.weight": torch.ones(2, 3)}, {"0.bias": anchor["0.bias"]},
                 errors=("ValueError", "KeyError"), what="a Fisher entry whose parameter is missing from anchor")
    expect_error(impl.ewc_penalty, remote, {"0.weight": torch.ones(3)}, anchor,
                 what="a Fisher entry of shape [3] for the [2, 3] parameter '0.weight' (it would broadcast silently)")
    expect_error(impl.ewc_penalty, remote, {"0.weight": torch.ones(2, 3)}, {**anchor, "0.weight": torch.zeros(3)},
                 what="an anchor of shape [3] for the [2, 3] parameter '0.weight'")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    sizes = [3, 4, 2]
    model = _model(sizes, 15)
    remote = _remote(impl, model, sizes)
    x, y = _data(5, 3, 2, 16)
    _check_fisher(impl.fisher_diagonal(remote, x, y), _fisher_ref(model, x, y), "Fisher")
    assert_not_mutated(impl, "fisher_diagonal")
    fisher = {n: torch.rand(p.shape) for n, p in model.named_parameters()}
    anchor = {n: p.detach() + 0.1 for n, p in model.named_parameters()}
    value = as_scalar(impl.ewc_penalty(remote, fisher, anchor), "ewc_penalty")
    assert_not_mutated(impl, "ewc_penalty")
    assert abs(value - _penalty_ref(model, fisher, anchor)) < 1e-5, "ewc_penalty is wrong (see the other tests)"
    after = impl.helper("state_dict", remote)
    assert all(torch.equal(after[n], v) for n, v in model.state_dict().items()), "ewc_penalty changed the model"



def _float64_model(sizes, seed):
    """A float64 model whose weights carry digits that float32 cannot hold."""
    model = _double(_model(sizes, seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-9 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


@pytest.mark.points(1)
def test_fisher_follows_the_parameters(impl):
    sizes = [4, 6, 3]
    model = _float64_model(sizes, 17)
    remote = impl.helper("build_model", "mlp", {"sizes": sizes}, model.state_dict(), torch.float64)
    x, y = _data(6, 4, 3, 18)
    x = x.double() + 1e-9 * torch.randn(6, 4, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    fisher = impl.fisher_diagonal(remote, x, y)
    ref = _fisher_ref(model, x, y)
    assert isinstance(fisher, dict) and set(fisher) == set(ref), f"the keys should be {sorted(ref)}"
    for name, value in ref.items():
        assert_precision(fisher[name], value, f"Fisher of {name!r} for a float64 model", torch.float64,
                         100 * max(1.0, float(value.abs().max())))
    assert_on_input_device(impl, "fisher_diagonal", "fisher_diagonal", [remote, x, y])


@pytest.mark.points(1)
def test_penalty_follows_the_parameters(impl):
    sizes = [5, 4, 3]
    model, anchor_model = _float64_model(sizes, 20), _float64_model(sizes, 21)
    remote = impl.helper("build_model", "mlp", {"sizes": sizes}, model.state_dict(), torch.float64)
    g = torch.Generator().manual_seed(22)
    fisher = {n: torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}
    anchor = {n: p.detach() for n, p in anchor_model.named_parameters()}
    value = impl.ewc_penalty(remote, fisher, anchor)
    as_scalar(value, "ewc_penalty")
    ref = _penalty_ref(model, fisher, anchor)
    assert_precision(value, ref, "ewc_penalty of a float64 model", torch.float64, 100 * max(1.0, ref))
    assert_on_input_device(impl, "ewc_penalty", "ewc_penalty", [remote, fisher, anchor])
