"""Structured pruning of a ViT that physically removes attention heads and MLP neurons.

Unstructured zeros leave every matrix the same size, so dense kernels run no faster.
Structured pruning deletes whole rows/columns, so the remaining matrices are smaller:

* **MLP neuron** ``j`` of a block: row ``j`` of ``c_fc`` (and its bias) and column ``j``
  of ``c_proj``. Since ``GELU(0) = 0``, zeroing them is equivalent to deleting them.
* **Attention head** ``h``: its rows in the q, k and v parts of ``in_proj`` and its
  columns of ``out_proj``. A head whose output-projection columns are zero contributes
  nothing, so zeroing those is equivalent to deleting the head.

Importance scores (higher = keep): for a neuron, ``||W_fc[j, :]||_2 * ||W_proj[:, j]||_2``
(how strongly it reads its input times how strongly it writes to the residual stream);
for a head, ``||W_v[h]||_F * ||W_out[:, h]||_F`` (its value path). With calibration
images the activation-based variants multiply in the mean ``|activation|`` instead.

The model must use :class:`.attention.LinearAttention` (see
:func:`.attention.unfuse_attention`; :func:`prune_vit` does it for you).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from .attention import LinearAttention, unfuse_attention
from .pruning import check_amount


def _blocks(visual: nn.Module) -> list[nn.Module]:
    transformer = getattr(visual, "transformer", visual)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise TypeError(f"expected an open_clip tower with .transformer.resblocks, got {type(visual).__name__}")
    for b in blocks:
        if not (hasattr(b, "attn") and hasattr(b, "mlp") and hasattr(b.mlp, "c_fc") and hasattr(b.mlp, "c_proj")):
            raise TypeError("each block needs .attn and .mlp.c_fc/.mlp.c_proj (open_clip ResidualAttentionBlock)")
    return list(blocks)


def _linear_from(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer = layer.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _check_keep(keep: torch.Tensor, size: int, what: str) -> torch.Tensor:
    keep = torch.as_tensor(keep, dtype=torch.long).flatten()
    if keep.numel() and (keep.min() < 0 or keep.max() >= size):
        raise IndexError(f"{what} indices must be in [0, {size}), got range [{int(keep.min())}, {int(keep.max())}]")
    if keep.unique().numel() != keep.numel():
        raise ValueError(f"{what} indices must be distinct")
    return keep.sort().values


# ---------------------------------------------------------------------------------------
# Importance scores
# ---------------------------------------------------------------------------------------


def neuron_importance(block: nn.Module) -> torch.Tensor:
    """``[mlp_width]`` weight-based importance of each MLP neuron of a block."""
    fc, proj = block.mlp.c_fc.weight.detach(), block.mlp.c_proj.weight.detach()
    return fc.norm(dim=1) * proj.norm(dim=0)


def head_importance(attn: LinearAttention) -> torch.Tensor:
    """``[num_heads]`` weight-based importance of each head (value path norm)."""
    if not isinstance(attn, LinearAttention):
        raise TypeError(f"head pruning needs LinearAttention (run unfuse_attention first), got {type(attn).__name__}")
    h, d, dim = attn.num_heads, attn.head_dim, attn.embed_dim
    w_v = attn.in_proj.weight.detach()[2 * h * d :].view(h, d, dim)
    w_o = attn.out_proj.weight.detach().view(dim, h, d)
    return w_v.flatten(1).norm(dim=1) * w_o.permute(1, 0, 2).flatten(1).norm(dim=1)


@torch.no_grad()
def activation_importance(visual: nn.Module, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Data-driven scores from calibration ``images`` (prepared, ``[N, 3, H, W]``).

    Returns ``(neuron_scores, head_scores)``: per block, mean ``|GELU(c_fc x)|`` times
    ``||W_proj[:, j]||`` for neurons, and mean ``||head output||`` times ``||W_out[:, h]||``
    for heads.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty image batch [N, 3, H, W], got {tuple(images.shape)}")
    blocks = _blocks(visual)
    acts: dict[int, torch.Tensor] = {}
    heads: dict[int, torch.Tensor] = {}
    hooks = []
    for i, b in enumerate(blocks):
        hooks.append(b.mlp.gelu.register_forward_hook(lambda m, inp, out, i=i: acts.__setitem__(i, out.abs().mean(dim=(0, 1)))))
        attn = b.attn
        if not isinstance(attn, LinearAttention):
            raise TypeError("activation importance needs LinearAttention blocks (run unfuse_attention first)")

        def head_hook(m, inp, out, i=i, attn=attn):
            x = inp[0]  # input of out_proj: [B, L, H*d]
            heads[i] = x.view(*x.shape[:-1], attn.num_heads, attn.head_dim).norm(dim=-1).mean(dim=(0, 1))

        hooks.append(attn.out_proj.register_forward_hook(head_hook))
    try:
        visual.eval()(images)
    finally:
        for h in hooks:
            h.remove()
    neuron_scores, head_scores = [], []
    for i, b in enumerate(blocks):
        neuron_scores.append(acts[i] * b.mlp.c_proj.weight.norm(dim=0))
        a = b.attn
        w_o = a.out_proj.weight.view(a.embed_dim, a.num_heads, a.head_dim).permute(1, 0, 2).flatten(1).norm(dim=1)
        head_scores.append(heads[i] * w_o)
    return neuron_scores, head_scores


# ---------------------------------------------------------------------------------------
# Physical removal
# ---------------------------------------------------------------------------------------


def prune_mlp_neurons(block: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the MLP neurons ``keep`` of ``block`` (replaces ``c_fc``/``c_proj`` in place)."""
    fc, proj = block.mlp.c_fc, block.mlp.c_proj
    keep = _check_keep(keep, fc.out_features, "neuron").to(fc.weight.device)
    block.mlp.c_fc = _linear_from(fc.weight[keep], fc.bias[keep] if fc.bias is not None else None)
    block.mlp.c_proj = _linear_from(proj.weight[:, keep], proj.bias)


