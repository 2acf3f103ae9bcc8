"""Sinkhorn against POT, numerical range, batching, bad marginals; OT alignment helpers."""

import numpy as np
import ot
import pytest
import torch

from course_lib.multimodal.ot import (
    barycentric_projection,
    cost_matrix,
    gromov_wasserstein_plan,
    matching_accuracy,
    procrustes,
    sinkhorn,
    uniform,
    wasserstein_procrustes,
)


def _problem(n=60, m=45, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) + 0.5
    c = ot.dist(x, y)
    c /= c.max()
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), c


@pytest.mark.parametrize("method", ["stabilized", "log"])
@pytest.mark.parametrize("reg", [0.5, 0.05, 0.01])
def test_agrees_with_pot_sinkhorn_log(method, reg):
    a, b, c = _problem()
    ref = ot.sinkhorn(a, b, c, reg, method="sinkhorn_log", numItermax=2000, stopThr=1e-10, warn=False)
    res = sinkhorn(a, b, c, reg, num_iters=2000, tol=1e-10, method=method)
    assert res.plan.dtype == torch.float64
    np.testing.assert_allclose(res.plan.numpy(), ref, atol=1e-9, rtol=0)
    assert res.converged and res.errors[-1] < 1e-10


def test_same_iterates_and_stopping_rule_as_pot():
    a, b, c = _problem(seed=3)
    _, log = ot.sinkhorn(a, b, c, 0.01, method="sinkhorn_log", stopThr=1e-9, log=True, warn=False)
    res = sinkhorn(a, b, c, 0.01, tol=1e-9)
    assert res.n_iter == log["niter"] + 1
    np.testing.assert_allclose(res.errors, log["err"], rtol=1e-6, atol=1e-15)


def test_tiny_regularisation_stays_finite_and_feasible():
    a, b, c = _problem(40, 40, seed=1)
    for reg in (1e-3, 2e-4):
        res = sinkhorn(a, b, c, reg, num_iters=3000, tol=1e-8)
        plan = res.plan
        assert torch.isfinite(plan).all()
        np.testing.assert_allclose(plan.sum(1).numpy(), a, atol=1e-6)
        np.testing.assert_allclose(plan.sum(0).numpy(), b, atol=1e-8)
    # and a naive kernel would underflow completely there
    assert np.exp(-c / 2e-4).min() == 0.0


def test_small_reg_approaches_the_exact_emd_cost():
    a, b, c = _problem(40, 40, seed=2)
    exact = ot.emd2(a, b, c)
    approx = [float(sinkhorn(a, b, c, reg, num_iters=5000, tol=1e-9).cost(c)) for reg in (0.1, 0.01, 0.001)]
    assert approx[0] > approx[1] > approx[2] >= exact - 1e-9
    assert approx[2] - exact < 2e-3


def test_batched_problems_match_one_by_one():
    a1, b1, c = _problem(seed=4)
    a2, b2, _ = _problem(seed=5)
    res = sinkhorn(np.stack([a1, a2]), np.stack([b1, b2]), c, 0.05)
    assert res.plan.shape == (2, *c.shape)
    for k, (a, b) in enumerate([(a1, b1), (a2, b2)]):
        torch.testing.assert_close(res.plan[k], sinkhorn(a, b, c, 0.05).plan, atol=1e-9, rtol=0)


def test_zero_mass_entries_get_no_transport():
    a, b, c = _problem(seed=6)
    a[:5] = 0
    a /= a.sum()
    res = sinkhorn(a, b, c, 0.02)
    assert torch.isfinite(res.plan).all()
    assert res.plan[:5].abs().max() == 0
    ref = ot.sinkhorn(a, b, c, 0.02, method="sinkhorn_log", warn=False)
    np.testing.assert_allclose(res.plan.numpy(), ref, atol=1e-9)


