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

Notebook 2.7's experiments, each reproduced by its seed: :func:`noisy_caption_data` (the two
imperfect inputs), :func:`normalisation_study`, :func:`dynamic_weighting_study` with
:func:`gate_under_corruption`, and :func:`loss_variant_study` (:data:`LOSS_VARIANTS`);
:mod:`~course_lib.multimodal.fusion_studies` runs them over seeds and writes the results files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

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


# ----------------------------------------------------------------------------- the studies of notebook 2.7


@dataclass
class TwoModalityData:
    """Pooled image features ``[N, Wi]``, text features ``[N, Wt]`` and class labels ``[N]``
    of a training and a test split (notebook 2.7, sections 1-2)."""

    train_image: torch.Tensor
    train_text: torch.Tensor
    train_labels: torch.Tensor
    test_image: torch.Tensor
    test_text: torch.Tensor
    test_labels: torch.Tensor

    @property
    def reference_std(self) -> tuple[float, float]:
        """Standard deviations of the training image and text features (the noise scale of
        :func:`corrupt`)."""
        return float(self.train_image.std()), float(self.train_text.std())


def noisy_caption(color: str, shape: str, rng: np.random.Generator, colors, shapes, p_noise: float = 0.5) -> str:
    """``"a {color} {shape}"``, where with probability ``p_noise`` the colour or (equally likely)
    the shape word is replaced by a random one (possibly the same word)."""
    if not 0 <= p_noise <= 1:
        raise ValueError(f"p_noise must be in [0, 1], got {p_noise}")
    if rng.random() < p_noise:
        if rng.random() < 0.5:
            color = colors[rng.integers(len(colors))]
        else:
            shape = shapes[rng.integers(len(shapes))]
    return f"a {color} {shape}"


def noisy_caption_data(model: nn.Module, tokenizer: Callable, n_train: int, n_test: int, seed: int = 0,
                       data_seed: int = 21, p_noise: float = 0.5) -> TwoModalityData:
    """One-object ShapeWorld scenes (24 colour x shape classes) seen through two imperfect inputs:
    the locked tiny-CLIP image tower's pooled features ``[N, 128]`` and the text tower's ``<eot>``
    features ``[N, 64]`` of a *noisy* caption (:func:`noisy_caption`), so that neither modality
    alone is perfect. ``seed`` drives the caption noise (training split first, then test)."""
    from ..data import ShapeWorldConfig, generate, split_seed
    from .contrastive import pooled_image_features
    from .features import text_tokens
    from .fusion import last_token

    if n_train < 1 or n_test < 1:
        raise ValueError(f"need n_train, n_test >= 1, got {n_train}, {n_test}")
    cfg = ShapeWorldConfig()
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        batch = generate(n, split_seed(split, data_seed), cfg)
        captions = [noisy_caption(batch.color_names(i)[0], batch.shape_names(i)[0], rng, cfg.colors, cfg.shapes,
                                  p_noise) for i in range(len(batch))]
        tok, mask = text_tokens(model, tokenizer, captions)
        out += [pooled_image_features(model, batch.images), last_token(tok, mask), torch.from_numpy(batch.labels)]
    return TwoModalityData(*out)


def normalisation_study(data: TwoModalityData, image_scale: float = 30.0, steps: int = 300, lr: float = 1e-3,
                        seed: int = 0, norms: tuple[str, ...] = NORM_KINDS) -> dict[str, dict[str, float]]:
    """Concatenation fusion with the image features multiplied by ``image_scale`` (an encoder in
    other units), per normalisation: ``{norm: {"both", "image only", "text only"}}`` accuracies
    (:func:`modality_reliance`). Each head is built and trained from ``seed``."""
    num_classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    out = {}
    for norm in norms:
        seed_everything(seed)
        head = make_head("concat", data.train_image.shape[1], data.train_text.shape[1], num_classes, norm=norm)
        train_fusion_head(head, image_scale * data.train_image, data.train_text, data.train_labels, steps=steps,
                          lr=lr, seed=seed)
        out[norm] = modality_reliance(head, image_scale * data.test_image, data.test_text, data.test_labels)
    return out


TRAINING_REGIMES: dict[str, float] = {"clean data": 0.0, "corruption": 0.3}


