"""Uniform (affine) quantization: the arithmetic, its error, and INT8 dynamic quantization.

Affine quantization maps a float ``x`` to a ``b``-bit integer ``q`` and back::

    q = clamp(round(x / s) + z, qmin, qmax)        x_hat = (q - z) * s

* symmetric (signed): ``[qmin, qmax] = [-(2^(b-1) - 1), 2^(b-1) - 1]``, ``s = max|x| / qmax``, ``z = 0``;
* asymmetric (unsigned): ``[0, 2^b - 1]``; the range ``[min(x, 0), max(x, 0)]`` is mapped,
  ``s = (max - min) / (qmax - qmin)``, ``z = clamp(round(qmin - min / s), qmin, qmax)``.

With ``axis=None`` one ``(s, z)`` covers the tensor (per tensor); with ``axis=k`` there is
one per index along dimension ``k`` (per channel), which follows the spread of each
output channel and is what INT8 weight quantization normally uses. ``round`` is
``torch.round`` (half to even), the same as ``torch.quantize_per_tensor``.

:func:`quantize_dynamic_int8` wraps ``torch.ao.quantization.quantize_dynamic`` for CLIP
models: it first rewrites ``nn.MultiheadAttention`` into plain ``nn.Linear`` projections
(:mod:`.attention`) so attention is quantized too, refuses module types the dynamic
path cannot quantize, and makes open_clip's text tower keep float32 activations.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn

from .attention import unfuse_attention


class UnsupportedModuleError(TypeError):
    """A module type that the requested quantization path cannot quantize."""


# ---------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------


def quant_range(num_bits: int, symmetric: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of a ``num_bits`` integer grid (see the module docstring)."""
    if not isinstance(num_bits, int) or isinstance(num_bits, bool) or not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be an integer in 2..16, got {num_bits!r}")
    if symmetric:
        return -(2 ** (num_bits - 1) - 1), 2 ** (num_bits - 1) - 1
    return 0, 2**num_bits - 1


def _check_float(x: torch.Tensor, what: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{what} must be a float tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{what} is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf")
    return x.detach().float()


def _channel_shape(x: torch.Tensor, axis: int) -> list[int]:
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return shape


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...] | None:
    if axis is None:
        return None
    if not -x.ndim <= axis < x.ndim:
        raise IndexError(f"axis {axis} is out of range for a tensor with {x.ndim} dimensions")
    axis %= x.ndim
    return tuple(d for d in range(x.ndim) if d != axis)


def quantize_affine(
    x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, axis: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to ``num_bits`` integers.

    Args:
        x: float tensor, any shape (computed in float32).
        num_bits: 2..16.
        symmetric: signed symmetric grid (zero_point 0) or unsigned asymmetric grid.
        axis: ``None`` (per tensor) or the channel dimension (per channel).

    Returns:
        ``(q, scale, zero_point)``: ``q`` int32 like ``x``; ``scale`` float32 and
        ``zero_point`` int32, 0-dim per tensor or ``[x.shape[axis]]`` per channel.

    Raises:
        ValueError: empty or non-finite ``x``, ``num_bits`` outside 2..16.
        IndexError: ``axis`` out of range.
    """
    xf = _check_float(x)
    qmin, qmax = quant_range(num_bits, symmetric)
    dims = _reduce_dims(xf, axis)
    if dims is None:
        hi, lo = xf.max(), xf.min()
    elif dims:
        hi, lo = xf.amax(dim=dims), xf.amin(dim=dims)
    else:  # a 1-D tensor quantized per element
        hi, lo = xf.clone(), xf.clone()
    hi, lo = hi.clamp(min=0), lo.clamp(max=0)
    if symmetric:
        scale = torch.maximum(hi, -lo) / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    if not symmetric:
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    s, z = (scale, zero_point) if axis is None else (scale.view(_channel_shape(xf, axis)), zero_point.view(_channel_shape(xf, axis)))
    q = torch.clamp(torch.round(xf / s) + z, qmin, qmax).to(torch.int32)
    return q, scale, zero_point


def dequantize_affine(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    """``(q - zero_point) * scale`` as float32; per channel along ``axis`` when given."""
    if torch.is_floating_point(q):
        raise TypeError(f"q must be an integer tensor, got {q.dtype}")
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point)
    if axis is not None:
        _reduce_dims(q, axis)
        if scale.numel() != q.shape[axis] or zero_point.numel() != q.shape[axis]:
            raise ValueError(
                f"per-channel scale/zero_point need {q.shape[axis]} entries (q.shape[{axis}]), "
                f"got {scale.numel()} and {zero_point.numel()}"
            )
        scale = scale.reshape(_channel_shape(q, axis))
        zero_point = zero_point.reshape(_channel_shape(q, axis))
    elif scale.numel() != 1 or zero_point.numel() != 1:
        raise ValueError("per-tensor dequantization needs a single scale and zero_point; pass axis for per-channel")
    return (q.to(torch.int64) - zero_point.to(torch.int64)).float() * scale


def fake_quantize(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))``: ``x`` rounded to the grid, as float32 of ``x``'s shape."""
    q, s, z = quantize_affine(x, num_bits, symmetric, axis)
    return dequantize_affine(q, s, z, axis)


@dataclass(frozen=True)
class QuantError:
    """How far ``x_hat = fake_quantize(x)`` is from ``x``.

    ``mse``: mean squared error; ``max_abs``: largest absolute error; ``sqnr_db``:
    signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - x_hat)^2)`` in dB
    (about 6 dB per bit for a well-spread tensor; ``inf`` when exact).
    """

    mse: float
    max_abs: float
    sqnr_db: float


def quantization_error(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, axis: int | None = None) -> QuantError:
    """Error of quantizing ``x`` with the given grid (see :class:`QuantError`)."""
    xf = _check_float(x)
    err = xf - fake_quantize(xf, num_bits, symmetric, axis)
    noise = float(err.pow(2).sum())
    signal = float(xf.pow(2).sum())
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return QuantError(mse=float(err.pow(2).mean()), max_abs=float(err.abs().max()), sqnr_db=sqnr)


def weight_error_table(
    model: nn.Module,
    num_bits: int = 8,
    symmetric: bool = True,
    module_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d),
) -> list[dict[str, object]]:
    """Per layer: SQNR (dB) of its weight quantized per tensor vs per output channel.

    Returns rows ``{"layer", "shape", "per_tensor_db", "per_channel_db", "gain_db"}``
    for every ``module_types`` weight in ``model`` (quantization does not modify it).
    """
    rows: list[dict[str, object]] = []
    for name, module in model.named_modules():
        if isinstance(module, module_types) and getattr(module, "weight", None) is not None:
            w = module.weight
            pt = quantization_error(w, num_bits, symmetric, axis=None).sqnr_db
            pc = quantization_error(w, num_bits, symmetric, axis=0).sqnr_db
            rows.append({"layer": name, "shape": tuple(w.shape), "per_tensor_db": pt, "per_channel_db": pc, "gain_db": pc - pt})
    if not rows:
        raise ValueError(f"model has no {', '.join(t.__name__ for t in module_types)} weights to analyse")
    return rows


