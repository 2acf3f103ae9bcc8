"""Latency measurement that survives a busy machine, and result tables.

On a shared or thermally throttled machine the speed drifts over seconds, so timing
model A for ten seconds and then model B compares two different machines. Here the
candidates are timed *interleaved*, round-robin (A, B, C, A, B, C, ...), so drift hits
all of them alike. Tables report the **best** (minimum) time of each candidate, the
convention of Python's ``timeit``: on a shared machine the slower repeats measure other
processes, while the fastest one approaches what the code itself costs. Speed-ups are
ratios of these best times from the same run.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from ..conclusions import Comparison, compare
from ..config import BenchResult


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch's CPU kernels on ``n`` threads (``None``: leave as is);
    the previous setting is restored on exit."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync_cuda() -> None:
    """Wait for queued CUDA kernels (GPU calls return before they finish); a no-op
    unless CUDA is in use in this process."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved_benchmark(
    candidates: Mapping[str, Callable[[], Any]],
    repeats: int = 20,
    warmup: int = 3,
    items: int = 1,
    min_time: float = 0.0,
) -> dict[str, BenchResult]:
    """Time each zero-argument callable ``repeats`` times, round-robin, under
    ``torch.inference_mode`` (synchronising CUDA after each call when it is in use).

    Args:
        candidates: ``{name: fn}``.
        repeats: timed rounds (every candidate once per round).
        warmup: untimed rounds first.
        items: items processed per call (for throughput).
        min_time: keep adding rounds until the slowest candidate has this many seconds.

    Returns:
        ``{name: BenchResult}`` (per-call seconds).
    """
    if not candidates:
        raise ValueError("no candidates to benchmark")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in candidates.values():
                fn()
        rounds = 0
        while rounds < repeats or max(sum(t) for t in times.values()) < min_time:
            for name, fn in candidates.items():
                t0 = time.perf_counter()
                fn()
                _sync_cuda()
                times[name].append(time.perf_counter() - t0)
            rounds += 1
            if rounds >= 10_000:
                break
    return {name: BenchResult(name=name, times=t, items=items) for name, t in times.items()}


