"""Replay memories: a reservoir buffer and a class-balanced buffer.

Both store aligned tensors ("fields") given to :meth:`add` - typically ``(x, y)`` or
``(x, y, task_id)`` - along dimension 0, and :meth:`sample` returns the same fields.

* :class:`ReservoirBuffer` keeps a uniform sample of everything it was shown (Vitter's
  Algorithm R): after ``N`` items were added, each one is in the buffer with probability
  ``capacity / N``, without knowing ``N`` in advance - a fit for streams.
* :class:`ClassBalancedBuffer` gives every class seen so far an equal share of the
  capacity (a reservoir per class), so rare or early classes are not crowded out.
"""

from __future__ import annotations

import numpy as np
import torch


def _check_fields(fields: tuple[torch.Tensor, ...], stored: list[torch.Tensor] | None) -> int:
    if len(fields) < 1:
        raise ValueError("add() needs at least one tensor (e.g. x, y)")
    n = len(fields[0])
    for f in fields:
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"buffer fields must be tensors, got {type(f).__name__}")
        if f.ndim == 0 or len(f) != n:
            raise ValueError(f"all fields must share dimension 0; got lengths {[len(g) if g.ndim else 0 for g in fields]}")
    if stored is not None:
        if len(fields) != len(stored):
            raise ValueError(f"buffer holds {len(stored)} fields, add() got {len(fields)}")
        for f, s in zip(fields, stored):
            if f.shape[1:] != s.shape[1:] or f.dtype != s.dtype:
                raise ValueError(f"field of shape {tuple(f.shape[1:])}/{f.dtype} does not match the stored "
                                 f"{tuple(s.shape[1:])}/{s.dtype}")
    return n


class ReservoirBuffer:
    """A fixed-capacity uniform sample of a stream (reservoir sampling).

    Args:
        capacity: maximum number of stored items (>= 1).
        seed: seed of the buffer's own random generator (replacement and sampling).
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self._rng = np.random.default_rng(seed)
        self._fields: list[torch.Tensor] | None = None
        self._size = 0
        self._seen = 0

    def __len__(self) -> int:
        return self._size

    @property
    def num_seen(self) -> int:
        """Items offered to the buffer so far (stored or not)."""
        return self._seen

    def add(self, *fields: torch.Tensor) -> None:
        """Offer a batch of items; ``fields`` are tensors sharing dimension 0."""
        n = _check_fields(fields, self._fields)
        if n == 0:
            return
        if self._fields is None:
            self._fields = [torch.empty((self.capacity, *f.shape[1:]), dtype=f.dtype) for f in fields]
        # Algorithm R, item by item: the i-th item overall (0-based) replaces a random slot
        # with probability capacity / (i + 1).
        src, dst = [], []
        for i in range(n):
            if self._size < self.capacity:
                src.append(i)
                dst.append(self._size)
                self._size += 1
            else:
                j = int(self._rng.integers(0, self._seen + 1))
                if j < self.capacity:
                    src.append(i)
                    dst.append(j)
            self._seen += 1
        if src:
            # later writes to the same slot must win: keep the last source per destination
            last = {d: s for s, d in zip(src, dst)}
            d_idx = torch.tensor(list(last.keys()), dtype=torch.int64)
            s_idx = torch.tensor(list(last.values()), dtype=torch.int64)
            for store, f in zip(self._fields, fields):
                store[d_idx] = f.detach().cpu()[s_idx]

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        """``min(n, len(self))`` distinct stored items, one tensor per field."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self._fields is None:
            raise ValueError("the buffer is empty: add() items before sampling")
        k = min(int(n), self._size)
        idx = torch.from_numpy(self._rng.choice(self._size, size=k, replace=False).astype(np.int64))
        return tuple(f[idx] for f in self._fields)

    def contents(self) -> tuple[torch.Tensor, ...]:
        """Every stored item (views of length ``len(self)``)."""
        if self._fields is None:
            return ()
        return tuple(f[: self._size] for f in self._fields)

    def state_dict(self) -> dict:
        """Stored items, counters and the generator state (for checkpoints)."""
        return {"capacity": self.capacity, "size": self._size, "seen": self._seen,
                "fields": [f[: self._size].clone() for f in self._fields] if self._fields is not None else [],
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} != {self.capacity}")
        fields = state["fields"]
        self._size, self._seen = int(state["size"]), int(state["seen"])
        self._fields = None
        if fields:
            self._fields = [torch.empty((self.capacity, *f.shape[1:]), dtype=f.dtype) for f in fields]
            for store, f in zip(self._fields, fields):
                store[: self._size] = f
        self._rng.bit_generator.state = state["rng"]


class ClassBalancedBuffer:
    """Equal capacity per class seen so far; a reservoir within each class.

    The second field given to :meth:`add` (``y``) is the class label (int64 ``[n]``).
    When a new class appears, every class's quota shrinks to ``capacity // classes``
    and the surplus items are dropped at random.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self._rng = np.random.default_rng(seed)
        self._per_class: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        self._seen_per_class: dict[int, int] = {}
        self._template: list[torch.Tensor] | None = None
        self._cache: tuple[torch.Tensor, ...] | None = None

    def __len__(self) -> int:
        return sum(len(v) for v in self._per_class.values())

    @property
    def num_seen(self) -> int:
        return sum(self._seen_per_class.values())

    def quota(self) -> int:
        """Items each class may keep."""
        return max(1, self.capacity // max(1, len(self._per_class)))

    def class_counts(self) -> dict[int, int]:
        return {c: len(v) for c, v in sorted(self._per_class.items())}

    def add(self, *fields: torch.Tensor) -> None:
        """Offer a batch; ``fields[1]`` holds the integer class labels."""
        n = _check_fields(fields, self._template)
        if len(fields) < 2:
            raise ValueError("ClassBalancedBuffer.add needs (x, y, ...): the second field is the class label")
        if fields[1].dtype not in (torch.int64, torch.int32):
            raise TypeError(f"class labels must be int64/int32, got {fields[1].dtype}")
        if self._template is None:
            self._template = [f[:0].clone() for f in fields]
        ys = fields[1].tolist()
        self._cache = None
        for i in range(n):
            c = int(ys[i])
            if c not in self._per_class:
                self._per_class[c], self._seen_per_class[c] = [], 0
                self._shrink()
            items, q = self._per_class[c], self.quota()
            item = tuple(f[i].detach().cpu().clone() for f in fields)
            if len(items) < q:
                items.append(item)
            else:
                j = int(self._rng.integers(0, self._seen_per_class[c] + 1))
                if j < q:
                    items[j] = item
            self._seen_per_class[c] += 1

    def _shrink(self) -> None:
        q = self.quota()
        for c, items in self._per_class.items():
            if len(items) > q:
                keep = sorted(self._rng.choice(len(items), size=q, replace=False).tolist())
                self._per_class[c] = [items[k] for k in keep]

    def contents(self) -> tuple[torch.Tensor, ...]:
        """Every stored item, grouped by class (one tensor per field)."""
        if self._cache is None:
            items = [it for c in sorted(self._per_class) for it in self._per_class[c]]
            self._cache = tuple(torch.stack([it[k] for it in items]) for k in range(len(items[0]))) if items else ()
        return self._cache

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        """``min(n, len(self))`` distinct stored items, one tensor per field."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        everything = self.contents()
        if not everything:
            raise ValueError("the buffer is empty: add() items before sampling")
        k = min(int(n), len(everything[0]))
        idx = torch.from_numpy(self._rng.choice(len(everything[0]), size=k, replace=False).astype(np.int64))
        return tuple(f[idx] for f in everything)
