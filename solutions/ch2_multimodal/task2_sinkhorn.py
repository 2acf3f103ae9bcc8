"""Task 2.2 - entropic optimal transport with Sinkhorn iterations in the log domain. Solution."""

from __future__ import annotations

import math

import torch


def sinkhorn(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, reg: float, num_iters: int = 1000,
             tol: float = 1e-9) -> torch.Tensor:
    if a.dim() != 1 or b.dim() != 1 or cost.shape != (a.shape[0], b.shape[0]):
        raise ValueError(f"expected a [n], b [m] and cost [n, m], got {list(a.shape)}, {list(b.shape)} and "
                         f"{list(cost.shape)}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("the weights a and b must be nonnegative")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("a and b must not be empty")
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not math.isfinite(reg) or reg <= 0:
        raise ValueError(f"reg must be a positive number, got {reg!r}")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be an int >= 1, got {num_iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), cost.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    log_a, log_b = a.to(dtype).log(), b.to(dtype).log()
    m = -cost.to(dtype) / reg                       # log of the Gibbs kernel
    f = torch.zeros_like(log_a)                     # log-scalings of rows and columns (units of reg)
    g = torch.zeros_like(log_b)
    for it in range(num_iters):
        f = log_a - torch.logsumexp(m + g[None, :], dim=1)
        g = log_b - torch.logsumexp(m + f[:, None], dim=0)
        if it % 10 == 0:
            row_error = (torch.exp(m + f[:, None] + g[None, :]).sum(dim=1) - a.to(dtype)).abs().sum()
            if row_error < tol:
                break
    return torch.exp(m + f[:, None] + g[None, :])


def barycentric_projection(plan: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if plan.dim() != 2 or target.dim() not in (1, 2) or target.shape[0] != plan.shape[1]:
        raise ValueError(f"expected plan [n, m] and target [m, d], got {list(plan.shape)} and {list(target.shape)}")
    mass = plan.sum(dim=1, keepdim=True)
    if (mass <= 0).any():
        raise ValueError("every row of the plan needs positive mass")
    return (plan / mass) @ target.to(plan.dtype)
