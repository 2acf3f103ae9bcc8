"""Knowledge distillation of CLIP: output (KL), relational (similarity-matrix) and feature KD.

* **Output KD** (Hinton et al., 2015): ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``,
  averaged over the batch; ``T > 1`` softens the teacher's distribution so the student
  also learns the *relative* similarity of wrong classes ("dark knowledge"); ``T^2``
  keeps gradient magnitudes comparable across temperatures.
* **Relational KD for CLIP**: the teacher's in-batch image-text similarity matrix is the
  target; the student matches its rows (image -> text) and columns (text -> image).
  Unlike contrastive training with one-hot targets, it knows that two captions such
  as "a red circle" and "a small red circle" both fit an image.
* **Feature KD** (FitNets, Romero et al., 2015; CLIP-KD, Yang et al., 2024): make the
  student's embedding, mapped through a learnable projection to the teacher's width,
  point the same way as the teacher's (``1 - cos``).

The student inherits its weights from the teacher (TinyCLIP's *weight inheritance*, Wu
et al., 2023): a subset of the layers, and within them the most important heads and MLP
neurons (:mod:`.structured`), so it starts close to the teacher's function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import build_tiny_clip, count_parameters
from .attention import unfuse_attention
from .structured import apply_plan, plan_structured
from .training import TeacherPool, train_steps

# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def _check_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(f"student and teacher logits must be equal [B, C], got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.shape[0] == 0:
        raise ValueError("empty batch")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over classes and
    averaged over the batch. Differentiable in ``student_logits`` only.

    Raises:
        ValueError: shape mismatch, empty batch, or ``temperature <= 0``.
    """
    _check_logits(student_logits, teacher_logits)
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature**2


def feature_distillation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``1 - cos(student_i, teacher_i)`` (rows ``[B, D]``)."""
    if student_features.shape != teacher_features.shape or student_features.ndim != 2:
        raise ValueError(
            f"features must be equal [B, D] (project the student first), got {tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    if student_features.shape[0] == 0:
        raise ValueError("empty batch")
    cos = F.cosine_similarity(student_features.float(), teacher_features.detach().float(), dim=1, eps=1e-8)
    return (1 - cos).mean()


def relational_kd_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
) -> torch.Tensor:
    """Similarity-matrix distillation for CLIP.

    Each embedding is L2-normalised; logits are ``logit_scale * image @ text.T`` for
    student and teacher; the loss is the mean of :func:`kd_loss` over rows
    (image -> text) and over columns (text -> image). With ``logit_scale = 1`` this is
    the contract of task 1.3's ``clip_distillation_loss``.
    """
    for name, t in (("student_image", student_image), ("student_text", student_text), ("teacher_image", teacher_image), ("teacher_text", teacher_text)):
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty [B, D] tensor, got {tuple(t.shape)}")
    s = logit_scale * F.normalize(student_image, dim=-1) @ F.normalize(student_text, dim=-1).T
    t = logit_scale * F.normalize(teacher_image, dim=-1) @ F.normalize(teacher_text, dim=-1).T
    return 0.5 * (kd_loss(s, t, temperature) + kd_loss(s.T, t.T, temperature))


class FeatureProjector(nn.Linear):
    """``Linear(student_dim, teacher_dim)`` used only during training to compare the
    student's features with the teacher's; identity-initialised when the widths match."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__(student_dim, teacher_dim)
        if student_dim == teacher_dim:
            with torch.no_grad():
                self.weight.copy_(torch.eye(teacher_dim))
                self.bias.zero_()


# ---------------------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudentSpec:
    """Shape of a student derived from the tiny CLIP.

    ``visual_layers``/``text_layers``: indices of the teacher blocks to keep;
    ``*_head_ratio``/``*_neuron_ratio``: fraction of heads / MLP neurons removed in each kept block.
    """

    visual_layers: tuple[int, ...] = (0, 1)
    text_layers: tuple[int, ...] = (0, 1)
    visual_head_ratio: float = 0.75
    visual_neuron_ratio: float = 0.75
    text_head_ratio: float = 0.75
    text_neuron_ratio: float = 0.75


def _keep_layers(transformer: nn.Module, layers: Sequence[int]) -> None:
    n = len(transformer.resblocks)
    if not layers or any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct indices in [0, {n}), got {tuple(layers)}")
    transformer.resblocks = nn.ModuleList([transformer.resblocks[i] for i in sorted(layers)])
    transformer.layers = len(layers)


def make_student(teacher: nn.Module, spec: StudentSpec = StudentSpec(), calibration: torch.Tensor | None = None) -> nn.Module:
    """A smaller CLIP that inherits ``teacher``'s weights (the teacher is not modified).

    Args:
        teacher: an open_clip CLIP (e.g. the tiny CLIP).
        spec: which layers to keep and how much to prune inside them.
        calibration: prepared images for activation-based head/neuron importance in the
            image tower (recommended); ``None`` = weight-based.
    """
    student = unfuse_attention(teacher)
    _keep_layers(student.visual.transformer, spec.visual_layers)
    _keep_layers(student.transformer, spec.text_layers)
    student.visual = apply_plan(
        student.visual, plan_structured(student.visual, spec.visual_head_ratio, spec.visual_neuron_ratio, calibration)
    )
    student.transformer = apply_plan(
        student.transformer, plan_structured(student.transformer, spec.text_head_ratio, spec.text_neuron_ratio)
    )
    return student.eval()


