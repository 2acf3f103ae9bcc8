"""Task 3.4 - continual-learning metrics from the accuracy matrix.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch3_continual/test_task4_metrics.py
    course-grade --task ch3_continual/task4_metrics
"""

from __future__ import annotations

import math  # noqa: F401 - available for your solution

import torch


def continual_metrics(acc: torch.Tensor, random_baseline: torch.Tensor | None = None) -> dict[str, float]:
    """Summary metrics of a continual-learning run (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).

    ``acc[i, j]`` is the accuracy on task ``j`` after training on tasks ``0..i`` (a ``T x T``
    matrix; entries above the diagonal are zero-shot accuracies on future tasks). With
    ``T`` tasks (0-based indices):

    * ``average_accuracy = mean_j acc[T-1, j]`` (the last row),
    * ``bwt = mean_{j < T-1} (acc[T-1, j] - acc[j, j])`` (backward transfer; negative =
      forgetting),
    * ``forgetting = mean_{j < T-1} (max_{j <= l <= T-2} acc[l, j] - acc[T-1, j])`` (the
      drop from the best accuracy ever reached on task j *before* the last task; it can be
      negative),
    * ``fwt = mean_{j >= 1} (acc[j-1, j] - random_baseline[j])`` (forward transfer: how
      good the model is on task j before training on it), or ``nan`` without a baseline.

    With ``T = 1``, ``bwt`` and ``forgetting`` are 0.

    Args:
        acc: ``[T, T]`` accuracies (float tensor; lists are fine too).
        random_baseline: ``[T]`` accuracy of a randomly initialised model on each task, or
            ``None``.

    Returns:
        ``{"average_accuracy", "bwt", "forgetting", "fwt"}`` as Python floats, accurate to
        1e-6 (float32 or float64 arithmetic; float16 is not precise enough).

    Raises:
        ValueError: ``acc`` is not a non-empty square matrix, contains NaN, or
        ``random_baseline`` has the wrong length.

    Hint: write each metric as a loop over ``j`` first, with the index ranges exactly as
    above; ``float(...)`` turns 0-dim tensors into Python floats.
    """
    raise NotImplementedError("Task 3.4: implement continual_metrics")
