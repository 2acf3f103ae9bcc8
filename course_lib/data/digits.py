"""Digits for continual learning: Split-Digits and Permuted-Digits.

The data are scikit-learn's bundled 8x8 handwritten digits (1,797 real images, UCI
"Optical Recognition of Handwritten Digits"), so nothing is downloaded. They stand in
for MNIST in the protocols of van de Ven & Tolias (2019):

* **Split-Digits**: five tasks of two classes, (0, 1), (2, 3), ..., (8, 9), in three
  scenarios:

  - ``"task"`` (task-incremental): the task identity is given at test time; targets are
    the within-task label 0/1 and a model uses one head (or output mask) per task;
  - ``"domain"`` (domain-incremental): no task identity, the output is always "first or
    second digit of its pair", target 0/1;
  - ``"class"`` (class-incremental): no task identity, the model must tell all ten
    digits apart; target = the digit.

* **Permuted-Digits**: every task is all ten digits under a fixed pixel permutation
  (task 0 unpermuted); target = the digit.

Pixels are scaled to [0, 1] and flattened to 64 features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

SCENARIOS: tuple[str, ...] = ("task", "domain", "class")
SPLIT_CLASSES: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
NUM_FEATURES = 64


@dataclass
class ContinualTask:
    """One task of a continual-learning stream.

    Attributes:
        task_id: position in the stream (0-based).
        classes: the original digits of this task.
        num_outputs: output units a single-head model needs in this scenario (for
            ``"task"``: units per head).
        x_train, x_test: float32 ``[n, 64]`` in [0, 1].
        y_train, y_test: int64 targets under the scenario (see the module docstring).
        digit_train, digit_test: int64 original digit labels.
    """

    task_id: int
    scenario: str
    classes: tuple[int, ...]
    num_outputs: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    digit_train: torch.Tensor
    digit_test: torch.Tensor

    def train_dataset(self) -> TensorDataset:
        """``(x, y, task_id)`` triples of the training split."""
        return TensorDataset(self.x_train, self.y_train, torch.full_like(self.y_train, self.task_id))

    def test_dataset(self) -> TensorDataset:
        """``(x, y, task_id)`` triples of the test split."""
        return TensorDataset(self.x_test, self.y_test, torch.full_like(self.y_test, self.task_id))


def load_digits_split(seed: int = 0, test_fraction: float = 0.3) -> tuple[torch.Tensor, ...]:
    """All digits, split stratified into train and test.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 ``[n, 64]`` in [0, 1] and int64 digits.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte)


def split_digits(scenario: str = "class", seed: int = 0, test_fraction: float = 0.3) -> list[ContinualTask]:
    """Split-Digits: five two-class tasks in the given scenario.

    Args:
        scenario: ``"task"``, ``"domain"`` or ``"class"``.
        seed: seed of the train/test split.
        test_fraction: share of each class held out for testing.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: expected one of {SCENARIOS}")
    xtr, ytr, xte, yte = load_digits_split(seed, test_fraction)
    tasks = []
    for t, classes in enumerate(SPLIT_CLASSES):
        mtr = (ytr == classes[0]) | (ytr == classes[1])
        mte = (yte == classes[0]) | (yte == classes[1])
        dtr, dte = ytr[mtr], yte[mte]
        if scenario == "class":
            ttr, tte, n_out = dtr, dte, 10
        else:
            ttr, tte, n_out = (dtr == classes[1]).long(), (dte == classes[1]).long(), 2
        tasks.append(
            ContinualTask(t, scenario, classes, n_out, xtr[mtr], ttr, xte[mte], tte, dtr, dte)
        )
    return tasks


def permuted_digits(num_tasks: int = 5, seed: int = 0, test_fraction: float = 0.3) -> list[ContinualTask]:
    """Permuted-Digits: ``num_tasks`` tasks, all ten digits, each under its own fixed pixel
    permutation (task 0 is the identity). Scenario ``"domain"``-like: target = digit."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    xtr, ytr, xte, yte = load_digits_split(seed, test_fraction)
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(num_tasks):
        perm = torch.from_numpy(np.arange(NUM_FEATURES) if t == 0 else rng.permutation(NUM_FEATURES))
        tasks.append(
            ContinualTask(t, "permuted", tuple(range(10)), 10, xtr[:, perm], ytr, xte[:, perm], yte, ytr, yte)
        )
    return tasks
