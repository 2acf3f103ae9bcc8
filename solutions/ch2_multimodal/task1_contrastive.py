"""Task 2.1 - contrastive image-text losses: CLIP (InfoNCE) and SigLIP. Solution."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> int:
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError("image_features and text_features must both be [B, D] with the same shape, got "
                         f"{list(image_features.shape)} and {list(text_features.shape)}")
    if image_features.shape[0] == 0:
        raise ValueError("empty batch")
    return image_features.shape[0]


def clip_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          logit_scale: float | torch.Tensor) -> torch.Tensor:
    batch = _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T
    targets = torch.arange(batch, device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor,
                logit_bias: float | torch.Tensor) -> torch.Tensor:
    batch = _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias
    labels = 2 * torch.eye(batch, dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum() / batch
