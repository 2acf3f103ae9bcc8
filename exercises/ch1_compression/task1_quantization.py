"""Task 1.1 - affine (uniform) quantization, per tensor and per channel.

Implement the two functions below, then check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch1_compression/test_task1_quantization.py
    course-grade --task ch1_compression/task1_quantization
"""

from __future__ import annotations

import torch


def quantize_affine(
    x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, axis: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize a float tensor to ``num_bits`` integers: ``x ~ (q - zero_point) * scale``.

    Ranges:
        * symmetric: ``qmin = -(2**(b-1) - 1)``, ``qmax = 2**(b-1) - 1`` (e.g. -127..127),
          ``scale = max|x| / qmax``, ``zero_point = 0``.
        * asymmetric: ``qmin = 0``, ``qmax = 2**b - 1`` (e.g. 0..255); the range
          ``[min(x, 0), max(x, 0)]`` (it always contains 0) is mapped:
          ``scale = (max(x, 0) - min(x, 0)) / (qmax - qmin)``,
          ``zero_point = clamp(round(qmin - min(x, 0) / scale), qmin, qmax)``.

    Then ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``, rounding with
    ``torch.round`` (half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2). A zero range (all
    values 0 in the tensor, or in a channel) gives ``scale = 1`` there.

    Args:
        x: float tensor of any shape (float16/32/64); computations in float32.
        num_bits: bits per value, 2..16.
        symmetric: symmetric (signed) or asymmetric (unsigned) range.
        axis: ``None`` for one scale/zero_point for the whole tensor; ``k`` for one per
            index along dimension ``k`` ("per channel", e.g. ``axis=0`` for the output
            channels of a Linear weight). Statistics are taken over all other dimensions.

    Returns:
        ``(q, scale, zero_point)``: ``q`` int32 with the shape of ``x``; ``scale`` float32
        and ``zero_point`` int32, both 0-dim for ``axis=None`` or of shape
        ``[x.shape[axis]]`` per channel. The input ``x`` is not modified.

    Raises:
        ValueError: ``x`` contains NaN/inf or is empty (no range to map); ``num_bits`` is
            not an int in 2..16.
        IndexError: ``axis`` is out of range for ``x`` (ValueError is accepted too).

    Hint: reduce with ``amax``/``amin`` over every dimension except ``axis``, then reshape
    the per-channel scale to broadcast against ``x`` (size 1 everywhere but ``axis``).
    """
    raise NotImplementedError("Task 1.1: implement quantize_affine")


def dequantize_affine(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    """Map integers back to floats: ``(q - zero_point) * scale``, as float32.

    Args:
        q: integer tensor (any shape), e.g. from :func:`quantize_affine`.
        scale, zero_point: 0-dim for ``axis=None``; shape ``[q.shape[axis]]`` per channel.
        axis: the channel dimension the parameters belong to, or ``None``.

    Returns:
        float32 tensor with the shape of ``q``.

    Raises:
        ValueError: the shapes of ``scale``/``zero_point`` do not fit ``q`` and ``axis``
            (one of each for ``axis=None``; ``[q.shape[axis]]`` per channel).

    Hint: subtract in floating point (integer ``q - zero_point`` can overflow int8/uint8).
    """
    raise NotImplementedError("Task 1.1: implement dequantize_affine")
