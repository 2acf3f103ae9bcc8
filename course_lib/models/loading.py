"""Loading CLIP models: the bundled tiny CLIP or any open_clip architecture.

``load_clip(name, pretrained)`` returns ``(model, preprocess, tokenizer)`` in eval mode:

* ``load_clip("tiny")``: the tiny CLIP from the checkpoint shipped in this package
  (SHA-256 verified, ``torch.load(weights_only=True)``); ``pretrained`` may name
  another tiny-CLIP checkpoint file, or ``"none"`` for random weights.
* ``load_clip("ViT-B-32", pretrained="openai")``: open_clip's model and tag (needs
  internet the first time, or open_clip's cache); ``pretrained="/path/file.pt"`` loads a
  local checkpoint without any network access.

The notebooks call :func:`load_default_clip`, which reads ``COURSE_MODEL``
(``"tiny"``, ``"ViT-B-32:openai"`` or ``"ViT-B-32:/path/to/file.pt"``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from .tiny_clip import TINY_CLIP_CONFIG, build_tiny_clip, tiny_preprocess, tiny_tokenizer

ASSETS = Path(__file__).parent / "assets"
BUNDLED_CHECKPOINT = ASSETS / "tiny_clip.pt"
BUNDLED_SHA256 = (ASSETS / "tiny_clip.sha256").read_text().split()[0] if (ASSETS / "tiny_clip.sha256").exists() else ""
TINY_NAMES = ("tiny", "tiny-clip")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not fit the model."""


def _verify(path: Path, expected_sha256: str | None) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if expected_sha256:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected_sha256:
            raise CheckpointError(
                f"checkpoint {path} is corrupted: SHA-256 {digest} != recorded {expected_sha256}; "
                "reinstall the package or retrain with `python -m course_lib.models.train_tiny_clip`"
            )


def model_fingerprint(model: torch.nn.Module, length: int = 12) -> str:
    """A short hex SHA-256 of a model's state dict (names, shapes, dtypes and values).

    Use it to key caches of anything computed from a model (embeddings, features), so a
    retrained or switched model never reads another model's cached results.
    """
    if not 1 <= length <= 64:
        raise ValueError(f"length must be in 1..64 hex digits, got {length}")
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor "
                            "(packed quantized weights cannot be fingerprinted; fingerprint the float model)")
        t = tensor.detach().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.is_quantized:  # statically quantized weights: hash the values they stand for
            t = t.dequantize()
        t = t.contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def load_tiny_clip(
    checkpoint: str | Path | None = None,
    expected_sha256: str | None = None,
    device: torch.device | str = "cpu",
) -> open_clip.model.CLIP:
    """The tiny CLIP with trained weights, in eval mode.

    Args:
        checkpoint: a tiny-CLIP checkpoint file; ``None`` = the bundled one.
        expected_sha256: hash to verify; defaults to the recorded hash of the bundled file.
        device: where to put the model.

    Raises:
        CheckpointError: missing file, hash mismatch, or weights that do not fit.
    """
    if checkpoint is None:
        checkpoint, expected_sha256 = BUNDLED_CHECKPOINT, expected_sha256 or BUNDLED_SHA256
        if not expected_sha256:
            raise CheckpointError(f"no recorded SHA-256 next to the bundled checkpoint in {ASSETS}")
    path = Path(checkpoint)
    _verify(path, expected_sha256)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"could not read checkpoint {path}: {exc}") from exc
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no state dict")
    model_cfg = payload.get("train_config", {}).get("model", TINY_CLIP_CONFIG)
    model = build_tiny_clip(model_cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the tiny CLIP: {exc}") from exc
    return model.to(device).eval()


def load_clip(
    name: str = "tiny",
    pretrained: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, Callable[[Any], torch.Tensor], Callable[..., torch.Tensor]]:
    """``(model, preprocess, tokenizer)`` for the tiny CLIP or an open_clip architecture.

    Args:
        name: ``"tiny"`` or an open_clip model name such as ``"ViT-B-32"``.
        pretrained: for ``"tiny"``: ``None`` (bundled weights), a checkpoint path, or
            ``"none"`` (random init). Otherwise: an open_clip tag (``"openai"``,
            ``"laion2b_s34b_b79k"``...), a local checkpoint path, or ``None`` (random).
        device: target device.

    Raises:
        ValueError: unknown model name.
        CheckpointError: see :func:`load_tiny_clip`.
    """
    if name in TINY_NAMES:
        if pretrained is not None and pretrained.lower() == "none":
            model = build_tiny_clip().to(device).eval()
        else:
            model = load_tiny_clip(pretrained, device=device)
        return model, tiny_preprocess(TINY_CLIP_CONFIG["vision_cfg"]["image_size"]), tiny_tokenizer()
    known = open_clip.list_models()
    if name not in known:
        raise ValueError(
            f"unknown model {name!r}: expected 'tiny' or an open_clip architecture such as "
            f"'ViT-B-32' (open_clip.list_models() has {len(known)})"
        )
    if pretrained is not None and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(pretrained).is_file():
            raise CheckpointError(f"checkpoint not found: {pretrained}")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"ViT-B-32:openai"`` -> ``("ViT-B-32", "openai")``; ``"tiny"`` -> ``("tiny", None)``."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model spec: expected 'tiny' or 'ARCH:PRETRAINED'")
    name, _, pretrained = spec.partition(":")
    return name, (pretrained or None)


def load_default_clip(
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, Callable[[Any], torch.Tensor], Callable[..., torch.Tensor]]:
    """The model the notebooks use: ``COURSE_MODEL`` (default ``"tiny"``), see the module doc."""
    name, pretrained = parse_model_spec(os.environ.get("COURSE_MODEL", "tiny") or "tiny")
    return load_clip(name, pretrained, device=device)
