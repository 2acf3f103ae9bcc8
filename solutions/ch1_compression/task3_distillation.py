"""Task 1.3 - knowledge distillation losses (logits, features, CLIP similarities). Solution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be [B, C] with the same shape, got {list(a.shape)} and {list(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{names}: empty batch")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits, "student_logits and teacher_logits")
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl.mean() * t * t


def feature_distillation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    _check_pair(student_features, teacher_features, "student_features and teacher_features")
    return (1.0 - F.cosine_similarity(student_features, teacher_features, dim=-1)).mean()


def clip_distillation_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                           teacher_text: torch.Tensor, temperature: float) -> torch.Tensor:
    for name, x in (("student_image", student_image), ("student_text", student_text),
                    ("teacher_image", teacher_image), ("teacher_text", teacher_text)):
        if x.dim() != 2:
            raise ValueError(f"{name} must be [B, D], got shape {list(x.shape)}")
    batch = {student_image.shape[0], student_text.shape[0], teacher_image.shape[0], teacher_text.shape[0]}
    if len(batch) != 1:
        raise ValueError("all four feature tensors must have the same batch size")
    if student_image.shape[1] != student_text.shape[1] or teacher_image.shape[1] != teacher_text.shape[1]:
        raise ValueError("image and text features of the same model must have the same dimension")
    s_logits = F.normalize(student_image, dim=-1) @ F.normalize(student_text, dim=-1).T
    t_logits = F.normalize(teacher_image, dim=-1) @ F.normalize(teacher_text, dim=-1).T
    return (kd_loss(s_logits, t_logits, temperature) + kd_loss(s_logits.T, t_logits.T, temperature)) / 2