def latency_table(
    encoders: Mapping[str, Callable[[torch.Tensor], Any]],
    batch_sizes: Sequence[int] = (1, 64),
    input_shape: Sequence[int] = (3, 32, 32),
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, dict[int, BenchResult]]:
    """Interleaved latency of several encoders at each batch size.

    Returns ``{name: {batch_size: BenchResult}}`` (``items`` = batch size, so
    ``.throughput`` is images per second).
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, BenchResult]] = {name: {} for name in encoders}
    for b in batch_sizes:
        x = torch.randn(b, *input_shape, generator=gen)
        res = interleaved_benchmark({n: (lambda f=f: f(x)) for n, f in encoders.items()}, repeats, warmup, items=b)
        for name, r in res.items():
            out[name][b] = r
    return out


def block_minima(result: BenchResult, blocks: int = 3) -> list[float]:
    """The best time (seconds) of each of ``blocks`` consecutive groups of ``result``'s repeats.

    A table reports one best-of-N time; splitting the N interleaved rounds into blocks
    gives several independent best-of-(N / blocks) times, whose spread says how far that
    number moves between measurements on this machine (what :func:`compare_samples`
    weighs a difference against).

    Raises:
        ValueError: ``blocks < 1`` or fewer repeats than blocks.
    """
    n = len(result.times)
    if blocks < 1 or n < blocks:
        raise ValueError(f"need 1 <= blocks <= repeats ({n}), got blocks={blocks}")
    edges = [round(i * n / blocks) for i in range(blocks + 1)]
    return [min(result.times[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def compare_samples(samples: Mapping[str, float | Sequence[float]], kind: str = "timing blocks", **kwargs: Any) -> Comparison:
    """:func:`course_lib.conclusions.compare` for repeated *measurements* that are not seeds
    (timing blocks, profiled runs, test-split samples): the same rule (distinguishable
    when the means differ by more than the sum of the spreads), with the sentence naming
    what the repetitions are. ``kwargs`` go to ``compare`` (``higher_is_better``,
    ``unit``, ``digits``, ``what``, ``min_margin``)."""
    c = compare(samples, **kwargs)
    sentence = c.sentence.replace("seeds", kind).replace("seed-to-seed noise", "measurement noise").replace("one seed", "one measurement")
    return Comparison(c.winner, c.loser, c.margin, c.distinguishable, c.higher_is_better, sentence)


def compare_speedup(samples: Mapping[str, Sequence[float]], baseline: str, kind: str = "timing blocks",
                    what: str = "", digits: int = 2) -> Comparison:
    """Paired comparison of two candidates timed in the *same* interleaved rounds.

    ``samples`` holds two candidates' latency samples, sample ``i`` of both from the same
    rounds (block ``i`` of one interleaved benchmark, or latency round ``i`` of a results
    file). Drift of the machine's load hits both alike within a sample, so the speed-up
    ``baseline_i / other_i`` per sample is steadier than either latency. The speed-up
    is compared with 1 (no difference) by :func:`course_lib.conclusions.compare`'s rule:
    distinguishable when ``|mean - 1|`` exceeds the spread of the per-sample speed-ups.

    Returns:
        A :class:`Comparison` whose ``winner`` is the faster candidate (its ``mean`` and
        ``spread`` are the speed-up's, in x), ``loser`` the other (1x), and whose sentence
        says "faster/slower beyond the spread" or "not distinguishable".

    Raises:
        ValueError: not exactly two candidates, ``baseline`` not among them, or samples of
            different lengths.
    """
    if len(samples) != 2 or baseline not in samples:
        raise ValueError(f"need exactly two candidates including the baseline {baseline!r}, got {list(samples)}")
    other = next(n for n in samples if n != baseline)
    ref, mine = list(samples[baseline]), list(samples[other])
    if len(ref) != len(mine) or not ref:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(ref)} and {len(mine)}")
    ratios = [r / m for r, m in zip(ref, mine)]
    # min_margin=0: identical per-sample speed-ups (zero spread) still count when they differ from 1
    c = compare({"speed-up": ratios, "parity": [1.0]}, digits=digits, min_margin=0.0)
    s = c.winner if c.winner.name == "speed-up" else c.loser
    faster, slower = (other, baseline) if s.mean >= 1.0 else (baseline, other)
    spread = f" ± {s.spread:.{digits}f}" if s.n > 1 else ""
    label = f", {what}" if what else ""
    if c.distinguishable:
        verdict = f"{faster} is faster, beyond the spread over {kind}"
    elif s.n == 1:
        verdict = f"{faster} is ahead in this single measurement; one measurement cannot tell whether that is more than noise"
    else:
        verdict = f"not distinguishable from 1x: the difference is inside the spread over {kind}"
    sentence = (f"{other} vs {baseline}{label}: speed-up {s.mean:.{digits}f}{spread}x over {s.n} {kind} (paired) -- {verdict}.")
    from ..conclusions import Summary
    win = Summary(faster, s.mean if faster == other else 1.0 / s.mean, s.spread, s.n)
    lose = Summary(slower, 1.0, 0.0, 1)
    return Comparison(win, lose, abs(s.mean - 1.0), c.distinguishable, True, sentence)


def speedups(results: Mapping[str, BenchResult], baseline: str) -> dict[str, float]:
    """``{name: best(baseline) / best(name)}`` (> 1 = faster than the baseline)."""
    if baseline not in results:
        raise KeyError(f"baseline {baseline!r} not among {list(results)}")
    ref = results[baseline].min
    return {name: ref / r.min for name, r in results.items()}


class Table:
    """A list of row dicts shown as a Markdown table in notebooks and as text in a terminal."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3):
        if not rows:
            raise ValueError("a table needs at least one row")
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in self.rows for k in r))
        self.digits = digits

    def _cell(self, value: Any) -> str:
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            if math.isinf(value):
                return "inf" if value > 0 else "-inf"
            if value != 0 and (abs(value) >= 1e5 or abs(value) < 10**-self.digits):
                return f"{value:.{self.digits}g}"
            text = f"{value:.{self.digits}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return str(value)

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        sep = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(self._cell(r.get(c, "")) for c in self.columns) + " |" for r in self.rows]
        return "\n".join([head, sep, *body])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        cells = [[self._cell(r.get(c, "")) for c in self.columns] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def linear_time_fraction(model: torch.nn.Module, x: torch.Tensor, repeats: int = 10) -> dict[str, float]:
    """How much of ``model(x)``'s time its ``nn.Linear`` layers take.

    The input shape of every ``nn.Linear`` is recorded during one forward pass; then the
    full forward and a replay of just those matrix products (same layers, random inputs
    of the recorded shapes) are timed interleaved.

    Returns:
        ``{"fraction", "linear_ms", "total_ms"}`` (best times).
    """
    shapes: list[tuple[torch.nn.Linear, torch.Size]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp: shapes.append((mod, inp[0].shape)))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not shapes:
        raise ValueError("the model ran no nn.Linear layer")
    inputs = [(layer, torch.randn(shape)) for layer, shape in shapes]

    def linears() -> None:
        for layer, inp in inputs:
            layer(inp)

    res = interleaved_benchmark({"total": lambda: model(x), "linear": linears}, repeats=repeats)
    total, lin = res["total"].min, res["linear"].min
    return {"fraction": min(1.0, lin / total), "linear_ms": 1e3 * lin, "total_ms": 1e3 * total}


def amdahl_speedup(fraction: float, factor: float) -> float:
    """Overall speed-up when a ``fraction`` of the run time gets ``factor`` times faster
    (Amdahl's law): ``1 / ((1 - fraction) + fraction / factor)``."""
    if not 0.0 <= fraction <= 1.0 or factor <= 0:
        raise ValueError(f"need fraction in [0, 1] and factor > 0, got {fraction}, {factor}")
    return 1.0 / ((1.0 - fraction) + fraction / factor)
