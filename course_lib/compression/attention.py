"""Multi-head attention made of plain ``nn.Linear`` layers.

``nn.MultiheadAttention`` keeps its query/key/value projection as a raw parameter
(``in_proj_weight``) and its output projection as a ``NonDynamicallyQuantizableLinear``,
so neither INT8 dynamic quantization nor structured head pruning can reach them. It also
ties the inner width (``num_heads * head_dim``) to the model width. :class:`LinearAttention`
computes exactly the same function with two ordinary ``nn.Linear`` layers:

* ``in_proj``: ``Linear(embed_dim, 3 * num_heads * head_dim)`` (rows: q heads, k heads, v heads)
* ``out_proj``: ``Linear(num_heads * head_dim, embed_dim)``

and ``torch.nn.functional.scaled_dot_product_attention``. Its inner width is free, so
heads can be removed physically (:mod:`course_lib.compression.structured`), and every
projection is quantizable (:mod:`course_lib.compression.quantization`).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


class UnsupportedAttentionError(ValueError):
    """An ``nn.MultiheadAttention`` configuration or call that :class:`LinearAttention`
    does not reproduce (cross-attention, kdim/vdim, bias_kv, dropout, attention weights)."""


class LinearAttention(nn.Module):
    """Self-attention with ``in_proj``/``out_proj`` as ``nn.Linear``; a drop-in for
    ``nn.MultiheadAttention`` inside open_clip's ``ResidualAttentionBlock``.

    Args:
        embed_dim: model width ``D`` (input and output features).
        num_heads: number of heads ``H`` (may be 0 after pruning: the block then adds
            only the output bias).
        head_dim: width of one head ``d``; the scaling is ``1 / sqrt(d)``.
        bias: whether both projections have a bias.
        batch_first: inputs ``[B, L, D]`` (True) or ``[L, B, D]`` (False).
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True, batch_first: bool = True):
        super().__init__()
        if embed_dim < 1 or num_heads < 0 or head_dim < 1:
            raise ValueError(f"need embed_dim >= 1, num_heads >= 0, head_dim >= 1, got {embed_dim}, {num_heads}, {head_dim}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.batch_first = batch_first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-size weights when every head is pruned
            self.in_proj = nn.Linear(embed_dim, 3 * num_heads * head_dim, bias=bias)
            self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)

    @property
    def inner_dim(self) -> int:
        """``num_heads * head_dim``."""
        return self.num_heads * self.head_dim

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "LinearAttention":
        """An exact copy of a self-attention ``nn.MultiheadAttention`` (same weights).

        Raises:
            UnsupportedAttentionError: separate key/value projections (``kdim``/``vdim``),
                ``add_bias_kv``, ``add_zero_attn`` or dropout in training use.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"expected nn.MultiheadAttention, got {type(mha).__name__}")
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise UnsupportedAttentionError("MultiheadAttention with separate kdim/vdim projections is not supported")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise UnsupportedAttentionError("MultiheadAttention with add_bias_kv/add_zero_attn is not supported")
        if mha.dropout:
            raise UnsupportedAttentionError(f"MultiheadAttention with dropout={mha.dropout} is not supported")
        has_bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, bias=has_bias, batch_first=mha.batch_first)
        new = new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(mha.in_proj_weight)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                new.in_proj.bias.copy_(mha.in_proj_bias)
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **unused: object,
    ) -> tuple[torch.Tensor, None]:
        """Self-attention of ``query`` (``[B, L, D]`` if batch_first); returns ``(out, None)``
        like ``nn.MultiheadAttention(need_weights=False)``.

        ``attn_mask``: ``[L, L]`` or ``[B * H, L, L]``; float masks are added to the
        logits, bool masks follow nn.MultiheadAttention (True = not allowed to attend).
        """
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise UnsupportedAttentionError("LinearAttention implements self-attention only (key and value must be query)")
        if need_weights:
            raise UnsupportedAttentionError("LinearAttention does not return attention weights (need_weights=False)")
        if key_padding_mask is not None:
            raise UnsupportedAttentionError("key_padding_mask is not supported; fold it into attn_mask")
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"expected query [B, L, {self.embed_dim}] (batch_first) or [L, B, {self.embed_dim}], got {tuple(query.shape)}")
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        if self.num_heads == 0:
            out = self.out_proj(x.new_zeros(b, n, 0))
            return (out if self.batch_first else out.transpose(0, 1)), None
        qkv = self.in_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = _sdpa_mask(attn_mask, b, self.num_heads, n, x.dtype)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.inner_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"


def _sdpa_mask(mask: torch.Tensor | None, b: int, h: int, n: int, dtype: torch.dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's mask convention -> an additive float mask for SDPA."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    else:
        mask = mask.to(dtype)
    if mask.ndim == 3:
        if mask.shape[0] != b * h:
            raise ValueError(f"3-D attn_mask must be [B*H, L, L] = [{b * h}, {n}, {n}], got {tuple(mask.shape)}")
        mask = mask.view(b, h, n, n)
    elif mask.ndim != 2:
        raise ValueError(f"attn_mask must be [L, L] or [B*H, L, L], got {tuple(mask.shape)}")
    return mask


def unfuse_attention(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` by an equal :class:`LinearAttention`.

    The result computes the same function (up to float rounding, ~1e-6) and has only
    ``nn.Linear`` projections. Returns the (copied unless ``inplace``) model.
    """
    target = model if inplace else copy.deepcopy(model)
    for module in list(target.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, LinearAttention.from_multihead(child))
    return target
