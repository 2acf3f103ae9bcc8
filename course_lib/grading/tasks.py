"""The 12 practice tasks: ids, graded test modules, and what their tests import.

A task id is the task's path without ``.py`` relative to ``exercises/``, e.g.
``ch1_compression/task1_quantization``; its graded tests live in
``tests/exercises/ch1_compression/test_task1_quantization.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Task:
    id: str
    preload: tuple[str, ...] = ()  # reference libraries its tests import (loaded once by the grader)

    @property
    def chapter(self) -> str:
        return self.id.split("/")[0]

    @property
    def name(self) -> str:
        return self.id.split("/")[1]

    @property
    def source(self) -> str:
        """Path of the task file inside a submission folder."""
        return f"{self.id}.py"

    @property
    def test_file(self) -> str:
        """Path of the graded tests inside ``tests/exercises``."""
        return f"{self.chapter}/test_{self.name}.py"


TASKS: tuple[Task, ...] = (
    Task("ch1_compression/task1_quantization"),
    Task("ch1_compression/task2_pruning"),
    Task("ch1_compression/task3_distillation"),
    Task("ch1_compression/task4_batching"),
    Task("ch2_multimodal/task1_contrastive", ("open_clip",)),
    Task("ch2_multimodal/task2_sinkhorn", ("ot",)),
    Task("ch2_multimodal/task3_retrieval", ("faiss",)),
    Task("ch2_multimodal/task4_cross_attention"),
    Task("ch3_continual/task1_replay", ("scipy.stats",)),
    Task("ch3_continual/task2_ewc"),
    Task("ch3_continual/task3_progressive"),
    Task("ch3_continual/task4_metrics"),
)
TASK_IDS: tuple[str, ...] = tuple(t.id for t in TASKS)


def find_task(name: str) -> Task:
    """Look a task up by id (``ch1_compression/task1_quantization``), with or without
    ``.py``, or by its unique file name (``task1_quantization``). Raises KeyError."""
    key = name.strip().replace("\\", "/")
    if key.startswith("exercises/"):
        key = key[len("exercises/"):]
    if key.endswith(".py"):
        key = key[:-3]
    for task in TASKS:
        if key in (task.id, task.name):
            return task
    raise KeyError(name)


def submission_root(path: Path) -> Path:
    """A submission folder is laid out like ``exercises/``; accept a course copy holding one."""
    path = Path(path).resolve()
    if not any((path / ch).is_dir() for ch in ("ch1_compression", "ch2_multimodal", "ch3_continual")):
        if (path / "exercises").is_dir():
            return path / "exercises"
    return path
