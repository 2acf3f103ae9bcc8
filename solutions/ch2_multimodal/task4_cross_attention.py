"""Task 2.4 - multi-head cross-modal attention (text tokens attend to image patches). Solution."""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossModalAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, hd]

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        if query.dim() != 3 or context.dim() != 3 or query.shape[-1] != self.dim or context.shape[-1] != self.dim \
                or query.shape[0] != context.shape[0]:
            raise ValueError(f"expected query [B, Lq, {self.dim}] and context [B, Lc, {self.dim}], got "
                             f"{list(query.shape)} and {list(context.shape)}")
        batch, lq, _ = query.shape
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, H, Lq, Lc]
        if context_mask is not None:
            if context_mask.shape != context.shape[:2] or context_mask.dtype != torch.bool:
                raise ValueError(f"context_mask must be bool [B, Lc] = {list(context.shape[:2])}, got "
                                 f"{context_mask.dtype} {list(context_mask.shape)}")
            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, lq, self.dim)
        out = self.out_proj(out)
        if return_weights:
            return out, weights.mean(dim=1)
        return out
