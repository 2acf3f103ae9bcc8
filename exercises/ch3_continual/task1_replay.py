"""Task 3.1 - a reservoir-sampling replay buffer (Vitter's Algorithm R).

Check yourself with::

    COURSE_IMPL=exercises pytest tests/exercises/ch3_continual/test_task1_replay.py
    course-grade --task ch3_continual/task1_replay
"""

from __future__ import annotations

import torch


class ReservoirBuffer:
    """A fixed-size memory holding a uniform random sample of everything seen so far.

    Experience replay mixes stored examples of earlier tasks into each new batch. With
    reservoir sampling, after ``N`` items were added (in batches of any sizes, in any
    order), **each** of them is in the buffer with probability ``capacity / N`` (all of
    them while ``N <= capacity``), without knowing ``N`` in advance.

    Args:
        capacity: maximum number of stored items, ``>= 1``.
        seed: seeds this buffer's own random generator: the same seed and the same calls
            give the same contents and the same samples (do not use the global RNG).

    Raises:
        ValueError: ``capacity < 1``.

    Hint (Algorithm R): the item with 0-based stream position ``t`` fills a free slot while
    the buffer is not full; otherwise draw ``j`` uniformly from ``{0, ..., t}`` and, if
    ``j < capacity``, it replaces slot ``j``.
    """

    def __init__(self, capacity: int, seed: int = 0):
        raise NotImplementedError("Task 3.1: implement ReservoirBuffer.__init__")

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Offer a batch: ``x`` ``[n, ...]`` and labels ``y`` ``[n, ...]`` (item ``i`` is
        ``(x[i], y[i])``; ``n`` may be 0 or larger than the capacity). The buffer keeps
        its own copies, bit for bit in the items' dtypes (writing into ``x`` later does
        not change the buffer); ``x`` and ``y`` are not modified.

        Raises:
            ValueError: ``x`` and ``y`` have different lengths.
        """
        raise NotImplementedError("Task 3.1: implement ReservoirBuffer.add")

    def __len__(self) -> int:
        """Number of items stored now: ``min(capacity, num_seen)``."""
        raise NotImplementedError("Task 3.1: implement ReservoirBuffer.__len__")

    @property
    def num_seen(self) -> int:
        """Total number of items ever offered with :meth:`add`."""
        raise NotImplementedError("Task 3.1: implement ReservoirBuffer.num_seen")

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``min(n, len(self))`` *distinct* stored items, chosen at random (every stored
        item equally likely, using the buffer's generator): ``(x, y)`` stacked along dim 0
        (each ``x`` row with its own label), in the dtypes given to :meth:`add`. They are
        new tensors: writing into them does not change the buffer.

        Raises:
            ValueError: ``n < 0``.
        """
        raise NotImplementedError("Task 3.1: implement ReservoirBuffer.sample")
