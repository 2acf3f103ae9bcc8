"""Graded tests of task 2.2: sinkhorn (log domain) and barycentric_projection.

References: ``ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log")`` (POT) in float64, a
closed-form 2x2 plan, the independent coupling ``a b^T`` for a constant cost, and the
projection formula.

Tolerances: Sinkhorn converges to one plan whatever the order of the updates (rows or
columns first) and the stopping rule, so plans are compared once converged, never after a
fixed number of iterations (where the update order matters). With the default tol = 1e-9
(reg >= 0.05, float64) a converged plan is within about 1e-9 of the fixed point: entries
are compared to 1e-6, and marginals to 1e-6. For reg = 1e-3 and 5e-3 the tests pass
num_iters=3000 (about 1900 are needed) and compare with POT run to convergence: float64 to
1e-6 (measured differences: 4e-13), float32 to 2e-5 (its log-scalings of size ~1/reg =
1000 carry rounding errors of ~1e-4, i.e. relative errors of ~1e-4 in entries below
0.07; measured: 7e-7). float32 inputs at reg = 0.05 are compared to 1e-5, so a float32 or
a float64 result passes. The float64 precision test converges to tol = 1e-13 and compares
with 1e-11: correct float64 code lands within 3e-15, float32 arithmetic (exponent
arguments of size cost/reg ~ 10 rounded to 6e-8) is off by 2e-8. The projection is a
weighted mean, compared to 1e-9 for float64 inputs.
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
    plan = _plan(impl, a, b, cost, reg, num_iters=3000)
    a, b, cost = a.double(), b.double(), cost.double()
    ref = _pot(a, b, cost, reg, iters=20000, tol=1e-12)  # converged (about 1900 iterations)
    row_err = float((plan.sum(1) - a).abs().sum())
    col_err = float((plan.sum(0) - b).abs().sum())
    assert row_err < 1e-4 and col_err < 1e-4, (
        f"for reg={reg} (num_iters=3000) the plan's marginals are off by {row_err:.2e} (rows) and {col_err:.2e} "
        "(columns) in L1")
    cost_sub, cost_ref = float((plan * cost).sum()), float((ref * cost).sum())
    assert abs(cost_sub - cost_ref) < 1e-4 * cost_ref, (
        f"for reg={reg} the transport cost <P, C> is {cost_sub:.6f}, POT's is {cost_ref:.6f}")
    assert_close(plan, ref, f"plan for reg={reg} ({dtype}, num_iters=3000)", atol=1e-6 if dtype == torch.float64
                 else 2e-5, rtol=0, show=False)


@pytest.mark.points(1)
def test_float32_inputs(impl):
    a, b, cost = _problem(10, 7, 40, dtype=torch.float32)
    plan = _plan(impl, a, b, cost, 0.05)
    assert_close(plan, _pot(a, b, cost, 0.05), "plan for float32 inputs (reg=0.05)", atol=1e-5, rtol=0, show=False)


@pytest.mark.points(1)
def test_float64_precision(impl):
    a, b, cost = _problem(12, 10, 90)
    plan = as_tensor(impl.sinkhorn(a, b, cost, 0.1, num_iters=10000, tol=1e-13), "the plan", shape=(12, 10),
                     floating=True)
    assert plan.dtype == torch.float64, f"the plan should be float64 for float64 inputs, got {plan.dtype}"
    ref = _pot(a, b, cost, 0.1, iters=100000, tol=1e-15)
    error = float((plan - ref).abs().max())
    assert error <= 1e-11, (
        f"the plan for float64 inputs (reg=0.1, tol=1e-13) is off by {error:.2g} from the converged plan (allowed "
        "1e-11)" + (": float32 arithmetic leaves errors of this size - with float64 inputs iterate in float64"
                    if 1e-10 < error < 1e-5 else ""))


def _violation(plan, a, b):
    """The largest L1 violation of the two marginals."""
    return max(float((plan.sum(1) - a).abs().sum()), float((plan.sum(0) - b).abs().sum()))


@pytest.mark.points(1)
def test_num_iters_limits_the_iterations(impl):
    a, b, cost = _problem(12, 12, 91)
    few = _violation(_plan(impl, a, b, cost, 0.02, num_iters=3, tol=1e-12), a, b)
    more = _violation(_plan(impl, a, b, cost, 0.02, num_iters=30, tol=1e-12), a, b)
    many = _violation(_plan(impl, a, b, cost, 0.02, num_iters=3000, tol=1e-12), a, b)
    assert few > 0.1, (
        f"after num_iters=3 update pairs at reg=0.02 the marginals cannot be satisfied yet (about 0.7 off in L1), but "
        f"yours are off by only {few:.2g}: num_iters must bound the number of (row, column) update pairs")
    assert more < few and many < 1e-9, (
        f"more iterations should bring the marginals closer: off by {few:.2g} after 3, {more:.2g} after 30 and "
        f"{many:.2g} after 3000 update pairs (reg=0.02)")


@pytest.mark.points(1)
def test_tol_stops_early(impl):
    a, b, cost = _problem(12, 12, 91)
    loose = _violation(_plan(impl, a, b, cost, 0.02, num_iters=10000, tol=1e-3), a, b)
    assert loose <= 1e-2, (
        f"with tol=1e-3 the returned plan's marginals are off by {loose:.2g} (L1): iterate until a marginal is "
        "violated by less than tol")
    assert loose > 1e-7, (
        f"with tol=1e-3 the iteration should stop once the marginals are within 1e-3, long before num_iters=10000; "
        f"your plan's marginals are within {loose:.2g}, as if tol had no effect")


@pytest.mark.points(1)
def test_bad_arguments_are_rejected(impl):
    a, b, cost = _problem(4, 5, 61)
    _plan(impl, a, b, cost, 0.1, num_iters=10, tol=1e-6)  # valid call first
    for kwargs, what in [({"num_iters": 0}, "num_iters=0"), ({"num_iters": -3}, "num_iters=-3"),
                         ({"tol": -1e-3}, "tol=-1e-3")]:
        expect_error(impl.sinkhorn, a, b, cost, 0.1, **kwargs, what=f"sinkhorn(..., {what})")
    expect_error(impl.sinkhorn, a, b, cost, float("nan"), what="sinkhorn with reg=nan")
    expect_error(impl.sinkhorn, a[:0], b, cost[:0], 0.1, what="sinkhorn with an empty a (n = 0)")


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
