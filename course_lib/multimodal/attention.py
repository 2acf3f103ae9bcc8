"""Cross-modal attention: one modality's tokens query another's.

Scaled dot-product attention (Vaswani et al., 2017) with ``h`` heads of width
``d_h = D / h``; queries come from one modality (e.g. text tokens ``[B, Lq, D]``), keys
and values from the other (e.g. image patches ``[B, Lc, D]``)::

    A = softmax(Q K^T / sqrt(d_h) + mask),  out = concat_h(A_h V_h) W_o

:class:`CrossModalAttention` is written out step by step (the weights can be returned
and drawn over the image) and is numerically the same as ``nn.MultiheadAttention`` with
``batch_first=True`` given the same weights (:meth:`CrossModalAttention.from_multihead`).
:class:`CrossAttentionBlock` adds the pre-norm residual and MLP of a transformer layer;
:class:`CoAttentionLayer` runs both directions at once (ViLBERT, Lu et al., 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_tokens(x: torch.Tensor, name: str, dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor [B, L, D], got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must be [B, L, D], got shape {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{name} has D={x.shape[-1]} but the attention was built for dim={dim}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN/inf")


def _check_mask(mask: torch.Tensor | None, batch: int, length: int, name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor [B, L] (True = a real token), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} must be [B, L] = [{batch}, {length}], got {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name} masks out every token of some sequence: each needs at least one real token")
    return mask


class CrossModalAttention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens.

    Args:
        dim: model width ``D`` (both inputs).
        num_heads: ``h``; ``dim`` must be divisible by it.
        dropout: dropout on the attention weights (training only).

    Attributes ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``: ``nn.Linear(dim, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or isinstance(num_heads, bool) \
                or not isinstance(num_heads, int) or dim < 1 or num_heads < 1:
            raise ValueError(f"dim and num_heads must be positive integers, got {dim!r} and {num_heads!r}")
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, h, L, d_h]

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        return_weights: bool = False,
        average_weights: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend ``query`` ``[B, Lq, D]`` over ``context`` ``[B, Lc, D]``.

        Args:
            context_mask: bool ``[B, Lc]``, True = a real token (padding is False).
            return_weights: also return the attention ``[B, Lq, Lc]`` (averaged over
                heads), or ``[B, h, Lq, Lc]`` with ``average_weights=False``.

        Returns:
            ``[B, Lq, D]``, and the weights if asked for.
        """
        _check_tokens(query, "query", self.dim)
        _check_tokens(context, "context", self.dim)
        if query.shape[0] != context.shape[0]:
            raise ValueError(f"batch sizes differ: query {query.shape[0]}, context {context.shape[0]}")
        mask = _check_mask(context_mask, context.shape[0], context.shape[1], "context_mask")
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(context))
        v = self._split(self.v_proj(context))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, h, Lq, Lc]
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        attn = F.dropout(weights, self.dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], self.dim)
        out = self.out_proj(out)
        if not return_weights:
            return out
        return out, (weights.mean(dim=1) if average_weights else weights)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "CrossModalAttention":
        """A copy of an ``nn.MultiheadAttention`` (same ``embed_dim`` for q, k, v, with bias)."""
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None:
            raise ValueError("only nn.MultiheadAttention with equal q/k/v dims and bias=True can be copied")
        new = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout)
        w_q, w_k, w_v = mha.in_proj_weight.detach().chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.detach().chunk(3)
        with torch.no_grad():
            for lin, w, b in ((new.q_proj, w_q, b_q), (new.k_proj, w_k, b_k), (new.v_proj, w_v, b_v)):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new


class CrossAttentionBlock(nn.Module):
    """Pre-norm residual block: ``x = x + CrossAttn(LN(x), LN(ctx)); x = x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)
        self.attn = CrossModalAttention(dim, num_heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        out, w = self.attn(self.norm_q(x), self.norm_c(context), context_mask, return_weights=True)
        x = x + out
        x = x + self.mlp(self.norm_mlp(x))
        return (x, w) if return_weights else x


class CoAttentionLayer(nn.Module):
    """Two-stream co-attention (ViLBERT): text attends the image and the image attends the
    text, in parallel, each followed by its own MLP. Returns ``(image, text)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.text_to_image = CrossAttentionBlock(dim, num_heads, mlp_ratio)
        self.image_to_text = CrossAttentionBlock(dim, num_heads, mlp_ratio)

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None):
        new_text = self.text_to_image(text, image)
        new_image = self.image_to_text(image, text, text_mask)
        return new_image, new_text


def attention_heatmap(weights: torch.Tensor, grid: tuple[int, int], image_size: int) -> torch.Tensor:
    """Patch attention ``[..., P]`` (``P = gh * gw``) -> maps ``[..., S, S]`` over the image.

    Bilinear upsampling of the ``gh x gw`` grid to the ``S x S`` pixels, each map rescaled
    to ``[0, 1]`` for display.
    """
    gh, gw = grid
    if weights.shape[-1] != gh * gw:
        raise ValueError(f"weights end with {weights.shape[-1]} patches but the grid is {gh}x{gw}={gh * gw}")
    lead = weights.shape[:-1]
    maps = weights.reshape(-1, 1, gh, gw).float()
    maps = F.interpolate(maps, size=(image_size, image_size), mode="bilinear", align_corners=False)
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    maps = (maps - lo) / (hi - lo).clamp_min(1e-12)
    return maps.reshape(*lead, image_size, image_size)
