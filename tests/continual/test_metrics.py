"""Accuracy-matrix metrics: the definitions of practice task 3.4."""

import math

import numpy as np
import pytest
import torch

from course_lib.continual.metrics import average_accuracy_curve, continual_metrics, summarize

ACC = np.array([
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.6, 0.9, 0.95],
])


def test_hand_worked_matrix():
    m = continual_metrics(ACC, random_baseline=[0.5, 0.2, 0.1])
    assert m["average_accuracy"] == pytest.approx((0.6 + 0.9 + 0.95) / 3)
    # bwt: ((0.6 - 0.9) + (0.9 - 0.8)) / 2
    assert m["bwt"] == pytest.approx(-0.1)
    # forgetting: task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.8) - 0.9 = -0.1
    assert m["forgetting"] == pytest.approx(0.1)
    # fwt: ((0.1 - 0.2) + (0.3 - 0.1)) / 2
    assert m["fwt"] == pytest.approx(0.05)


def test_forgetting_uses_the_best_earlier_row_not_only_the_diagonal():
    acc = np.array([[0.5, 0, 0], [0.9, 0.8, 0], [0.4, 0.8, 0.7]])
    m = continual_metrics(acc)
    assert m["forgetting"] == pytest.approx(((0.9 - 0.4) + (0.8 - 0.8)) / 2)
    assert m["bwt"] == pytest.approx(((0.4 - 0.5) + (0.8 - 0.8)) / 2)


def test_single_task_and_no_baseline():
    m = continual_metrics([[0.7]])
    assert m == {"average_accuracy": pytest.approx(0.7), "bwt": 0.0, "forgetting": 0.0, "fwt": m["fwt"]}
    assert math.isnan(m["fwt"])
    assert math.isnan(continual_metrics(ACC)["fwt"])


def test_accepts_tensors_and_returns_python_floats():
    m = continual_metrics(torch.tensor(ACC, dtype=torch.float32), torch.tensor([0.5, 0.2, 0.1]))
    assert all(type(v) is float for v in m.values())
    assert m["bwt"] == pytest.approx(-0.1, abs=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3), np.array([[0.5, np.nan], [0.1, 0.2]])])
def test_bad_matrices_are_rejected(bad):
    with pytest.raises(ValueError):
        continual_metrics(bad)


def test_bad_baseline_length():
    with pytest.raises(ValueError, match="one entry per task"):
        continual_metrics(ACC, random_baseline=[0.1, 0.2])


def test_average_accuracy_curve_and_summarize():
    np.testing.assert_allclose(average_accuracy_curve(ACC), [0.9, 0.75, (0.6 + 0.9 + 0.95) / 3])
    assert summarize([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert summarize([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])
