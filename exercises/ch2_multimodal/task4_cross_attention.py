"""Task 2.4 - multi-head cross-modal attention (text tokens attend to image patches).

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch2_multimodal/test_task4_cross_attention.py
    course-grade --task ch2_multimodal/task4_cross_attention
"""

from __future__ import annotations

import math  # noqa: F401 - available for your solution

import torch
from torch import nn


class CrossModalAttention(nn.Module):
    """Multi-head attention where ``query`` tokens of one modality read from ``context``
    tokens of another (e.g. words attending to image patches).

    Per head ``h`` (``head_dim = dim // num_heads``)::

        Q = q_proj(query), K = k_proj(context), V = v_proj(context), split into heads
        A_h = softmax(Q_h K_h^T / sqrt(head_dim))   over the context positions
        out = out_proj(concat_h(A_h V_h))

    With the same weights it must equal ``nn.MultiheadAttention(dim, num_heads,
    batch_first=True)`` (whose ``in_proj_weight`` stacks the q, k, v weights), including
    ``key_padding_mask = ~context_mask`` and the head-averaged attention weights.

    Args:
        dim: model width ``D``; num_heads: a divisor of ``dim``.

    Attributes:
        q_proj, k_proj, v_proj, out_proj: ``nn.Linear(dim, dim)`` with bias (exactly these
        four modules; no other parameters).

    Raises:
        ValueError: ``dim`` or ``num_heads`` is not positive, or ``dim`` is not a multiple
        of ``num_heads``.

    The module works in the dtype and on the device of its parameters and inputs (after
    ``.double()``, in float64; anything you create in ``forward``, such as a mask, goes on
    the inputs' device).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        raise NotImplementedError("Task 2.4: implement CrossModalAttention.__init__")

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """Attend from ``query`` to ``context``.

        Args:
            query: ``[B, Lq, D]``; context: ``[B, Lc, D]``.
            context_mask: optional bool ``[B, Lc]``, ``True`` = a real token, ``False`` =
                padding that must receive zero attention. Every row has a real token.
            return_weights: also return the attention weights.

        Returns:
            ``out`` ``[B, Lq, D]``, or ``(out, weights)`` with ``weights`` ``[B, Lq, Lc]``
            averaged over the heads (each row sums to 1).

        Raises:
            ValueError: shapes that do not fit (batch sizes, widths, mask shape).

        Hint: reshape ``[B, L, D] -> [B, L, H, head_dim]`` and transpose to
        ``[B, H, L, head_dim]`` (a plain ``view`` to ``[B, H, L, head_dim]`` mixes tokens
        and heads); mask scores with ``-inf`` before the softmax.
        """
        raise NotImplementedError("Task 2.4: implement CrossModalAttention.forward")
