import math

import pytest
import torch
import torch.nn as nn

from course_lib.compression.attention import unfuse_attention
from course_lib.compression.pruning import (
    GradualPruner,
    apply_masks,
    check_amount,
    cubic_sparsity,
    layer_sparsity,
    magnitude_masks,
    masks_sparsity,
    prune_magnitude,
    sparse_checkpoint_mb,
    sparsity,
    torch_reference_masks,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5))


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.77, 1.0])
def test_masks_identical_to_torch_nn_utils_prune(scope, amount):
    net = _net()
    ours = magnitude_masks(net, amount, scope)
    ref = torch_reference_masks(net, amount, scope)
    assert ours.keys() == ref.keys() == {"0.weight", "3.weight", "5.weight"}
    for name in ours:
        assert torch.equal(ours[name], ref[name]), name


def test_masks_identical_to_torch_on_the_clip_tower(tiny_clip):
    visual = unfuse_attention(tiny_clip[0].visual)
    for scope in ("local", "global"):
        ours, ref = magnitude_masks(visual, 0.6, scope), torch_reference_masks(visual, 0.6, scope)
        assert all(torch.equal(ours[n], ref[n]) for n in ours)


def test_global_prunes_exact_count_and_differs_from_local():
    net = _net()
    with torch.no_grad():
        net[5].weight.mul_(100)  # a layer of large weights: global pruning spares it
    g = magnitude_masks(net, 0.5, "global")
    total = sum(m.numel() for m in g.values())
    assert sum(int((~m).sum()) for m in g.values()) == round(0.5 * total)
    assert (~g["5.weight"]).sum() == 0
    loc = magnitude_masks(net, 0.5, "local")
    assert (~loc["5.weight"]).sum() == round(0.5 * net[5].weight.numel())
    assert masks_sparsity(g) == pytest.approx(0.5, abs=1e-3)


def test_apply_masks_and_sparsity():
    net = _net()
    pruned, masks = prune_magnitude(net, 0.8, "global")
    assert sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert sparsity(net) == 0.0, "prune_magnitude copies by default"
    for name, p in pruned.named_parameters():
        if name in masks:
            assert (p[~masks[name]] == 0).all() and (p[masks[name]] != 0).all()
    assert set(layer_sparsity(pruned)) == set(masks)
    with pytest.raises(KeyError):
        apply_masks(net, {"nope.weight": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        apply_masks(net, {"5.weight": torch.ones(5, 32)})


@pytest.mark.parametrize("amount", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_amount_outside_unit_interval_raises(amount):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        magnitude_masks(_net(), amount)
    with pytest.raises(ValueError):
        check_amount(amount)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="scope"):
        magnitude_masks(_net(), 0.5, "layerwise")
    with pytest.raises(ValueError, match="no"):
        magnitude_masks(nn.Sequential(nn.ReLU()), 0.5)


def test_cubic_schedule():
    assert cubic_sparsity(0, 10, 110, 0.0, 0.9) == 0.0
    assert cubic_sparsity(10, 10, 110, 0.0, 0.9) == 0.0
    assert cubic_sparsity(60, 10, 110, 0.0, 0.9) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert cubic_sparsity(110, 10, 110, 0.0, 0.9) == pytest.approx(0.9)
    assert cubic_sparsity(500, 10, 110, 0.2, 0.9) == pytest.approx(0.9)
    values = [cubic_sparsity(t, 0, 100, 0.1, 0.9) for t in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    steps = [b - a for a, b in zip(values, values[1:])]
    assert steps[0] > steps[50] > steps[-1], "prunes fast early, slowly late"
    with pytest.raises(ValueError):
        cubic_sparsity(5, 10, 10, 0.0, 0.9)
    with pytest.raises(ValueError):
        cubic_sparsity(5, 0, 10, 0.0, 1.2)


def test_gradual_pruner_reaches_target_and_keeps_zeros_during_training():
    net = _net()
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    pruner = GradualPruner(net, 0.9, begin_step=0, end_step=20, frequency=5)
    for step in range(30):
        pruner.update(step)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.enforce()
        assert sparsity(net) == pytest.approx(pruner.target(min(step - step % 5, 20)), abs=2e-3)
    assert sparsity(net) == pytest.approx(0.9, abs=1e-3)
    assert [s for _, s in pruner.history] == sorted(s for _, s in pruner.history)
    with pytest.raises(ValueError):
        GradualPruner(net, 0.9, 0, 10, frequency=0)


def test_sparse_checkpoint_only_pays_off_at_high_sparsity():
    net = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    dense = sparse_checkpoint_mb(net)
    assert sparse_checkpoint_mb(prune_magnitude(net, 0.9)[0]) < 0.3 * dense
    assert sparse_checkpoint_mb(prune_magnitude(net, 0.1)[0]) > 1.5 * sparse_checkpoint_mb(prune_magnitude(net, 0.9)[0])
    assert math.isfinite(dense)
