"""Graded tests of task 2.2: sinkhorn (log domain) and barycentric_projection.

References: ``ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log")`` (POT) in float64, a
closed-form 2x2 plan, the independent coupling ``a b^T`` for a constant cost, and the
projection formula. Where both converge (reg >= 0.05 here) plans must agree to 1e-6 in
any entry; for reg = 1e-3, which neither converges fully in 1000 iterations, the plan
must be finite and its marginals and cost close to POT's.
"""

import math

import pytest
import torch

from course_lib.grading.testing import as_tensor, assert_close, assert_not_mutated, expect_error

TASK = "ch2_multimodal/task2_sinkhorn"


def _problem(n, m, seed, dtype=torch.float64, outlier=False):
    """Random weights and squared distances scaled to [0, 1]; ``outlier``: point 0 is far
    from every target (costs 0.9..1), so that exp(-cost / 1e-3) is 0 in its whole row."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(m, 2, generator=g, dtype=torch.float64)
    cost = torch.cdist(x, y) ** 2
    cost = cost / cost.max()
    if outlier:
        cost[0] = 0.9 + 0.1 * torch.rand(m, generator=g, dtype=torch.float64)
    return (a / a.sum()).to(dtype), (b / b.sum()).to(dtype), cost.to(dtype)


def _pot(a, b, cost, reg, iters=1000, tol=1e-9):
    import ot  # imported on first use: collecting stays fast

    return ot.sinkhorn(a.double(), b.double(), cost.double(), reg, method="sinkhorn_log", numItermax=iters,
                       stopThr=tol, warn=False)


def _plan(impl, a, b, cost, reg, **kw):
    plan = as_tensor(impl.sinkhorn(a, b, cost, reg, **kw), "the plan", shape=(a.shape[0], b.shape[0]), floating=True)
    assert bool(torch.isfinite(plan).all()), (
        f"the plan contains NaN or inf for reg={reg}: exp(-cost/reg) underflows; iterate on log-scalings with "
        "torch.logsumexp")
    assert bool((plan >= 0).all()), "a transport plan has no negative entries"
    return plan.double()


@pytest.mark.points(1)
def test_hand_worked_2x2(impl):
    a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    plan = _plan(impl, a, a.clone(), cost, 0.5)
    p = 0.5 * math.exp(2) / (1 + math.exp(2))  # diagonal / off-diagonal = exp(1 / reg) = e^2
    assert_close(plan, torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=torch.float64), "plan for the 2x2 example",
                 atol=1e-7, rtol=0, hint="the kernel is exp(-cost / reg): here the diagonal is e^2 times the rest")


@pytest.mark.points(3)
@pytest.mark.parametrize("reg", [0.05, 0.1, 0.5])
def test_matches_pot_sinkhorn_log(impl, reg):
    for seed, (n, m) in enumerate([(6, 9), (12, 12), (15, 4)]):
        a, b, cost = _problem(n, m, seed)
        plan = _plan(impl, a, b, cost, reg)
        assert_close(plan, _pot(a, b, cost, reg), f"plan (n={n}, m={m}, reg={reg})", atol=1e-6, rtol=0, show=False,
                     hint="it should match ot.sinkhorn(a, b, cost, reg, method='sinkhorn_log'); rows follow a, "
                          "columns follow b")


@pytest.mark.points(2)
def test_marginals(impl):
    for seed, (n, m, reg) in enumerate([(7, 11, 0.05), (20, 20, 0.2), (3, 8, 1.0)]):
        a, b, cost = _problem(n, m, seed + 10)
        plan = _plan(impl, a, b, cost, reg)
        assert_close(plan.sum(1), a, f"row sums of the plan (n={n}, m={m})", atol=1e-6, rtol=0,
                     hint="rows must sum to a")
        assert_close(plan.sum(0), b, f"column sums of the plan (n={n}, m={m})", atol=1e-6, rtol=0,
                     hint="columns must sum to b")


@pytest.mark.points(1)
@pytest.mark.parametrize("reg,dtype,outlier", [(1e-3, torch.float64, True), (1e-3, torch.float32, False),
                                               (5e-3, torch.float64, True)],
                         ids=["1e-3-float64-outlier", "1e-3-float32", "5e-3-float64-outlier"])
def test_small_reg_stays_finite_and_accurate(impl, reg, dtype, outlier):
    a, b, cost = _problem(20, 16, 30, dtype, outlier)
    plan = _plan(impl, a, b, cost, reg)
    a, b, cost = a.double(), b.double(), cost.double()
    ref = _pot(a, b, cost, reg)
    row_err = float((plan.sum(1) - a).abs().sum())
    col_err = float((plan.sum(0) - b).abs().sum())
    assert row_err < 1e-3 and col_err < 1e-3, (
        f"for reg={reg} the plan's marginals are off by {row_err:.2e} (rows) and {col_err:.2e} (columns) in L1")
    cost_sub, cost_ref = float((plan * cost).sum()), float((ref * cost).sum())
    assert abs(cost_sub - cost_ref) < 1e-3 * cost_ref, (
        f"for reg={reg} the transport cost <P, C> is {cost_sub:.6f}, POT's is {cost_ref:.6f}")
    assert_close(plan, ref, f"plan for reg={reg} ({dtype})", atol=5e-4, rtol=0, show=False)


@pytest.mark.points(1)
def test_float32_inputs(impl):
    a, b, cost = _problem(10, 7, 40, dtype=torch.float32)
    plan = _plan(impl, a, b, cost, 0.05)
    assert_close(plan, _pot(a, b, cost, 0.05), "plan for float32 inputs (reg=0.05)", atol=1e-5, rtol=0, show=False)


@pytest.mark.points(1)
def test_constant_cost_gives_the_independent_coupling(impl):
    a, b, _ = _problem(5, 6, 50)
    plan = _plan(impl, a, b, torch.full((5, 6), 0.7, dtype=torch.float64), 0.1)
    assert_close(plan, a[:, None] * b[None, :], "plan for a constant cost", atol=1e-9, rtol=0,
                 hint="with nothing to gain from moving mass, P = a b^T (outer product): rows a, columns b")


@pytest.mark.points(1)
def test_bad_input_is_rejected(impl):
    a, b, cost = _problem(4, 5, 60)
    _plan(impl, a, b, cost, 0.1)  # valid call first
    expect_error(impl.sinkhorn, a, b, cost.T, 0.1, what="sinkhorn with cost [5, 4] for a [4] and b [5]")
    expect_error(impl.sinkhorn, a, b, cost, 0.0, what="sinkhorn with reg=0")
    expect_error(impl.sinkhorn, a - 0.5, b, cost, 0.1, what="sinkhorn with negative weights in a")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    a, b, cost = _problem(6, 5, 70)
    plan = _plan(impl, a, b, cost, 0.1)
    assert_not_mutated(impl, "sinkhorn")
    assert_close(plan, _pot(a, b, cost, 0.1), "plan", atol=1e-6, rtol=0, show=False)
    plan = _pot(a, b, cost, 0.1) * 3
    target = torch.randn(5, 3, dtype=torch.float64)
    out = impl.barycentric_projection(plan, target)
    assert_not_mutated(impl, "barycentric_projection")
    assert_close(out, (plan / plan.sum(1, keepdim=True)) @ target, "barycentric_projection", atol=1e-9)


@pytest.mark.points(1)
def test_barycentric_projection_hand_worked(impl):
    plan = torch.tensor([[0.2, 0.2, 0.0], [0.0, 0.1, 0.3]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    out = impl.barycentric_projection(plan, target)
    assert_close(out, torch.tensor([[1.0, 0.0], [0.5, 3.0]], dtype=torch.float64), "barycentric_projection",
                 atol=1e-9, hint="row 0 sends half its mass to each of the first two targets: (0 + 2) / 2 = 1")


@pytest.mark.points(1)
def test_barycentric_projection_normalises_rows(impl):
    g = torch.Generator().manual_seed(80)
    plan = torch.rand(6, 9, generator=g, dtype=torch.float64)
    target = torch.randn(9, 4, generator=g, dtype=torch.float64)
    expected = (plan / plan.sum(1, keepdim=True)) @ target
    assert_close(impl.barycentric_projection(plan, target), expected, "barycentric_projection", atol=1e-9,
                 hint="normalize each ROW of the plan to sum 1, then multiply by target")
    assert_close(impl.barycentric_projection(plan * 37.0, target), expected, "barycentric_projection of a scaled plan",
                 atol=1e-9, hint="scaling the plan must not change the projection")


@pytest.mark.points(1)
def test_barycentric_projection_rejects_bad_input(impl):
    plan, target = torch.rand(3, 4, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    impl.barycentric_projection(plan, target)  # valid call first
    expect_error(impl.barycentric_projection, plan, torch.rand(5, 2, dtype=torch.float64),
                 what="a plan [3, 4] with 5 target points")
    empty_row = plan.clone()
    empty_row[1] = 0
    expect_error(impl.barycentric_projection, empty_row, target, what="a plan with a row of zeros")
