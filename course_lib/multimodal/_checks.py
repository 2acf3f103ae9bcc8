"""Input validation shared by the multimodal modules.

Every public function of :mod:`course_lib.multimodal` checks its inputs with these
helpers, so a wrong shape, an empty batch, a NaN or an out-of-range argument raises an
exception that says what was expected instead of returning a silent wrong answer.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def as_tensor(x: torch.Tensor | np.ndarray | Sequence[float], name: str) -> torch.Tensor:
    """``x`` as a torch tensor (NumPy arrays are wrapped without a copy)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a tensor or an array, got {type(x).__name__}") from exc


def check_matrix(x: torch.Tensor, name: str, *, allow_empty: bool = False) -> torch.Tensor:
    """A floating ``[N, D]`` tensor with finite entries (and N >= 1 unless ``allow_empty``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, D], got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 rows): expected at least one row")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns: expected D >= 1")
    check_finite(x, name)
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds a NaN or an infinity."""
    if torch.is_floating_point(x) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")


def check_same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless the last dimensions agree (embedding dimension)."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"embedding dimensions differ: {name_a} has D={a.shape[-1]} but {name_b} has D={b.shape[-1]}"
        )


def check_pairs(image_features: torch.Tensor, text_features: torch.Tensor) -> int:
    """Paired ``[B, D]`` features of two modalities; returns ``B``."""
    check_matrix(image_features, "image_features")
    check_matrix(text_features, "text_features")
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must be paired [B, D] tensors of the same shape, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    return int(image_features.shape[0])


def check_k(k: int, n: int, what: str = "gallery") -> int:
    """An integer ``k`` in ``[1, n]``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {k!r}")
    if n < 1:
        raise ValueError(f"the {what} is empty: nothing to retrieve")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range: expected 1 <= k <= {n} (the {what} size)")
    return int(k)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def check_probability(value: float, name: str) -> float:
    """A number in ``[0, 1)``."""
    value = check_positive(value, name, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {tuple(choices)}")
    return value