def test_float32_inputs_give_float32_plan():
    a, b, c = _problem()
    res = sinkhorn(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                   torch.tensor(c, dtype=torch.float32), 0.05, tol=1e-6)
    assert res.plan.dtype == torch.float32
    np.testing.assert_allclose(res.plan.sum(0).numpy(), b, atol=1e-5)


@pytest.mark.parametrize("mutate,match", [
    (lambda a, b, c: (a * 2, b, c), "sum to 1"),
    (lambda a, b, c: (a, b * 0.5, c), "sum to 1"),
    (lambda a, b, c: (np.r_[-0.1, a[1:] + 0.1 / (len(a) - 1)], b, c), "negative"),
    (lambda a, b, c: (a[:-1] / a[:-1].sum(), b, c), "shapes disagree"),
    (lambda a, b, c: (a, b, np.where(np.arange(c.size).reshape(c.shape) == 7, np.nan, c)), "NaN"),
    (lambda a, b, c: (np.r_[np.nan, a[1:]], b, c), "NaN"),
    (lambda a, b, c: (a, b, c[None, None]), "cost must be"),
])
def test_bad_inputs_raise_clear_errors(mutate, match):
    a, b, c = _problem()
    with pytest.raises(ValueError, match=match):
        sinkhorn(*mutate(a, b, c), 0.1)


@pytest.mark.parametrize("kwargs", [{"reg": 0.0}, {"reg": -1.0}, {"reg": float("nan")}, {"reg": 0.1, "method": "exact"},
                                    {"reg": 0.1, "num_iters": 0}, {"reg": 0.1, "check_every": 0}])
def test_bad_parameters_raise(kwargs):
    a, b, c = _problem()
    with pytest.raises(ValueError):
        sinkhorn(a, b, c, **kwargs)


def test_barycentric_projection_of_a_permutation_plan():
    perm = torch.tensor([2, 0, 1])
    plan = torch.zeros(3, 3, dtype=torch.float64)
    plan[torch.arange(3), perm] = 1 / 3
    target = torch.arange(6, dtype=torch.float64).view(3, 2)
    torch.testing.assert_close(barycentric_projection(plan, target), target[perm])
    with pytest.raises(ValueError, match="positive mass"):
        barycentric_projection(torch.zeros(3, 3), target)
    with pytest.raises(ValueError):
        barycentric_projection(plan, target[:2])


def test_procrustes_recovers_a_rotation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    w = procrustes(x, x @ q)
    torch.testing.assert_close(w, q)


def test_unpaired_alignment_recovers_a_rotated_shuffled_cloud():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 4)) * 3
    x = torch.tensor(np.repeat(centers, 8, axis=0) + 0.2 * rng.normal(size=(32, 4)))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    perm = rng.permutation(32)
    y = (x @ torch.tensor(q))[perm]
    truth = torch.tensor(np.argsort(perm))  # row i of x is row truth[i] of y
    same_cluster = torch.tensor((np.arange(32)[:, None] // 8) == (perm[None, :] // 8))
    init = gromov_wasserstein_plan(x, y, reg=5e-3, max_iter=50)
    res = wasserstein_procrustes(x, y, init, reg=0.01, outer_iters=5)
    assert matching_accuracy(res.plan, same_cluster) > 0.9
    assert matching_accuracy(res.plan, truth) > 0.5


def test_matching_accuracy_and_helpers_validate():
    plan = torch.eye(3)
    assert matching_accuracy(plan, torch.tensor([0, 1, 2])) == 1.0
    assert matching_accuracy(plan, torch.tensor([1, 1, 2])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        matching_accuracy(plan, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError):
        matching_accuracy(plan, torch.ones(2, 3, dtype=torch.bool))
    assert uniform(4).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        uniform(0)
    c = cost_matrix(torch.randn(4, 3), torch.randn(5, 3), "cosine")
    assert c.shape == (4, 5) and float(c.max()) == pytest.approx(1.0) and float(c.min()) >= 0
    with pytest.raises(ValueError, match="dimension"):
        cost_matrix(torch.randn(4, 3), torch.randn(5, 2))
