"""Task 3.4 - continual-learning metrics from the accuracy matrix. Solution."""

from __future__ import annotations

import math

import torch


def continual_metrics(acc: torch.Tensor, random_baseline: torch.Tensor | None = None) -> dict[str, float]:
    acc = torch.as_tensor(acc, dtype=torch.float64)
    if acc.dim() != 2 or acc.shape[0] != acc.shape[1] or acc.shape[0] == 0:
        raise ValueError(f"acc must be a non-empty square T x T matrix, got shape {list(acc.shape)}")
    if not torch.isfinite(acc).all():
        raise ValueError("acc contains NaN or inf")
    T = acc.shape[0]
    last = acc[T - 1]
    metrics = {"average_accuracy": float(last.mean()), "bwt": 0.0, "forgetting": 0.0, "fwt": math.nan}
    if T > 1:
        diag = torch.diagonal(acc)
        metrics["bwt"] = float((last[:-1] - diag[:-1]).mean())
        best = [acc[j : T - 1, j].max() for j in range(T - 1)]  # rows j .. T-2: after learning task j
        metrics["forgetting"] = float((torch.stack(best) - last[:-1]).mean())
    if random_baseline is not None:
        baseline = torch.as_tensor(random_baseline, dtype=torch.float64)
        if baseline.shape != (T,):
            raise ValueError(f"random_baseline must have {T} entries, got shape {list(baseline.shape)}")
        if T > 1:
            before = torch.stack([acc[j - 1, j] for j in range(1, T)])
            metrics["fwt"] = float((before - baseline[1:]).mean())
    return metrics
