"""Tests of course_lib.conclusions (computed sentences) and course_lib.results (provenance)."""

import json
import math

import pytest

from course_lib.conclusions import compare, fmt_mean, rank, summarize
from course_lib.results import load_results, lookup, write_results


def test_winner_and_margin_outside_spread():
    c = compare({"a": [0.90, 0.91, 0.92], "b": [0.50, 0.52, 0.51]}, what="accuracy")
    assert c.winner.name == "a" and c.distinguishable
    assert math.isclose(c.margin, 0.40, abs_tol=1e-9)
    assert "a is better by 0.400" in c.sentence and "3 seeds each" in c.sentence


def test_inside_spread_is_not_distinguishable():
    c = compare({"global": [0.71, 0.73, 0.70], "local": [0.74, 0.72, 0.75]})
    assert c.winner.name == "local" and not c.distinguishable
    assert "not distinguishable" in c.sentence


def test_lower_is_better_and_single_runs():
    c = compare({"slow": 12.0, "fast": 8.0}, higher_is_better=False, unit=" ms")
    assert c.winner.name == "fast" and not c.distinguishable
    assert "single run" in c.sentence
    c = compare({"slow": 12.0, "fast": 8.0}, higher_is_better=False, unit=" ms", min_margin=1.0)
    assert c.distinguishable and "4.000 ms" in c.sentence


def test_rank_and_summaries():
    assert [s.name for s in rank({"x": 1.0, "y": 3.0, "z": 2.0})] == ["y", "z", "x"]
    s = summarize("m", [1.0, 3.0])
    assert s.mean == 2.0 and math.isclose(s.spread, math.sqrt(2.0)) and s.n == 2
    assert fmt_mean([1.0, 3.0], digits=1) == "2.0 ± 1.4"


@pytest.mark.parametrize("bad", [{"a": 1.0}, {"a": [], "b": 1.0}, {"a": [float("nan")], "b": 1.0}])
def test_bad_input_raises(bad):
    with pytest.raises(ValueError):
        compare(bad)


def test_results_round_trip(tmp_path):
    path = write_results("demo_run", {"acc": {"mean": 0.9, "seeds": [0.89, 0.91]}}, command="python -m x",
                         profile="full", seeds=[0, 1], folder=tmp_path)
    data = json.loads(path.read_text())
    assert data["hardware"] and data["versions"]["torch"]
    r = load_results("demo_run", folder=tmp_path)
    assert r.get("acc.seeds.1") == 0.91 and "python -m x" in r.provenance()
    with pytest.raises(KeyError, match="missing"):
        lookup(r.figures, "acc.nope")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="Bad Name"), "lower-case"), (dict(command=" "), "command"), (dict(profile="fast"), "profile"),
    (dict(figures={"x": float("nan")}), "finite")])
def test_write_results_rejects_bad_input(tmp_path, kwargs, match):
    args = dict(name="ok", figures={"x": 1.0}, command="cmd", profile="full", seeds=[0], folder=tmp_path)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_results(**args)


def test_missing_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed results file"):
        load_results("absent", folder=tmp_path)


def test_identical_seeds_without_a_margin():
    c = compare({"a": [0.9, 0.9], "b": [0.8, 0.8]})
    assert c.distinguishable and "every seed gave the same value" in c.sentence
