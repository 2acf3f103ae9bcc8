"""Task 1.3 - knowledge distillation losses (logits, features, CLIP similarities).

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch1_compression/test_task3_distillation.py
    course-grade --task ch1_compression/task3_distillation
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 - available for your solution


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: ``T**2 * mean_b KL(softmax(t_b / T) || softmax(s_b / T))``.

    The KL divergence goes *from the teacher* (the target distribution) *to the student*:
    ``KL(p || q) = sum_c p_c * (log p_c - log q_c)`` with ``p`` the teacher's and ``q`` the
    student's softened distribution; summed over classes, averaged over the batch, and
    multiplied by ``T**2`` so that gradient magnitudes do not shrink as ``T`` grows.

    Args:
        student_logits, teacher_logits: float tensors ``[B, C]`` of the same shape.
        temperature: ``T > 0``.

    Returns:
        0-dim float tensor, differentiable with respect to ``student_logits``; finite even
        for very large logits (inputs are not modified). Computed in the logits' dtype:
        float64 logits give a float64-accurate loss.

    Raises:
        ValueError: shapes differ or are not 2-D, empty batch, or ``temperature`` not a
        positive number (``<= 0`` or NaN).

    Hint: work with ``F.log_softmax`` on both sides; ``log(softmax(...))`` overflows.
    """
    raise NotImplementedError("Task 1.3: implement kd_loss")


def feature_distillation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - cos(s_b, t_b)``, row by row.

    Args:
        student_features, teacher_features: ``[B, D]`` of the same shape (project the
            student first if the widths differ).

    Returns:
        0-dim float tensor in [0, 2], differentiable; independent of the rows' lengths;
        in the features' dtype (float64 features: float64-accurate). A row of zeros has
        cosine 0 with anything, as ``F.cosine_similarity`` computes it (it divides by
        ``max(|s| |t|, eps)``), so it contributes 1: the loss is never NaN.

    Raises:
        ValueError: shapes differ or are not 2-D, or the batch is empty.

    Hint: ``F.cosine_similarity`` along the feature dimension (the last one).
    """
    raise NotImplementedError("Task 1.3: implement feature_distillation_loss")


def clip_distillation_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                           teacher_text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Relational distillation of a CLIP: match the student's image-text similarities.

    L2-normalize each of the four feature tensors (rows), form
    ``logits = image @ text.T`` ``[B, B]`` for the student and for the teacher, and return
    ``(kd_loss(s, t, T) + kd_loss(s.T, t.T, T)) / 2``: the image->text and text->image
    distributions are both distilled.

    Args:
        student_image, student_text: ``[B, D_s]``; teacher_image, teacher_text: ``[B, D_t]``
            (``D_s`` and ``D_t`` may differ: only the B x B similarities are compared).
        temperature: ``T > 0``.

    Returns:
        0-dim float tensor, differentiable with respect to the student features; in the
        features' dtype (float64 features: float64-accurate). A row of zeros stays zero
        after ``F.normalize`` (which divides by ``max(norm, eps)``), so its similarities
        are 0 and the loss is never NaN.

    Raises:
        ValueError: batch sizes differ, image and text widths of one model differ, the
        batch is empty, or ``temperature`` is not a positive number.

    Hint: reuse your :func:`kd_loss`; ``F.normalize(x, dim=-1)`` normalizes rows.
    """
    raise NotImplementedError("Task 1.3: implement clip_distillation_loss")
