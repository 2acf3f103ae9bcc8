"""Task 3.3 - progressive neural networks: frozen columns and lateral adapters.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch3_continual/test_task3_progressive.py
    course-grade --task ch3_continual/task3_progressive
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 - available for your solution
from torch import nn


class ProgressiveNet(nn.Module):
    """A progressive network (Rusu et al. 2016): one column per task, earlier columns
    frozen, lateral adapters feeding earlier columns' features into the new one.

    Column ``k`` (hidden width ``h``, ``L = num_layers`` hidden layers) computes::

        h_0 = relu(W_0 x)
        h_l = relu(W_l h_{l-1} + sum_{j<k} U_l^{k,j} h_{l-1}^{(j)})     for l = 1 .. L-1
        y   = W_out h_{L-1} + sum_{j<k} U_out^{k,j} h_{L-1}^{(j)}

    where ``h^{(j)}`` are the activations of earlier column ``j`` on the same ``x``. The
    ``W`` (``nn.Linear``) have biases; the lateral adapters ``U`` have none. Column 0 is a
    plain MLP. Parameter names are up to you, but all parameters must be registered
    (``nn.ModuleList`` / ``nn.ModuleDict``), and their names must not change when columns
    are added.

    Args:
        in_dim: input width; hidden_dim: ``h``; num_layers: ``L >= 1`` (with ``L = 1`` a
            column is ``y = W_out relu(W_0 x)`` plus laterals into the output).

    Raises:
        ValueError: ``in_dim``, ``hidden_dim`` or ``num_layers`` is not an int ``>= 1``.

    The network computes in the dtype and on the device of its parameters (after
    ``.double()``, in float64): tensors you create in ``forward`` follow ``x``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int = 2):
        super().__init__()
        raise NotImplementedError("Task 3.3: implement ProgressiveNet.__init__")

    def add_column(self, out_dim: int) -> int:
        """Freeze every existing parameter (``requires_grad=False``), then add column ``k``
        (its ``W`` and its lateral adapters from every earlier column), trainable, with
        an output layer of width ``out_dim``. Existing columns keep their weights.

        Returns:
            ``k``, the new column's index (0, 1, 2, ...).

        Raises:
            ValueError: ``out_dim`` is not an int ``>= 1``.
        """
        raise NotImplementedError("Task 3.3: implement ProgressiveNet.add_column")

    def forward(self, x: torch.Tensor, column: int) -> torch.Tensor:
        """Output ``y`` ``[B, out_dim of column]`` of column ``column`` for ``x`` ``[B, in_dim]``.

        Raises:
            IndexError (or ValueError): ``column`` is not an existing column.

        Hint: run columns ``0 .. column`` on ``x`` and keep every hidden activation; the
        lateral input of layer ``l`` comes from layer ``l - 1`` of the earlier columns.
        """
        raise NotImplementedError("Task 3.3: implement ProgressiveNet.forward")
