"""Graded tests of task 1.1: quantize_affine / dequantize_affine.

References: hand-worked values with exact (power-of-two) scales, ``torch.quantize_per_tensor``
and ``torch.quantize_per_channel`` (where their conventions meet the contract: symmetric
8-bit fits qint8, asymmetric 8-bit is quint8), and the contract's formula for other bit
widths.

Tolerances: the contract fixes the dtypes (q and zero_point int32, scale float32) and
says the work is done in float32. A scale is one float32 division (max / qmax), so it is
compared to the float64 formula with a relative tolerance of 2e-6 (16 float32 units:
room for statistics taken in float64 and rounded once); float16 work (eps 1e-3) fails.
q is checked against the contract's formula applied to the submission's own scale and
zero_point: exact, except that values within 1e-3 of a rounding tie may differ by one
step (torch's quantize_per_tensor multiplies by 1/scale where the contract divides).
Dequantized values are one float32 subtraction and product: compared exactly.
"""

import pytest
import torch

from course_lib.grading.testing import (
    as_tensor,
    assert_close,
    assert_equal_tensor,
    assert_not_mutated,
    expect_error,
)

TASK = "ch1_compression/task1_quantization"
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def _quantize(impl, x, **kw):
    out = impl.quantize_affine(x, **kw)
    assert isinstance(out, tuple) and len(out) == 3, \
        f"quantize_affine should return a tuple (q, scale, zero_point), got {type(out).__name__}"
    return out


def _check_q(q, x, scale, zp, qmin, qmax, axis=None, name="q"):
    """q against the contract's formula, using the submission's own scale/zero_point."""
    q = as_tensor(q, name, shape=x.shape)
    s = scale.to(torch.float32)
    z = zp.to(torch.float32)
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    ratio = x.to(torch.float32) / s
    expected = torch.clamp(torch.round(ratio) + z, qmin, qmax)
    near_tie = ((ratio - ratio.floor()) - 0.5).abs() < 1e-3
    diff = (q.to(torch.float32) - expected).abs()
    bad = (diff > 0) & ~near_tie | (diff > 1)
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(
            f"{name} is wrong in {int(bad.sum())} of {q.numel()} entries; e.g. x = {x.flatten()[i].item():.6g} "
            f"with your scale and zero_point should give {int(expected.flatten()[i])}, got {int(q.flatten()[i])}. "
            f"Check the order round -> add zero_point -> clamp to [{qmin}, {qmax}]")


