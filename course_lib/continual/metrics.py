"""Continual-learning metrics from the accuracy matrix (Lopez-Paz & Ranzato, 2017;
Chaudhry et al., 2018), with the definitions fixed by practice task 3.4.

``acc[i, j]`` is the test accuracy on task ``j`` after training on tasks ``0..i``
(a ``T x T`` matrix; row ``i`` is a snapshot after task ``i``):

* average accuracy ``A = mean_j acc[T-1, j]``;
* backward transfer ``BWT = mean_{j<T-1} (acc[T-1, j] - acc[j, j])`` (negative = forgetting);
* forgetting ``F = mean_{j<T-1} (max_{j<=l<=T-2} acc[l, j] - acc[T-1, j])``;
* forward transfer ``FWT = mean_{j>=1} (acc[j-1, j] - b[j])`` with ``b[j]`` the accuracy
  of an untrained model on task ``j`` (``nan`` without a baseline).

With a single task, BWT and forgetting are 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _as_matrix(acc: np.ndarray | torch.Tensor | Sequence[Sequence[float]]) -> np.ndarray:
    a = acc.detach().cpu().double().numpy() if isinstance(acc, torch.Tensor) else np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"acc must be a non-empty square T x T matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("acc contains NaN or inf (evaluate every task after every training task)")
    return a


def continual_metrics(
    acc: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    random_baseline: np.ndarray | torch.Tensor | Sequence[float] | None = None,
) -> dict[str, float]:
    """Average accuracy, BWT, forgetting and FWT of an accuracy matrix.

    Args:
        acc: ``[T, T]``, ``acc[i, j]`` = accuracy on task ``j`` after training task ``i``.
        random_baseline: ``[T]`` accuracy of an untrained model on each task (for FWT).

    Returns:
        ``{"average_accuracy", "bwt", "forgetting", "fwt"}`` as Python floats
        (``fwt`` is ``nan`` without a baseline or with a single task).

    Raises:
        ValueError: a non-square/empty/non-finite matrix, or a baseline of the wrong length.
    """
    a = _as_matrix(acc)
    t = a.shape[0]
    last = a[-1]
    if t == 1:
        bwt = forgetting = 0.0
    else:
        old = np.arange(t - 1)
        bwt = float(np.mean(last[old] - a[old, old]))
        # best accuracy ever reached on task j before the final task, from row j on
        best = np.array([a[j : t - 1, j].max() for j in old])
        forgetting = float(np.mean(best - last[old]))
    fwt = float("nan")
    if random_baseline is not None:
        b = random_baseline.detach().cpu().double().numpy() if isinstance(random_baseline, torch.Tensor) \
            else np.asarray(random_baseline, dtype=np.float64)
        if b.shape != (t,):
            raise ValueError(f"random_baseline must have one entry per task ({t}), got shape {b.shape}")
        if t > 1:
            j = np.arange(1, t)
            fwt = float(np.mean(a[j - 1, j] - b[j]))
    return {"average_accuracy": float(last.mean()), "bwt": bwt, "forgetting": forgetting, "fwt": fwt}


def average_accuracy_curve(acc: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[T]``: after each task ``i``, the mean accuracy over tasks ``0..i`` (van de Ven's curves)."""
    a = _as_matrix(acc)
    return np.array([a[i, : i + 1].mean() for i in range(a.shape[0])])


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)``; the deviation is 0 for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to summarise")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
