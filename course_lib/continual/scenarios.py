"""Continual-learning benchmarks as data: a :class:`Scenario` is a list of :class:`Experience`.

Three scenarios (van de Ven & Tolias, 2019) differ in what the network's output units mean
and what is known at test time:

* ``"task"`` (task-incremental): one *head* (a group of output units) per task; the task
  identity is given at training and at test time and selects the head.
* ``"domain"`` (domain-incremental): one shared head; the task identity is not given and
  need not be inferred (the label space is the same in every task).
* ``"class"`` (class-incremental): one growing head over all classes; the task identity
  is not given and must be inferred, implicitly, by telling all classes apart.

Every target is a *global output unit index* into the network's ``num_outputs`` units,
so the same cross-entropy code serves the three scenarios; :meth:`Scenario.units` says
which units take part when a task is trained or evaluated.

Benchmarks here: Split-Digits (five tasks of two digits; the Split-MNIST protocol on
scikit-learn's 8x8 digits) and Split-ShapeWorld (tasks are groups of shapes or of
colours; generated 32x32 RGB images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..data import ALL_COLORS, ALL_SHAPES, DEFAULT_COLORS, ShapeWorldConfig, generate, images_to_tensor, split_digits, split_seed

SCENARIO_KINDS: tuple[str, ...] = ("task", "domain", "class")


@dataclass
class Experience:
    """One task of a stream.

    Attributes:
        task_id: position in the stream (0-based).
        classes: names of the task's classes, in the order of its within-task labels.
        x_train, x_test: float32 inputs ``[n, ...]`` (``[n, 64]`` for digits,
            ``[n, 3, 32, 32]`` in [0, 1] for ShapeWorld).
        y_train, y_test: int64 ``[n]`` global output-unit indices (see the module docstring).
    """

    task_id: int
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"task {self.task_id}: {len(x)} {part} inputs but {len(y)} targets (need > 0, equal)")
            if not torch.is_floating_point(x) or y.dtype != torch.int64:
                raise TypeError(f"task {self.task_id}: expected float inputs and int64 targets, got {x.dtype}, {y.dtype}")


@dataclass
class Scenario:
    """A continual-learning benchmark: a sequence of experiences in one scenario.

    Attributes:
        name: e.g. ``"split-digits"``.
        kind: ``"task"``, ``"domain"`` or ``"class"``.
        num_outputs: output units of one network (``"task"``: all heads together).
        experiences: the tasks, in training order.
        task_units: per task, the output units of its head (``"task"``), the shared head
            (``"domain"``) or its own classes (``"class"``).
        input_shape: shape of one input.
    """

    name: str
    kind: str
    num_outputs: int
    experiences: list[Experience]
    task_units: list[tuple[int, ...]]
    input_shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r}: expected one of {SCENARIO_KINDS}")
        if len(self.task_units) != len(self.experiences) or not self.experiences:
            raise ValueError("need one tuple of output units per experience, and at least one experience")
        if not self.input_shape:
            self.input_shape = tuple(self.experiences[0].x_train.shape[1:])

    def __len__(self) -> int:
        return len(self.experiences)

    @property
    def num_tasks(self) -> int:
        return len(self.experiences)

    def units(self, task_id: int, seen: int | None = None) -> list[int]:
        """Output units that compete when classifying an input of ``task_id``.

        Args:
            task_id: the task the input belongs to (used only in the ``"task"`` scenario,
                where the task identity is known).
            seen: number of tasks trained so far (``"class"`` scenario: only classes of
                tasks ``0..seen-1`` compete; ``None`` = all tasks).
        """
        if self.kind == "task":
            return list(self.task_units[task_id])
        if self.kind == "domain":
            return list(self.task_units[0])
        upto = self.num_tasks if seen is None else max(1, seen)
        return sorted({u for units in self.task_units[:upto] for u in units})

    def head_table(self) -> torch.Tensor:
        """int64 ``[T, k]``: the units of each task's head (``"task"`` scenario)."""
        return torch.tensor([list(u) for u in self.task_units], dtype=torch.int64)


