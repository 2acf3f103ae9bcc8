"""Graded tests of task 1.2: global_magnitude_masks, apply_masks, cubic_sparsity.

References: a hand-worked two-layer model, ``torch.nn.utils.prune.global_unstructured``
with ``L1Unstructured`` (it also prunes ``round(amount * total)`` weights), and the
schedule's closed form from Zhu & Gupta (2017). Models travel to the submission as an
architecture name plus a state_dict (course_lib.grading.modelspec) and come back as state.

Tolerances: masks are compared exactly. Magnitudes are ranked exactly as stored: a
float64 model whose weights differ only beyond float32's 24 bits must be ranked in
float64. Where several weights tie at the threshold, the contract still prunes exactly
round(amount * total) of them; which of the tied ones is free, so tie tests check the
count and that no pruned |w| exceeds a kept one. Masks live on the weights' device
(checked with PyTorch's "meta" device, which stands in for a GPU). The schedule is a
closed form in Python floats: compared to 1e-9 (1e-12 outside the window).
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from course_lib.grading import modelspec
from course_lib.grading.testing import as_float, as_tensor, assert_close, assert_on_input_device, expect_error

TASK = "ch1_compression/task2_pruning"


def _model(arch: str, seed: int, **kwargs) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = modelspec.build(arch, **kwargs)
        with torch.no_grad():
            for p in model.parameters():  # norms start at 1/0; randomise them too
                p.add_(0.05 * torch.randn_like(p))
    return model


def _remote(impl, arch: str, model: nn.Module, **kwargs):
    return impl.helper("build_model", arch, kwargs, model.state_dict())


def _torch_masks(model: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    named = [(name, m) for name, m in ref.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    prune.global_unstructured([(m, "weight") for _, m in named], pruning_method=prune.L1Unstructured,
                              amount=amount)
    return {f"{name}.weight": m.weight_mask.bool() for name, m in named}


def _check_masks(masks, expected: dict[str, torch.Tensor], what: str) -> None:
    assert isinstance(masks, dict), f"{what}: should return a dict {{name: mask}}, got {type(masks).__name__}"
    missing = sorted(set(expected) - set(masks))
    extra = sorted(set(masks) - set(expected))
    assert not missing and not extra, (
        f"{what}: the keys should be the names (from model.named_parameters()) of the weights of every "
        f"nn.Linear and nn.Conv2d, i.e. {sorted(expected)}; missing {missing}, unexpected {extra}")
    for name, exp in expected.items():
        got = as_tensor(masks[name], f"mask {name!r}", shape=exp.shape)
        assert got.dtype == torch.bool, f"mask {name!r} should be a bool tensor, got {got.dtype}"
    kept = sum(int(masks[n].sum()) for n in expected)
    kept_ref = sum(int(e.sum()) for e in expected.values())
    total = sum(e.numel() for e in expected.values())
    assert kept == kept_ref, (
        f"{what}: {total - kept} of {total} weights are pruned (False), expected {total - kept_ref}: "
        "round(amount * total) over all these weights together, True = keep")
    for name, exp in expected.items():
        bad = int((masks[name] != exp).sum())
        assert bad == 0, (
            f"{what}: mask {name!r} differs in {bad} entries; the pruned weights must be those with the smallest "
            "|w| across all layers together (global, not per layer)")


@pytest.mark.points(2)
def test_hand_worked_two_layers(impl):
    model = modelspec.build("two_linear")
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.5], [0.3, 2.0]]))
        model[0].bias.copy_(torch.tensor([1e-4, -2e-4]))
        model[1].weight.copy_(torch.tensor([[-0.2, 0.05]]))
        model[1].bias.copy_(torch.tensor([3e-4]))
    masks = impl.global_magnitude_masks(_remote(impl, "two_linear", model), 0.4)
    expected = {"0.weight": torch.tensor([[False, True], [True, True]]), "1.weight": torch.tensor([[True, False]])}
    # 6 weights, round(0.4 * 6) = 2 pruned: |0.05| and |0.1| (biases are never pruned)
    _check_masks(masks, expected, "global_magnitude_masks(model, 0.4) on the 2-layer example")


@pytest.mark.points(3)
@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_matches_torch_prune_global_unstructured(impl, amount):
    model = _model("prune_mixed", seed=int(amount * 10))
    masks = impl.global_magnitude_masks(_remote(impl, "prune_mixed", model), amount)
    _check_masks(masks, _torch_masks(model, amount), f"global_magnitude_masks(model, {amount})")


@pytest.mark.points(1)
def test_amount_zero_and_one(impl):
    model = _model("prune_mixed", seed=3)
    remote = _remote(impl, "prune_mixed", model)
    for amount in (0.0, 1.0):
        masks = impl.global_magnitude_masks(remote, amount)
        _check_masks(masks, _torch_masks(model, float(amount)), f"global_magnitude_masks(model, {amount!r})")


@pytest.mark.points(1)
def test_number_pruned_uses_round(impl):
    for arch_kwargs, amount, pruned in [({"sizes": [10, 10], "bias": False}, 0.29, 29),  # 0.29*100 = 28.999999999999996
                                        ({"sizes": [3, 3], "bias": False}, 0.5, 4),        # round(4.5) = 4 (half to even)
                                        ({"sizes": [7, 3], "bias": False}, 0.3, 6)]:       # round(6.3) = 6
        model = _model("mlp", seed=4, **arch_kwargs)
        masks = impl.global_magnitude_masks(_remote(impl, "mlp", model, **arch_kwargs), amount)
        total = sum(p.numel() for p in model.parameters())
        assert isinstance(masks, dict) and "0.weight" in masks, "the mask of '0.weight' is missing"
        got = total - int(as_tensor(masks["0.weight"], "mask").sum())
        assert got == pruned, (
            f"with {total} weights and amount={amount}, round(amount * total) = {pruned} weights should be pruned, "
            f"got {got} (use Python's round, not int(), which truncates)")


@pytest.mark.points(1)
def test_bad_amount_is_rejected(impl):
    remote = _remote(impl, "two_linear", _model("two_linear", 5))
    impl.global_magnitude_masks(remote, 0.5)  # valid call first
    for amount in (-0.1, 1.5):
        expect_error(impl.global_magnitude_masks, remote, amount, errors=("ValueError",),
                     what=f"global_magnitude_masks(model, amount={amount})")


@pytest.mark.points(1)
def test_masks_leave_the_model_unchanged(impl):
    model = _model("prune_mixed", seed=6)
    remote = _remote(impl, "prune_mixed", model)
    masks = impl.global_magnitude_masks(remote, 0.6)
    _check_masks(masks, _torch_masks(model, 0.6), "global_magnitude_masks(model, 0.6)")
    after = impl.helper("state_dict", remote)
    for name, value in model.state_dict().items():
        assert torch.equal(after[name], value), (
            f"global_magnitude_masks changed {name!r}; computing masks must not modify the model "
            "(apply_masks does that)")


def _expected_after_apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, mask in masks.items():
        state[name] = state[name] * mask
    return state


@pytest.mark.points(2)
def test_apply_masks_zeroes_pruned_weights_in_place(impl):
    model = _model("prune_mixed", seed=7)
    remote = _remote(impl, "prune_mixed", model)
    masks = _torch_masks(model, 0.5)
    ids_before = impl.helper("param_ids", remote)
    result = impl.apply_masks(remote, masks)
    assert result is None, f"apply_masks should return None (it works in place), got {type(result).__name__}"
    after = impl.helper("state_dict", remote)
    for name, value in _expected_after_apply(model, masks).items():
        hint = ("weights with mask False become 0, mask True stays unchanged" if name in masks
                else "parameters and buffers without a mask must stay unchanged")
        assert_close(after[name], value, f"{name!r} after apply_masks", atol=0, rtol=0, hint=hint)
    assert impl.helper("param_ids", remote) == ids_before, (
        "apply_masks replaced parameter objects; modify the existing parameters in place (under torch.no_grad()) "
        "so that optimizers holding them keep working")


@pytest.mark.points(1)
def test_apply_masks_with_some_layers_only(impl):
    model = _model("prune_mixed", seed=8)
    remote = _remote(impl, "prune_mixed", model)
    masks = {"head.fc1.weight": _torch_masks(model, 0.7)["head.fc1.weight"]}
    impl.apply_masks(remote, masks)
    after = impl.helper("state_dict", remote)
    for name, value in _expected_after_apply(model, masks).items():
        assert_close(after[name], value, f"{name!r} after apply_masks with one mask", atol=0, rtol=0,
                     hint="only the parameters named in masks change")


@pytest.mark.points(1)
def test_apply_masks_rejects_unknown_names(impl):
    model = _model("two_linear", 9)
    remote = _remote(impl, "two_linear", model)
    impl.apply_masks(remote, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})  # valid call first
    expect_error(impl.apply_masks, remote, {"fc9.weight": torch.ones(2, 2, dtype=torch.bool)},
                 errors=("KeyError", "ValueError"), what="apply_masks with a name the model does not have")
    expect_error(impl.apply_masks, remote, {"0.weight": torch.ones(3, 2, dtype=torch.bool)},
                 errors=("ValueError", "KeyError"), what="apply_masks with a mask of the wrong shape")


def _cubic_ref(t, b, e, si, sf):
    if t <= b:
        return si
    if t >= e:
        return sf
    return sf + (si - sf) * (1 - (t - b) / (e - b)) ** 3


@pytest.mark.points(2)
def test_cubic_hand_worked(impl):
    for step, expected in [(0, 0.0), (2, 0.3904), (5, 0.7), (10, 0.8)]:
        value = impl.cubic_sparsity(step, 0, 10, 0.0, 0.8)
        assert isinstance(value, float), f"cubic_sparsity should return a Python float, got {type(value).__name__}"
        assert abs(value - expected) < 1e-9, (
            f"cubic_sparsity({step}, 0, 10, 0.0, 0.8) should be {expected}, got {value}: "
            "s_f + (s_i - s_f) * (1 - progress)**3 with progress = (step - begin) / (end - begin)")


@pytest.mark.points(1)
def test_cubic_outside_the_window(impl):
    for step, expected in [(-5, 0.1), (100, 0.1), (99, 0.1), (400, 0.9), (401, 0.9), (10_000, 0.9)]:
        value = as_float(impl.cubic_sparsity(step, 100, 400, 0.1, 0.9), "cubic_sparsity")
        assert abs(value - expected) < 1e-12, (
            f"cubic_sparsity({step}, 100, 400, 0.1, 0.9) should be {expected}, got {value}: "
            "initial_sparsity before begin_step, final_sparsity after end_step")


@pytest.mark.points(1)
def test_cubic_with_offset_window(impl):
    value = as_float(impl.cubic_sparsity(250, 100, 400, 0.2, 0.9), "cubic_sparsity")
    assert abs(value - 0.8125) < 1e-9, (
        f"cubic_sparsity(250, 100, 400, 0.2, 0.9) should be 0.8125 (halfway: 0.9 - 0.7 * 0.5**3), got {value}; "
        "measure progress from begin_step")
    g = torch.Generator().manual_seed(10)
    for _ in range(30):
        b = int(torch.randint(0, 1000, (1,), generator=g))
        e = b + int(torch.randint(1, 5000, (1,), generator=g))
        t = int(torch.randint(b - 200, e + 200, (1,), generator=g))
        si, sf = (torch.rand(2, generator=g) * torch.tensor([0.3, 1.0])).tolist()
        sf = max(sf, si)
        value = as_float(impl.cubic_sparsity(t, b, e, si, sf), "cubic_sparsity")
        assert abs(value - _cubic_ref(t, b, e, si, sf)) < 1e-9, (
            f"cubic_sparsity({t}, {b}, {e}, {si:.4f}, {sf:.4f}) should be {_cubic_ref(t, b, e, si, sf):.6f}, "
            f"got {value:.6f}")


@pytest.mark.points(1)
def test_cubic_rejects_bad_windows(impl):
    impl.cubic_sparsity(5, 0, 10, 0.0, 0.5)  # valid call first
    expect_error(impl.cubic_sparsity, 5, 10, 10, 0.0, 0.5, errors=("ValueError",),
                 what="cubic_sparsity with end_step == begin_step")
    expect_error(impl.cubic_sparsity, 5, 0, 10, 0.0, 1.5, errors=("ValueError",),
                 what="cubic_sparsity with final_sparsity = 1.5")
    expect_error(impl.cubic_sparsity, 5, 10, 0, 0.0, 0.5, errors=("ValueError",),
                 what="cubic_sparsity with end_step < begin_step")
    expect_error(impl.cubic_sparsity, 5, 0, 10, -0.2, 0.5, errors=("ValueError",),
                 what="cubic_sparsity with initial_sparsity = -0.2")



def _check_tied_masks(masks, model: nn.Module, amount: float, what: str) -> None:
    """Exactly round(amount * total) weights pruned, none of them larger than a kept one."""
    weights = {f"{n}.weight": m.weight.detach() for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert isinstance(masks, dict) and set(masks) == set(weights), (
        f"{what}: the keys should be {sorted(weights)}, got {sorted(masks) if isinstance(masks, dict) else masks!r}")
    total = sum(w.numel() for w in weights.values())
    pruned, kept = [], []
    for name, w in weights.items():
        mask = as_tensor(masks[name], f"mask {name!r}", shape=w.shape, dtype=torch.bool)
        pruned.append(w.abs()[~mask])
        kept.append(w.abs()[mask])
    pruned, kept = torch.cat(pruned), torch.cat(kept)
    expected = round(amount * total)
    assert pruned.numel() == expected, (
        f"{what}: {pruned.numel()} of {total} weights are pruned, expected exactly round({amount} * {total}) = "
        f"{expected}. Several weights have the same |w| at the threshold: prune just enough of them (a comparison "
        "with the k-th smallest value, |w| > t or |w| >= t, prunes all or none of the tied weights)")
    if pruned.numel() and kept.numel():
        assert float(pruned.max()) <= float(kept.min()), (
            f"{what}: a pruned weight (|w| = {float(pruned.max()):.4g}) is larger than a kept one "
            f"(|w| = {float(kept.min()):.4g}); prune the smallest magnitudes")


@pytest.mark.points(2)
def test_ties_at_the_threshold(impl):
    g = torch.Generator().manual_seed(11)
    sizes = [4, 6, 3]
    model = _model("mlp", seed=11, sizes=sizes)
    with torch.no_grad():  # magnitudes from {0.1, 0.2, 0.3, 0.4}: 42 weights, about 10 per value
        for p in (model[0].weight, model[2].weight):
            levels = torch.randint(1, 5, p.shape, generator=g) * 0.1
            signs = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
            p.copy_(levels * signs)
    remote = _remote(impl, "mlp", model, sizes=sizes)
    for amount in (0.5, 0.3):
        _check_tied_masks(impl.global_magnitude_masks(remote, amount), model, amount,
                          f"global_magnitude_masks(model, {amount}) with tied magnitudes")
    with torch.no_grad():  # a model pruned before: its zeros tie
        model[0].weight.mul_(torch.rand(model[0].weight.shape, generator=g) > 0.6)
    remote = _remote(impl, "mlp", model, sizes=sizes)
    _check_tied_masks(impl.global_magnitude_masks(remote, 0.3), model, 0.3,
                      "global_magnitude_masks(model, 0.3) of a model whose zeros outnumber round(0.3 * total)")


@pytest.mark.points(1)
def test_float64_model_is_ranked_in_float64(impl):
    sizes = [5, 4, 3]
    model = _model("mlp", seed=12, sizes=sizes).double()
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():  # 0.5 + k * 1e-12 with k = 0..31 once each: distinct in float64, all 0.5 in float32
        offsets = torch.randperm(32, generator=g).double() * 1e-12
        for p, k in ((model[0].weight, offsets[:20]), (model[2].weight, offsets[20:])):
            p.copy_((0.5 + k.reshape(p.shape)) * torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0).double())
    remote = impl.helper("build_model", "mlp", {"sizes": sizes}, model.state_dict(), torch.float64)
    amount = 0.4
    masks = impl.global_magnitude_masks(remote, amount)
    _check_masks(masks, _torch_masks(model, amount), f"global_magnitude_masks(float64 model, {amount})")


@pytest.mark.points(1)
def test_masks_on_the_weights_device(impl):
    model = _model("prune_mixed", seed=13)
    remote = _remote(impl, "prune_mixed", model)
    _check_masks(impl.global_magnitude_masks(remote, 0.5), _torch_masks(model, 0.5), "global_magnitude_masks(model, 0.5)")
    assert_on_input_device(impl, "global_magnitude_masks", "global_magnitude_masks", [remote, 0.5])
