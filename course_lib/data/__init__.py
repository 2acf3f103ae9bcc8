"""Offline data: ShapeWorld (generated scenes with language) and Digits (real 8x8 digits)."""

from .datasets import SPLITS, ShapeWorldDataset, ShapeWorldQADataset, images_to_tensor, split_seed
from .digits import SCENARIOS, ContinualTask, load_digits_split, permuted_digits, split_digits
from .shapeworld import (
    ALL_COLORS,
    ALL_SHAPES,
    DEFAULT_COLORS,
    DEFAULT_SHAPES,
    NEGATIVE_KINDS,
    QA,
    QUESTION_KINDS,
    RELATIONS,
    SIZES,
    ShapeWorldBatch,
    ShapeWorldConfig,
    answer_vocabulary,
    generate,
    split_words,
    vocabulary,
)

__all__ = [
    "ALL_COLORS", "ALL_SHAPES", "DEFAULT_COLORS", "DEFAULT_SHAPES", "NEGATIVE_KINDS", "QA",
    "QUESTION_KINDS", "RELATIONS", "SIZES", "SCENARIOS", "SPLITS", "ContinualTask",
    "ShapeWorldBatch", "ShapeWorldConfig", "ShapeWorldDataset", "ShapeWorldQADataset",
    "answer_vocabulary", "generate", "images_to_tensor", "load_digits_split", "permuted_digits",
    "split_digits", "split_seed", "split_words", "vocabulary",
]
