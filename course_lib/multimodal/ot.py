"""Entropic optimal transport: Sinkhorn in the log domain, and OT-based alignment.

Entropic OT (Cuturi, 2013) between histograms ``a`` (``[n]``, sums to 1) and ``b``
(``[m]``, sums to 1) with cost ``C`` (``[n, m]``) and regularisation ``eps > 0``::

    P* = argmin_{P 1 = a, P^T 1 = b, P >= 0}  <P, C> - eps H(P),   H(P) = -sum P (log P - 1)

The solution is ``P = diag(e^f) K diag(e^g)`` with the Gibbs kernel ``K = exp(-C / eps)``;
Sinkhorn alternates ``g = log b - LSE_i(-C/eps + f)`` and ``f = log a - LSE_j(-C/eps + g)``
(LSE = log-sum-exp). In the log domain nothing overflows, even for ``eps = 1e-3`` where
``exp(-C/eps)`` underflows to 0.

Two methods give the same iterates (and so the same plan up to rounding):

* ``"log"``: every half step is a log-sum-exp over the whole matrix (the textbook form,
  the same as ``ot.sinkhorn(..., method="sinkhorn_log")``);
* ``"stabilized"`` (default): the potentials stay in the log domain, but between two
  *absorptions* the iterations run as cheap scalings ``v = b / K~^T u``, ``u = a / K~ v``
  on the absorbed kernel ``K~ = exp(-C/eps + f + g)``; when a scaling leaves
  ``[1/tau, tau]`` (or overflows) it is absorbed into ``f, g`` and the half step is redone
  in the log domain (Schmitzer, 2019). A matrix-vector product replaces two passes of
  ``exp``, which is why it is several times faster.

The stopping rule matches POT's: every ``check_every`` iterations, the L2 norm of the
column-marginal violation ``||P^T 1 - b||`` is compared with ``tol``.

Alignment helpers: :func:`barycentric_projection` maps each source point to the
plan-weighted mean of its targets; :func:`procrustes` and :func:`wasserstein_procrustes`
align two embedding spaces without paired data (Grave et al., 2019), started from a
Gromov-Wasserstein coupling (Memoli, 2011; Peyre et al., 2016) computed with POT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_tensor, check_choice, check_finite, check_matrix, check_positive

METHODS: tuple[str, ...] = ("stabilized", "log")
COST_METRICS: tuple[str, ...] = ("sqeuclidean", "euclidean", "cosine")


@dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn`.

    Attributes:
        plan: the transport plan, ``[n, m]`` (or ``[B, n, m]`` for a batch), same dtype as the inputs.
        log_u, log_v: the dual potentials divided by ``eps`` (``f``, ``g`` above), ``[n]``/``[m]``.
        n_iter: iterations run (one iteration = a column then a row update).
        errors: marginal violation ``||P^T 1 - b||_2`` at each check (max over a batch).
        converged: whether the last check was below ``tol``.
        absorptions: how many times the stabilized method fell back to a log-domain step.
    """

    plan: torch.Tensor
    log_u: torch.Tensor
    log_v: torch.Tensor
    n_iter: int
    errors: list[float] = field(default_factory=list)
    converged: bool = False
    absorptions: int = 0

    def cost(self, cost: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Transport cost ``<P, C>`` (per problem for a batch)."""
        c = as_tensor(cost, "cost").to(self.plan)
        return (self.plan * c).sum(dim=(-2, -1))


def _histogram(x: torch.Tensor | np.ndarray, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    t = as_tensor(x, name)
    if not torch.is_floating_point(t):
        t = t.to(dtype or torch.get_default_dtype())
    if t.ndim not in (1, 2) or t.shape[-1] == 0:
        raise ValueError(f"{name} must be a non-empty histogram [n] (or a batch [B, n]), got shape {tuple(t.shape)}")
    check_finite(t, name)
    if bool((t < 0).any()):
        raise ValueError(f"{name} has negative entries: a histogram must be >= 0")
    sums = t.sum(dim=-1)
    if bool(((sums - 1).abs() > 1e-6).any()):
        raise ValueError(
            f"{name} must sum to 1 (a probability histogram), got sum(s) {sums.tolist()}; "
            f"divide it by its sum first"
        )
    return t


def _prepare(a, b, cost) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = as_tensor(cost, "cost")
    if not torch.is_floating_point(c):
        c = c.to(torch.get_default_dtype())
    a_t = _histogram(a, "a", c.dtype)
    b_t = _histogram(b, "b", c.dtype)
    dtype = torch.promote_types(torch.promote_types(a_t.dtype, b_t.dtype), c.dtype)
    a_t, b_t, c = a_t.to(dtype), b_t.to(dtype), c.to(dtype)
    if c.ndim not in (2, 3):
        raise ValueError(f"cost must be [n, m] (or [B, n, m]), got shape {tuple(c.shape)}")
    check_finite(c, "cost")
    n, m = c.shape[-2:]
    if a_t.shape[-1] != n or b_t.shape[-1] != m:
        raise ValueError(
            f"shapes disagree: a has {a_t.shape[-1]} entries and b {b_t.shape[-1]}, but cost is {n} x {m}"
        )
    batched = a_t.ndim == 2 or b_t.ndim == 2 or c.ndim == 3
    if batched:
        sizes = {t.shape[0] for t, nd in ((a_t, 2), (b_t, 2), (c, 3)) if t.ndim == nd}
        if len(sizes) != 1:
            raise ValueError(f"batch sizes of a, b and cost disagree: {sorted(sizes)}")
        bsz = sizes.pop()
        a_t = a_t.expand(bsz, n) if a_t.ndim == 1 else a_t
        b_t = b_t.expand(bsz, m) if b_t.ndim == 1 else b_t
        c = c.expand(bsz, n, m) if c.ndim == 2 else c
    else:
        a_t, b_t, c = a_t[None], b_t[None], c[None]
    return a_t, b_t, c


def _log_half_step(log_hist: torch.Tensor, m: torch.Tensor, other: torch.Tensor, dim: int) -> torch.Tensor:
    """``log_hist - LSE(m + other)`` reduced over ``dim`` of ``m`` (``[B, n, m]``)."""
    if dim == 1:  # column update: reduce over rows, other = log_u [B, n]
        return log_hist - torch.logsumexp(m + other[:, :, None], dim=1)
    return log_hist - torch.logsumexp(m + other[:, None, :], dim=2)


def sinkhorn(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    cost: torch.Tensor | np.ndarray,
    reg: float,
    num_iters: int = 1000,
    tol: float = 1e-9,
    *,
    method: str = "stabilized",
    check_every: int = 10,
    absorb_threshold: float | None = None,
) -> SinkhornResult:
    """Entropic OT plan by Sinkhorn iterations in the log domain.

    Args:
        a: source histogram ``[n]`` (or ``[B, n]``), >= 0, sums to 1.
        b: target histogram ``[m]`` (or ``[B, m]``), >= 0, sums to 1.
        cost: ``[n, m]`` (or ``[B, n, m]``) cost matrix; keep it in about ``[0, 1]``
            (divide by its max) so that ``reg`` means the same thing across problems.
        reg: entropic regularisation ``eps > 0``; stays finite down to ``1e-3`` and below.
        num_iters: maximum number of iterations.
        tol: stop when ``||P^T 1 - b||_2 < tol`` at a check.
        method: ``"stabilized"`` (default, fast) or ``"log"`` (plain log-sum-exp steps).
        check_every: iterations between two convergence checks (POT uses 10).
        absorb_threshold: ``tau`` of the stabilized method (default ``finfo.max ** 0.25``).

    Returns:
        A :class:`SinkhornResult`; ``result.plan`` is the plan. Float64 inputs give float64.

    Raises:
        ValueError: histograms that are negative, do not sum to 1 or do not fit the
            cost's shape; NaN/inf anywhere; ``reg <= 0``; an unknown method.
    """
    reg = check_positive(reg, "reg")
    tol = check_positive(tol, "tol")
    check_choice(method, METHODS, "method")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive integer, got {num_iters!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    a_t, b_t, c = _prepare(a, b, cost)
    batched = as_tensor(a, "a").ndim == 2 or as_tensor(b, "b").ndim == 2 or as_tensor(cost, "cost").ndim == 3
    tau = float(absorb_threshold) if absorb_threshold is not None else float(torch.finfo(c.dtype).max) ** 0.25
    if not tau > 1:
        raise ValueError(f"absorb_threshold must be > 1, got {tau}")
    run = _sinkhorn_log if method == "log" else _sinkhorn_stabilized
    res = run(a_t, b_t, -c / reg, num_iters, tol, check_every, tau)
    if not batched:
        res.plan, res.log_u, res.log_v = res.plan[0], res.log_u[0], res.log_v[0]
    return res


def _marginal_error(plan: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(plan.sum(dim=1) - b, dim=-1).max())


def _sinkhorn_log(a, b, m, num_iters, tol, check_every, tau) -> SinkhornResult:
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    errors: list[float] = []
    converged = False
    it = 0
    for it in range(num_iters):
        g = _log_half_step(log_b, m, f, dim=1)
        f = _log_half_step(log_a, m, g, dim=2)
        if it % check_every == 0:
            errors.append(_marginal_error(torch.exp(m + f[:, :, None] + g[:, None, :]), b))
            if errors[-1] < tol:
                converged = True
                break
    plan = torch.exp(m + f[:, :, None] + g[:, None, :])
    return SinkhornResult(plan, f, g, it + 1, errors, converged, absorptions=0)


def _in_range(x: torch.Tensor, tau: float) -> bool:
    return bool(torch.isfinite(x).all()) and float(x.max()) < tau and float(x.min()) > 1.0 / tau


def _sinkhorn_stabilized(a, b, m, num_iters, tol, check_every, tau) -> SinkhornResult:
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)  # absorbed log-potentials
    g = torch.zeros_like(b)
    u = torch.ones_like(a)  # scalings on top of them
    v = torch.ones_like(b)
    kernel: torch.Tensor | None = None  # exp(m + f + g), [B, n, m]
    absorptions = 0
    errors: list[float] = []
    converged = False
    # entries with zero mass never receive any: keep their scalings at 0, not 0/0
    a_pos, b_pos = a > 0, b > 0

    def absorb() -> None:
        nonlocal f, g, u, v
        with torch.no_grad():
            f = f + torch.where(a_pos, u.log(), torch.zeros_like(u))
            g = g + torch.where(b_pos, v.log(), torch.zeros_like(v))
        u, v = torch.ones_like(u), torch.ones_like(v)

    it = 0
    for it in range(num_iters):
        # column update
        new_v = None
        if kernel is not None:
            new_v = torch.where(b_pos, b / torch.bmm(u[:, None, :], kernel)[:, 0], torch.zeros_like(b))
        if new_v is not None and _in_range(new_v[b_pos], tau):
            v = new_v
        else:
            absorb()
            g = _log_half_step(log_b, m, f, dim=1)
            kernel = torch.exp(m + f[:, :, None] + g[:, None, :])
            absorptions += 1
        # row update
        new_u = torch.where(a_pos, a / torch.bmm(kernel, v[:, :, None])[..., 0], torch.zeros_like(a))
        if _in_range(new_u[a_pos], tau):
            u = new_u
        else:
            absorb()
            f = _log_half_step(log_a, m, g, dim=2)
            kernel = torch.exp(m + f[:, :, None] + g[:, None, :])
            absorptions += 1
        if it % check_every == 0:
            col = v * torch.bmm(u[:, None, :], kernel)[:, 0]
            errors.append(float(torch.linalg.vector_norm(col - b, dim=-1).max()))
            if errors[-1] < tol:
                converged = True
                break
    plan = u[:, :, None] * kernel * v[:, None, :]
    absorb()
    return SinkhornResult(plan, f, g, it + 1, errors, converged, absorptions=absorptions - 1)


def sinkhorn_plan(a, b, cost, reg: float, **kwargs) -> torch.Tensor:
    """Shortcut: ``sinkhorn(a, b, cost, reg, **kwargs).plan``."""
    return sinkhorn(a, b, cost, reg, **kwargs).plan


def uniform(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The uniform histogram ``[n]`` (each entry ``1 / n``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return torch.full((n,), 1.0 / n, dtype=dtype)


def cost_matrix(x: torch.Tensor, y: torch.Tensor, metric: str = "sqeuclidean", normalize: bool = True) -> torch.Tensor:
    """Pairwise cost ``[n, m]`` between rows of ``x`` ``[n, d]`` and ``y`` ``[m, d]``.

    Args:
        metric: ``"sqeuclidean"``, ``"euclidean"`` or ``"cosine"`` (``1 - cos``).
        normalize: divide by the largest entry so the cost lies in ``[0, 1]``.
    """
    check_choice(metric, COST_METRICS, "metric")
    x = check_matrix(as_tensor(x, "x"), "x")
    y = check_matrix(as_tensor(y, "y"), "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has D={x.shape[1]} but y has D={y.shape[1]}: a cost needs the same dimension")
    y = y.to(x.dtype)
    if metric == "cosine":
        c = 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    else:
        c = (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
        if metric == "euclidean":
            c = c.sqrt()
    c = c.clamp_min(0)
    if normalize and float(c.max()) > 0:
        c = c / c.max()
    return c


def barycentric_projection(plan: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n, d]``: each source point mapped to the plan-weighted mean of the targets.

    Args:
        plan: ``[n, m]`` non-negative, every row with positive mass.
        target: ``[m, d]`` (or ``[m]``) points of the target space.
    """
    plan = as_tensor(plan, "plan")
    target = as_tensor(target, "target")
    if plan.ndim != 2 or target.ndim not in (1, 2) or target.shape[0] != plan.shape[1]:
        raise ValueError(f"expected plan [n, m] and target [m, d], got {tuple(plan.shape)} and {tuple(target.shape)}")
    check_finite(plan, "plan")
    check_finite(target, "target")
    mass = plan.sum(dim=1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("every row of the plan needs positive mass to be projected")
    return (plan / mass) @ target.to(plan.dtype)


def procrustes(x: torch.Tensor, y: torch.Tensor, plan: torch.Tensor | None = None) -> torch.Tensor:
    """The orthogonal map ``W`` ``[d_x, d_y]`` minimising ``sum_ij P_ij ||x_i W - y_j||^2``.

    Without ``plan``, ``x`` and ``y`` are paired row by row (``P = I``). Solution:
    ``W = U V^T`` with ``U S V^T = svd(x^T P y)`` (Schonemann, 1966). ``d_x != d_y`` gives a
    semi-orthogonal map.
    """
    x = check_matrix(as_tensor(x, "x"), "x")
    y = check_matrix(as_tensor(y, "y"), "y").to(x.dtype)
    if plan is None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"paired Procrustes needs as many rows in x ({x.shape[0]}) as in y ({y.shape[0]})")
        m = x.T @ y
    else:
        plan = as_tensor(plan, "plan").to(x.dtype)
        if plan.shape != (x.shape[0], y.shape[0]):
            raise ValueError(f"plan must be [{x.shape[0]}, {y.shape[0]}], got {tuple(plan.shape)}")
        m = x.T @ plan @ y
    u, _, vt = torch.linalg.svd(m, full_matrices=False)
    return u @ vt


@dataclass
class AlignmentResult:
    """Output of :func:`wasserstein_procrustes`: the map ``W``, the final plan, a history of
    the transport cost per outer iteration and, if given, the matching accuracy."""

    W: torch.Tensor
    plan: torch.Tensor
    history: list[float]


def gromov_wasserstein_plan(x: torch.Tensor, y: torch.Tensor, reg: float = 5e-3, max_iter: int = 100,
                            seed: int = 0, solver: str = "PGD") -> torch.Tensor:
    """Entropic Gromov-Wasserstein coupling ``[n, m]`` of two point clouds (POT).

    Only the within-space geometry is compared (cosine distances inside ``x`` and inside
    ``y``), so ``x`` and ``y`` may live in different spaces of different dimensions.
    ``solver``: POT's ``"PGD"`` (projected gradient, fast) or ``"PPA"`` (proximal point).
    """
    import warnings

    import ot  # POT

    x = check_matrix(as_tensor(x, "x"), "x").double()
    y = check_matrix(as_tensor(y, "y"), "y").double()
    reg = check_positive(reg, "reg")
    cx = cost_matrix(x, x, "cosine").numpy()
    cy = cost_matrix(y, y, "cosine").numpy()
    p, q = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    rng = np.random.default_rng(seed)
    g0 = np.outer(p, q) * (1 + 1e-3 * rng.random((len(x), len(y))))
    g0 /= g0.sum()
    check_choice(solver, ("PGD", "PPA"), "solver")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inner Sinkhorn "did not converge" notices of POT
        plan = ot.gromov.entropic_gromov_wasserstein(
            cx, cy, p, q, loss_fun="square_loss", epsilon=reg, max_iter=max_iter, G0=g0, solver=solver
        )
    return torch.from_numpy(np.asarray(plan))


def wasserstein_procrustes(
    x: torch.Tensor,
    y: torch.Tensor,
    init_plan: torch.Tensor,
    reg: float = 0.02,
    outer_iters: int = 20,
) -> AlignmentResult:
    """Align ``x`` ``[n, d_x]`` to ``y`` ``[m, d_y]`` without pairs (Grave et al., 2019).

    Alternates an orthogonal Procrustes map fitted under the current plan and a Sinkhorn
    plan under the cosine cost between ``x W`` and ``y``. Inputs are L2-normalised and
    centred first. Start from a coupling such as :func:`gromov_wasserstein_plan`.
    """
    x = check_matrix(as_tensor(x, "x"), "x").double()
    y = check_matrix(as_tensor(y, "y"), "y").double()
    if isinstance(outer_iters, bool) or not isinstance(outer_iters, int) or outer_iters < 1:
        raise ValueError(f"outer_iters must be a positive integer, got {outer_iters!r}")
    x = F.normalize(x - x.mean(0), dim=1)
    y = F.normalize(y - y.mean(0), dim=1)
    plan = as_tensor(init_plan, "init_plan").double()
    if plan.shape != (len(x), len(y)):
        raise ValueError(f"init_plan must be [{len(x)}, {len(y)}], got {tuple(plan.shape)}")
    a, b = uniform(len(x)), uniform(len(y))
    history: list[float] = []
    w = procrustes(x, y, plan)
    for _ in range(outer_iters):
        cost = cost_matrix(x @ w, y, "cosine", normalize=False) / 2  # in [0, 1]
        plan = sinkhorn(a, b, cost, reg, num_iters=2000, tol=1e-7).plan
        history.append(float((plan * cost).sum()))
        w = procrustes(x, y, plan)
    return AlignmentResult(W=w, plan=plan, history=history)


def matching_accuracy(plan: torch.Tensor, true_match: torch.Tensor | np.ndarray) -> float:
    """Fraction of rows whose heaviest plan entry is the true partner.

    Args:
        plan: ``[n, m]`` coupling.
        true_match: int ``[n]``, the index in ``[0, m)`` of each row's true partner; or
            bool ``[n, m]``, True where a column counts as a correct match (e.g. same class).
    """
    plan = as_tensor(plan, "plan")
    if plan.ndim != 2 or plan.shape[0] == 0:
        raise ValueError(f"plan must be a non-empty [n, m] matrix, got {tuple(plan.shape)}")
    check_finite(plan, "plan")
    truth = as_tensor(true_match, "true_match")
    best = plan.argmax(dim=1)
    if truth.dtype == torch.bool:
        if truth.shape != plan.shape:
            raise ValueError(f"a boolean true_match must be [n, m] = {tuple(plan.shape)}, got {tuple(truth.shape)}")
        return float(truth[torch.arange(len(best)), best].float().mean())
    if truth.shape != (plan.shape[0],):
        raise ValueError(f"true_match must be [n] = [{plan.shape[0]}] indices, got {tuple(truth.shape)}")
    if bool(((truth < 0) | (truth >= plan.shape[1])).any()):
        raise ValueError(f"true_match indices must be in [0, {plan.shape[1]})")
    return float((best == truth.to(best.device)).float().mean())
