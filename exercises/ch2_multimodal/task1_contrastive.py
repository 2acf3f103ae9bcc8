"""Task 2.1 - contrastive image-text losses: CLIP (InfoNCE) and SigLIP.

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch2_multimodal/test_task1_contrastive.py
    course-grade --task ch2_multimodal/task1_contrastive
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 - available for your solution


def clip_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          logit_scale: float | torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss (Radford et al. 2021), as ``open_clip.loss.ClipLoss``.

    ``logits = logit_scale * image_features @ text_features.T`` is ``[B, B]``; pair ``i``
    (image i, text i) is the positive of row i and of column i. Return the mean of the
    cross-entropy of the rows (image -> text) and of the columns (text -> image), both with
    targets ``arange(B)``.

    Args:
        image_features, text_features: ``[B, D]``, rows already L2-normalized.
        logit_scale: the temperature's inverse, already exponentiated (e.g. 100.0); a
            float or a 0-dim tensor.

    Returns:
        0-dim tensor, differentiable with respect to both feature tensors; finite even for
        ``logit_scale = 100``. It has the features' dtype and device: float64 features
        give a float64-accurate loss, and tensors you create (the targets) go on the
        features' device (``torch.arange(B, device=...)``).

    Raises:
        ValueError: the two tensors are not both ``[B, D]`` with the same shape, or B = 0.

    Hint: ``F.cross_entropy`` is numerically stable; the text -> image logits are ``logits.T``.
    """
    raise NotImplementedError("Task 2.1: implement clip_contrastive_loss")


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor,
                logit_bias: float | torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023), as ``open_clip.loss.SigLipLoss``.

    ``logits = logit_scale * image_features @ text_features.T + logit_bias`` ``[B, B]``;
    ``labels = 2 * eye(B) - 1`` (+1 for matching pairs, -1 for all others); the loss is
    ``-sum(logsigmoid(labels * logits)) / B``: every one of the B*B pairs is an independent
    binary classification, and the sum is divided by B (not by B*B).

    Args:
        image_features, text_features: ``[B, D]``, rows already L2-normalized.
        logit_scale, logit_bias: floats or 0-dim tensors (e.g. 10.0 and -10.0).

    Returns:
        0-dim tensor, differentiable; finite even when ``labels * logits`` is very negative.
        As for :func:`clip_contrastive_loss`: the features' dtype and device (build the
        labels with ``dtype=`` and ``device=`` of the logits).

    Raises:
        ValueError: as for :func:`clip_contrastive_loss`.

    Hint: ``F.logsigmoid`` is stable where ``torch.log(torch.sigmoid(x))`` gives ``-inf``.
    """
    raise NotImplementedError("Task 2.1: implement siglip_loss")
