"""Zero-shot classification and retrieval evaluation for CLIP models.

Zero-shot classification (Radford et al., 2021): embed every class name through a set
of prompt templates, average the normalised embeddings per class, renormalise, and
classify an image by its highest cosine similarity to a class embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .encode import encode_images, encode_texts

TEMPLATES: tuple[str, ...] = (
    "a {}",
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a small {}",
    "a large {}",
)


@torch.no_grad()
def zero_shot_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> torch.Tensor:
    """Class embeddings ``[C, D]`` (unit norm): the mean over templates of each class's
    normalised text embedding, renormalised."""
    if not classnames:
        raise ValueError("expected at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError("expected templates, each with one '{}' for the class name")
    texts = [t.format(c) for c in classnames for t in templates]
    emb = encode_texts(model, tokenizer, texts).view(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


@dataclass
class ZeroShotResult:
    """Predictions and accuracy of a zero-shot classifier on labelled images."""

    accuracy: float
    predictions: torch.Tensor  # int64 [N]
    labels: torch.Tensor  # int64 [N]
    num_classes: int

    def confusion_matrix(self) -> np.ndarray:
        """``[C, C]`` counts, rows = true class, columns = predicted class."""
        cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(cm, (self.labels.numpy(), self.predictions.numpy()), 1)
        return cm


@torch.no_grad()
def zero_shot_evaluate(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    classnames: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> ZeroShotResult:
    """Zero-shot accuracy of ``model`` on ``images`` with integer ``labels`` into ``classnames``."""
    labels = torch.as_tensor(labels).long()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classnames)):
        raise ValueError(f"labels must be in [0, {len(classnames)}), got range [{labels.min()}, {labels.max()}]")
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates)
    feats = encode_images(model, images)
    pred = (feats @ classifier.T).argmax(dim=1)
    acc = (pred == labels).float().mean().item()
    return ZeroShotResult(accuracy=acc, predictions=pred, labels=labels, num_classes=len(classnames))


def recall_at_ks(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@K for a query x gallery similarity matrix.

    Args:
        similarity: float ``[Q, G]``, higher = more similar.
        relevant: bool ``[Q, G]``, True where a gallery item is a correct answer.
        ks: cut-offs; each must be in [1, G].

    Returns:
        ``{k: fraction of queries with a relevant item among their top k}``.
    """
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} must be equal [Q, G]")
    q, g = similarity.shape
    if q == 0 or g == 0:
        raise ValueError("empty query set or gallery")
    if not torch.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or inf")
    kmax = max(ks)
    if min(ks) < 1 or kmax > g:
        raise ValueError(f"every k must be in [1, {g}] (gallery size), got {list(ks)}")
    top = similarity.topk(kmax, dim=1).indices
    hit = relevant.gather(1, top)
    return {k: hit[:, :k].any(dim=1).float().mean().item() for k in ks}


@torch.no_grad()
def retrieval_evaluate(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    captions: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict[int, float]]:
    """Image->text and text->image recall@K; a caption is relevant to every image whose
    own caption is the same string (ShapeWorld repeats simple captions)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    img = encode_images(model, images)
    txt = encode_texts(model, tokenizer, captions)
    _, inverse = np.unique(np.asarray(captions), return_inverse=True)
    ids = torch.from_numpy(inverse)
    relevant = ids[:, None] == ids[None, :]
    sim = img @ txt.T
    return {
        "image_to_text": recall_at_ks(sim, relevant, ks),
        "text_to_image": recall_at_ks(sim.T.contiguous(), relevant.T.contiguous(), ks),
    }
