"""Computed conclusions: the sentence a notebook prints comes from the numbers of its run.

A notebook never writes "X beats Y" in prose. It measures X and Y (over one or more seeds)
and lets :func:`compare` name the winner, the margin, and whether the margin is larger
than the spread over seeds::

    from course_lib.conclusions import compare, rank
    c = compare({"global L1": [0.71, 0.73, 0.70], "local L1": [0.74, 0.72, 0.75]},
                higher_is_better=True, unit=" accuracy")
    print(c.sentence)
    # local L1 vs global L1: 0.737 ± 0.015 vs 0.713 ± 0.015 accuracy (3 seeds each) -- the
    # difference (0.023) is inside the spread over seeds: not distinguishable at this budget.

The rule is deliberately simple and stated where it is used: two methods are called
*distinguishable* when their means differ by more than the sum of their spreads
(``spread`` = sample standard deviation over seeds, or 0 for a single run; a single run is
never called distinguishable unless ``min_margin`` is given and exceeded). With one seed
the sentence says so.

Committed full-profile figures live in ``results/*.json`` (see :mod:`course_lib.results`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["Summary", "Comparison", "summarize", "compare", "rank", "fmt_mean"]


@dataclass(frozen=True)
class Summary:
    """Mean and spread of one method's figure over seeds."""

    name: str
    mean: float
    spread: float  # sample standard deviation over seeds; 0.0 for a single value
    n: int

    def text(self, digits: int = 3, unit: str = "") -> str:
        if self.n > 1:
            return f"{self.mean:.{digits}f} ± {self.spread:.{digits}f}{unit}"
        return f"{self.mean:.{digits}f}{unit}"


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: winner, runner-up, margin and whether it is real."""

    winner: Summary
    loser: Summary
    margin: float  # winner.mean - loser.mean in the "better" direction (>= 0)
    distinguishable: bool
    higher_is_better: bool
    sentence: str

    def __str__(self) -> str:
        return self.sentence


def _values(name: str, values: float | Sequence[float]) -> list[float]:
    if isinstance(values, (int, float)):
        values = [float(values)]
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name!r}: expected at least one measured value, got an empty sequence")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name!r}: measured values must be finite, got {bad[:3]}")
    return out


def summarize(name: str, values: float | Sequence[float]) -> Summary:
    """Mean and sample standard deviation (0 for one value) of ``values``."""
    vals = _values(name, values)
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Summary(name, statistics.fmean(vals), spread, len(vals))


def fmt_mean(values: float | Sequence[float], digits: int = 3, unit: str = "") -> str:
    """``"0.737 ± 0.015"`` (or ``"0.737"`` for one value)."""
    return summarize("value", values).text(digits, unit)


def compare(results: Mapping[str, float | Sequence[float]], higher_is_better: bool = True, digits: int = 3,
            unit: str = "", min_margin: float | None = None, what: str = "") -> Comparison:
    """Compare the best two of ``results`` (name -> one value or values over seeds).

    Args:
        results: at least two methods; each maps to a number or a sequence (one per seed).
        higher_is_better: True for accuracy/recall/throughput, False for loss/latency/error.
        digits: decimals in the sentence.
        unit: appended to numbers, e.g. ``"%"`` or ``" ms"``.
        min_margin: an absolute margin that counts as a real difference even for single
            runs (e.g. a deterministic measurement); ``None`` uses the spread rule only.
        what: the measured quantity, e.g. ``"zero-shot accuracy"``, used in the sentence.

    Returns:
        A :class:`Comparison`; ``.sentence`` is what the notebook prints.

    Raises:
        ValueError: fewer than two methods, an empty or non-finite series.
    """
    if len(results) < 2:
        raise ValueError(f"compare needs at least two methods, got {len(results)}: {list(results)}")
    ranked = rank(results, higher_is_better)
    best, second = ranked[0], ranked[1]
    margin = abs(best.mean - second.mean)
    spread_sum = best.spread + second.spread
    if best.n > 1 or second.n > 1:
        distinguishable = margin > spread_sum and (min_margin is None or margin > min_margin)
    else:
        distinguishable = min_margin is not None and margin > min_margin
    label = f" {what}" if what else ""
    counts = (f"{best.n} seeds each" if best.n == second.n else f"{best.n} and {second.n} seeds") \
        if max(best.n, second.n) > 1 else "one run each"
    head = (f"{best.name} vs {second.name}{label}: {best.text(digits, unit)} vs {second.text(digits, unit)} "
            f"({counts})")
    diff = f"{margin:.{digits}f}{unit}"
    if distinguishable:
        verb = "higher" if higher_is_better else "lower"
        if spread_sum > 0:
            reason = f"the spread over seeds ({spread_sum:.{digits}f})"
        elif min_margin is not None:
            reason = f"the stated margin ({min_margin:.{digits}g})"
        else:
            reason = "zero: every seed gave the same value"
        tail = f"{best.name} is better by {diff} ({verb} is better), more than {reason}"
    elif max(best.n, second.n) == 1 and min_margin is None:
        tail = (f"{best.name} is ahead by {diff} in this single run; one seed cannot tell whether "
                "that is more than seed-to-seed noise")
    else:
        tail = f"the difference ({diff}) is inside the spread over seeds: not distinguishable at this budget"
    sentence = f"{head} -- {tail}."
    return Comparison(best, second, margin, distinguishable, higher_is_better, sentence)


def rank(results: Mapping[str, float | Sequence[float]], higher_is_better: bool = True) -> list[Summary]:
    """Summaries of every method, best first (ties keep the input order)."""
    summaries = [summarize(name, vals) for name, vals in results.items()]
    return sorted(summaries, key=lambda s: -s.mean if higher_is_better else s.mean)
