"""Task 2.2 - entropic optimal transport with Sinkhorn iterations in the log domain.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch2_multimodal/test_task2_sinkhorn.py
    course-grade --task ch2_multimodal/task2_sinkhorn
"""

from __future__ import annotations

import torch


def sinkhorn(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, reg: float, num_iters: int = 1000,
             tol: float = 1e-9) -> torch.Tensor:
    """Entropy-regularised optimal transport plan (Cuturi 2013), computed stably.

    Finds ``P = diag(u) K diag(v)`` with ``K = exp(-cost / reg)`` whose rows sum to ``a``
    and columns to ``b``, by alternately rescaling rows and columns. Work with
    logarithms (``f = log u``, ``g = log v``, ``torch.logsumexp``): for ``reg = 1e-3`` and
    costs in [0, 1], ``K`` underflows to exactly 0 in floating point and the plain
    iteration divides 0 by 0. The result must agree with
    ``ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log")``.

    Args:
        a: ``[n]`` nonnegative source weights; b: ``[m]`` nonnegative target weights
            (same total mass, usually 1).
        cost: ``[n, m]`` transport costs.
        reg: entropic regularisation, ``> 0`` (small: close to exact OT; large: blurry).
        num_iters: maximum number of (row, column) update pairs, an int ``>= 1``.
        tol: stop early once a marginal is violated by less than ``tol`` (L1 or L2),
            ``>= 0``.

    Returns:
        The plan ``[n, m]``: nonnegative, finite, rows summing to ``a`` and columns to ``b``
        (up to ``tol`` once converged). Float dtype of the inputs, computed in it: float64
        inputs give a float64-accurate plan (float32 inputs may give float32 or float64).

    Raises:
        ValueError: shapes that do not fit, empty ``a`` or ``b``, negative weights,
        ``reg <= 0`` (or not finite), ``num_iters < 1`` or ``tol < 0``.

    Hint: with ``M = -cost / reg``: ``f = log a - logsumexp(M + g[None, :], dim=1)``, then
    ``g = log b - logsumexp(M + f[:, None], dim=0)``; finally ``P = exp(M + f[:, None] + g[None, :])``.
    """
    raise NotImplementedError("Task 2.2: implement sinkhorn")


def barycentric_projection(plan: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Map each source point to the plan-weighted mean of the target points.

    Row ``i`` of ``plan`` is normalized to sum to 1 (the conditional distribution of
    where point ``i`` sends its mass), then multiplied by ``target``.

    Args:
        plan: ``[n, m]`` nonnegative (e.g. from :func:`sinkhorn`; rows need not sum to 1).
        target: ``[m, d]`` target points (or features).

    Returns:
        ``[n, d]`` projected points.

    Raises:
        ValueError: ``target.shape[0] != plan.shape[1]``, or a row of ``plan`` with no mass.

    Hint: ``plan.sum(dim=1, keepdim=True)`` broadcasts over the columns.
    """
    raise NotImplementedError("Task 2.2: implement barycentric_projection")
