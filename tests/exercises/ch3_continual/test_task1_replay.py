"""Graded tests of task 3.1: ReservoirBuffer.

Reservoir sampling is random, so any correct method passes (Algorithm R, random keys,
any RNG seeded from ``seed``). The tests check what the contract promises: sizes and
counts, distinct samples of stored items, determinism for a fixed seed, labels staying
with their items, and - statistically - that every item of the stream is kept with
probability capacity / N. Many runs (one per seed) happen inside the worker through a
trusted helper (course_lib.grading.helpers.reservoir_trials) that only reports which items
each run kept.

Tolerances: stored items must come back bit for bit, in their own dtype (a float64 item
that float32 storage would round, an int64 label beyond 2**31). Randomness is checked
with exact binomial acceptance intervals whose false-failure probability is below 1e-6
per test: a correct implementation fails with probability below one in a million.
Samples are the caller's own tensors: writing into them must not change the buffer, and
writing into the tensors given to ``add`` afterwards must not either.
"""

import pytest
import torch

from course_lib.grading.testing import as_tensor, assert_not_mutated, expect_error

TASK = "ch3_continual/task1_replay"

# (capacity, batch sizes): N = sum(batch sizes) items, each kept with probability capacity / N
CONFIGS = [(1, [1, 1, 1]), (2, [4]), (5, [3, 1, 7, 2, 7]), (3, [1, 1])]
RUNS = 2000
FALSE_FAILURE = 1e-6


def _items(n, start=0, width=2):
    ids = torch.arange(start, start + n, dtype=torch.float32)
    x = torch.stack([ids, -ids] + [ids * 0 + k for k in range(width - 2)], dim=1)
    return x, 3 * torch.arange(start, start + n) + 1


def _ids(sample, what):
    assert isinstance(sample, tuple) and len(sample) == 2, f"{what} should return a tuple (x, y)"
    x = as_tensor(sample[0], f"x from {what}")
    y = as_tensor(sample[1], f"y from {what}")
    assert x.dim() == 2 and x.shape[1] == 2 and y.shape == (x.shape[0],), (
        f"{what} should return x [k, 2] and y [k] for items of shape [2] with scalar labels; got "
        f"{list(x.shape)} and {list(y.shape)}")
    ids = x[:, 0].round().long()
    assert torch.equal(x[:, 1], -x[:, 0]) and torch.equal(y.long(), 3 * ids + 1), (
        f"{what}: an x row came back with another row's label (or a modified row); keep x[i] and y[i] together")
    return ids.tolist()


def _num_seen(buf):
    value = buf.num_seen
    return value() if callable(value) else value


@pytest.mark.points(1)
def test_len_and_num_seen(impl):
    buf = impl.ReservoirBuffer(5, seed=0)
    assert len(buf) == 0 and _num_seen(buf) == 0, "a new buffer should be empty: len 0, num_seen 0"
    buf.add(*_items(3))
    assert (len(buf), _num_seen(buf)) == (3, 3), f"after 3 items: expected len 3, num_seen 3; got {len(buf)}, " \
                                                 f"{_num_seen(buf)}"
    buf.add(*_items(4, start=3))
    assert (len(buf), _num_seen(buf)) == (5, 7), (
        f"after 7 items with capacity 5: expected len 5 and num_seen 7 (items, not batches); got {len(buf)}, "
        f"{_num_seen(buf)}")
    buf.add(*_items(0, start=7))
    assert (len(buf), _num_seen(buf)) == (5, 7), "adding an empty batch changes nothing"


@pytest.mark.points(1)
def test_keeps_everything_until_full(impl):
    buf = impl.ReservoirBuffer(5, seed=1)
    buf.add(*_items(3))
    buf.add(*_items(2, start=3))
    ids = _ids(buf.sample(5), "sample(5)")
    assert sorted(ids) == [0, 1, 2, 3, 4], f"while not full the buffer keeps every item: expected 0..4, got {ids}"
    ids = _ids(buf.sample(100), "sample(100)")
    assert sorted(ids) == [0, 1, 2, 3, 4], f"sample(n > len) returns all {5} stored items, got {ids}"


