import math

import pytest
import torch
import torch.nn as nn

from course_lib.compression.quantization import (
    UnsupportedModuleError,
    count_quantized_layers,
    dequantize_affine,
    fake_quantize,
    fake_quantize_weights,
    model_size_mb,
    quant_range,
    quantization_error,
    quantize_affine,
    quantize_dynamic_int8,
    weight_error_table,
)


def test_hand_worked_symmetric_and_asymmetric():
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    q, s, z = quantize_affine(x, num_bits=8, symmetric=True)
    assert s.item() == pytest.approx(2.0 / 127) and z.item() == 0
    assert q.tolist() == [-64, 0, 32, 127]  # -63.5 -> -64 and 31.75 -> 32 (half to even / nearest)
    q, s, z = quantize_affine(x, num_bits=8, symmetric=False)
    assert s.item() == pytest.approx(3.0 / 255)
    assert z.item() == 85 and q.tolist() == [0, 85, 127, 255]  # 0.5 / s = 42.5 -> 42 (half to even)
    assert q.dtype == torch.int32 and s.dtype == torch.float32 and z.dtype == torch.int32


def test_round_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, 127.0])  # scale = 1 exactly
    q, s, _ = quantize_affine(x, 8, True)
    assert s.item() == 1.0 and q.tolist() == [0, 2, 2, 0, 127]


@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_torch_quantize_per_tensor(symmetric):
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1)) * 3
    q, s, z = quantize_affine(x, 8, symmetric)
    dtype = torch.qint8 if symmetric else torch.quint8
    ref = torch.quantize_per_tensor(x, s.item(), int(z), dtype)
    assert torch.equal(q, ref.int_repr().int())
    torch.testing.assert_close(dequantize_affine(q, s, z), ref.dequantize())


@pytest.mark.parametrize("axis", [0, 1])
def test_matches_torch_quantize_per_channel(axis):
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.1, 5, 16)[:, None]
    q, s, z = quantize_affine(x, 8, True, axis=axis)
    assert s.shape == (x.shape[axis],) and z.shape == (x.shape[axis],)
    ref = torch.quantize_per_channel(x, s.double(), z.long(), axis, torch.qint8)
    assert torch.equal(q, ref.int_repr().int())
    torch.testing.assert_close(dequantize_affine(q, s, z, axis=axis), ref.dequantize())


def test_zero_range_gives_scale_one():
    q, s, z = quantize_affine(torch.zeros(3, 4), 8, False)
    assert s.item() == 1.0 and z.item() == 0 and q.abs().sum() == 0
    x = torch.stack([torch.zeros(4), torch.ones(4)])
    _, s, _ = quantize_affine(x, 8, True, axis=0)
    assert s[0].item() == 1.0 and s[1].item() == pytest.approx(1 / 127)


def test_error_is_at_most_half_a_step_and_shrinks_6db_per_bit():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(3))
    for bits in (4, 8):
        q, s, z = quantize_affine(x, bits, True)
        assert (dequantize_affine(q, s, z) - x).abs().max() <= s / 2 + 1e-6
    gains = [quantization_error(x, b + 1).sqnr_db - quantization_error(x, b).sqnr_db for b in range(4, 10)]
    assert all(5.0 < g < 7.0 for g in gains), gains


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(4)) * torch.logspace(-2, 0, 32)[:, None]
    assert quantization_error(w, 8, axis=0).sqnr_db > quantization_error(w, 8).sqnr_db + 6
    lin = nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(w)
    (row,) = weight_error_table(nn.Sequential(lin), num_bits=4)
    assert row["gain_db"] > 6 and row["shape"] == (32, 64)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"x": torch.tensor([1.0, float("nan")])}, ValueError),
        ({"x": torch.tensor([])}, ValueError),
        ({"x": torch.ones(3), "num_bits": 1}, ValueError),
        ({"x": torch.ones(3), "num_bits": 17}, ValueError),
        ({"x": torch.ones(3), "num_bits": 8.0}, ValueError),
        ({"x": torch.ones(3, 3), "axis": 2}, IndexError),
        ({"x": torch.ones(3, dtype=torch.int32)}, TypeError),
    ],
)
def test_bad_input_raises(kwargs, err):
    with pytest.raises(err):
        quantize_affine(**kwargs)


def test_dequantize_checks_its_inputs():
    with pytest.raises(TypeError):
        dequantize_affine(torch.ones(3), torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(ValueError, match="per-channel"):
        dequantize_affine(torch.ones(3, 2, dtype=torch.int32), torch.ones(2), torch.zeros(2), axis=0)
    with pytest.raises(ValueError, match="single scale"):
        dequantize_affine(torch.ones(3, dtype=torch.int32), torch.ones(3), torch.zeros(3))


def test_fake_quantize_weights_copies_and_rounds():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    fq = fake_quantize_weights(model, 2, per_channel=True)
    for m in fq:
        if isinstance(m, nn.Linear):
            assert all(len(torch.unique(r)) <= 3 for r in m.weight)  # symmetric 2-bit grid: -1, 0, 1
    assert len(torch.unique(model[0].weight)) > 3, "the original must be untouched"
    with pytest.raises(ValueError):
        fake_quantize_weights(nn.Sequential(nn.ReLU()), 8)
    assert quant_range(8, True) == (-127, 127) and quant_range(4, False) == (0, 15)
    assert torch.equal(fake_quantize(torch.tensor([0.0, 1.0]), 8), torch.tensor([0.0, 1.0]))


def test_dynamic_int8_quantizes_attention_and_keeps_accuracy(tiny_clip, images):
    model, tok = tiny_clip
    q = quantize_dynamic_int8(model)
    counts = count_quantized_layers(q)
    # 4 vision + 2 text blocks x (in_proj, out_proj, c_fc, c_proj) = 24 linears
    assert counts.get("Linear", 0) == 24
    assert model_size_mb(q) < 0.5 * model_size_mb(model)
    tokens = tok(["a red circle", "a blue square"])
    with torch.no_grad():
        cos_img = torch.cosine_similarity(q.encode_image(images), model.encode_image(images)).min()
        cos_txt = torch.cosine_similarity(q.encode_text(tokens), model.encode_text(tokens)).min()
    assert cos_img > 0.99 and cos_txt > 0.99
    # without unfusing, the attention projections stay float
    assert count_quantized_layers(quantize_dynamic_int8(model.visual, unfuse=False)).get("Linear", 0) == 8


def test_dynamic_int8_refuses_unsupported_modules(tiny_clip):
    model, _ = tiny_clip
    with pytest.raises(UnsupportedModuleError, match="Conv2d"):
        quantize_dynamic_int8(model.visual, module_types=(nn.Conv2d,))
    with pytest.raises(UnsupportedModuleError, match="nothing would be quantized"):
        quantize_dynamic_int8(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ValueError):
        quantize_dynamic_int8(nn.Linear(2, 2), dtype=torch.int8)


def test_model_size_counts_bytes():
    assert model_size_mb(nn.Linear(1000, 1000, bias=False)) == pytest.approx(4.0, rel=0.01)
    assert math.isfinite(model_size_mb(nn.Sequential()))
