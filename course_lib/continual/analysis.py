"""Measurements that explain catastrophic forgetting.

* :func:`weight_drift`: how far each layer moved, relative to its size.
* :func:`linear_cka`: similarity of two representations of the same inputs (Kornblith
  et al., 2019) - how much the hidden code of an old task changed.
* :func:`subspace_overlap`: how much two tasks' hidden representations share
  directions (mean squared cosine of the principal angles between their top-``k``
  principal subspaces) - high overlap means updates for one task move the other.
* :func:`output_bias`: in class-incremental learning, the output layer's per-class bias
  and weight norm and where the predictions go - the recency bias that makes a
  fine-tuned network predict only the newest classes (Wu et al., 2019; Zhao et al., 2020).
* :func:`within_task_accuracy`: the same network when only one task's units compete -
  what the hidden features still separate once the output layer's competition is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn


def weight_drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """``||after - before|| / ||before||`` (Frobenius) per parameter present in both state dicts."""
    out = {}
    for name, b in before.items():
        if name not in after or not torch.is_floating_point(b):
            continue
        a = after[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(b.shape)} vs {tuple(a.shape)}")
        out[name] = float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))
    return out


def _centered(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"expected a representation [N >= 2, D], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("representation contains NaN or inf")
    x = x.double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations ``[N, D1]``, ``[N, D2]`` of
    the same ``N`` inputs: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred
    features; 1 = identical up to rotation and scale, 0 = unrelated."""
    if len(x) != len(y):
        raise ValueError(f"representations of different inputs: {len(x)} vs {len(y)} rows")
    xc, yc = _centered(x), _centered(y)
    num = (yc.T @ xc).norm() ** 2
    den = (xc.T @ xc).norm() * (yc.T @ yc).norm()
    if den == 0:
        raise ValueError("a representation is constant: CKA is undefined")
    return float(num / den)


def principal_subspace(x: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal basis ``[D, k]`` of the top-``k`` principal directions of ``x [N, D]``."""
    xc = _centered(x)
    if not 1 <= k <= min(xc.shape):
        raise ValueError(f"k must be in [1, min(N, D) = {min(xc.shape)}], got {k}")
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    return vh[:k].T


def subspace_overlap(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Mean squared cosine of the principal angles between the top-``k`` principal
    subspaces of two representations ``[N1, D]`` and ``[N2, D]``: ``||U_x^T U_y||_F^2 / k``
    (1 = the same subspace, about ``k / D`` for random subspaces)."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"representations must share the feature dimension, got {x.shape[1]} and {y.shape[1]}")
    ux, uy = principal_subspace(x, k), principal_subspace(y, k)
    return float((ux.T @ uy).norm() ** 2 / k)


@torch.no_grad()
def hidden_representation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's last hidden layer ``[N, H]`` (``model.features``), in eval mode."""
    if not hasattr(model, "features"):
        raise TypeError(f"{type(model).__name__} has no features(x) method")
    was = model.training
    model.eval()
    try:
        return model.features(x).float()
    finally:
        model.train(was)


@dataclass
class OutputBias:
    """Output-layer statistics of a class-incremental model.

    Attributes:
        bias: ``[C]`` the head's bias per class.
        weight_norm: ``[C]`` L2 norm of each class's weight row.
        mean_logit: ``[C]`` mean logit per class over the probe inputs.
        prediction_share: ``[C]`` fraction of the probe inputs predicted as each class.
    """

    bias: np.ndarray
    weight_norm: np.ndarray
    mean_logit: np.ndarray
    prediction_share: np.ndarray


@torch.no_grad()
def output_bias(model: nn.Module, x: torch.Tensor, classes: list[int] | None = None) -> OutputBias:
    """Per-class statistics of ``model.head`` (an ``nn.Linear``) on probe inputs ``x``.

    Args:
        model: a network with a ``head`` linear layer.
        x: probe inputs (e.g. the test sets of all tasks seen so far).
        classes: output units that compete (default: all).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError("model must have a `head` nn.Linear output layer")
    classes = list(range(head.out_features)) if classes is None else list(classes)
    was = model.training
    model.eval()
    try:
        logits = model(x)[:, classes]
    finally:
        model.train(was)
    pred = logits.argmax(1)
    share = torch.bincount(pred, minlength=len(classes)).double() / len(x)
    return OutputBias(
        bias=head.bias[classes].double().numpy() if head.bias is not None else np.zeros(len(classes)),
        weight_norm=head.weight[classes].norm(dim=1).double().numpy(),
        mean_logit=logits.mean(0).double().numpy(),
        prediction_share=share.numpy(),
    )


@torch.no_grad()
def within_task_accuracy(model: nn.Module, units: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy when only ``units`` compete (the task is *told*): ``argmax`` over
    ``model(x)[:, units]``, compared with the targets ``y`` (global output units, each in
    ``units``). For a class-incremental network this separates what the hidden features
    still know from the output layer's competition between all seen classes.

    Raises:
        ValueError: empty ``units`` or a target outside ``units``.
    """
    units = [int(u) for u in units]
    if not units:
        raise ValueError("units must name at least one output unit")
    lookup = {u: k for k, u in enumerate(units)}
    bad = sorted({int(t) for t in y.tolist()} - set(lookup))
    if bad:
        raise ValueError(f"targets {bad[:5]} are not among the competing units {units}")
    was = model.training
    model.eval()
    try:
        pred = model(x)[:, units].argmax(1)
    finally:
        model.train(was)
    local = torch.tensor([lookup[int(t)] for t in y.tolist()])
    return float((pred == local).double().mean())
