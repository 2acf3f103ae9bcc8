"""Token-level features of a frozen open_clip CLIP: image patches and text tokens.

CLIP's ``encode_image``/``encode_text`` pool each input to one vector. Fusion models
and cross-attention need the tokens before pooling:

* :func:`image_tokens`: the ViT's ``[class] + P`` patch tokens after block ``layer``
  (``[N, 1 + P, W_img]``; the tiny CLIP has ``P = 16`` patches of 8x8 on a 4x4 grid), and
  with ``project=True`` passed through ``ln_post`` and the image projection into the
  joint embedding space ``[N, 1 + P, D]`` (as in MaskCLIP, Zhou et al., 2022);
* :func:`text_tokens`: every position of the causal text transformer after ``ln_final``
  (``[N, L, W_txt]``), with ``project=True`` multiplied by the text projection, and the
  padding mask ``[N, L]`` (True = a real token, including ``<sot>``/``<eot>``).

Everything runs under ``torch.no_grad`` in batches and returns float32 CPU tensors.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..models import prepare_images


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def patch_grid(model: torch.nn.Module) -> tuple[int, int]:
    """``(rows, cols)`` of the ViT's patch grid."""
    gh, gw = model.visual.grid_size
    return int(gh), int(gw)


@torch.no_grad()
def image_tokens(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    layer: int = -1,
    project: bool = False,
    batch_size: int = 512,
) -> torch.Tensor:
    """Class + patch tokens ``[N, 1 + P, W]`` of the ViT after block ``layer``.

    Args:
        model: an open_clip CLIP with a ``VisionTransformer`` image tower.
        images: uint8 ``[N, H, W, 3]`` or float ``[N, 3, H, W]`` in [0, 1].
        layer: block index (negative counts from the end; -1 = the last block).
        project: apply ``ln_post`` and the output projection (width ``D`` = embed dim).
    """
    visual = model.visual
    if not hasattr(visual, "forward_intermediates"):
        raise TypeError("image_tokens needs an open_clip VisionTransformer image tower")
    depth = len(visual.transformer.resblocks)
    if not -depth <= layer < depth:
        raise ValueError(f"layer={layer} out of range for a {depth}-block ViT")
    index = layer % depth
    n = len(images)
    if n == 0:
        raise ValueError("empty batch of images")
    device = _device(model)
    out = []
    for start in range(0, n, batch_size):
        x = prepare_images(model, images[start : start + batch_size]).to(device)
        res = visual.forward_intermediates(x, indices=[index], stop_early=True, intermediates_only=True,
                                           output_fmt="NLC", output_extra_tokens=True)
        tokens = torch.cat([res["image_intermediates_prefix"][0], res["image_intermediates"][0]], dim=1)
        if project:
            tokens = visual.ln_post(tokens)
            if visual.proj is not None:
                tokens = tokens @ visual.proj
        out.append(tokens.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def text_tokens(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    texts: Sequence[str],
    project: bool = False,
    batch_size: int = 1024,
    trim: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token text features ``[N, L, W]`` and the mask ``[N, L]`` (True = real token).

    Args:
        project: multiply by the text projection (width ``D`` = embed dim).
        trim: drop trailing columns that are padding in every text.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("expected at least one text, got an empty list")
    device = _device(model)
    pad_id = getattr(tokenizer, "pad_id", 0)
    feats, masks = [], []
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(texts[start : start + batch_size]).to(device)
        x = model.token_embedding(ids) + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        if project and model.text_projection is not None:
            proj = model.text_projection
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        feats.append(x.float().cpu())
        masks.append((ids != pad_id).cpu())
    tokens, mask = torch.cat(feats), torch.cat(masks)
    if trim:
        length = int(mask.sum(dim=1).max())
        tokens, mask = tokens[:, :length].contiguous(), mask[:, :length].contiguous()
    return tokens, mask


def unique_texts(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """``(unique, index)``: the distinct texts (sorted) and, per input, its position in them.

    Questions repeat a lot; encode ``unique`` once and gather with ``index``.
    """
    uniq, inverse = np.unique(np.asarray(list(texts), dtype=object).astype(str), return_inverse=True)
    return list(uniq), torch.from_numpy(inverse.astype(np.int64))
