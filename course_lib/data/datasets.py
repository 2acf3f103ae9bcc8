"""Torch ``Dataset`` views of ShapeWorld with fixed train/val/test splits.

Each split is generated from its own seed stream, so the splits never share a
generator state and the same ``(split, size, seed, config)`` always gives the same data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .shapeworld import QA, ShapeWorldBatch, ShapeWorldConfig, generate

SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_seed(split: str, seed: int = 0) -> int:
    """The generator seed of ``split`` for a base ``seed`` (distinct per split)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` (or one ``[H, W, 3]``) -> float32 ``[N, 3, H, W]`` in [0, 1]."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"expected a uint8 numpy array of images, got {type(images).__name__} "
                        f"{getattr(images, 'dtype', '')}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape [N, H, W, 3], got {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


class ShapeWorldDataset(Dataset):
    """Image-text pairs of one ShapeWorld split.

    Items are dicts: ``image`` float32 ``[3, S, S]`` in [0, 1] (or ``transform(image)``),
    ``caption`` and ``negative`` (str), ``label`` (colour x shape class of the first
    object), ``color``, ``shape``, ``size``, ``num_objects`` (int).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of images.
        config: scene configuration.
        seed: base seed; each split derives its own.
        transform: optional callable on the image tensor.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        config: ShapeWorldConfig | None = None,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.split = split
        self.config = config or ShapeWorldConfig()
        self.batch: ShapeWorldBatch = generate(size, split_seed(split, seed), self.config)
        self.images = images_to_tensor(self.batch.images)
        self.labels = torch.from_numpy(self.batch.labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.batch
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return {
            "image": img,
            "caption": b.captions[i],
            "negative": b.negatives[i],
            "label": int(b.labels[i]),
            "color": int(b.colors[i, 0]),
            "shape": int(b.shapes[i, 0]),
            "size": int(b.sizes[i, 0]),
            "num_objects": int(b.num_objects[i]),
        }


class ShapeWorldQADataset(Dataset):
    """Visual question answering on one ShapeWorld split: one item per (image, question).

    Items are dicts: ``image`` float32 ``[3, S, S]``, ``question`` (str), ``answer`` (str),
    ``answer_index`` (int, into :func:`~course_lib.data.shapeworld.answer_vocabulary`),
    ``kind`` (``color``/``shape``/``count``/``relation``), ``image_index`` (int).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        config: ShapeWorldConfig | None = None,
        seed: int = 0,
        kinds: tuple[str, ...] | None = None,
    ) -> None:
        from .shapeworld import QUESTION_KINDS, answer_vocabulary

        self.config = config or ShapeWorldConfig(min_objects=1, max_objects=3)
        kinds = tuple(kinds) if kinds is not None else QUESTION_KINDS
        for k in kinds:
            if k not in QUESTION_KINDS:
                raise ValueError(f"unknown question kind {k!r}: expected some of {QUESTION_KINDS}")
        self.batch = generate(size, split_seed(split, seed), self.config)
        self.images = images_to_tensor(self.batch.images)
        self.answers = answer_vocabulary(self.config)
        index = {a: i for i, a in enumerate(self.answers)}
        self.items: list[tuple[int, QA]] = [
            (i, qa) for i, qas in enumerate(self.batch.questions) for qa in qas if qa.kind in kinds
        ]
        if not self.items:
            raise ValueError(f"no questions of kinds {kinds} in this split (relation needs max_objects >= 2)")
        self.answer_index = torch.tensor([index[qa.answer] for _, qa in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> dict[str, Any]:
        i, qa = self.items[j]
        return {
            "image": self.images[i],
            "question": qa.question,
            "answer": qa.answer,
            "answer_index": int(self.answer_index[j]),
            "kind": qa.kind,
            "image_index": i,
        }
