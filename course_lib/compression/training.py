"""Data, evaluation and fine-tuning shared by the compression notebooks.

* :class:`TeacherPool`: ShapeWorld training images (prepared for the model) and their
  captions' tokens, with the teacher CLIP's image and text embeddings computed once
  (distillation and recovery fine-tuning then never run the teacher again).
* :class:`ZeroShotProbe`: fixed test images, labels and the class embeddings of a
  reference text tower. It scores any *image encoder* (a torch tower, a quantized or
  pruned copy, an ONNX Runtime session) by zero-shot accuracy and by the cosine
  similarity of its features to the reference fp32 features.
* :func:`finetune_visual`: recovery fine-tuning of a compressed image tower against the
  teacher's embeddings (feature distillation + contrastive loss to the teacher's text
  embeddings), with a per-step hook for gradual pruning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import ShapeWorldConfig, generate, split_seed
from ..models import prepare_images, zero_shot_classifier
from ..models.train_tiny_clip import training_pool

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def _batched(fn: ImageEncoder, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


@dataclass
class TeacherPool:
    """Training pool with cached teacher embeddings.

    Attributes:
        images: float32 ``[N, 3, S, S]``, normalised for the teacher.
        tokens: int64 ``[N, context]`` caption tokens.
        image_features: float32 ``[N, D]`` teacher image embeddings (unit norm).
        text_features: float32 ``[N, D]`` teacher caption embeddings (unit norm).
        logit_scale: the teacher's (exponentiated) logit scale.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    image_features: torch.Tensor
    text_features: torch.Tensor
    logit_scale: float

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, tokens, teacher image features, teacher text features)`` at ``indices``."""
        return self.images[indices], self.tokens[indices], self.image_features[indices], self.text_features[indices]


@torch.no_grad()
def make_teacher_pool(teacher: nn.Module, tokenizer: Callable, size: int, seed: int = 0, batch_size: int = 512) -> TeacherPool:
    """Generate ``size`` training scenes (half single-object, half 1-3 objects, as the
    tiny CLIP was trained) and embed them with ``teacher`` once."""
    if size < 2:
        raise ValueError(f"pool size must be >= 2, got {size}")
    raw, captions = training_pool(size, seed)
    teacher.eval()
    images = prepare_images(teacher, raw)
    tokens = tokenizer(captions)
    img = _batched(lambda x: teacher.encode_image(x, normalize=True), images, batch_size)
    txt = _batched(lambda t: teacher.encode_text(t, normalize=True), tokens, batch_size)
    return TeacherPool(images, tokens, img, txt, float(teacher.logit_scale.exp()))


class ZeroShotProbe:
    """Zero-shot accuracy and feature fidelity of image encoders on fixed test data.

    Args:
        reference: the fp32 CLIP whose text tower defines the class embeddings and whose
            image tower gives the reference features.
        tokenizer: its tokenizer.
        size: number of test images (ShapeWorld test split, single object).
        seed: test-split seed.
    """

    def __init__(self, reference: nn.Module, tokenizer: Callable, size: int = 2000, seed: int = 0):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        cfg = ShapeWorldConfig()
        test = generate(size, split_seed("test", seed), cfg)
        reference.eval()
        self.classnames = cfg.class_names
        self.images = prepare_images(reference, test.images)
        self.labels = torch.as_tensor(test.labels).long()
        self.classifier = zero_shot_classifier(reference, tokenizer, self.classnames)
        self.reference_features = self.features(reference.visual)

    def features(self, encoder: ImageEncoder, batch_size: int = 512) -> torch.Tensor:
        """``[N, D]`` unit-norm features of the test images under ``encoder``."""
        feats = _batched(encoder, self.images, batch_size)
        if feats.ndim != 2 or feats.shape[0] != len(self.labels):
            raise ValueError(f"encoder must map [N, 3, S, S] to [N, D], got {tuple(feats.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError("encoder produced NaN or inf features")
        return F.normalize(feats, dim=-1)

    def accuracy_of(self, features: torch.Tensor, classifier: torch.Tensor | None = None) -> float:
        """Zero-shot accuracy of given features against ``classifier`` (default: the probe's)."""
        clf = self.classifier if classifier is None else classifier
        return float(((features @ clf.T).argmax(dim=1) == self.labels).float().mean())

    def evaluate(self, encoder: ImageEncoder, classifier: torch.Tensor | None = None) -> dict[str, float]:
        """``{"accuracy", "cosine"}``: zero-shot accuracy and mean cosine similarity to the
        reference fp32 features (1.0 = identical features)."""
        feats = self.features(encoder)
        cos = float((feats * self.reference_features).sum(dim=1).mean()) if feats.shape == self.reference_features.shape else math.nan
        return {"accuracy": self.accuracy_of(feats, classifier), "cosine": cos}

    def evaluate_clip(self, model: nn.Module, tokenizer: Callable) -> dict[str, float]:
        """A whole CLIP (its own image *and* text towers): accuracy and cosine as above
        (cosine is NaN when its embedding width differs from the reference)."""
        model.eval()
        clf = zero_shot_classifier(model, tokenizer, self.classnames)
        return self.evaluate(model.visual, clf)


def visual_loss(
    features: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    logit_scale: float,
    feature_weight: float = 1.0,
    contrastive_weight: float = 1.0,
) -> torch.Tensor:
    """Loss of an image tower against a frozen teacher.

    ``feature_weight * mean(1 - cos(f, t_img)) + contrastive_weight * CE(scale * f t_txt^T, diag)``
    with ``f`` the normalised student features ``[B, D]``.
    """
    f = F.normalize(features, dim=-1)
    loss = features.new_zeros(())
    if feature_weight:
        loss = loss + feature_weight * (1 - (f * teacher_image).sum(dim=1)).mean()
    if contrastive_weight:
        logits = logit_scale * f @ teacher_text.T
        loss = loss + contrastive_weight * F.cross_entropy(logits, torch.arange(len(f), device=f.device))
    return loss


def cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_steps(
    params: list[nn.Parameter],
    pool: TeacherPool,
    steps: int,
    lr: float,
    batch_size: int,
    step_loss: Callable[[torch.Tensor], torch.Tensor],
    seed: int = 0,
    warmup: int | None = None,
    before_step: Callable[[int], object] | None = None,
    after_step: Callable[[int], object] | None = None,
) -> list[float]:
    """The training loop shared by fine-tuning and distillation.

    Each step draws ``batch_size`` random pool indices (seeded), sets the learning rate
    of :func:`cosine_lr` (``warmup`` defaults to 5% of the steps), computes
    ``step_loss(indices)`` and takes an AdamW step (no weight decay) on ``params``.

    Returns:
        The loss of every step.
    """
    if steps < 0 or not 1 <= batch_size <= len(pool):
        raise ValueError(f"need steps >= 0 and 1 <= batch_size <= pool size ({len(pool)}), got {steps}, {batch_size}")
    warmup = max(1, steps // 20) if warmup is None else max(1, warmup)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup)
        loss = step_loss(torch.randint(0, len(pool), (batch_size,), generator=gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
        losses.append(float(loss.detach()))
    return losses


def finetune_visual(
    visual: nn.Module,
    pool: TeacherPool,
    steps: int,
    lr: float = 2e-3,
    batch_size: int = 128,
    seed: int = 0,
    feature_weight: float = 10.0,
    contrastive_weight: float = 1.0,
    before_step: Callable[[int], object] | None = None,
    after_step: Callable[[int], object] | None = None,
) -> list[float]:
    """Fine-tune an image tower (in place) against the teacher embeddings in ``pool``
    with :func:`visual_loss`.

    Args:
        visual: maps prepared images ``[B, 3, S, S]`` to ``[B, D]`` (D = teacher's).
        steps: optimizer steps (0 returns at once).
        before_step / after_step: hooks called with the step index before the forward
            pass and after ``optimizer.step()`` (e.g. :class:`.pruning.GradualPruner`'s
            ``update`` and ``enforce``).

    Returns:
        The loss of every step. The tower is left in eval mode.
    """

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        x, _, t_img, t_txt = pool.batch(idx)
        return visual_loss(visual(x), t_img, t_txt, pool.logit_scale, feature_weight, contrastive_weight)

    visual.train()
    params = [p for p in visual.parameters() if p.requires_grad]
    losses = train_steps(params, pool, steps, lr, batch_size, step_loss, seed, None, before_step, after_step)
    visual.eval()
    return losses