@torch.no_grad()
def fake_quantize_weights(
    model: nn.Module,
    num_bits: int,
    per_channel: bool = True,
    symmetric: bool = True,
    module_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d),
) -> nn.Module:
    """A copy of ``model`` whose ``module_types`` weights are rounded to a ``num_bits``
    grid ("weight-only" simulated quantization; activations stay float). Run
    :func:`.attention.unfuse_attention` first to include attention projections."""
    quant_range(num_bits, symmetric)
    target = copy.deepcopy(model)
    count = 0
    for module in target.modules():
        if isinstance(module, module_types) and getattr(module, "weight", None) is not None:
            w = module.weight
            module.weight.copy_(fake_quantize(w, num_bits, symmetric, axis=0 if per_channel else None).to(w.dtype))
            count += 1
    if count == 0:
        raise ValueError(f"model has no {', '.join(t.__name__ for t in module_types)} weights to quantize")
    return target


# ---------------------------------------------------------------------------------------
# INT8 dynamic quantization (weights int8 ahead of time, activations quantized per call)
# ---------------------------------------------------------------------------------------

DYNAMIC_SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def quantize_dynamic_int8(
    model: nn.Module,
    module_types: Iterable[type[nn.Module]] = (nn.Linear,),
    unfuse: bool = True,
    dtype: torch.dtype = torch.qint8,
) -> nn.Module:
    """INT8 dynamic quantization of a copy of ``model`` (eval mode, CPU).

    Weights of ``module_types`` are stored as int8 (per-tensor scale); activations are
    quantized on the fly at each call, so no calibration data is needed.

    Args:
        model: any module, e.g. a CLIP, its ``visual`` tower or a classifier.
        module_types: which layers to quantize; each must be in :data:`DYNAMIC_SUPPORTED`.
        unfuse: first replace ``nn.MultiheadAttention`` by :class:`.attention.LinearAttention`
            so the attention projections are quantized too (otherwise they stay float).
        dtype: ``torch.qint8`` (int8 weights) or ``torch.float16`` (fp16 weights).

    Raises:
        UnsupportedModuleError: a requested type that dynamic quantization cannot handle
            (e.g. ``nn.Conv2d``: it needs static quantization), or no layer of the
            requested types in the model (nothing would be quantized).
    """
    types = tuple(module_types)
    if not types:
        raise ValueError("module_types is empty: nothing to quantize")
    bad = [t.__name__ for t in types if not (isinstance(t, type) and issubclass(t, DYNAMIC_SUPPORTED))]
    if bad:
        raise UnsupportedModuleError(
            f"dynamic quantization cannot quantize {bad}: it supports {[t.__name__ for t in DYNAMIC_SUPPORTED]}; "
            "convolutions need static quantization with calibration (see ort_quantize_static)"
        )
    if dtype not in (torch.qint8, torch.float16):
        raise ValueError(f"dtype must be torch.qint8 or torch.float16, got {dtype}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("quantized kernels run on the CPU: move the model with .cpu() first")
    source = unfuse_attention(model) if unfuse else copy.deepcopy(model)
    source.eval()
    present = [m for m in source.modules() if type(m) in types]
    if not present:
        raise UnsupportedModuleError(f"the model has no {[t.__name__ for t in types]} layer: nothing would be quantized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        quantized = torch.ao.quantization.quantize_dynamic(source, set(types), dtype=dtype, inplace=True)
    _keep_float_activations(quantized)
    return quantized


def _keep_float_activations(model: nn.Module) -> None:
    """open_clip's text tower casts activations to ``resblocks[0].mlp.c_fc.weight.dtype``;
    a quantized ``c_fc`` has no float weight, but open_clip honours ``int8_original_dtype``."""
    for module in model.modules():
        fc = getattr(getattr(module, "mlp", None), "c_fc", None)
        if fc is not None and not isinstance(getattr(fc, "weight", None), torch.Tensor):
            fc.int8_original_dtype = torch.float32


def count_quantized_layers(model: nn.Module) -> dict[str, int]:
    """``{module class name: count}`` of the quantized layers in ``model``."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if type(m).__module__.startswith("torch.ao.nn.quantized"):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


def model_size_mb(model: nn.Module) -> float:
    """Size in MB (1e6 bytes) of ``torch.save(model.state_dict())``: what a checkpoint
    of this model weighs on disk (int8 packed weights count one byte each)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 1e6
