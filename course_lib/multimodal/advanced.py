"""Advanced fusion techniques: modality normalisation, dynamic weighting, robustness.

Inputs are one pooled feature vector per modality (``x_img [B, Wi]``, ``x_txt [B, Wt]``).

* :class:`ModalityNorm`: per-modality normalisation before fusion (``"none"``,
  ``"layernorm"``, ``"l2"``); without it the modality with the larger scale dominates
  the fused vector and the gradients.
* :class:`ConcatFusion`: static fusion, ``MLP([n(x_img) ; n(x_txt)])``.
* :class:`GatedFusion`: a gated multimodal unit (Arevalo et al., 2017):
  ``h = z * tanh(W_i x_img) + (1 - z) * tanh(W_t x_txt)``, ``z = sigmoid(W_z [x_img ; x_txt])``
  per sample and per feature: the network decides how much to trust each modality.
* :class:`UncertaintyFusion`: each modality predicts logits and a log-variance ``s_m``;
  the fused logits are ``sum_m softmax_m(-s)_m * logits_m`` (precision weighting), and the
  training loss adds ``exp(-s_m) CE_m + s_m`` per modality (Kendall et al., 2018).

:func:`corrupt` replaces one modality of some samples by noise (a failed sensor) or by
another sample's features (a mismatched input); training with it teaches the dynamic
models to notice and down-weight a corrupted modality.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import seed_everything
from ._checks import check_choice, check_matrix

NORM_KINDS: tuple[str, ...] = ("none", "layernorm", "l2")
CORRUPTIONS: tuple[str, ...] = ("noise", "shuffle", "zero")


class ModalityNorm(nn.Module):
    """Normalise one modality's features ``[B, W]``: ``none``, ``layernorm`` or ``l2`` (times sqrt(W))."""

    def __init__(self, dim: int, kind: str = "layernorm") -> None:
        super().__init__()
        self.kind = check_choice(kind, NORM_KINDS, "normalisation")
        self.scale = float(dim) ** 0.5
        self.ln = nn.LayerNorm(dim) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return self.ln(x)
        if self.kind == "l2":
            return F.normalize(x, dim=-1) * self.scale
        return x


class ConcatFusion(nn.Module):
    """``MLP([norm(x_img) ; norm(x_txt)]) -> logits [B, C]``."""

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, hidden: int = 128, norm: str = "layernorm"):
        super().__init__()
        self.norm_img, self.norm_txt = ModalityNorm(image_dim, norm), ModalityNorm(text_dim, norm)
        self.mlp = nn.Sequential(nn.Linear(image_dim + text_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.norm_img(x_img), self.norm_txt(x_txt)], dim=-1))


class GatedFusion(nn.Module):
    """Gated multimodal unit; ``forward(..., return_gate=True)`` also gives ``z`` averaged
    over features ``[B]`` (1 = all image, 0 = all text)."""

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, hidden: int = 128, norm: str = "layernorm"):
        super().__init__()
        self.norm_img, self.norm_txt = ModalityNorm(image_dim, norm), ModalityNorm(text_dim, norm)
        self.h_img = nn.Linear(image_dim, hidden)
        self.h_txt = nn.Linear(text_dim, hidden)
        self.gate = nn.Linear(image_dim + text_dim, hidden)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor, return_gate: bool = False):
        xi, xt = self.norm_img(x_img), self.norm_txt(x_txt)
        z = torch.sigmoid(self.gate(torch.cat([xi, xt], dim=-1)))
        h = z * torch.tanh(self.h_img(xi)) + (1 - z) * torch.tanh(self.h_txt(xt))
        logits = self.head(h)
        return (logits, z.mean(dim=-1)) if return_gate else logits