@pytest.mark.points(2)
def test_samples_are_distinct_stored_items(impl):
    buf = impl.ReservoirBuffer(8, seed=2)
    for start in range(0, 30, 6):
        buf.add(*_items(6, start=start))
    stored = set(_ids(buf.sample(8), "sample(8)"))
    assert len(stored) == 8, f"sample(capacity) of a full buffer should return its 8 distinct items, got {sorted(stored)}"
    for n in (1, 5, 8):
        for _ in range(5):
            ids = _ids(buf.sample(n), f"sample({n})")
            assert len(ids) == n, f"sample({n}) should return {n} items, got {len(ids)}"
            assert len(set(ids)) == n, f"sample({n}) returned duplicates {ids}: sample without replacement"
            assert set(ids) <= stored, f"sample({n}) returned items {sorted(set(ids) - stored)} that are not stored"
    x, y = buf.sample(0)
    assert as_tensor(x, "x from sample(0)").shape[0] == 0, "sample(0) returns no items"


@pytest.mark.points(1)
def test_same_seed_same_buffer(impl):
    def run(seed):
        buf = impl.ReservoirBuffer(5, seed=seed)
        for start in range(0, 200, 25):
            buf.add(*_items(25, start=start))
        return _ids(buf.sample(5), "sample(5)"), _ids(buf.sample(3), "sample(3)")

    first, second = run(7), run(7)
    assert first == second, ("two buffers with the same seed, fed the same items, should hold and sample the same "
                             "items in the same order; use a generator seeded with `seed`, not the global RNG")
    assert sorted(run(8)[0]) != sorted(first[0]), "different seeds should give different buffers"


@pytest.mark.points(4)
def test_every_item_is_kept_with_probability_capacity_over_n(impl):
    """Each item's count over 2000 seeded runs must lie in its binomial acceptance interval.

    For an item kept with probability p = capacity / N, its count X over R = 2000 runs is
    Binomial(R, p) (runs use seeds 0..R-1, so they are independent for any decent RNG). The
    interval [lo, hi] is exact: P(X < lo) <= a/2 and P(X > hi) <= a/2 with a = 1e-6 / 27
    (27 = the number of items in all configurations); e.g. p = 1/4: [396, 609] around 500,
    p = 1/2: [877, 1123], p = 1/3: [552, 784]. By the union bound a correct implementation
    fails this test with probability below 1e-6. An off-by-one in the replacement draw
    moves the first item's count for capacity 1, N = 3 from 667 to 0.
    """
    from scipy.stats import binom

    n_items = sum(sum(b) for _, b in CONFIGS)
    alpha = FALSE_FAILURE / n_items
    for capacity, batches in CONFIGS:
        n = sum(batches)
        out = impl.helper("reservoir_trials", capacity, batches, list(range(RUNS)))
        assert all(s == min(capacity, n) for s in out["sample_sizes"]), (
            f"sample(capacity) should return min(capacity, N) = {min(capacity, n)} items")
        assert all(out["labels_ok"]), "some sampled x rows came back with the wrong label"
        assert all(v == n for v in out["num_seen"]) and all(v == min(capacity, n) for v in out["lengths"]), \
            f"after {n} items: num_seen should be {n} and len {min(capacity, n)}"
        ids = as_tensor(out["ids"], "kept ids")
        counts = torch.stack([(ids == i).sum() for i in range(n)]).tolist()
        p = min(1.0, capacity / n)
        if p == 1.0:
            assert counts == [RUNS] * n, f"with N={n} <= capacity={capacity} every item must always be kept"
            continue
        lo, hi = binom.ppf(alpha / 2, RUNS, p), binom.isf(alpha / 2, RUNS, p)
        bad = [(i, c) for i, c in enumerate(counts) if not lo <= c <= hi]
        assert not bad, (
            f"capacity {capacity}, batches {batches} (N={n}): every item should be kept in about {RUNS * p:.0f} of "
            f"{RUNS} runs (capacity / N = {p:.3f}); items {[i for i, _ in bad][:6]} were kept {[c for _, c in bad][:6]} "
            f"times (allowed {lo:.0f}..{hi:.0f}). Check the range of the random index for the t-th item "
            "(0-based): it must be uniform on {0, ..., t}, and replace item by item, also inside one batch")


@pytest.mark.points(1)
def test_items_of_any_shape(impl):
    buf = impl.ReservoirBuffer(4, seed=3)
    x = (torch.arange(10 * 3 * 4, dtype=torch.float64).reshape(10, 3, 4) + 1) / 3  # thirds: float32 would round them
    base = 2 ** 40  # int64 labels beyond the range of int32 and of float32's integers
    y = base + torch.arange(10)
    buf.add(x, y)
    xs, ys = buf.sample(4)
    xs = as_tensor(xs, "x from sample(4)", shape=(4, 3, 4))
    ys = as_tensor(ys, "y from sample(4)", shape=(4,))
    assert xs.dtype == torch.float64 and ys.dtype == torch.int64, (
        f"items and labels must keep their dtypes (float64 x, int64 y), got {xs.dtype} and {ys.dtype}: create the "
        "storage with dtype=x.dtype / y.dtype (torch.empty's default is float32)")
    for row, label in zip(xs, ys.tolist()):
        assert 0 <= label - base < 10 and torch.equal(row, x[label - base]), \
            "items must be stored unchanged (bit for bit), with their own label"