def prune_attention_heads(block: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the heads ``keep`` of ``block.attn`` (a :class:`LinearAttention`), in place."""
    attn = block.attn
    if not isinstance(attn, LinearAttention):
        raise TypeError(f"head pruning needs LinearAttention (run unfuse_attention first), got {type(attn).__name__}")
    h, d = attn.num_heads, attn.head_dim
    keep = _check_keep(keep, h, "head").to(attn.in_proj.weight.device)
    cols = (keep[:, None] * d + torch.arange(d, device=keep.device)).flatten()  # inner-dim indices of kept heads
    rows = torch.cat([part * h * d + cols for part in range(3)])  # q, k, v
    new = LinearAttention(attn.embed_dim, keep.numel(), d, bias=attn.in_proj.bias is not None, batch_first=attn.batch_first)
    new.in_proj = _linear_from(attn.in_proj.weight[rows], attn.in_proj.bias[rows] if attn.in_proj.bias is not None else None)
    new.out_proj = _linear_from(attn.out_proj.weight[:, cols], attn.out_proj.bias)
    block.attn = new.train(attn.training)


@torch.no_grad()
def zero_mlp_neurons(block: nn.Module, drop: torch.Tensor) -> None:
    """Mask-equivalent of :func:`prune_mlp_neurons`: zero neurons ``drop`` without resizing."""
    drop = torch.as_tensor(drop, dtype=torch.long)
    block.mlp.c_fc.weight[drop] = 0
    if block.mlp.c_fc.bias is not None:
        block.mlp.c_fc.bias[drop] = 0
    block.mlp.c_proj.weight[:, drop] = 0


@torch.no_grad()
def zero_attention_heads(block: nn.Module, drop: torch.Tensor) -> None:
    """Mask-equivalent of :func:`prune_attention_heads`: zero the output columns of heads ``drop``."""
    attn = block.attn
    d = attn.head_dim
    for h in torch.as_tensor(drop, dtype=torch.long).tolist():
        attn.out_proj.weight[:, h * d : (h + 1) * d] = 0


@dataclass(frozen=True)
class StructuredPlan:
    """What to keep in each block: ``heads[i]`` and ``neurons[i]`` are sorted LongTensors."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]

    def dropped(self, block_sizes: list[tuple[int, int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Complement of the plan for ``[(num_heads, mlp_width)]`` per block."""
        dh, dn = [], []
        for (h, w), kh, kn in zip(block_sizes, self.heads, self.neurons):
            dh.append(torch.tensor(sorted(set(range(h)) - set(kh.tolist())), dtype=torch.long))
            dn.append(torch.tensor(sorted(set(range(w)) - set(kn.tolist())), dtype=torch.long))
        return dh, dn


def _top(scores: torch.Tensor, ratio: float, min_keep: int) -> torch.Tensor:
    n_keep = max(min_keep, scores.numel() - round(ratio * scores.numel()))
    return torch.argsort(scores, descending=True, stable=True)[:n_keep].sort().values


def plan_structured(
    visual: nn.Module,
    head_ratio: float,
    neuron_ratio: float,
    calibration: torch.Tensor | None = None,
    min_heads: int = 1,
) -> StructuredPlan:
    """Choose, per block, which heads and MLP neurons to keep.

    Args:
        visual: a tower with :class:`LinearAttention` blocks (not modified).
        head_ratio: fraction of heads to remove in each block, in [0, 1].
        neuron_ratio: fraction of MLP neurons to remove in each block, in [0, 1].
        calibration: prepared images for activation-based scores; ``None`` = weight-based.
        min_heads: keep at least this many heads per block.
    """
    check_amount(head_ratio)
    check_amount(neuron_ratio)
    blocks = _blocks(visual)
    if calibration is not None:
        neuron_scores, head_scores = activation_importance(visual, calibration)
    else:
        neuron_scores = [neuron_importance(b) for b in blocks]
        head_scores = [head_importance(b.attn) for b in blocks]
    return StructuredPlan(
        heads=[_top(s, head_ratio, min_heads) for s in head_scores],
        neurons=[_top(s, neuron_ratio, 1) for s in neuron_scores],
    )


def block_sizes(visual: nn.Module) -> list[tuple[int, int]]:
    """``[(num_heads, mlp_width)]`` per block."""
    return [(b.attn.num_heads, b.mlp.c_fc.out_features) for b in _blocks(visual)]


def apply_plan(visual: nn.Module, plan: StructuredPlan, physical: bool = True) -> nn.Module:
    """A copy of ``visual`` pruned by ``plan``: physically smaller (``physical=True``) or
    the same shape with the dropped heads/neurons zeroed (the mask-equivalent model)."""
    target = copy.deepcopy(visual)
    blocks = _blocks(target)
    if len(plan.heads) != len(blocks) or len(plan.neurons) != len(blocks):
        raise ValueError(f"plan covers {len(plan.heads)} blocks, the model has {len(blocks)}")
    if physical:
        for b, kh, kn in zip(blocks, plan.heads, plan.neurons):
            prune_attention_heads(b, kh)
            prune_mlp_neurons(b, kn)
    else:
        drop_heads, drop_neurons = plan.dropped(block_sizes(visual))
        for b, dh, dn in zip(blocks, drop_heads, drop_neurons):
            zero_attention_heads(b, dh)
            zero_mlp_neurons(b, dn)
    return target


def prune_vit(
    visual: nn.Module,
    head_ratio: float = 0.5,
    neuron_ratio: float = 0.5,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Structured pruning of an open_clip ViT tower: a physically smaller copy.

    ``nn.MultiheadAttention`` blocks are first converted to :class:`LinearAttention`.
    Returns the pruned tower (eval mode); the original is untouched.
    """
    source = unfuse_attention(visual)
    plan = plan_structured(source, head_ratio, neuron_ratio, calibration)
    return apply_plan(source, plan, physical=True).eval()
