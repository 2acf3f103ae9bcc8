"""Contrastive alignment losses and the geometry diagnostics of an embedding space.

Losses (features ``[B, D]``, L2-normalised, row ``i`` of each modality is a pair):

* :func:`clip_contrastive_loss`: symmetric InfoNCE (Radford et al., 2021; van den Oord
  et al., 2018) with optional label smoothing and extra hard-negative texts,
  ``L = (CE(s I T^T, arange) + CE(s T I^T, arange)) / 2`` with ``s = exp(t)`` learnable.
* :func:`siglip_loss`: the pairwise sigmoid loss (Zhai et al., 2023),
  ``L = -1/B sum_ij log sigmoid(z_ij (s <i_i, t_j> + b))`` with ``z_ij = +1`` on the
  diagonal and ``-1`` elsewhere.
* :func:`hard_negative_clip_loss`: InfoNCE whose negatives are re-weighted towards the
  hard ones, ``w_ij proportional to exp(beta <i_i, t_j>)`` (Robinson et al., 2021);
  ``beta = 0`` is plain InfoNCE.

Diagnostics (Wang & Isola, 2020; Liang et al., 2022): :func:`alignment` (mean distance
of positive pairs, lower is better), :func:`uniformity` (log of the mean Gaussian
potential between all pairs, lower = more uniform on the sphere) and
:func:`modality_gap` (distance between the two modalities' centroids).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_matrix, check_pairs, check_positive, check_probability, check_same_dim

LOSS_KINDS: tuple[str, ...] = ("infonce", "siglip", "hard_negative")


def _scale(logit_scale: float | torch.Tensor, name: str = "logit_scale") -> float | torch.Tensor:
    """Validate an already-exponentiated scale (a float or a 0-dim tensor), keep gradients."""
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(logit_scale.shape)}")
        if not bool(torch.isfinite(logit_scale.detach()).all()) or float(logit_scale.detach()) <= 0:
            raise ValueError(f"{name} must be finite and > 0 (already exponentiated), got {float(logit_scale.detach())}")
        return logit_scale.reshape(())
    return check_positive(logit_scale, name)


def _extra_negatives(text_features: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor | None:
    if extra is None:
        return None
    check_matrix(extra, "negative_text_features")
    check_same_dim(text_features, extra, "text_features", "negative_text_features")
    return extra


def clip_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    negative_text_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss, a 0-dim tensor.

    Args:
        image_features, text_features: float ``[B, D]``, L2-normalised; row ``i`` of each is
            a positive pair, every other row of the batch a negative.
        logit_scale: the inverse temperature ``1 / tau`` (already exponentiated), > 0.
        label_smoothing: in ``[0, 1)``; mass moved from the positive to all columns.
        negative_text_features: optional ``[M, D]`` extra texts (e.g. hard-negative
            captions) appended as negative columns of the image->text direction only.

    Equals ``open_clip.loss.ClipLoss()(image, text, logit_scale)`` with the defaults.
    """
    batch = check_pairs(image_features, text_features)
    scale = _scale(logit_scale)
    label_smoothing = check_probability(label_smoothing, "label_smoothing")
    extra = _extra_negatives(text_features, negative_text_features)
    targets = torch.arange(batch, device=image_features.device)
    columns = text_features if extra is None else torch.cat([text_features, extra.to(text_features)])
    logits_i2t = scale * image_features @ columns.T
    logits_t2i = scale * text_features @ image_features.T
    loss_i2t = F.cross_entropy(logits_i2t, targets, label_smoothing=label_smoothing)
    loss_t2i = F.cross_entropy(logits_t2i, targets, label_smoothing=label_smoothing)
    return (loss_i2t + loss_t2i) / 2


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    logit_bias: float | torch.Tensor,
    *,
    negative_text_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise sigmoid (SigLIP) loss, a 0-dim tensor.

    Args:
        image_features, text_features: float ``[B, D]``, L2-normalised pairs.
        logit_scale: ``exp(t')`` (already exponentiated), > 0.
        logit_bias: ``b``, any finite number (SigLIP initialises it at -10).
        negative_text_features: optional ``[M, D]`` extra negatives for every image.

    ``-sum_ij log sigmoid(z_ij (s <i_i, t_j> + b)) / B``; equals
    ``open_clip.loss.SigLipLoss()(image, text, logit_scale, logit_bias)``.
    """
    batch = check_pairs(image_features, text_features)
    scale = _scale(logit_scale)
    if isinstance(logit_bias, torch.Tensor):
        if logit_bias.numel() != 1 or not bool(torch.isfinite(logit_bias).all()):
            raise ValueError("logit_bias must be a finite scalar")
        logit_bias = logit_bias.reshape(())
    elif isinstance(logit_bias, bool) or not isinstance(logit_bias, (int, float)) or not math.isfinite(logit_bias):
        raise ValueError(f"logit_bias must be a finite number, got {logit_bias!r}")
    extra = _extra_negatives(text_features, negative_text_features)
    columns = text_features if extra is None else torch.cat([text_features, extra.to(text_features)])
    logits = scale * image_features @ columns.T + logit_bias
    labels = -torch.ones_like(logits)
    labels[:, :batch].fill_diagonal_(1.0)
    return -F.logsigmoid(labels * logits).sum() / batch


def hard_negative_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """InfoNCE with hardness-weighted negatives (Robinson et al., 2021), a 0-dim tensor.

    The denominator of each row's softmax becomes ``exp(s_ii) + sum_{j != i} w_ij exp(s_ij)``
    with ``w_ij = (B - 1) softmax_j(beta * <x_i, y_j>)`` over the negatives: the average
    weight stays 1, similar (hard) negatives count more. ``beta = 0`` gives
    :func:`clip_contrastive_loss` exactly; the weights are treated as constants.
    """
    batch = check_pairs(image_features, text_features)
    if batch < 2:
        raise ValueError("hard-negative weighting needs a batch of at least 2 pairs")
    scale = _scale(logit_scale)
    beta = check_positive(beta, "beta", allow_zero=True)
    eye = torch.eye(batch, dtype=torch.bool, device=image_features.device)

    def one_direction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sim = x @ y.T
        logits = scale * sim
        with torch.no_grad():
            w = torch.softmax((beta * sim).masked_fill(eye, float("-inf")), dim=1) * (batch - 1)
            log_w = torch.where(eye, torch.zeros_like(w), w.clamp_min(1e-30).log())
        return F.cross_entropy(logits + log_w, torch.arange(batch, device=x.device))

    return (one_direction(image_features, text_features) + one_direction(text_features, image_features)) / 2


class ContrastiveLoss(nn.Module):
    """A contrastive loss with its learnable temperature (and bias for SigLIP).

    Args:
        kind: ``"infonce"``, ``"siglip"`` or ``"hard_negative"``.
        init_temperature: initial ``tau``; default 0.07 (CLIP) or 0.1 (SigLIP, ``t' = log 10``).
        init_bias: SigLIP's initial bias (-10 in the paper).
        max_scale: ``1 / tau`` is clamped to at most this (CLIP uses 100).
        label_smoothing: for ``"infonce"``.
        beta: hardness of ``"hard_negative"``.

    ``forward(image, text, negative_text=None) -> loss``; ``temperature`` reads ``tau``.
    """

    def __init__(
        self,
        kind: str = "infonce",
        init_temperature: float | None = None,
        init_bias: float = -10.0,
        max_scale: float = 100.0,
        label_smoothing: float = 0.0,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.kind = check_choice(kind, LOSS_KINDS, "loss kind")
        tau = check_positive(init_temperature if init_temperature is not None else (0.1 if kind == "siglip" else 0.07),
                             "init_temperature")
        self.max_scale = check_positive(max_scale, "max_scale")
        self.label_smoothing = check_probability(label_smoothing, "label_smoothing")
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias))) if kind == "siglip" else None

    @property
    def scale(self) -> torch.Tensor:
        """``1 / tau``, clamped to ``max_scale`` (differentiable below the clamp)."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        negative_text_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.kind == "siglip":
            return siglip_loss(image_features, text_features, self.scale, self.bias,
                               negative_text_features=negative_text_features)
        if self.kind == "hard_negative":
            if negative_text_features is not None:
                raise ValueError("the 'hard_negative' loss mines its negatives in the batch; "
                                 "pass negative_text_features to 'infonce' or 'siglip' instead")
            return hard_negative_clip_loss(image_features, text_features, self.scale, self.beta)
        return clip_contrastive_loss(image_features, text_features, self.scale,
                                     label_smoothing=self.label_smoothing,
                                     negative_text_features=negative_text_features)


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """``E ||x_i - y_i||^alpha`` over positive pairs (rows), for unit vectors. Lower is better."""
    check_pairs(x, y)
    alpha = check_positive(alpha, "alpha")
    x, y = F.normalize(x.double(), dim=1), F.normalize(y.double(), dim=1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """``log E_{i != j} exp(-t ||x_i - x_j||^2)`` over distinct rows. Lower = more uniform.

    The minimum over the unit sphere in ``D`` dimensions approaches ``-t * 2`` for many points.
    """
    check_matrix(x, "x")
    if x.shape[0] < 2:
        raise ValueError("uniformity needs at least 2 vectors")
    t = check_positive(t, "t")
    x = F.normalize(x.double(), dim=1)
    sq = torch.pdist(x).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))


def modality_gap(x: torch.Tensor, y: torch.Tensor) -> float:
    """``||mean(x) - mean(y)||`` of the unit-normalised embeddings of two modalities."""
    check_matrix(x, "x")
    check_matrix(y, "y")
    check_same_dim(x, y, "x", "y")
    return float((F.normalize(x.double(), dim=1).mean(0) - F.normalize(y.double(), dim=1).mean(0)).norm())


def embedding_diagnostics(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    """Alignment, uniformity (per modality) and modality gap of paired embeddings."""
    check_pairs(image_features, text_features)
    return {
        "alignment": alignment(image_features, text_features),
        "uniformity_image": uniformity(image_features),
        "uniformity_text": uniformity(text_features),
        "modality_gap": modality_gap(image_features, text_features),
    }
