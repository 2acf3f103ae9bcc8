"""Contrastive training of a text tower against a locked image tower (LiT, Zhai et al., 2022).

Training a whole CLIP takes minutes even for the tiny one, so the lessons train the part
that learns the alignment: the image side is the *locked* tiny-CLIP image tower (its
pooled features before the projection, ``[N, 128]``, computed once) followed by a fresh
linear projection, and the text side is a fresh word-level transformer
(:class:`WordTextEncoder`). Both meet in a 64-d joint space through a
:class:`~course_lib.multimodal.losses.ContrastiveLoss` with a learnable temperature.

:func:`train_dual_encoder` records the loss, the temperature and the embedding geometry
(alignment, uniformity, modality gap; Wang & Isola, 2020) during training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import seed_everything
from ..models import prepare_images
from .losses import ContrastiveLoss, embedding_diagnostics
from .retrieval import evaluate_directions


@torch.no_grad()
def pooled_image_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """The locked image tower's pooled features before the projection: ``[N, W]`` float32."""
    visual = model.visual
    out = []
    for start in range(0, len(images), batch_size):
        x = prepare_images(model, images[start : start + batch_size]).to(next(model.parameters()).device)
        res = visual.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NLC",
                                           output_extra_tokens=True)
        cls = res["image_intermediates_prefix"][-1][:, 0]
        out.append(visual.ln_post(cls).float().cpu())
    if not out:
        raise ValueError("empty batch of images")
    return torch.cat(out)