@pytest.mark.points(1)
def test_bad_arguments_are_rejected(impl):
    buf = impl.ReservoirBuffer(3, seed=0)  # valid use first
    buf.add(*_items(2))
    expect_error(impl.ReservoirBuffer, 0, what="ReservoirBuffer(capacity=0)")
    expect_error(buf.add, torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), what="add(x with 3 rows, y with 2)")
    expect_error(buf.sample, -1, what="sample(-1)")


@pytest.mark.points(1)
def test_add_does_not_modify_inputs(impl):
    buf = impl.ReservoirBuffer(2, seed=0)
    for start in (0, 5):
        buf.add(*_items(5, start=start))
        assert_not_mutated(impl, "ReservoirBuffer.add")
    ids = _ids(buf.sample(2), "sample(2)")
    assert len(buf) == 2 and _num_seen(buf) == 10 and len(set(ids)) == 2 and set(ids) <= set(range(10)), \
        "after 10 items with capacity 2: len 2, num_seen 10, and sample(2) gives 2 distinct items of the stream"



def _binomial_check(counts, trials, p, alpha, what):
    from scipy.stats import binom

    lo, hi = binom.ppf(alpha / 2, trials, p), binom.isf(alpha / 2, trials, p)
    bad = [(i, c) for i, c in enumerate(counts) if not lo <= c <= hi]
    assert not bad, (
        f"{what}: every stored item should be in about {trials * p:.0f} of {trials} samples; items "
        f"{[i for i, _ in bad][:6]} were in {[c for _, c in bad][:6]} (allowed {lo:.0f}..{hi:.0f}). sample(n) must "
        "choose its n items at random from everything stored (with the buffer's own generator), not the first or the "
        "last n")


@pytest.mark.points(2)
def test_sampling_is_random(impl):
    configs = [(8, 2, 400), (5, 4, 300)]  # (capacity = items stored, n, calls)
    alpha = FALSE_FAILURE / sum(c for c, _, _ in configs)
    for capacity, n, calls in configs:
        out = impl.helper("reservoir_draws", capacity, 5, n, calls)
        assert all(size == n for size in out["sizes"]), f"sample({n}) should return {n} items from a buffer of {capacity}"
        ids = as_tensor(out["ids"], "sampled ids", shape=(calls, n))
        assert all(len(set(row)) == n and set(row) <= set(range(capacity)) for row in ids.tolist()), \
            f"sample({n}) should return {n} distinct stored items"
        counts = [int((ids == i).sum()) for i in range(capacity)]
        _binomial_check(counts, calls, n / capacity, alpha,
                        f"{calls} calls of sample({n}) on a buffer holding {capacity} items")


def _intact(pair, num_items, what):
    """Every row read back is an original item of the stream (x = [i, -i], y = 3 i + 1)."""
    xs, ys = as_tensor(pair[0], f"x ({what})"), as_tensor(pair[1], f"y ({what})")
    if xs.dim() != 2 or xs.shape[1] != 2 or ys.shape != xs.shape[:1]:
        return False
    ids = xs[:, 0].round()
    return bool(torch.equal(ids, xs[:, 0]) and ((ids >= 0) & (ids < num_items)).all() and torch.equal(xs[:, 1], -xs[:, 0])
                and torch.equal(ys.long(), 3 * ids.long() + 1))


@pytest.mark.points(1)
def test_samples_do_not_alias_the_buffer(impl):
    for capacity, num_items, n in [(4, 3, 2), (3, 6, 3)]:
        out = impl.helper("reservoir_aliasing", capacity, num_items, 0, n)
        assert _intact(out["before"], num_items, "sample"), "sample returned rows that were never added (see the other tests)"
        assert _intact(out["after_add"], num_items, "after writing into x"), (
            f"after add(x, y), overwriting the caller's x and y changed what the buffer holds (capacity {capacity}, "
            f"{num_items} items): store copies (x[i].clone(), or copy into your own storage), not views of the "
            "caller's tensors")
        assert _intact(out["after_sample"], num_items, "after writing into a sample"), (
            f"writing into the tensors returned by sample({n}) changed what the buffer holds (capacity {capacity}, "
            f"{num_items} items): sample must return new tensors (index with a tensor of positions, or .clone()), "
            "not views of the storage such as self._x[:n]")
