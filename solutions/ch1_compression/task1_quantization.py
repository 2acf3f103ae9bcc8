"""Task 1.1 - affine (uniform) quantization, per tensor and per channel. Solution."""

from __future__ import annotations

import torch


def _qrange(num_bits: int, symmetric: bool) -> tuple[int, int]:
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be an int in [2, 16], got {num_bits!r}")
    if symmetric:
        return -(2 ** (num_bits - 1) - 1), 2 ** (num_bits - 1) - 1
    return 0, 2 ** num_bits - 1


def _channel_shape(x: torch.Tensor, axis: int | None) -> tuple[int | None, tuple[int, ...], list[int]]:
    """Normalised axis, the broadcast shape of per-channel parameters, and the dims to reduce."""
    if axis is None:
        return None, (), list(range(x.dim()))
    if not -x.dim() <= axis < x.dim():
        raise IndexError(f"axis {axis} is out of range for a tensor with {x.dim()} dimensions")
    axis = axis % x.dim()
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return axis, tuple(shape), [d for d in range(x.dim()) if d != axis]


def quantize_affine(
    x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, axis: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if x.numel() == 0:
        raise ValueError("x is empty")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    qmin, qmax = _qrange(num_bits, symmetric)
    axis, bshape, dims = _channel_shape(x, axis)
    xf = x.detach().to(torch.float32)
    if symmetric:
        scale = xf.abs().amax(dim=dims) / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        lo = xf.amin(dim=dims).clamp(max=0.0)
        hi = xf.amax(dim=dims).clamp(min=0.0)
        scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    if not symmetric:
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    s = scale.reshape(bshape) if axis is not None else scale
    z = zero_point.reshape(bshape) if axis is not None else zero_point
    q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int32)
    return q, scale.to(torch.float32), zero_point


def dequantize_affine(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    axis, bshape, _ = _channel_shape(q, axis)
    if axis is None:
        if scale.numel() != 1 or zero_point.numel() != 1:
            raise ValueError("per-tensor dequantization needs one scale and one zero_point")
        s, z = scale.reshape(()), zero_point.reshape(())
    else:
        n = q.shape[axis]
        if scale.shape != (n,) or zero_point.shape != (n,):
            raise ValueError(f"per-channel scale and zero_point need shape [{n}] along axis {axis}, got "
                             f"{list(scale.shape)} and {list(zero_point.shape)}")
        s, z = scale.reshape(bshape), zero_point.reshape(bshape)
    return ((q.to(torch.float32) - z.to(torch.float32)) * s).to(torch.float32)
