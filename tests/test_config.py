import numpy as np
import pytest
import torch

from course_lib import config


def test_profile_from_env(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert config.get_profile() == "full"
    assert config.pick(quick=1, full=2) == 2
    monkeypatch.setenv("COURSE_PROFILE", "QUICK")
    assert config.get_profile() == "quick"
    assert config.pick(quick=1, full=2) == 1


def test_profile_default_follows_device(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    expected = "full" if torch.cuda.is_available() else "quick"
    assert config.get_profile() == expected


def test_unknown_profile_raises(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "medium")
    with pytest.raises(ValueError, match="quick"):
        config.get_profile()
    with pytest.raises(ValueError, match="expected one of"):
        config.get_profile("fast")


def test_device(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert config.get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert config.get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="expected 'cpu'"):
        config.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            config.get_device("cuda")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")


def test_seed_everything_is_reproducible():
    config.seed_everything(123)
    a = (np.random.rand(3), torch.rand(3))
    config.seed_everything(123)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    g = config.seed_everything(5)
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        config.seed_everything(bad)


def test_benchmark_counts_and_stats():
    calls = []
    res = config.benchmark(lambda: calls.append(1), name="noop", warmup=2, repeats=5, items=10)
    assert len(calls) == 7
    assert len(res.times) == 5
    assert res.median >= 0 and res.iqr >= 0 and res.min <= res.median
    assert res.throughput == pytest.approx(10 / res.median)
    assert res.as_row()["name"] == "noop"
    with pytest.raises(ValueError):
        config.benchmark(lambda: None, repeats=0)


def test_benchmark_inference_mode_switch():
    w = torch.ones(2, requires_grad=True)
    grads = []
    config.benchmark(lambda: grads.append((w * 2).requires_grad), warmup=0, repeats=1)
    config.benchmark(lambda: grads.append((w * 2).requires_grad), warmup=0, repeats=1, inference=False)
    assert grads == [False, True]