def _rand(shape, seed, scale=3.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale + shift


def _torch_ref(x, symmetric, axis=None):
    """(q, scale, zero_point) from the formulas + torch's quantize_per_tensor/per_channel (8 bits)."""
    dims = [d for d in range(x.dim()) if d != axis] if axis is not None else list(range(x.dim()))
    if symmetric:
        scale = x.abs().amax(dim=dims) / 127
        zp = torch.zeros_like(scale, dtype=torch.int64)
    else:
        lo = x.amin(dim=dims).clamp(max=0)
        hi = x.amax(dim=dims).clamp(min=0)
        scale = (hi - lo) / 255
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    if not symmetric:
        zp = torch.clamp(torch.round(0 - lo / scale), 0, 255).to(torch.int64)
    dtype = torch.qint8 if symmetric else torch.quint8
    if axis is None:
        q = torch.quantize_per_tensor(x, float(scale), int(zp), dtype).int_repr().to(torch.int32)
    else:
        q = torch.quantize_per_channel(x, scale.double(), zp, axis, dtype).int_repr().to(torch.int32)
    return q, scale, zp


@pytest.mark.points(2)
def test_symmetric_hand_worked(impl):
    x = torch.tensor([-7.9375, 0.03125, 0.09375, 1.0, 3.0])  # max|x| = 127 * 0.0625
    q, scale, zp = _quantize(impl, x, num_bits=8, symmetric=True)
    assert_close(scale, torch.tensor(0.0625), "scale", atol=0, rtol=1e-7,
                 hint="symmetric 8-bit: scale = max|x| / 127 (the range is -127..127, not -128..127)")
    assert_equal_tensor(zp, torch.tensor(0, dtype=torch.int32), "zero_point", hint="symmetric means zero_point = 0")
    assert_equal_tensor(q, torch.tensor([-127, 0, 2, 16, 48], dtype=torch.int32), "q",
                        hint="x / scale = [-127, 0.5, 1.5, 16, 48]; torch.round rounds halves to even")


@pytest.mark.points(2)
def test_asymmetric_hand_worked(impl):
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    q, scale, zp = _quantize(impl, x, num_bits=8, symmetric=False)
    assert_close(scale, torch.tensor(4.0 / 255), "scale", atol=0, rtol=1e-6,
                 hint="asymmetric: scale = (max(x,0) - min(x,0)) / (2**b - 1)")
    assert_equal_tensor(zp, torch.tensor(64, dtype=torch.int32), "zero_point",
                        hint="zero_point = round(qmin - min(x,0) / scale) = round(63.75)")
    assert_equal_tensor(q, torch.tensor([0, 64, 128, 255], dtype=torch.int32), "q")


@pytest.mark.points(1)
def test_asymmetric_range_always_contains_zero(impl):
    q, scale, zp = _quantize(impl, torch.tensor([1.0, 2.0, 3.0]), symmetric=False)
    assert_close(scale, torch.tensor(3.0 / 255), "scale for x = [1, 2, 3]", atol=0, rtol=1e-6,
                 hint="the mapped range is [min(x, 0), max(x, 0)] = [0, 3], so 0 stays exactly representable")
    assert_equal_tensor(zp, torch.tensor(0, dtype=torch.int32), "zero_point for x = [1, 2, 3]")
    assert_equal_tensor(q, torch.tensor([85, 170, 255], dtype=torch.int32), "q for x = [1, 2, 3]")
    q, scale, zp = _quantize(impl, torch.tensor([-4.0, -1.0]), symmetric=False)
    assert_equal_tensor(zp, torch.tensor(255, dtype=torch.int32), "zero_point for x = [-4, -1]",
                        hint="the range is [min(x,0), max(x,0)] = [-4, 0]")
    assert_equal_tensor(q, torch.tensor([0, 191], dtype=torch.int32), "q for x = [-4, -1]")


@pytest.mark.points(1)
def test_rounding_is_half_to_even(impl):
    x = torch.tensor([63.5, 0.25, 0.75, 1.25, -0.25, -2.75])  # scale = 0.5: x/scale = 127, 0.5, 1.5, 2.5, -0.5, -5.5
    q, scale, _ = _quantize(impl, x)
    assert_close(scale, torch.tensor(0.5), "scale", atol=0, rtol=1e-7)
    assert_equal_tensor(q, torch.tensor([127, 0, 2, 2, 0, -6], dtype=torch.int32), "q",
                        hint="use torch.round (halves go to the even neighbour: 0.5 -> 0, 2.5 -> 2, -5.5 -> -6), "
                             "not floor(v + 0.5) and not truncation")


@pytest.mark.points(1)
def test_clamps_to_the_integer_range(impl):
    # scale = 1, zero_point = round(63.5) = 64, and 191.5 rounds to 192: 192 + 64 = 256 must clamp to 255
    q, scale, zp = _quantize(impl, torch.tensor([-63.5, 0.0, 191.5]), symmetric=False)
    assert_equal_tensor(zp, torch.tensor(64, dtype=torch.int32), "zero_point")
    assert_equal_tensor(q, torch.tensor([0, 64, 255], dtype=torch.int32), "q",
                        hint="after adding zero_point, clamp to [qmin, qmax]")


@pytest.mark.points(1)
def test_zero_range_gives_scale_one(impl):
    for symmetric in (True, False):
        q, scale, zp = _quantize(impl, torch.zeros(3, 4), symmetric=symmetric)
        assert_close(scale, torch.tensor(1.0), f"scale of an all-zero tensor (symmetric={symmetric})", atol=0,
                     hint="a zero range must give scale 1 (not 0, which would divide by zero)")
        assert_equal_tensor(zp, torch.tensor(0, dtype=torch.int32), f"zero_point (symmetric={symmetric})")
        assert_equal_tensor(q, torch.zeros(3, 4, dtype=torch.int32), f"q (symmetric={symmetric})")
    x = torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]])
    q, scale, zp = _quantize(impl, x, axis=0)
    scale = as_tensor(scale, "per-channel scale", shape=(3,))
    assert_close(scale[1], torch.tensor(1.0), "scale of the all-zero channel 1", atol=0)
    assert_close(scale, torch.tensor([2 / 127, 1.0, 0.5 / 127]), "per-channel scale", rtol=1e-6)
    assert_equal_tensor(q[1], torch.zeros(2, dtype=torch.int32), "q of the all-zero channel")


