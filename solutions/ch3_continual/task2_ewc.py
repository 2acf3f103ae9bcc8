"""Task 3.2 - elastic weight consolidation: the empirical Fisher and the EWC penalty. Solution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fisher_diagonal(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(f"inputs and targets must be non-empty batches of the same length, got "
                         f"{list(inputs.shape)} and {list(targets.shape)}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p, memory_format=torch.preserve_format).detach() for name, p in params.items()}
    for i in range(inputs.shape[0]):
        loss = F.cross_entropy(model(inputs[i : i + 1]), targets[i : i + 1])
        # autograd.grad returns the gradients without touching any parameter's .grad
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for name, grad in zip(params, grads):
            if grad is not None:
                fisher[name] += grad.detach() ** 2
    return {name: f / inputs.shape[0] for name, f in fisher.items()}


def ewc_penalty(model: nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    params = dict(model.named_parameters())
    total = None
    for name, f in fisher.items():
        if name not in params or name not in anchor:
            raise ValueError(f"{name!r} is in fisher but not a parameter of the model or not in anchor")
        p = params[name]
        if f.shape != p.shape or anchor[name].shape != p.shape:
            raise ValueError(f"shape mismatch for {name!r}: parameter {list(p.shape)}, fisher {list(f.shape)}, "
                             f"anchor {list(anchor[name].shape)}")
        term = (f * (p - anchor[name]) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        first = next(model.parameters(), None)
        return torch.zeros((), dtype=first.dtype if first is not None else torch.float32)
    return total
