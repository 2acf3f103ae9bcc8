"""Graded tests of task 3.4: continual_metrics.

References: accuracy matrices worked by hand (chosen so that each metric's typical
off-by-one gives a different number) and an independent loop-based implementation of the
formulas for random matrices.

Tolerances: every metric is compared with the reference (Python floats, i.e. float64) to
within 1e-6 absolute. The metrics are means and differences of at most T + 1 numbers in
[0, 1], a perfectly conditioned problem, so the contract (which returns Python floats and
does not fix the precision of the work) is met by float64 and by float32 arithmetic alike:
float32 is off by at most a few units of 6e-8. float16 or bfloat16 arithmetic (steps of
5e-4 and 4e-3 near 1) fails. Accuracies are measured on finite test sets, so nothing
below 1e-6 carries meaning anyway.
"""

import math
import random

import pytest
import torch

from course_lib.grading.testing import as_float, assert_not_mutated, expect_error

TASK = "ch3_continual/task4_metrics"
TOL = 1e-6  # see "Tolerances" above
KEYS = ("average_accuracy", "bwt", "forgetting", "fwt")


def _reference(acc, baseline=None):
    T = len(acc)
    out = {"average_accuracy": sum(acc[T - 1]) / T, "bwt": 0.0, "forgetting": 0.0, "fwt": math.nan}
    if T > 1:
        out["bwt"] = sum(acc[T - 1][j] - acc[j][j] for j in range(T - 1)) / (T - 1)
        out["forgetting"] = sum(max(acc[l][j] for l in range(j, T - 1)) - acc[T - 1][j] for j in range(T - 1)) / (T - 1)
        if baseline is not None:
            out["fwt"] = sum(acc[j - 1][j] - baseline[j] for j in range(1, T)) / (T - 1)
    return out


HINTS = {
    "average_accuracy": "the mean of the LAST row: accuracy on every task after training on all of them",
    "bwt": "mean over the first T-1 tasks of (final accuracy - accuracy right after learning that task)",
    "forgetting": "for each of the first T-1 tasks: the best accuracy over rows j..T-2, minus the final accuracy",
    "fwt": "mean over tasks 1..T-1 of (accuracy on task j BEFORE training on it, acc[j-1, j], - its baseline)",
}


def _check(impl, acc, baseline=None, what="", keys=KEYS, dtype=torch.float64):
    args = (torch.tensor(acc, dtype=dtype),) + (() if baseline is None else (torch.tensor(baseline, dtype=dtype),))
    result = impl.continual_metrics(*args)
    assert isinstance(result, dict), f"continual_metrics should return a dict, got {type(result).__name__}"
    acc = args[0].double().tolist()  # the values the function received (float32 inputs are rounded)
    baseline = None if baseline is None else args[1].double().tolist()
    expected = _reference(acc, baseline)
    for key in keys:
        assert key in result, f"the result should have the key {key!r}; it has {sorted(map(str, result))}"
        value = result[key]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), \
            f"{key} should be a number, got {type(value).__name__}"
        if math.isnan(expected[key]):
            assert math.isnan(value), f"{what}: {key} should be nan ({'no baseline' if baseline is None else 'T = 1'}), " \
                                      f"got {value}"
        else:
            error = abs(value - expected[key])
            assert error <= TOL, (
                f"{what}: {key} should be {expected[key]:.6g}, got {value:.6g} - {HINTS[key]}"
                + (f" (off by only {error:.2g}: float16/bfloat16 arithmetic gives errors this size; compute in "
                   "float32 or float64)" if error < 5e-3 else ""))


@pytest.mark.points(3)
def test_hand_worked_three_tasks(impl):
    acc = [[0.6, 0.1, 0.2],
           [0.8, 0.9, 0.3],
           [0.5, 0.7, 0.95]]
    # average 0.71667, bwt -0.15, forgetting (0.8-0.5 + 0.9-0.7)/2 = 0.25, fwt (0.1-0.15 + 0.3-0.2)/2 = 0.025
    _check(impl, acc, [0.1, 0.15, 0.2], "the 3-task example")


@pytest.mark.points(1)
def test_forgetting_window(impl):
    _check(impl, [[0.5, 0.2], [0.8, 0.9]], [0.1, 0.1], "a run with positive backward transfer",
           keys=("bwt", "forgetting"))
    _check(impl, [[0.4, 0.9, 0.1], [0.6, 0.5, 0.2], [0.5, 0.3, 0.7]], None,
           "a run with a high zero-shot accuracy above the diagonal", keys=("forgetting",))


@pytest.mark.points(1)
def test_single_task(impl):
    _check(impl, [[0.7]], None, "T = 1")


@pytest.mark.points(1)
def test_fwt_is_nan_without_a_baseline(impl):
    _check(impl, [[0.9, 0.3], [0.6, 0.8]], None, "no random_baseline")


@pytest.mark.points(2)
def test_random_matrices(impl):
    rng = random.Random(2024)
    for T in (2, 3, 4, 6):
        for _ in range(3):
            acc = [[round(rng.random(), 3) for _ in range(T)] for _ in range(T)]
            baseline = [round(rng.random() * 0.3, 3) for _ in range(T)]
            _check(impl, acc, baseline, f"a random {T}x{T} matrix")


@pytest.mark.points(1)
def test_float32_accuracies(impl):
    rng = random.Random(32)
    for T in (2, 5):
        acc = [[rng.random() for _ in range(T)] for _ in range(T)]
        baseline = [rng.random() * 0.3 for _ in range(T)]
        _check(impl, acc, baseline, f"a random {T}x{T} float32 matrix", dtype=torch.float32)


@pytest.mark.points(1)
def test_bad_input_is_rejected(impl):
    good = torch.tensor([[0.5, 0.1], [0.4, 0.6]], dtype=torch.float64)
    impl.continual_metrics(good)  # valid call first
    expect_error(impl.continual_metrics, torch.zeros(2, 3, dtype=torch.float64), what="a 2 x 3 accuracy matrix")
    expect_error(impl.continual_metrics, torch.zeros(0, 0, dtype=torch.float64),
                 what="an empty (0 x 0) accuracy matrix (there is no last row to average)")
    expect_error(impl.continual_metrics, good, torch.zeros(3, dtype=torch.float64),
                 what="a baseline with 3 entries for 2 tasks")
    expect_error(impl.continual_metrics, torch.tensor([[0.5, float("nan")], [0.4, 0.6]], dtype=torch.float64),
                 what="an accuracy matrix containing NaN")


@pytest.mark.points(1)
def test_inputs_are_not_modified(impl):
    acc = [[0.6, 0.1, 0.2], [0.8, 0.9, 0.3], [0.5, 0.7, 0.95]]
    result = impl.continual_metrics(torch.tensor(acc, dtype=torch.float64), torch.tensor([0.1, 0.1, 0.1],
                                                                                          dtype=torch.float64))
    assert_not_mutated(impl, "continual_metrics")
    expected = _reference(acc, [0.1, 0.1, 0.1])
    assert isinstance(result, dict) and all(k in result for k in KEYS), "the result should be a dict with " \
                                                                        f"the keys {KEYS}"
    values = {k: as_float(result[k], k) for k in KEYS}
    assert all(abs(values[k] - expected[k]) <= TOL for k in KEYS), "the metrics are wrong (see the other tests)"