@pytest.mark.points(1)
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_per_tensor_matches_torch_quantize_per_tensor(impl, symmetric):
    for seed, shape, shift in [(0, (64,), 0.0), (1, (7, 9), 1.5), (2, (2, 3, 5), -2.0), (3, (1, 1), 0.3)]:
        x = _rand(shape, seed, shift=shift)
        q, scale, zp = _quantize(impl, x, symmetric=symmetric)
        q_ref, s_ref, z_ref = _torch_ref(x, symmetric)
        assert_close(as_tensor(scale, "scale", shape=()), s_ref, f"scale (x of shape {list(shape)})", atol=0,
                     rtol=2e-6)
        zp = as_tensor(zp, "zero_point", shape=())
        assert abs(int(zp) - int(z_ref)) == 0, f"zero_point should be {int(z_ref)}, got {int(zp)}"
        _check_q(q, x, as_tensor(scale, "scale"), zp, -127 if symmetric else 0, 127 if symmetric else 255)
        agree = (as_tensor(q, "q").to(torch.int32) == q_ref).float().mean().item()
        assert agree > 0.995, f"q agrees with torch.quantize_per_tensor on only {agree:.1%} of the entries"


@pytest.mark.points(1)
def test_other_bit_widths(impl):
    x = _rand((6, 10), 4)
    for bits in (2, 4, 12, 16):
        for symmetric in (True, False):
            qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
            q, scale, zp = _quantize(impl, x, num_bits=bits, symmetric=symmetric)
            if symmetric:
                s_ref = x.abs().max() / qmax
            else:
                s_ref = (x.max().clamp(min=0) - x.min().clamp(max=0)) / (qmax - qmin)
            assert_close(scale, s_ref, f"scale for num_bits={bits}, symmetric={symmetric}", atol=0, rtol=2e-6,
                         hint="qmax depends on num_bits: 2**(b-1) - 1 (symmetric) or 2**b - 1 (asymmetric)")
            _check_q(q, x, as_tensor(scale, "scale"), as_tensor(zp, "zero_point"), qmin, qmax,
                     name=f"q for num_bits={bits}, symmetric={symmetric}")
            q = as_tensor(q, "q")
            assert int(q.min()) >= qmin and int(q.max()) <= qmax, \
                f"q must stay in [{qmin}, {qmax}] for num_bits={bits}"


@pytest.mark.points(2)
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_per_channel_matches_torch_quantize_per_channel(impl, symmetric):
    x = _rand((8, 5), 5) * torch.linspace(0.1, 4.0, 8)[:, None]  # very different channel ranges
    q, scale, zp = _quantize(impl, x, symmetric=symmetric, axis=0)
    q_ref, s_ref, z_ref = _torch_ref(x, symmetric, axis=0)
    scale = as_tensor(scale, "per-channel scale")
    assert tuple(scale.shape) == (8,), (
        f"per-channel scale must have one entry per channel along axis=0 (shape [8]), got shape {list(scale.shape)}")
    assert_close(scale, s_ref, "per-channel scale", atol=0, rtol=2e-6,
                 hint="take max/min over all dimensions except axis")
    zp = as_tensor(zp, "per-channel zero_point", shape=(8,))
    assert_equal_tensor(zp, z_ref.to(torch.int32), "per-channel zero_point")
    _check_q(q, x, scale, zp, -127 if symmetric else 0, 127 if symmetric else 255, axis=0)
    agree = (as_tensor(q, "q").to(torch.int32) == q_ref).float().mean().item()
    assert agree > 0.99, f"q agrees with torch.quantize_per_channel on only {agree:.1%} of the entries"