def _make_scenario(name: str, kind: str, groups: Sequence[Sequence[str]], data: list[tuple]) -> Scenario:
    """Build a scenario from per-task ``(x_train, label_train, x_test, label_test)`` where
    labels index the task's own group (0..len(group)-1)."""
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario {kind!r}: expected one of {SCENARIO_KINDS}")
    sizes = {len(g) for g in groups}
    if kind in ("task", "domain") and len(sizes) != 1:
        raise ValueError(f"task/domain scenarios need groups of equal size, got sizes {sorted(sizes)}")
    exps, units = [], []
    offset = 0
    for t, (group, (xtr, ltr, xte, lte)) in enumerate(zip(groups, data)):
        k = len(group)
        if kind == "domain":
            base = 0
        else:  # task: one head per task; class: one unit per class
            base = offset
        exps.append(Experience(t, tuple(group), xtr, ltr + base, xte, lte + base))
        units.append(tuple(range(base, base + k)))
        offset += k
    num_outputs = len(groups[0]) if kind == "domain" else offset
    return Scenario(name, kind, num_outputs, exps, units)


def split_digits_scenario(kind: str = "class", seed: int = 0) -> Scenario:
    """Split-Digits: five tasks (0/1, 2/3, 4/5, 6/7, 8/9); inputs float32 ``[n, 64]`` in [0, 1].

    Output units: ``"task"`` 10 (five heads of two), ``"domain"`` 2, ``"class"`` 10 (the digit).
    """
    tasks = split_digits("task", seed=seed)  # within-task targets 0/1
    groups = [tuple(str(c) for c in t.classes) for t in tasks]
    data = [(t.x_train, t.y_train, t.x_test, t.y_test) for t in tasks]
    return _make_scenario("split-digits", kind, groups, data)


SHAPE_GROUPS: tuple[tuple[str, ...], ...] = (("circle", "square"), ("triangle", "cross"), ("diamond", "ring"))
COLOR_GROUPS: tuple[tuple[str, ...], ...] = (("red", "green"), ("blue", "yellow"), ("purple", "cyan"), ("orange", "pink"))


def _shapeworld_group(by: str, group: Sequence[str], n: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` single-object images whose ``by`` attribute is in ``group``, labels = position in group."""
    if by == "shape":
        cfg = ShapeWorldConfig(shapes=tuple(group), colors=DEFAULT_COLORS)
        batch = generate(n, split_seed(split, seed), cfg)
        labels = batch.shapes[:, 0]
    else:
        cfg = ShapeWorldConfig(colors=tuple(group), shapes=("circle", "square", "triangle", "cross"))
        batch = generate(n, split_seed(split, seed), cfg)
        labels = batch.colors[:, 0]
    return images_to_tensor(batch.images), torch.from_numpy(labels.astype(np.int64))


def split_shapeworld_scenario(
    kind: str = "class",
    by: str = "shape",
    groups: Sequence[Sequence[str]] | None = None,
    n_train: int = 300,
    n_test: int = 200,
    seed: int = 0,
) -> Scenario:
    """Split-ShapeWorld: each task tells apart the shapes (or colours) of one group.

    Args:
        kind: ``"task"``, ``"domain"`` or ``"class"``.
        by: ``"shape"`` (default groups :data:`SHAPE_GROUPS`, colours from the default
            palette) or ``"color"`` (default groups :data:`COLOR_GROUPS`, default shapes).
        groups: the attribute values of each task.
        n_train, n_test: images per task.
        seed: data seed; each task and split has its own stream.

    Inputs are float32 ``[n, 3, 32, 32]`` in [0, 1].
    """
    if by not in ("shape", "color"):
        raise ValueError(f"by must be 'shape' or 'color', got {by!r}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"need n_train >= 1 and n_test >= 1, got {n_train}, {n_test}")
    groups = [tuple(g) for g in (groups or (SHAPE_GROUPS if by == "shape" else COLOR_GROUPS))]
    valid = ALL_SHAPES if by == "shape" else tuple(ALL_COLORS)
    flat = [v for g in groups for v in g]
    if any(v not in valid for v in flat) or len(set(flat)) != len(flat) or any(len(g) < 2 for g in groups):
        raise ValueError(f"groups must be disjoint groups of >= 2 values from {valid}, got {groups}")
    data = []
    for t, group in enumerate(groups):
        xtr, ltr = _shapeworld_group(by, group, n_train, seed * 1000 + t, "train")
        xte, lte = _shapeworld_group(by, group, n_test, seed * 1000 + t, "test")
        data.append((xtr, ltr, xte, lte))
    return _make_scenario(f"split-shapeworld-{by}", kind, groups, data)
