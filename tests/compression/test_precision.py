import pytest
import torch
import torch.nn as nn

from course_lib.compression.precision import (
    amp_train_step,
    autocast,
    autocast_dtype,
    half_copy,
    make_grad_scaler,
    underflow_fraction,
)
from course_lib.compression.quantization import model_size_mb


def test_autocast_choices():
    assert autocast_dtype("cpu") == torch.bfloat16
    assert autocast_dtype("cuda") == torch.float16
    with pytest.raises(ValueError, match="bfloat16"):
        autocast("cpu", torch.float16)
    with pytest.raises(ValueError):
        autocast("cpu", torch.float32)
    lin = nn.Linear(4, 4)
    with autocast("cpu"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16


def test_bf16_training_step_on_cpu_learns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = make_grad_scaler("cpu")
    assert not scaler.is_enabled()
    losses = [amp_train_step(model, lambda m: nn.functional.mse_loss(m(x).float(), y), opt, scaler, "cpu")["loss"] for _ in range(30)]
    assert losses[-1] < losses[0]
    step = amp_train_step(model, lambda m: nn.functional.mse_loss(m(x).float(), y), opt, scaler, "cpu", max_grad_norm=1.0)
    assert step["scale"] == 1.0 and step["skipped"] is False
    with pytest.raises(ValueError, match="scalar"):
        amp_train_step(model, lambda m: m(x), opt, scaler, "cpu")


def test_fp16_underflows_small_gradients_and_bf16_does_not():
    grads = torch.full((1000,), 1e-8)
    assert underflow_fraction(grads, torch.float16) == 1.0
    assert underflow_fraction(grads, torch.bfloat16) == 0.0
    assert underflow_fraction(grads * 2**16, torch.float16) == 0.0  # what loss scaling buys
    with pytest.raises(ValueError):
        underflow_fraction(torch.zeros(3), torch.float16)


def test_half_copy_halves_the_checkpoint():
    model = nn.Linear(512, 512)
    half = half_copy(model, torch.bfloat16)
    assert half.weight.dtype == torch.bfloat16 and model.weight.dtype == torch.float32
    assert model_size_mb(half) == pytest.approx(model_size_mb(model) / 2, rel=0.02)
    with pytest.raises(ValueError):
        half_copy(model, torch.int8)
