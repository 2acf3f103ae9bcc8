"""Batched, model-agnostic encoding of images and texts with any open_clip CLIP.

Images are taken as uint8 ``[N, H, W, 3]`` arrays (ShapeWorld's format) or float
``[N, 3, H, W]`` tensors in [0, 1]; they are resized to the model's input size and
normalised with the model's own mean and std (read from open_clip's preprocess config),
so the same call serves the tiny CLIP and a pretrained ViT-B-32.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ..data.datasets import images_to_tensor


def preprocess_config(model: torch.nn.Module) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    """``(size, mean[3], std[3])`` of an open_clip model's image preprocessing."""
    cfg = open_clip.model.get_model_preprocess_cfg(model)
    if not cfg or "mean" not in cfg or "std" not in cfg:
        raise ValueError("model has no preprocess config (image size, mean, std); build it with course_lib.models")
    size = cfg.get("size", getattr(model.visual, "image_size", None))
    if isinstance(size, int):
        size = (size, size)
    return tuple(size), torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def prepare_images(model: torch.nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images -> the normalised float32 ``[N, 3, S, S]`` batch ``model.encode_image`` expects."""
    x = images_to_tensor(images) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] array or float [N, 3, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    if not torch.is_floating_point(x):
        raise TypeError(f"image tensors must be float in [0, 1], got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("empty batch of images")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    size, mean, std = preprocess_config(model)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    return (x - mean) / std


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    normalize: bool = True,
) -> torch.Tensor:
    """Image embeddings ``[N, D]`` (float32, on the CPU), L2-normalised by default."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    n = len(images)
    if n == 0:
        raise ValueError("empty batch of images")
    out = []
    for start in range(0, n, batch_size):
        x = prepare_images(model, images[start : start + batch_size]).to(device)
        out.append(model.encode_image(x, normalize=normalize).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int = 1024,
    normalize: bool = True,
) -> torch.Tensor:
    """Text embeddings ``[N, D]`` (float32, on the CPU), L2-normalised by default."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("expected at least one text, got an empty list")
    device = _device_of(model)
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size]).to(device)
        out.append(model.encode_text(tokens, normalize=normalize).float().cpu())
    return torch.cat(out)
