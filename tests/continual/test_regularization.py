"""Fisher diagonal, EWC penalties and the distillation loss against independent formulas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.continual.regularization import EWCPenalty, distillation_loss, fisher_diagonal


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4))


def _loop_fisher(model, x, y, mask=None):
    """Reference: one backward pass per sample."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        logits = model(x[i : i + 1])
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        F.cross_entropy(logits, y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad ** 2
    model.zero_grad(set_to_none=True)
    return {n: t / len(x) for n, t in total.items()}


def test_fisher_matches_per_sample_loop_and_leaves_grads_alone():
    model = _net()
    x, y = torch.randn(23, 5), torch.randint(0, 4, (23,))
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = fisher_diagonal(model, x, y, batch_size=8)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
        assert torch.all(p.grad == 7.0)
    ref = _loop_fisher(_net(), x, y)
    for n in ref:
        torch.testing.assert_close(fisher[n], ref[n], rtol=1e-4, atol=1e-7)


def test_fisher_with_an_output_mask_and_predicted_labels():
    model = _net(1)
    x = torch.randn(10, 5)
    mask = torch.tensor([False, True, True, False])
    y = torch.randint(1, 3, (10,))
    ref = _loop_fisher(_net(1), x, y, mask)
    got = fisher_diagonal(model, x, y, output_mask=mask)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        pred = model(x).masked_fill(~mask, float("-inf")).argmax(1)
    ref_pred = _loop_fisher(_net(1), x, pred, mask)
    got_pred = fisher_diagonal(model, x, torch.zeros(10, dtype=torch.int64), output_mask=mask, labels="predicted")
    for n in ref_pred:
        torch.testing.assert_close(got_pred[n], ref_pred[n], rtol=1e-4, atol=1e-7)


def test_fisher_skips_frozen_parameters_and_rejects_bad_input():
    model = _net()
    model[0].weight.requires_grad_(False)
    assert "0.weight" not in fisher_diagonal(model, torch.randn(4, 5), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        fisher_diagonal(model, torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        fisher_diagonal(model, torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="targets"):
        fisher_diagonal(model, torch.zeros(2, 5), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        fisher_diagonal(model, torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64), labels="true")


def _random_task(model, seed):
    g = torch.Generator().manual_seed(seed)
    fisher = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()}
    anchor = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    return fisher, anchor


def test_separate_ewc_equals_the_sum_of_per_task_penalties():
    model = _net()
    tasks = [_random_task(model, s) for s in range(3)]
    pen = EWCPenalty("separate")
    for f, a in tasks:
        pen.consolidate(f, a)
    value = pen(model)
    params = dict(model.named_parameters())
    ref = sum(((f[n] * (params[n] - a[n]) ** 2).sum() for f, a in tasks for n in f))
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(value, list(params.values()))
    g2 = torch.autograd.grad(ref, list(params.values()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_online_ewc_decays_old_importance_and_moves_the_anchor():
    model = _net()
    (f1, a1), (f2, a2) = _random_task(model, 0), _random_task(model, 1)
    pen = EWCPenalty("online", gamma=0.5)
    pen.consolidate(f1, a1)
    pen.consolidate(f2, a2)
    params = dict(model.named_parameters())
    ref = sum(((0.5 * f1[n] + f2[n]) * (params[n] - a2[n]) ** 2).sum() for n in f1)
    torch.testing.assert_close(pen(model), ref, rtol=1e-5, atol=1e-5)
    assert pen.num_tasks == 2


def test_penalty_is_zero_before_consolidation_and_validates():
    assert float(EWCPenalty()(_net())) == 0.0
    with pytest.raises(ValueError):
        EWCPenalty("weird")
    with pytest.raises(ValueError):
        EWCPenalty("online", gamma=0.0)
    model = _net()
    f, a = _random_task(model, 0)
    f["0.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="shape"):
        EWCPenalty().consolidate(f, a)


def test_distillation_loss_formula():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    T = 2.0
    p_t = torch.softmax(t / T, 1)
    ref = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    torch.testing.assert_close(distillation_loss(s, t, T), ref)
    assert float(distillation_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        distillation_loss(s, t[:, :4])
    with pytest.raises(ValueError):
        distillation_loss(s, t, 0.0)
