"""Models: the tiny CLIP (open_clip's CLIP class, ShapeWorld vocabulary), loading of any
open_clip model, batched encoding and zero-shot evaluation."""

from .encode import encode_images, encode_texts, prepare_images, preprocess_config
from .loading import (
    BUNDLED_CHECKPOINT,
    BUNDLED_SHA256,
    CheckpointError,
    load_clip,
    load_default_clip,
    load_tiny_clip,
    model_fingerprint,
    parse_model_spec,
)
from .tiny_clip import (
    SHAPEWORLD_MEAN,
    SHAPEWORLD_STD,
    TINY_CLIP_CONFIG,
    build_tiny_clip,
    count_parameters,
    tiny_preprocess,
    tiny_tokenizer,
)
from .tokenizer import WordTokenizer
from .zeroshot import (
    TEMPLATES,
    ZeroShotResult,
    recall_at_ks,
    retrieval_evaluate,
    zero_shot_classifier,
    zero_shot_evaluate,
)

__all__ = [
    "BUNDLED_CHECKPOINT", "BUNDLED_SHA256", "CheckpointError", "SHAPEWORLD_MEAN", "SHAPEWORLD_STD",
    "TEMPLATES", "TINY_CLIP_CONFIG", "WordTokenizer", "ZeroShotResult", "build_tiny_clip",
    "count_parameters", "encode_images", "encode_texts", "load_clip", "load_default_clip",
    "load_tiny_clip", "model_fingerprint", "parse_model_spec", "prepare_images", "preprocess_config", "recall_at_ks",
    "retrieval_evaluate", "tiny_preprocess", "tiny_tokenizer", "zero_shot_classifier",
    "zero_shot_evaluate",
]