def random_student(spec: StudentSpec = StudentSpec(), seed: int = 0) -> nn.Module:
    """The same architecture as :func:`make_student` with random weights (the
    "from scratch" baseline)."""
    torch.manual_seed(seed)
    return make_student(build_tiny_clip(), spec)


def parameter_ratio(student: nn.Module, teacher: nn.Module) -> float:
    """``params(student) / params(teacher)``."""
    return count_parameters(student) / count_parameters(teacher)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


@dataclass
class DistillConfig:
    """Hyper-parameters of a distillation (or plain contrastive) run.

    The loss is ``relational_weight * relational KD (temperature)`` ``+ feature_weight *
    (feature KD of images + texts through the projector)`` ``+ contrastive_weight * CLIP
    loss on the ground-truth pairs``. Weights ``(0, 0, 1)`` = training without a teacher.
    """

    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    temperature: float = 2.0
    relational_weight: float = 1.0
    feature_weight: float = 10.0
    contrastive_weight: float = 0.0
    warmup: int = 10
    seed: int = 0
    history: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("history")
        return d


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of normalised ``[B, D]`` image/text embeddings (CLIP's loss)."""
    logits = logit_scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def distill_clip(
    student: nn.Module,
    pool: TeacherPool,
    cfg: DistillConfig,
    projector: nn.Module | None = None,
    on_eval: Callable[[int, nn.Module], None] | None = None,
    eval_every: int = 0,
) -> list[float]:
    """Train ``student`` (a CLIP, both towers, in place) on ``pool``.

    Args:
        student: e.g. from :func:`make_student` or :func:`random_student`.
        pool: images, caption tokens and the teacher's embeddings.
        cfg: see :class:`DistillConfig`.
        projector: maps student embeddings to the teacher's width for feature KD
            (default: a new :class:`FeatureProjector`); trained along.
        on_eval: called as ``on_eval(step, student)`` every ``eval_every`` steps and at the end.

    Returns:
        Per-step losses (also stored in ``cfg.history``).
    """
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a similarity matrix needs pairs), got {cfg.batch_size}")
    if min(cfg.relational_weight, cfg.feature_weight, cfg.contrastive_weight) < 0 or not (
        cfg.relational_weight or cfg.feature_weight or cfg.contrastive_weight
    ):
        raise ValueError("loss weights must be >= 0 and not all zero")
    d_student = student.text_projection.shape[1] if isinstance(student.text_projection, torch.Tensor) else student.text_projection.out_features
    projector = projector if projector is not None else FeatureProjector(d_student, pool.image_features.shape[1])

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        student.train()
        x, tokens, t_img, t_txt = pool.batch(idx)
        s_img = student.encode_image(x, normalize=True)
        s_txt = student.encode_text(tokens, normalize=True)
        loss = s_img.new_zeros(())
        if cfg.relational_weight:
            loss = loss + cfg.relational_weight * relational_kd_loss(s_img, s_txt, t_img, t_txt, cfg.temperature, pool.logit_scale)
        if cfg.feature_weight:
            fd = feature_distillation_loss(projector(s_img), t_img) + feature_distillation_loss(projector(s_txt), t_txt)
            loss = loss + cfg.feature_weight * fd
        if cfg.contrastive_weight:
            loss = loss + cfg.contrastive_weight * clip_contrastive_loss(s_img, s_txt, student.logit_scale.exp())
        return loss

    def after_step(step: int) -> None:
        with torch.no_grad():
            student.logit_scale.clamp_(0, math.log(100))
        if on_eval is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < cfg.steps:
            on_eval(step + 1, student.eval())

    params = list(student.parameters()) + list(projector.parameters())
    cfg.history = train_steps(params, pool, cfg.steps, cfg.lr, cfg.batch_size, step_loss, cfg.seed, cfg.warmup, after_step=after_step)
    student.eval()
    if on_eval is not None:
        on_eval(cfg.steps, student)
    return cfg.history




def distill_zero_shot_logits(
    student_visual: nn.Module,
    pool: TeacherPool,
    classifier: torch.Tensor,
    temperature: float,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> list[float]:
    """Classic output distillation (Hinton) of an image tower on zero-shot class logits.

    Logits are ``logit_scale * normalize(features) @ classifier.T`` over the ``C`` classes
    (``classifier`` ``[C, D]``: the teacher's class embeddings, D = student width); the
    teacher's logits come from its cached image embeddings. The loss is
    :func:`kd_loss` at ``temperature`` (soft targets only, no labels). Trains in place;
    returns per-step losses.
    """
    if classifier.ndim != 2 or classifier.shape[1] != pool.image_features.shape[1]:
        raise ValueError(f"classifier must be [C, {pool.image_features.shape[1]}], got {tuple(classifier.shape)}")
    teacher_logits = pool.logit_scale * pool.image_features @ classifier.T

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        logits = pool.logit_scale * F.normalize(student_visual(pool.images[idx]), dim=-1) @ classifier.T
        return kd_loss(logits, teacher_logits[idx], temperature)

    student_visual.train()
    params = [p for p in student_visual.parameters() if p.requires_grad]
    losses = train_steps(params, pool, steps, lr, batch_size, step_loss, seed)
    student_visual.eval()
    return losses