class WordTextEncoder(nn.Module):
    """A small text tower trained from scratch: word + position embeddings, a
    bidirectional transformer over the real tokens, the ``<eot>`` token, a projection.

    ``forward(token_ids [B, L]) -> [B, embed_dim]`` (L2-normalised).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, width: int = 64, layers: int = 1, heads: int = 4,
                 max_len: int = 24, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, 0.0, "gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = token_ids != self.pad_id
        length = int(mask.sum(dim=1).max())
        ids, mask = token_ids[:, :length], mask[:, :length]
        x = self.embed(ids) + self.pos[:length]
        x = self.encoder(x, src_key_padding_mask=~mask)
        eot = x[torch.arange(x.shape[0]), mask.sum(dim=1) - 1]
        return F.normalize(self.proj(self.norm(eot)), dim=-1)


class LockedImageDualEncoder(nn.Module):
    """Locked image features -> trainable linear projection; trainable text tower."""

    def __init__(self, image_dim: int, vocab_size: int, embed_dim: int = 64, text_layers: int = 1) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False)
        self.text = WordTextEncoder(vocab_size, embed_dim, layers=text_layers)

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(features), dim=-1)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.text(token_ids)


@dataclass
class ContrastiveData:
    """Locked image features ``[N, W]``, caption token ids ``[N, L]``, the captions, scene
    keys (for image->image relevance) and optional hard-negative token ids ``[N, L]``."""

    image_features: torch.Tensor
    token_ids: torch.Tensor
    captions: list[str]
    keys: list[str]
    negative_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.image_features.shape[0])


def make_contrastive_data(model: torch.nn.Module, tokenizer: Any, batch: Any) -> ContrastiveData:
    """Features of a ShapeWorld batch: locked image features, tokens of captions and negatives."""
    from .retrieval import scene_keys

    return ContrastiveData(pooled_image_features(model, batch.images), tokenizer(batch.captions),
                           list(batch.captions), scene_keys(batch), tokenizer(batch.negatives))


def lit_data(model: torch.nn.Module, tokenizer: Any, n_train: int, n_test: int = 500) -> tuple[ContrastiveData, ContrastiveData]:
    """The LiT data of notebook 2.1: ``n_train`` ShapeWorld training scenes (half with one
    object, half with 1-3) and ``n_test`` held-out 1-3 object scenes, as
    :class:`ContrastiveData` (locked image features, caption and hard-negative tokens)."""
    from ..data import ShapeWorldConfig, generate, split_seed

    if n_train < 2 or n_test < 2:
        raise ValueError(f"need at least 2 training and 2 test scenes, got {n_train} and {n_test}")
    one = make_contrastive_data(model, tokenizer, generate(n_train // 2, split_seed("train", 3), ShapeWorldConfig()))
    multi = make_contrastive_data(model, tokenizer, generate(n_train - n_train // 2, split_seed("train", 4),
                                                             ShapeWorldConfig(max_objects=3)))
    train = ContrastiveData(torch.cat([one.image_features, multi.image_features]),
                            torch.cat([one.token_ids, multi.token_ids]), one.captions + multi.captions,
                            one.keys + multi.keys, torch.cat([one.negative_ids, multi.negative_ids]))
    test = make_contrastive_data(model, tokenizer, generate(n_test, split_seed("test", 3), ShapeWorldConfig(max_objects=3)))
    return train, test


def clip_reference_diagnostics(model: torch.nn.Module, tokenizer: Any, n_test: int = 500) -> dict[str, float]:
    """:func:`~course_lib.multimodal.losses.embedding_diagnostics` of a whole CLIP on the
    held-out scenes of :func:`lit_data` (the reference a LiT run is read against)."""
    from ..data import ShapeWorldConfig, generate, split_seed
    from ..models import encode_images, encode_texts

    batch = generate(n_test, split_seed("test", 3), ShapeWorldConfig(max_objects=3))
    return embedding_diagnostics(encode_images(model, batch.images), encode_texts(model, tokenizer, batch.captions))


@torch.no_grad()
def evaluate_dual_encoder(model: LockedImageDualEncoder, data: ContrastiveData) -> dict[str, float]:
    """R@1/R@5 in the three directions, the hard-negative matching accuracy (true caption
    scored above its negative) and the geometry diagnostics."""
    model.eval()
    img = model.encode_image(data.image_features)
    txt = model.encode_text(data.token_ids)
    out: dict[str, float] = {}
    for rep in evaluate_directions(img, txt, data.captions, data.keys, ks=(1, 5)):
        tag = {"text->image": "t2i", "image->text": "i2t", "image->image": "i2i"}[rep.direction]
        out[f"{tag}_R@1"], out[f"{tag}_R@5"] = rep.recall[1], rep.recall[5]
    if data.negative_ids is not None:
        neg = model.encode_text(data.negative_ids)
        out["hard_negative_acc"] = float(((img * txt).sum(1) > (img * neg).sum(1)).float().mean())
    out.update(embedding_diagnostics(img, txt))
    return out


def train_dual_encoder(
    train: ContrastiveData,
    loss: ContrastiveLoss,
    vocab_size: int,
    steps: int = 300,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    use_negatives: bool = False,
    eval_data: ContrastiveData | None = None,
    eval_every: int = 0,
) -> tuple[LockedImageDualEncoder, dict[str, list]]:
    """Train a :class:`LockedImageDualEncoder` (and the loss's temperature) with AdamW.

    Args:
        use_negatives: append the batch's hard-negative captions as extra negatives.
        eval_every: log :func:`evaluate_dual_encoder` on ``eval_data`` every so many steps.

    Returns:
        ``(model, history)`` with ``loss``, ``temperature`` per step, ``eval_step`` and one
        list per evaluated metric, and ``seconds``.
    """
    if steps < 1 or batch_size < 2 or len(train) < batch_size:
        raise ValueError(f"need steps >= 1 and 2 <= batch_size <= {len(train)}, got {steps} and {batch_size}")
    if use_negatives and train.negative_ids is None:
        raise ValueError("use_negatives=True but the training data has no negative captions")
    seed_everything(seed)
    model = LockedImageDualEncoder(train.image_features.shape[1], vocab_size)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss.parameters()), lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list] = {"loss": [], "temperature": [], "eval_step": []}
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, steps // 10)) * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = torch.randperm(len(train), generator=gen)[:batch_size]
        model.train()
        img = model.encode_image(train.image_features[idx])
        txt = model.encode_text(train.token_ids[idx])
        neg = model.encode_text(train.negative_ids[idx]) if use_negatives else None
        value = loss(img, txt, neg) if neg is not None else loss(img, txt)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        hist["loss"].append(float(value.detach()))
        hist["temperature"].append(loss.temperature)
        if eval_data is not None and eval_every and ((step + 1) % eval_every == 0 or step == 0):
            hist["eval_step"].append(step + 1)
            for key, val in evaluate_dual_encoder(model, eval_data).items():
                hist.setdefault(key, []).append(val)
    hist["seconds"] = [time.perf_counter() - t0]
    model.eval()
    return model, hist
