"""Task 1.2 - global magnitude pruning and the cubic sparsity schedule. Solution."""

from __future__ import annotations

import math

import torch
from torch import nn


def _prunable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every nn.Linear / nn.Conv2d, named as in model.named_parameters()."""
    weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    return [(name, p) for name, p in model.named_parameters() if id(p) in weight_ids]


def global_magnitude_masks(model: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be a number in [0, 1], got {amount!r}")
    weights = _prunable_weights(model)
    if not weights:
        return {}
    scores = torch.cat([p.detach().abs().flatten() for _, p in weights])
    num_pruned = round(amount * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if num_pruned > 0:
        keep[torch.topk(scores, num_pruned, largest=False).indices] = False
    masks, start = {}, 0
    for name, p in weights:
        masks[name] = keep[start : start + p.numel()].reshape(p.shape).clone()
        start += p.numel()
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"the model has no parameter named {name!r}")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"mask for {name!r} has shape {list(mask.shape)}, the weight {list(params[name].shape)}")
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(~mask.to(torch.bool), 0.0)


def cubic_sparsity(step: int, begin_step: int, end_step: int, initial_sparsity: float,
                   final_sparsity: float) -> float:
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must be larger than begin_step ({begin_step})")
    for name, value in (("initial_sparsity", initial_sparsity), ("final_sparsity", final_sparsity)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if step <= begin_step:
        return float(initial_sparsity)
    if step >= end_step:
        return float(final_sparsity)
    progress = (step - begin_step) / (end_step - begin_step)
    return float(final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3)