@pytest.mark.points(2)
def test_per_channel_on_other_axes(impl):
    x = _rand((3, 6, 4), 6) * torch.arange(1, 7, dtype=torch.float32)[None, :, None]
    for axis in (1, 2):
        for symmetric in (True, False):
            q, scale, zp = _quantize(impl, x, symmetric=symmetric, axis=axis)
            scale = as_tensor(scale, "per-channel scale")
            n = x.shape[axis]
            assert tuple(scale.shape) == (n,), (
                f"per-channel scale must have one entry per channel along axis={axis} (shape [{n}]), "
                f"got shape {list(scale.shape)}")
            q_ref, s_ref, z_ref = _torch_ref(x, symmetric, axis=axis)
            assert_close(scale, s_ref, f"per-channel scale (axis={axis}, symmetric={symmetric})", atol=0, rtol=2e-6,
                         hint="the statistics of channel c are taken over every other dimension")
            zp = as_tensor(zp, "zero_point", shape=(n,))
            _check_q(q, x, scale, zp, -127 if symmetric else 0, 127 if symmetric else 255, axis=axis,
                     name=f"q (axis={axis}, symmetric={symmetric})")


@pytest.mark.points(1)
def test_output_dtypes_and_shapes(impl):
    for dtype in (torch.float64, torch.float16, torch.float32):
        x = _rand((4, 3), 7).to(dtype)
        for symmetric in (True, False):
            q, scale, zp = _quantize(impl, x, symmetric=symmetric)
            as_tensor(q, f"q for a {dtype} input", shape=(4, 3), dtype=torch.int32)
            as_tensor(scale, f"scale for a {dtype} input", shape=(), dtype=torch.float32)
            as_tensor(zp, f"zero_point for a {dtype} input", shape=(), dtype=torch.int32)
            q, scale, zp = _quantize(impl, x, symmetric=symmetric, axis=1)
            as_tensor(q, "per-channel q", shape=(4, 3), dtype=torch.int32)
            as_tensor(scale, "per-channel scale", shape=(3,), dtype=torch.float32)
            as_tensor(zp, "per-channel zero_point", shape=(3,), dtype=torch.int32)


@pytest.mark.points(1)
def test_dequantize_per_tensor(impl):
    q = torch.tensor([[0, 5, 255], [64, 63, 1]], dtype=torch.int32)
    out = impl.dequantize_affine(q, torch.tensor(0.25), torch.tensor(64, dtype=torch.int32))
    expected = (q.float() - 64) * 0.25
    out = as_tensor(out, "dequantize_affine output", dtype=torch.float32)
    assert_close(out, expected, "dequantize_affine(q, 0.25, 64)", atol=0, hint="(q - zero_point) * scale")


@pytest.mark.points(1)
def test_dequantize_per_channel(impl):
    g = torch.Generator().manual_seed(8)
    q = torch.randint(0, 256, (2, 3, 4), generator=g, dtype=torch.int32)
    scale = torch.tensor([0.5, 0.125, 2.0])
    zp = torch.tensor([0, 128, 255], dtype=torch.int32)
    out = impl.dequantize_affine(q, scale, zp, axis=1)
    expected = (q.float() - zp.float()[None, :, None]) * scale[None, :, None]
    out = as_tensor(out, "per-channel dequantize_affine output", dtype=torch.float32)
    assert_close(out, expected, "dequantize_affine(..., axis=1)", atol=0,
                 hint="scale[c] and zero_point[c] apply to the entries with index c along axis")


