"""Figures of the continual-learning notebooks (matplotlib; small, dpi 72)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import average_accuracy_curve


def _axes(ax=None, figsize=(4, 3.4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, dpi=72)
    return ax


def plot_accuracy_matrix(acc: np.ndarray, ax=None, title: str | None = None,
                         task_names: Sequence[str] | None = None, annotate: bool = True):
    """Heatmap of ``acc[i, j]`` (row: after training task ``i``; column: tested on task ``j``), in %."""
    a = 100 * np.asarray(acc, dtype=float)
    ax = _axes(ax)
    im = ax.imshow(a, vmin=0, vmax=100, cmap="viridis")
    t = a.shape[0]
    names = list(task_names) if task_names is not None else [str(k) for k in range(t)]
    ax.set_xticks(range(t), names, fontsize=8)
    ax.set_yticks(range(t), [f"after {n}" for n in names], fontsize=8)
    ax.set_xlabel("tested on task")
    if annotate:
        for i in range(t):
            for j in range(t):
                if np.isfinite(a[i, j]):
                    ax.text(j, i, f"{a[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if a[i, j] < 60 else "black")
    if title:
        ax.set_title(title, fontsize=9)
    return im


def plot_average_accuracy(curves: dict[str, np.ndarray | Sequence[np.ndarray]], ax=None, title: str | None = None):
    """Average accuracy on the tasks seen so far after each task; a list of matrices per
    name is drawn as mean with a min-max band."""
    ax = _axes(ax, (5, 3.4))
    for name, mats in curves.items():
        mats = [mats] if isinstance(mats, np.ndarray) and mats.ndim == 2 else list(mats)
        c = 100 * np.stack([average_accuracy_curve(m) for m in mats])
        x = np.arange(1, c.shape[1] + 1)
        line, = ax.plot(x, c.mean(0), marker="o", ms=3, label=name)
        if len(c) > 1:
            ax.fill_between(x, c.min(0), c.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xticks(x)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("avg accuracy so far (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_stream_accuracy(correct: np.ndarray, phase: np.ndarray, phase_names: Sequence[str], window: int = 50,
                         ax=None, label: str | None = None):
    """Prequential accuracy over a stream (moving average of predict-then-learn outcomes),
    with the phase boundaries marked."""
    from .client import windowed_accuracy

    ax = _axes(ax, (8, 3))
    acc = windowed_accuracy(correct, window)
    ax.plot(np.arange(window, len(correct) + 1), 100 * acc, label=label)
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], phase])))
    for s in starts:
        ax.axvline(s, color="grey", ls="--", lw=0.8)
        ax.text(s + 5, 3, phase_names[phase[s]], fontsize=8, color="grey")
    ax.set_xlabel("stream position (feedback items)")
    ax.set_ylabel(f"accuracy, last {window} (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    return ax
