"""Task 3.2 - elastic weight consolidation: the empirical Fisher and the EWC penalty.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch3_continual/test_task2_ewc.py
    course-grade --task ch3_continual/task2_ewc
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 - available for your solution
from torch import nn


def fisher_diagonal(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagonal of the empirical Fisher information (Kirkpatrick et al. 2017).

    ``F[name] = mean over samples n of (d CE(model(x_n), y_n) / d param)**2``: the gradient
    of *each sample's own* cross-entropy with its *given* target, squared, then averaged.
    (Not the square of the batch gradient: that averages gradients before squaring.)

    Args:
        model: a classifier ``inputs -> logits [N, C]``; only parameters with
            ``requires_grad=True`` are included.
        inputs: ``[N, ...]``; targets: ``[N]`` class indices (int64).

    Returns:
        ``{name: tensor}`` for every parameter that requires grad (names from
        ``model.named_parameters()``), each with the parameter's shape, dtype and
        device, detached (a float64 model gives float64-accurate entries: accumulate in
        ``torch.zeros_like(param)``).
        The model is left as it was: same parameter values, and every ``.grad`` as before
        (``None`` stays ``None``, existing gradients are unchanged).

    Raises:
        ValueError: ``inputs`` and ``targets`` have different lengths, or are empty.

    Hint: ``torch.autograd.grad(loss, params)`` returns gradients without touching
    ``.grad``; one sample at a time is fine (or ``torch.func`` for speed).
    """
    raise NotImplementedError("Task 3.2: implement fisher_diagonal")


def ewc_penalty(model: nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """The EWC penalty ``sum over names in fisher of sum(fisher * (param - anchor)**2)``.

    (No factor 1/2 and no lambda: the training loop multiplies by ``lambda / 2``.)

    Args:
        model: the model being trained on a new task.
        fisher: ``{name: F}`` from :func:`fisher_diagonal` (may cover only some parameters;
            the others are not penalised).
        anchor: ``{name: value}`` of the parameters after the previous task.

    Returns:
        0-dim tensor, differentiable with respect to the model's parameters (its gradient
        is ``2 * fisher * (param - anchor)``), in the parameters' dtype and on their device.

    Raises:
        ValueError: a name in ``fisher`` that is not a parameter of ``model`` or is missing
        from ``anchor`` (KeyError is accepted too), or a ``fisher`` or ``anchor`` entry
        whose shape differs from its parameter's (no silent broadcasting).

    Hint: ``dict(model.named_parameters())`` maps names to the live parameters; keep them in
    the graph (no ``.detach()`` / ``.item()``).
    """
    raise NotImplementedError("Task 3.2: implement ewc_penalty")