@pytest.mark.points(1)
def test_round_trip_error_is_at_most_half_a_step(impl):
    x = _rand((16, 12), 9)
    for symmetric, axis in [(True, None), (False, None), (True, 0), (False, 1)]:
        q, scale, zp = _quantize(impl, x, symmetric=symmetric, axis=axis)
        x_hat = as_tensor(impl.dequantize_affine(q, scale, zp, axis=axis), "dequantized x", shape=x.shape)
        step = as_tensor(scale, "scale").to(torch.float32)
        if axis is not None:
            shape = [1, 1]
            shape[axis] = -1
            step = step.reshape(shape)
        err = (x_hat - x).abs() / step
        assert float(err.max()) <= 0.5 + 1e-3, (
            f"dequantize(quantize(x)) should be within scale/2 of x (symmetric={symmetric}, axis={axis}); "
            f"the worst error is {float(err.max()):.3f} steps")


@pytest.mark.points(1)
def test_bad_input_is_rejected(impl):
    x = _rand((3, 4), 10)
    _quantize(impl, x, axis=1)  # valid call first
    expect_error(impl.quantize_affine, x, axis=2, errors=("IndexError", "ValueError"),
                 what="quantize_affine(x, axis=2) for a 2-D x")
    bad = x.clone()
    bad[1, 2] = float("nan")
    expect_error(impl.quantize_affine, bad, errors=("ValueError",), what="quantize_affine(x containing NaN)")
    bad[1, 2] = float("inf")
    expect_error(impl.quantize_affine, bad, errors=("ValueError",), what="quantize_affine(x containing inf)")


@pytest.mark.points(1)
def test_num_bits_out_of_range_is_rejected(impl):
    x = _rand((3, 4), 12)
    for bits in (2, 16):  # valid calls first
        _quantize(impl, x, num_bits=bits)
    for bits in (1, 0, 17, 32):
        for symmetric in (True, False):
            expect_error(impl.quantize_affine, x, num_bits=bits, symmetric=symmetric, errors=("ValueError",),
                         what=f"quantize_affine(x, num_bits={bits}, symmetric={symmetric}) (num_bits must be 2..16)")


@pytest.mark.points(1)
def test_empty_input_is_rejected(impl):
    _quantize(impl, _rand((3, 4), 13), axis=0)  # valid call first
    expect_error(impl.quantize_affine, torch.zeros(0), errors=("ValueError",),
                 what="quantize_affine of an empty tensor (it has no range to map)")
    expect_error(impl.quantize_affine, torch.zeros(3, 0), axis=0, errors=("ValueError",),
                 what="quantize_affine(x of shape [3, 0], axis=0) (every channel is empty)")


@pytest.mark.points(1)
def test_dequantize_rejects_mismatched_parameters(impl):
    q = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(14), dtype=torch.int32)
    impl.dequantize_affine(q, torch.tensor([0.5, 0.25, 1.0]), torch.tensor([0, 1, 2], dtype=torch.int32), axis=1)
    expect_error(impl.dequantize_affine, q, torch.tensor([0.5, 0.25, 1.0]), torch.tensor([0, 1, 2], dtype=torch.int32),
                 axis=0, what="dequantize_affine with 3 scales for the 4 channels along axis 0")
    expect_error(impl.dequantize_affine, q, torch.tensor([0.5, 0.25, 1.0]), torch.tensor(0, dtype=torch.int32),
                 what="per-tensor dequantize_affine (axis=None) with 3 scales")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    x = _rand((5, 6), 11, shift=0.7)
    for symmetric, axis in [(True, None), (False, None), (True, 0), (False, 1)]:
        q, scale, zp = _quantize(impl, x.clone(), symmetric=symmetric, axis=axis)
        assert_not_mutated(impl, "quantize_affine")
        _, s_ref, _ = _torch_ref(x, symmetric, axis=axis)  # and the results must be right, too
        assert_close(scale, s_ref, "scale", atol=0, rtol=2e-6)
        _check_q(q, x, as_tensor(scale, "scale"), as_tensor(zp, "zero_point"), -127 if symmetric else 0,
                 127 if symmetric else 255, axis=axis)
    out = impl.dequantize_affine(q, scale, zp, axis=1)
    assert_not_mutated(impl, "dequantize_affine")
    assert_close(out, (q.float() - zp.float()) * scale, "dequantized values", atol=0)
