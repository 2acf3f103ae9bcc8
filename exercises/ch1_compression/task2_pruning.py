"""Task 1.2 - global magnitude pruning and the cubic sparsity schedule.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch1_compression/test_task2_pruning.py
    course-grade --task ch1_compression/task2_pruning
"""

from __future__ import annotations

import torch
from torch import nn


def global_magnitude_masks(model: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """Masks that prune the smallest-magnitude weights of the whole model together.

    Consider the ``weight`` of every ``nn.Linear`` and ``nn.Conv2d`` (only these: not
    biases, not norm layers, not Embedding or Conv1d). Across all of them *together*,
    mask out the ``round(amount * total)`` entries with the smallest ``|w|`` (``total`` =
    number of such weights; Python's ``round``). Layers therefore end up with different
    sparsities: that is the point of *global* pruning. Exactly that many, also when
    several weights share the threshold magnitude (e.g. the zeros of a model pruned
    before): which of the tied ones go is up to you. Magnitudes are compared as stored
    (a float64 model is ranked in float64).

    Args:
        model: any module; it is not modified.
        amount: fraction of those weights to prune, in [0, 1].

    Returns:
        ``{name: mask}`` with one entry per pruned weight, ``name`` as in
        ``model.named_parameters()`` (e.g. ``"features.conv1.weight"``); ``mask`` is a
        bool tensor with the weight's shape and device, ``True`` = keep, ``False`` = pruned.

    Raises:
        ValueError: ``amount`` outside [0, 1].

    Hint: concatenate ``|w|.flatten()`` of all those weights, find the k smallest with
    ``torch.topk(..., largest=False)`` (or a sort), and split the flat mask back.
    """
    raise NotImplementedError("Task 1.2: implement global_magnitude_masks")


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out weights (mask ``False``) of ``model`` in place.

    Args:
        model: the module to prune; its parameters keep their identity (same
            ``nn.Parameter`` objects, so an optimizer holding them still works).
        masks: ``{parameter name: bool mask}`` as returned by :func:`global_magnitude_masks`;
            may cover only some parameters (the others are left alone).

    Returns:
        None.

    Raises:
        KeyError or ValueError: a name that is not a parameter of ``model``, or a mask whose
        shape differs from its parameter.

    Hint: parameters require grad; modify them inside ``torch.no_grad()``.
    """
    raise NotImplementedError("Task 1.2: implement apply_masks")


def cubic_sparsity(step: int, begin_step: int, end_step: int, initial_sparsity: float,
                   final_sparsity: float) -> float:
    """Gradual pruning schedule of Zhu & Gupta (2017), "To prune, or not to prune".

    ``s(t) = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step))**3``
    for ``begin_step <= t <= end_step``; ``s_i`` before ``begin_step``, ``s_f`` after
    ``end_step``. Sparsity rises fast at first and flattens out near the end.

    Args:
        step: the current training step ``t`` (any int, also outside the window).
        begin_step, end_step: the pruning window, ``begin_step < end_step``.
        initial_sparsity, final_sparsity: ``s_i`` and ``s_f``, in [0, 1].

    Returns:
        The target sparsity at ``step``, a Python float.

    Raises:
        ValueError: ``end_step <= begin_step``, or ``initial_sparsity`` or
        ``final_sparsity`` outside [0, 1].

    Hint: handle the two outside cases first; at ``begin_step`` the formula gives ``s_i``
    and at ``end_step`` it gives ``s_f``, so the pieces join up.
    """
    raise NotImplementedError("Task 1.2: implement cubic_sparsity")
