"""Task 3.1 - a reservoir-sampling replay buffer (Vitter's Algorithm R). Solution."""

from __future__ import annotations

import torch


class ReservoirBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._generator = torch.Generator().manual_seed(seed)
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._size = 0
        self._seen = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must be batches of the same length, got shapes {list(x.shape)} and "
                             f"{list(y.shape)}")
        if self._x is None:
            self._x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self._y = torch.empty((self.capacity, *y.shape[1:]), dtype=y.dtype)
        elif x.shape[1:] != self._x.shape[1:] or y.shape[1:] != self._y.shape[1:]:
            raise ValueError("all batches must have the same item shape")
        for i in range(x.shape[0]):
            if self._size < self.capacity:
                slot = self._size
                self._size += 1
            else:  # item number self._seen (0-based) replaces a random slot with probability capacity/(seen+1)
                slot = int(torch.randint(0, self._seen + 1, (1,), generator=self._generator))
            if slot < self.capacity:
                self._x[slot] = x[i]
                self._y[slot] = y[i]
            self._seen += 1

    def __len__(self) -> int:
        return self._size

    @property
    def num_seen(self) -> int:
        return self._seen

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if self._x is None:
            raise ValueError("the buffer is empty: add items first")
        chosen = torch.randperm(self._size, generator=self._generator)[: min(n, self._size)]
        return self._x[chosen].clone(), self._y[chosen].clone()
