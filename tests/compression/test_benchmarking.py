import math

import pytest
import torch
import torch.nn as nn

from course_lib.compression.benchmarking import (
    Table,
    amdahl_speedup,
    interleaved_benchmark,
    latency_table,
    linear_time_fraction,
    speedups,
    torch_threads,
)
from course_lib.compression.precision import AutocastModule


def test_interleaved_runs_every_candidate_in_turn():
    order = []
    res = interleaved_benchmark({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert len(res["a"].times) == 3 and res["a"].min <= res["a"].median
    with pytest.raises(ValueError):
        interleaved_benchmark({}, repeats=1)
    with pytest.raises(ValueError):
        interleaved_benchmark({"a": lambda: None}, repeats=0)


def test_speedups_and_latency_table():
    slow = nn.Sequential(*[nn.Linear(64, 64) for _ in range(8)])
    fast = nn.Linear(64, 64)
    table = latency_table({"slow": slow, "fast": fast}, batch_sizes=(1, 32), input_shape=(64,), repeats=5)
    assert set(table) == {"slow", "fast"} and set(table["fast"]) == {1, 32}
    assert table["fast"][32].items == 32
    ratio = speedups({k: v[32] for k, v in table.items()}, baseline="slow")
    assert ratio["slow"] == 1.0 and ratio["fast"] > 1.0
    with pytest.raises(KeyError):
        speedups({k: v[32] for k, v in table.items()}, baseline="nope")
    with pytest.raises(ValueError):
        latency_table({"fast": fast}, batch_sizes=(0,), input_shape=(64,))


def test_linear_time_fraction_and_amdahl():
    model = nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 256))
    share = linear_time_fraction(model, torch.randn(512, 256), repeats=5)
    assert 0.0 < share["fraction"] <= 1.0 and share["linear_ms"] > 0
    with pytest.raises(ValueError, match="no nn.Linear"):
        linear_time_fraction(nn.GELU(), torch.randn(4, 4))
    assert amdahl_speedup(0.5, 2.0) == pytest.approx(4 / 3)
    assert amdahl_speedup(1.0, 3.0) == pytest.approx(3.0)
    assert amdahl_speedup(0.0, 10.0) == 1.0
    with pytest.raises(ValueError):
        amdahl_speedup(1.5, 2.0)


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_table_renders_markdown_and_text():
    t = Table([{"name": "a", "x": 1.23456, "y": float("nan")}, {"name": "b", "x": 1e-6, "flag": True}], digits=2)
    md = t.to_markdown()
    assert md.splitlines()[0] == "| name | x | y | flag |"
    assert "| a | 1.23 | - |  |" in md and "1e-06" in md and "True" in md
    assert "name" in str(t) and t._repr_markdown_() == md
    with pytest.raises(ValueError):
        Table([])
    assert Table([{"v": math.inf}]).to_markdown().endswith("| inf |")


def test_autocast_module_returns_float32():
    module = AutocastModule(nn.Linear(8, 4), "cpu", torch.bfloat16)
    out = module(torch.randn(2, 8))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError):
        AutocastModule(nn.Linear(8, 4), "cpu", torch.float16)
