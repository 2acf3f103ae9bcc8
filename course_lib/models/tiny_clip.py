"""The tiny CLIP: open_clip's own ``CLIP`` class with a small config for ShapeWorld.

Architecture (``TINY_CLIP_CONFIG``): a ViT image tower (32x32 input, 8x8 patches, so 16
patch tokens plus a class token) and a causal text transformer over the word-level
ShapeWorld vocabulary, both projected to a shared embedding space. It is a genuine
``open_clip.model.CLIP``: ``encode_image``, ``encode_text``, ``logit_scale`` and
open_clip's losses work on it unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import open_clip
import torch
from torchvision import transforms

from .tokenizer import WordTokenizer

# ShapeWorld pixel statistics (RGB, [0, 1]); measured by tests/test_models.py on 20k
# generated images and asserted to stay within 0.02 of the values here.
SHAPEWORLD_MEAN: tuple[float, float, float] = (0.14, 0.14, 0.14)
SHAPEWORLD_STD: tuple[float, float, float] = (0.13, 0.13, 0.14)

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 128,
        "layers": 4,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 24,
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}


def tiny_tokenizer(context_length: int | None = None, on_unknown: str = "raise") -> WordTokenizer:
    """The word-level tokenizer of the tiny CLIP."""
    length = context_length or TINY_CLIP_CONFIG["text_cfg"]["context_length"]
    return WordTokenizer(context_length=length, on_unknown=on_unknown)


def build_tiny_clip(config: dict[str, Any] | None = None) -> open_clip.model.CLIP:
    """A randomly initialised tiny CLIP (``open_clip.model.CLIP``).

    Args:
        config: overrides of :data:`TINY_CLIP_CONFIG` (same nested layout). The text
            vocabulary size always comes from the tokenizer.
    """
    cfg = copy.deepcopy(TINY_CLIP_CONFIG)
    for key, value in (config or {}).items():
        if key not in cfg:
            raise KeyError(f"unknown tiny-CLIP config key {key!r}: expected one of {sorted(cfg)}")
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    tok = tiny_tokenizer(cfg["text_cfg"]["context_length"])
    text_cfg = dict(cfg["text_cfg"], vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    model = open_clip.model.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**text_cfg),
    )
    open_clip.model.set_model_preprocess_cfg(
        model,
        {
            "size": (cfg["vision_cfg"]["image_size"],) * 2,
            "mode": "RGB",
            "mean": SHAPEWORLD_MEAN,
            "std": SHAPEWORLD_STD,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        },
    )
    return model


def tiny_preprocess(image_size: int = 32) -> transforms.Compose:
    """PIL image or HWC uint8 array -> normalised float tensor ``[3, S, S]``."""
    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Resize((image_size, image_size), antialias=True),
            transforms.Normalize(SHAPEWORLD_MEAN, SHAPEWORLD_STD),
        ]
    )


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
