"""Run-time configuration: device, profile, seeding and a benchmark timer.

Every notebook starts with::

    from course_lib import config
    device = config.get_device()
    profile = config.get_profile()        # "quick" on CPU, "full" on GPU
    config.seed_everything(0)
    n_train = config.pick(quick=2_000, full=50_000)

Environment variables (read each time, never cached):

* ``COURSE_PROFILE``: ``quick`` or ``full``. Default: ``full`` when CUDA is available,
  else ``quick``.
* ``COURSE_DEVICE``: ``cpu``, ``cuda`` or ``cuda:N``. Default: CUDA when available.
* ``COURSE_MODEL``: which CLIP the notebooks load (see :mod:`course_lib.models`).
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np
import torch

PROFILES: tuple[str, ...] = ("quick", "full")

T = TypeVar("T")


def get_device(prefer: str | None = None) -> torch.device:
    """Return the compute device.

    Args:
        prefer: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``None`` reads ``COURSE_DEVICE``
            and otherwise picks CUDA when it is available.

    Raises:
        ValueError: unknown device string, or CUDA asked for but not available.
    """
    choice = prefer if prefer is not None else os.environ.get("COURSE_DEVICE", "").strip()
    if not choice:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {choice!r}: expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {choice!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available on this machine")
    return device


def get_profile(profile: str | None = None) -> str:
    """Return ``"quick"`` or ``"full"``.

    Args:
        profile: explicit choice; ``None`` reads ``COURSE_PROFILE`` and otherwise picks
            ``"full"`` on a CUDA machine and ``"quick"`` on a CPU-only one.

    Raises:
        ValueError: anything other than ``quick`` or ``full``.
    """
    choice = profile if profile is not None else os.environ.get("COURSE_PROFILE", "").strip()
    if not choice:
        return "full" if torch.cuda.is_available() else "quick"
    choice = choice.lower()
    if choice not in PROFILES:
        raise ValueError(f"unknown profile {choice!r}: expected one of {PROFILES} (COURSE_PROFILE)")
    return choice


def pick(quick: T, full: T, profile: str | None = None) -> T:
    """Return ``quick`` or ``full`` according to the active profile."""
    return quick if get_profile(profile) == "quick" else full


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a seeded ``torch.Generator``.

    Args:
        seed: a non-negative integer.
        deterministic: also ask torch for deterministic algorithms (slower on GPU).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@dataclass
class BenchResult:
    """Timings of one benchmarked callable, in seconds."""

    name: str
    times: list[float] = field(repr=False)
    items: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        """Inter-quartile range of the repeats (a robust spread)."""
        if len(self.times) < 2:
            return 0.0
        q = np.percentile(self.times, [25, 75])
        return float(q[1] - q[0])

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def throughput(self) -> float:
        """Items per second at the median time."""
        return self.items / self.median

    def as_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "median_ms": 1e3 * self.median,
            "iqr_ms": 1e3 * self.iqr,
            "items_per_s": self.throughput,
        }

    def __str__(self) -> str:
        return f"{self.name}: median {1e3 * self.median:.3f} ms (IQR {1e3 * self.iqr:.3f} ms, n={len(self.times)})"


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    fn: Callable[[], Any],
    *,
    name: str = "fn",
    warmup: int = 3,
    repeats: int = 10,
    items: int = 1,
    device: torch.device | str | None = None,
    min_time: float = 0.0,
    inference: bool = True,
) -> BenchResult:
    """Time ``fn()`` with warm-up runs, then ``repeats`` timed runs.

    Args:
        fn: callable without arguments; its result is discarded.
        name: label used in tables.
        warmup: untimed calls first (JIT, caches, allocator).
        repeats: timed calls (at least 1).
        items: how many items one call processes (for throughput).
        device: CUDA device to synchronize around each call, if any.
        min_time: keep repeating past ``repeats`` until this many seconds were timed.
        inference: run under ``torch.inference_mode`` (set ``False`` to time training steps).

    Returns:
        A :class:`BenchResult` with the per-call wall times.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    ctx = torch.inference_mode() if inference else contextlib.nullcontext()
    with ctx:
        for _ in range(warmup):
            fn()
        _sync(device)
        times: list[float] = []
        while len(times) < repeats or sum(times) < min_time:
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
            if len(times) >= 10_000:
                break
    return BenchResult(name=name, times=times, items=items)


def describe() -> dict[str, Any]:
    """A summary of the run-time environment for notebook headers."""
    return {
        "profile": get_profile(),
        "device": str(get_device()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