def dynamic_weighting_study(data: TwoModalityData, steps: int = 300, lr: float = 2e-3, seed: int = 0,
                            kinds: tuple[str, ...] = tuple(FUSION_HEADS),
                            regimes: dict[str, float] | None = None) -> tuple[dict[str, dict[str, dict[str, float]]],
                                                                               dict[str, nn.Module]]:
    """Each fusion head trained on clean data and with modality corruption (probability 0.3 per
    sample, :func:`train_fusion_head`), then tested clean, with every image and with every text
    replaced by noise (:func:`robustness_table`).

    Returns:
        ``({kind: {regime: {"clean", "image corrupted", "text corrupted"}}}, {kind: head trained
        with corruption})``.
    """
    regimes = TRAINING_REGIMES if regimes is None else regimes
    num_classes = int(max(data.train_labels.max(), data.test_labels.max())) + 1
    table: dict[str, dict[str, dict[str, float]]] = {}
    heads: dict[str, nn.Module] = {}
    for kind in kinds:
        table[kind] = {}
        for regime, p in regimes.items():
            seed_everything(seed)
            head = make_head(kind, data.train_image.shape[1], data.train_text.shape[1], num_classes)
            train_fusion_head(head, data.train_image, data.train_text, data.train_labels, steps=steps, lr=lr,
                              corruption_prob=p, seed=seed)
            table[kind][regime] = robustness_table(head, data.test_image, data.test_text, data.test_labels,
                                                   reference_std=data.reference_std)
            if p > 0:
                heads[kind] = head
    return table, heads


@torch.no_grad()
def gate_under_corruption(gated: GatedFusion, data: TwoModalityData, seed: int = 0) -> dict[str, dict[str, Any]]:
    """How a trained :class:`GatedFusion` reacts when every image or every text is noise.

    Per condition (``clean``, ``image corrupted``, ``text corrupted``): ``gate`` = the gate ``z``
    averaged over features, one value per test sample (``[N]`` numpy; 1 = image path), its
    ``mean``, and ``image_share`` = the mean share of the fused vector's magnitude that comes from
    the image path, ``|z * tanh(W_i x_i)| / (|z * tanh(W_i x_i)| + |(1 - z) * tanh(W_t x_t)|)``
    (summed over features): the gate alone does not say how large each path's contribution is.
    """
    gen = torch.Generator().manual_seed(seed)
    every = torch.ones(len(data.test_labels), dtype=torch.bool)
    std_i, std_t = data.reference_std
    conditions = {
        "clean": (data.test_image, data.test_text),
        "image corrupted": (corrupt(data.test_image, every, "noise", gen, std_i), data.test_text),
        "text corrupted": (data.test_image, corrupt(data.test_text, every, "noise", gen, std_t)),
    }
    gated.eval()
    out = {}
    for name, (xi, xt) in conditions.items():
        ni, nt = gated.norm_img(xi), gated.norm_txt(xt)
        z = torch.sigmoid(gated.gate(torch.cat([ni, nt], dim=-1)))
        img_part = (z * torch.tanh(gated.h_img(ni))).abs().sum(1)
        txt_part = ((1 - z) * torch.tanh(gated.h_txt(nt))).abs().sum(1)
        out[name] = {"gate": z.mean(1).numpy(), "mean": float(z.mean()),
                     "image_share": float((img_part / (img_part + txt_part)).mean())}
    return out


LOSS_VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "InfoNCE": ({"kind": "infonce"}, False),
    "InfoNCE + label smoothing": ({"kind": "infonce", "label_smoothing": 0.1}, False),
    "hard-negative re-weighting": ({"kind": "hard_negative", "beta": 4.0}, False),
    "InfoNCE + hard-neg captions": ({"kind": "infonce"}, True),
    "SigLIP": ({"kind": "siglip"}, False),
}
"""Notebook 2.7's contrastive-loss variants: name -> (:class:`~.losses.ContrastiveLoss` arguments,
whether the batch's hard-negative captions are appended as extra negatives)."""

LOSS_METRICS: tuple[str, ...] = ("t2i_R@1", "i2t_R@1", "hard_negative_acc")


def loss_variant_study(train: Any, test: Any, vocab_size: int, steps: int, batch_size: int, seed: int = 0,
                       variants: dict[str, tuple[dict[str, Any], bool]] | None = None,
                       progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """LiT training (locked image tower, :func:`~.contrastive.train_dual_encoder`) with each loss
    variant at the same budget and seed; per variant the held-out ``t2i_R@1``, ``i2t_R@1``,
    ``hard_negative_acc``, the final ``temperature`` and the training ``seconds``."""
    from .contrastive import evaluate_dual_encoder, train_dual_encoder
    from .losses import ContrastiveLoss

    out = {}
    for name, (kwargs, use_negatives) in (variants or LOSS_VARIANTS).items():
        net, hist = train_dual_encoder(train, ContrastiveLoss(**kwargs), vocab_size, steps=steps, batch_size=batch_size,
                                       use_negatives=use_negatives, seed=seed)
        metrics = evaluate_dual_encoder(net, test)
        out[name] = {**{k: float(metrics[k]) for k in LOSS_METRICS}, "temperature": float(hist["temperature"][-1]),
                     "seconds": float(hist["seconds"][0])}
        if progress is not None:
            progress(name)
    return out

