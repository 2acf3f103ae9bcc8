"""Small models the graded tests build, by name, identically on both sides.

A test builds ``model = build("prune_mixed")`` on the trusted side, then sends
``("prune_mixed", kwargs, model.state_dict())`` to the worker, which builds the same
architecture and loads those weights (``helpers.build_model``). The weights travel as
data; no module object ever crosses the process boundary.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _prune_mixed() -> nn.Module:
    """Linear, Conv2d, and layers whose weights must NOT be pruned (norms, Embedding, Conv1d)."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 4, 3),
            bn=nn.BatchNorm2d(4),
            act=nn.ReLU(),
            conv2=nn.Conv2d(4, 6, 3, bias=False),
        )),
        embed=nn.Embedding(10, 4),
        seq=nn.Conv1d(2, 3, 3),
        head=nn.Sequential(OrderedDict(
            fc1=nn.Linear(24, 8),
            norm=nn.LayerNorm(8),
            fc2=nn.Linear(8, 5),
        )),
    ))


def _two_linear() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))


def _mlp(sizes: list[int], frozen: list[str] | None = None, bias: bool = True) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    for name, p in model.named_parameters():
        if name in (frozen or []):
            p.requires_grad_(False)
    return model


ARCHITECTURES = {
    "prune_mixed": _prune_mixed,
    "two_linear": _two_linear,
    "mlp": _mlp,
}


def build(name: str, **kwargs) -> nn.Module:
    """Build architecture ``name`` (see ARCHITECTURES) with float32 random weights."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}")
    return ARCHITECTURES[name](**kwargs)


def build_with_state(name: str, kwargs: dict, state: dict[str, torch.Tensor],
                     dtype: torch.dtype | None = None) -> nn.Module:
    model = build(name, **kwargs)
    if dtype is not None:
        model = model.to(dtype)
    model.load_state_dict(state)
    return model
