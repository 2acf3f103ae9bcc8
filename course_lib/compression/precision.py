"""Reduced floating-point precision: FP16/BF16 autocast, GradScaler training, half copies.

* **FP16** (IEEE half: 5 exponent bits, 10 mantissa bits, max 65504, smallest normal
  6.1e-5): fast tensor-core kernels on GPUs, but small gradients underflow to zero,
  hence *loss scaling*: multiply the loss by ``S`` before ``backward`` and divide the
  gradients by ``S`` before the step (``torch.amp.GradScaler`` picks ``S`` dynamically and
  skips steps whose gradients overflowed).
* **BF16** (8 exponent bits like fp32, 7 mantissa bits): the fp32 range with less
  precision; no loss scaling needed. CPUs with AVX512-BF16/AMX run it fast; on plain AVX2
  it is emulated and usually *slower* than fp32 (the notebook measures it).

``torch.autocast`` runs matmuls/convolutions in the low-precision type and keeps
reductions (softmax, layer norm, losses) in float32 ("mixed" precision).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn as nn


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The usual autocast type: float16 on CUDA, bfloat16 on CPU."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def autocast(device: torch.device | str, dtype: torch.dtype | None = None, enabled: bool = True) -> torch.autocast:
    """``torch.autocast`` for ``device`` with :func:`autocast_dtype` unless ``dtype`` is given.

    Raises:
        ValueError: float16 asked on the CPU (CPU autocast supports bfloat16 only in
            practice) or a non-16-bit dtype.
    """
    device = torch.device(device)
    dtype = dtype or autocast_dtype(device)
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"autocast dtype must be torch.float16 or torch.bfloat16, got {dtype}")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("use bfloat16 for CPU autocast; float16 autocast is for CUDA devices")
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def make_grad_scaler(device: torch.device | str, init_scale: float = 2.0**16) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` enabled on CUDA (fp16) and disabled (a no-op) on CPU."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=device.type == "cuda")


def amp_train_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    max_grad_norm: float | None = None,
) -> dict[str, Any]:
    """One mixed-precision training step.

    ``loss_fn(model)`` computes a scalar loss (the forward pass runs under autocast).
    With an enabled scaler (fp16 on CUDA) the loss is scaled before ``backward``, the
    gradients are unscaled before clipping, and the step is skipped if they overflowed.

    Returns:
        ``{"loss": float, "scale": float (1.0 when the scaler is disabled),
        "skipped": bool (the optimizer step was skipped because of inf/NaN gradients)}``.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        loss = loss_fn(model)
    if loss.ndim != 0:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    if not scaler.is_enabled() and not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} (no loss scaler to absorb it)")
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.step(optimizer)
    scaler.update()
    scale_after = scaler.get_scale() if scaler.is_enabled() else 1.0
    return {"loss": float(loss.detach().float()), "scale": float(scale_after), "skipped": scale_after < scale_before}


def half_copy(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A copy of ``model`` with every floating parameter and buffer in ``dtype``
    (pure half-precision inference; halves the checkpoint size)."""
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, got {dtype}")
    return copy.deepcopy(model).to(dtype)


def underflow_fraction(values: torch.Tensor, dtype: torch.dtype) -> float:
    """Fraction of the non-zero ``values`` that become exactly 0 when cast to ``dtype``
    (why fp16 training needs loss scaling and bf16 does not)."""
    nz = values[values != 0]
    if nz.numel() == 0:
        raise ValueError("values has no non-zero entry")
    return float((nz.to(dtype) == 0).float().mean())


class AutocastModule(nn.Module):
    """Run ``module`` under :func:`autocast` and return float32 outputs (a drop-in
    encoder for comparing mixed-precision inference with fp32)."""

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
        super().__init__()
        self.module = module
        self.device_type = torch.device(device).type
        self.dtype = dtype or autocast_dtype(device)
        autocast(device, self.dtype)  # validates the combination

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.module(x).float()