class UncertaintyFusion(nn.Module):
    """Precision-weighted late fusion of two unimodal classifiers with predicted log-variances."""

    def __init__(self, image_dim: int, text_dim: int, num_classes: int, hidden: int = 128, norm: str = "layernorm"):
        super().__init__()
        self.norm_img, self.norm_txt = ModalityNorm(image_dim, norm), ModalityNorm(text_dim, norm)
        self.img = nn.Sequential(nn.Linear(image_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes + 1))
        self.txt = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes + 1))

    def parts(self, x_img: torch.Tensor, x_txt: torch.Tensor):
        """``(logits_img, logits_txt, log_var [B, 2])``."""
        oi, ot = self.img(self.norm_img(x_img)), self.txt(self.norm_txt(x_txt))
        return oi[:, :-1], ot[:, :-1], torch.stack([oi[:, -1], ot[:, -1]], dim=1)

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor, return_weights: bool = False):
        li, lt, s = self.parts(x_img, x_txt)
        w = torch.softmax(-s, dim=1)
        logits = w[:, :1] * li + w[:, 1:] * lt
        return (logits, w[:, 0]) if return_weights else logits

    def loss(self, x_img: torch.Tensor, x_txt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        li, lt, s = self.parts(x_img, x_txt)
        w = torch.softmax(-s, dim=1)
        fused = F.cross_entropy(w[:, :1] * li + w[:, 1:] * lt, y)
        per_mod = torch.stack([F.cross_entropy(li, y, reduction="none"), F.cross_entropy(lt, y, reduction="none")], 1)
        return fused + (torch.exp(-s) * per_mod + s).mean() / 2


FUSION_HEADS: dict[str, type[nn.Module]] = {"concat": ConcatFusion, "gated": GatedFusion,
                                            "uncertainty": UncertaintyFusion}


def corrupt(x: torch.Tensor, which: torch.Tensor, kind: str = "noise", generator: torch.Generator | None = None,
            reference_std: float | None = None) -> torch.Tensor:
    """A copy of ``x`` ``[B, W]`` whose rows ``which`` (bool ``[B]``) are corrupted.

    ``noise``: Gaussian noise with the features' standard deviation (a dead sensor);
    ``shuffle``: the features of other rows (a mismatched input, confidently wrong);
    ``zero``: all zeros (a missing modality).
    """
    check_matrix(x, "x")
    check_choice(kind, CORRUPTIONS, "corruption")
    if which.dtype != torch.bool or which.shape != (x.shape[0],):
        raise ValueError(f"which must be bool [B] = [{x.shape[0]}], got {which.dtype} {tuple(which.shape)}")
    out = x.clone()
    n = int(which.sum())
    if n == 0:
        return out
    if kind == "noise":
        std = reference_std if reference_std is not None else float(x.std())
        out[which] = torch.randn(n, x.shape[1], generator=generator) * std + x.mean(0)
    elif kind == "shuffle":
        src = torch.randint(0, x.shape[0], (n,), generator=generator)
        out[which] = x[src]
    else:
        out[which] = 0
    return out


def train_fusion_head(
    model: nn.Module,
    x_img: torch.Tensor,
    x_txt: torch.Tensor,
    y: torch.Tensor,
    steps: int = 400,
    batch_size: int = 256,
    lr: float = 3e-3,
    corruption_prob: float = 0.0,
    corruption: str = "noise",
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train a fusion head with AdamW; with ``corruption_prob > 0`` each sample has that
    probability of one modality (image or text, at random, never both) being corrupted."""
    check_matrix(x_img, "x_img")
    check_matrix(x_txt, "x_txt")
    if not (len(x_img) == len(x_txt) == len(y)):
        raise ValueError(f"need as many labels as samples: {len(x_img)}, {len(x_txt)}, {len(y)}")
    if not 0 <= corruption_prob <= 1:
        raise ValueError(f"corruption_prob must be in [0, 1], got {corruption_prob}")
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    std_i, std_t = float(x_img.std()), float(x_txt.std())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    hist: dict[str, list[float]] = {"loss": []}
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = torch.randint(0, len(y), (batch_size,), generator=gen)
        xi, xt, yy = x_img[idx], x_txt[idx], y[idx]
        if corruption_prob > 0:
            hit = torch.rand(batch_size, generator=gen) < corruption_prob
            img_side = torch.rand(batch_size, generator=gen) < 0.5
            xi = corrupt(xi, hit & img_side, corruption, gen, std_i)
            xt = corrupt(xt, hit & ~img_side, corruption, gen, std_t)
        model.train()
        loss = model.loss(xi, xt, yy) if hasattr(model, "loss") else F.cross_entropy(model(xi, xt), yy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(float(loss.detach()))
    hist["seconds"] = [time.perf_counter() - t0]
    model.eval()
    return hist


@torch.no_grad()
def robustness_table(model: nn.Module, x_img: torch.Tensor, x_txt: torch.Tensor, y: torch.Tensor,
                     corruption: str = "noise", seed: int = 1,
                     reference_std: tuple[float, float] | None = None) -> dict[str, float]:
    """Accuracy with clean inputs, with every image corrupted, and with every text corrupted."""
    gen = torch.Generator().manual_seed(seed)
    every = torch.ones(len(y), dtype=torch.bool)
    std_i, std_t = reference_std or (float(x_img.std()), float(x_txt.std()))
    model.eval()

    def acc(xi: torch.Tensor, xt: torch.Tensor) -> float:
        return float((model(xi, xt).argmax(dim=1) == y).float().mean())

    return {
        "clean": acc(x_img, x_txt),
        "image corrupted": acc(corrupt(x_img, every, corruption, gen, std_i), x_txt),
        "text corrupted": acc(x_img, corrupt(x_txt, every, corruption, gen, std_t)),
    }


def modality_reliance(model: nn.Module, x_img: torch.Tensor, x_txt: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy when one modality is zeroed: how much the model leans on each input."""
    with torch.no_grad():
        def acc(xi: torch.Tensor, xt: torch.Tensor) -> float:
            return float((model(xi, xt).argmax(dim=1) == y).float().mean())
        return {"both": acc(x_img, x_txt), "image only": acc(x_img, torch.zeros_like(x_txt)),
                "text only": acc(torch.zeros_like(x_img), x_txt)}


def make_head(kind: str, image_dim: int, text_dim: int, num_classes: int, **kwargs) -> nn.Module:
    """``"concat"``, ``"gated"`` or ``"uncertainty"`` fusion head."""
    if kind not in FUSION_HEADS:
        raise ValueError(f"unknown fusion head {kind!r}: expected one of {tuple(FUSION_HEADS)}")
    return FUSION_HEADS[kind](image_dim, text_dim, num_classes, **kwargs)

