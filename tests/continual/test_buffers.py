"""Replay memories: reservoir sampling is uniform; class-balanced keeps equal shares."""

import numpy as np
import pytest
import torch

from course_lib.continual.buffers import ClassBalancedBuffer, ReservoirBuffer


def test_reservoir_fills_then_caps_and_counts():
    buf = ReservoirBuffer(10, seed=0)
    buf.add(torch.arange(4).float()[:, None], torch.arange(4))
    assert len(buf) == 4 and buf.num_seen == 4
    buf.add(torch.arange(4, 30).float()[:, None], torch.arange(4, 30))
    assert len(buf) == 10 and buf.num_seen == 30
    x, y = buf.contents()
    assert torch.equal(x[:, 0].long(), y)  # fields stay aligned
    assert len(set(y.tolist())) == 10


def test_reservoir_inclusion_probability_is_capacity_over_n():
    """Each of N = 50 items, added in uneven batches, is kept with probability 10/50."""
    n, cap, trials = 50, 10, 2000
    counts = np.zeros(n)
    for seed in range(trials):
        buf = ReservoirBuffer(cap, seed=seed)
        ids = torch.arange(n)
        for lo, hi in [(0, 3), (3, 25), (25, 26), (26, 50)]:
            buf.add(ids[lo:hi, None].float(), ids[lo:hi])
        counts[buf.contents()[1].numpy()] += 1
    freq = counts / trials
    # binomial sd = sqrt(0.2 * 0.8 / 2000) ~ 0.009: 5 sd bounds per item
    assert np.all(np.abs(freq - cap / n) < 0.045), freq
    assert abs(freq[:10].mean() - freq[-10:].mean()) < 0.03  # early and late items alike


def test_reservoir_sample_is_distinct_and_bounded():
    buf = ReservoirBuffer(20, seed=1)
    buf.add(torch.randn(15, 3), torch.arange(15))
    x, y = buf.sample(100)
    assert len(y) == 15 and len(set(y.tolist())) == 15
    assert buf.sample(0)[0].shape == (0, 3)


def test_reservoir_is_deterministic_per_seed_and_keeps_copies():
    def run(seed):
        b = ReservoirBuffer(5, seed=seed)
        x = torch.arange(40).float()[:, None]
        b.add(x, torch.arange(40))
        x.zero_()  # the buffer holds its own copy
        return b.contents()[0][:, 0].tolist()
    assert run(3) == run(3)
    assert any(v != 0 for v in run(3))


def test_reservoir_state_round_trip():
    a = ReservoirBuffer(8, seed=0)
    a.add(torch.randn(30, 4), torch.arange(30))
    b = ReservoirBuffer(8, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.contents()[1], b.contents()[1]) and b.num_seen == 30
    assert torch.equal(a.sample(3)[1], b.sample(3)[1])  # same generator state


@pytest.mark.parametrize("cap", [0, -1, 2.5, True])
def test_reservoir_bad_capacity(cap):
    with pytest.raises(ValueError, match="capacity"):
        ReservoirBuffer(cap)


def test_reservoir_bad_inputs():
    buf = ReservoirBuffer(4)
    with pytest.raises(ValueError, match="dimension 0"):
        buf.add(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1)
    buf.add(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="does not match"):
        buf.add(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="n must be"):
        buf.sample(-1)


def test_class_balanced_gives_equal_shares_to_a_rare_class():
    buf = ClassBalancedBuffer(30, seed=0)
    buf.add(torch.randn(500, 2), torch.zeros(500, dtype=torch.int64))  # a flood of class 0
    assert buf.class_counts() == {0: 30}
    buf.add(torch.randn(12, 2), torch.ones(12, dtype=torch.int64))
    buf.add(torch.randn(100, 2), torch.full((100,), 2))
    counts = buf.class_counts()
    assert counts == {0: 10, 1: 10, 2: 10}
    reservoir = ReservoirBuffer(30, seed=0)
    reservoir.add(torch.randn(500, 2), torch.zeros(500, dtype=torch.int64))
    reservoir.add(torch.randn(12, 2), torch.ones(12, dtype=torch.int64))
    assert (reservoir.contents()[1] == 1).sum() < 5  # the rare class is crowded out there
    x, y = buf.sample(30)
    assert len(y) == 30


def test_class_balanced_needs_integer_labels():
    with pytest.raises(TypeError, match="int64"):
        ClassBalancedBuffer(4).add(torch.zeros(2, 2), torch.zeros(2))
