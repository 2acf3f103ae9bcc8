"""Running and tabulating strategy comparisons on Split-Digits.

:data:`PROTOCOLS` holds the two profiles: ``full`` follows van de Ven & Tolias (2019) where
it fits (2 x 400 ReLU, Adam lr 1e-3, batch 128, LwF temperature 2, 5 seeds); ``quick``
shrinks the network to 2 x 100 units and trains fewer steps so that the whole grid runs
in well under a minute on two CPU cores. :func:`run_grid` trains every (scenario,
strategy, seed) and :func:`summary_rows` reduces the runs to mean and standard deviation.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import config as course_config
from .metrics import continual_metrics, summarize
from .models import mlp
from .scenarios import Scenario, split_digits_scenario
from .strategies import EWC, ContinualLearner, ContinualResult, Joint, LwF, Naive, Progressive, Replay, Strategy, TrainConfig

#: van de Ven & Tolias, "Three scenarios for continual learning" (arXiv:1904.07734, 2019),
#: split MNIST, average test accuracy (%) over all tasks after the last one.
VAN_DE_VEN_SPLIT_MNIST: dict[str, dict[str, float]] = {
    "task": {"finetune": 87.2, "ewc": 98.6, "lwf": 99.6},
    "class": {"finetune": 19.9, "ewc": 20.0, "lwf": 23.9, "replay": 90.0, "joint": 97.9},
}
#: the method ordering van de Ven & Tolias report in each scenario (worst first; "<=" ties)
VAN_DE_VEN_ORDER: dict[str, tuple[str, ...]] = {
    "task": ("finetune", "ewc", "lwf"),
    "domain": ("finetune", "ewc", "lwf", "replay", "joint"),
    "class": ("finetune", "ewc", "lwf", "replay", "joint"),
}

STRATEGY_NAMES: tuple[str, ...] = (
    "finetune", "joint", "replay", "replay-balanced", "ewc", "online-ewc", "lwf", "progressive",
)


@dataclass
class Protocol:
    """One profile of the Split-Digits comparison.

    Attributes:
        hidden: units of each of the two hidden layers.
        iterations, batch_size, lr: per-task optimisation (Adam).
        seeds: independent runs (network initialisation and batch order).
        buffer: replay memory size (items, all tasks together).
        ewc_lambda: per scenario; chosen from the sweeps of notebook 05 (quick protocol, 2 seeds).
        lwf_temperature, lwf_weight: distillation temperature (van de Ven: 2) and weight.
    """

    hidden: int = 400
    iterations: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    buffer: int = 200
    ewc_lambda: dict[str, float] = field(default_factory=lambda: {"task": 1e3, "domain": 1e3, "class": 1e3})
    lwf_temperature: float = 2.0
    lwf_weight: float = 1.0
    progressive_hidden: int = 100

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(iterations=self.iterations, batch_size=self.batch_size, lr=self.lr)


PROTOCOLS: dict[str, Protocol] = {
    "quick": Protocol(hidden=100, iterations=30, seeds=(0, 1, 2), progressive_hidden=50),
    "full": Protocol(),
}


def protocol(profile: str | None = None, **overrides) -> Protocol:
    """The protocol of the active profile (``COURSE_PROFILE``), with optional overrides."""
    return replace(PROTOCOLS[course_config.get_profile(profile)], **overrides)


def make_strategy(name: str, kind: str, proto: Protocol, seed: int = 0) -> Strategy:
    """A fresh strategy instance by name (see :data:`STRATEGY_NAMES`) for scenario ``kind``."""
    if name == "finetune":
        return Naive()
    if name == "joint":
        return Joint()
    if name == "replay":
        return Replay(proto.buffer, "reservoir", seed=seed)
    if name == "replay-balanced":
        return Replay(proto.buffer, "balanced", seed=seed)
    if name in ("ewc", "online-ewc"):
        return EWC(proto.ewc_lambda[kind], online=name == "online-ewc")
    if name == "lwf":
        return LwF(proto.lwf_temperature, proto.lwf_weight)
    if name == "progressive":
        return Progressive(proto.progressive_hidden)
    raise ValueError(f"unknown strategy {name!r}: expected one of {STRATEGY_NAMES}")


def applicable(name: str, kind: str) -> bool:
    """Progressive networks need the task identity at test time: task scenario only."""
    return name != "progressive" or kind == "task"


def run_one(scenario: Scenario, name: str, proto: Protocol, seed: int) -> ContinualResult:
    """Train one strategy on one scenario with one seed."""
    strategy = make_strategy(name, scenario.kind, proto, seed)
    def model():
        return mlp(int(np.prod(scenario.input_shape)), scenario.num_outputs, proto.hidden)

    result = ContinualLearner(scenario, strategy, proto.train_config, seed=seed, model=model).fit()
    result.strategy = name
    return result


@functools.lru_cache(maxsize=8)
def _scenario(kind: str, data_seed: int) -> Scenario:
    return split_digits_scenario(kind, seed=data_seed)


def _job(kind: str, name: str, proto: Protocol, seed: int, data_seed: int) -> ContinualResult:
    return run_one(_scenario(kind, data_seed), name, proto, seed)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # this process only: one thread per worker, one worker per core


def default_workers() -> int:
    """Worker processes for a grid: one per CPU core, at most 4 (1 on a GPU machine)."""
    import os

    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def run_many(jobs: Sequence[tuple[str, str, Protocol, int]], data_seed: int = 0, workers: int = 1,
             progress: bool = False) -> list[ContinualResult]:
    """Run ``(kind, strategy name, protocol, seed)`` jobs; results in the order of the jobs.

    With ``workers > 1`` the runs are spread over that many fresh processes (``spawn``), each
    with one torch thread: tiny networks gain nothing from intra-op threads, but independent
    runs use every core (:func:`default_workers`). Every run seeds itself, so the results do
    not depend on ``workers``. In a script, call it under ``if __name__ == "__main__":``
    (``spawn`` re-imports the main module); notebooks need nothing special.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(jobs) < 2:
        results = []
        for kind, name, proto, seed in jobs:
            t0 = time.perf_counter()
            results.append(_job(kind, name, proto, seed, data_seed))
            if progress:
                print(f"{kind:6s} {name:16s} seed {seed}: {100 * results[-1].average_accuracy:5.1f}% "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
        return results
    pool = _pool(workers)
    futures = [pool.submit(_job, kind, name, proto, seed, data_seed) for kind, name, proto, seed in jobs]
    return [f.result() for f in futures]


_POOLS: dict = {}


def _pool(workers: int):
    """A process pool of ``workers`` spawned workers, created once and reused (starting a
    worker costs an interpreter and a torch import); shut down at exit."""
    import atexit
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init)
        _POOLS[workers] = pool
        atexit.register(pool.shutdown, wait=False, cancel_futures=True)
    return pool


def run_grid(
    kinds: Sequence[str] = ("task", "domain", "class"),
    names: Sequence[str] = STRATEGY_NAMES,
    proto: Protocol | None = None,
    data_seed: int = 0,
    progress: bool = False,
    workers: int = 1,
) -> list[ContinualResult]:
    """Every applicable (scenario kind, strategy, seed) on Split-Digits (``workers``: see
    :func:`run_many`)."""
    proto = proto or protocol()
    jobs = [(kind, name, proto, seed) for kind in kinds for name in names if applicable(name, kind)
            for seed in proto.seeds]
    return run_many(jobs, data_seed, workers, progress)


def summary_rows(results: Iterable[ContinualResult]) -> list[dict]:
    """One row per (scenario, strategy): mean and std over seeds of the final average
    accuracy, forgetting, BWT and FWT (in %), and training seconds per run."""
    groups: dict[tuple[str, str], list[ContinualResult]] = {}
    for r in results:
        groups.setdefault((r.scenario.split("/")[-1], r.strategy), []).append(r)
    rows = []
    for (kind, name), rs in groups.items():
        ms = [continual_metrics(r.acc, r.baseline) for r in rs]
        row = {"scenario": kind, "strategy": name, "seeds": len(rs)}
        for key in ("average_accuracy", "forgetting", "bwt", "fwt"):
            row[key], row[key + "_std"] = summarize([100 * m[key] for m in ms])
        row["seconds"], _ = summarize([sum(r.train_seconds) for r in rs])
        row["reference"] = VAN_DE_VEN_SPLIT_MNIST.get(kind, {}).get(name)
        rows.append(row)
    return rows


def seed_values(results: Iterable[ContinualResult], kind: str, name: str, key: str = "average_accuracy") -> list[float]:
    """One figure per seed (in %) of strategy ``name`` in scenario ``kind``: ``key`` is a key of
    :func:`continual_metrics` (``average_accuracy``, ``forgetting``, ``bwt``, ``fwt``).

    Raises:
        KeyError: no run of that strategy in that scenario.
    """
    vals = [100 * continual_metrics(r.acc, r.baseline)[key] for r in results
            if r.scenario.split("/")[-1] == kind and r.strategy == name]
    if not vals:
        raise KeyError(f"no run of {name!r} in the {kind} scenario")
    return vals


def ordering_verdicts(results: Iterable[ContinualResult], kind: str, digits: int = 1) -> list[dict]:
    """The ordering van de Ven & Tolias report (:data:`VAN_DE_VEN_ORDER`), checked pair by
    pair with the spread over seeds (:func:`course_lib.conclusions.compare` on the final
    average accuracy).

    Returns one dict per consecutive pair ``(worse, better)`` of the paper's order:
    ``{"worse", "better", "verdict", "sentence", "comparison"}`` where ``verdict`` is
    ``"as in the paper"`` (ours ranks them the same way, by more than the spread),
    ``"reversed"`` (the other way, by more than the spread) or ``"not distinguishable"``.
    """
    from ..conclusions import compare

    results = list(results)
    names = {r.strategy for r in results if r.scenario.split("/")[-1] == kind}
    order = [m for m in VAN_DE_VEN_ORDER[kind] if m in names]
    out = []
    for worse, better in zip(order, order[1:]):
        c = compare({better: seed_values(results, kind, better), worse: seed_values(results, kind, worse)},
                    digits=digits, what="final average accuracy %")
        if not c.distinguishable:
            verdict = "not distinguishable"
        else:
            verdict = "as in the paper" if c.winner.name == better else "reversed"
        out.append({"worse": worse, "better": better, "verdict": verdict, "sentence": c.sentence, "comparison": c})
    return out


def versus_values(values: Mapping[str, Mapping[str, Sequence[float]]], baseline: str, keys: Sequence[str],
                  digits: int = 1, higher_is_better: bool = True) -> list[dict]:
    """Each method against ``baseline`` on each figure, with the spread over seeds.

    Args:
        values: ``{method: {key: [one value per seed]}}``; a method may lack a key.
        baseline: the method the others are compared with.
        keys: the figures (table columns).

    Returns one row per method other than ``baseline``: ``{"method": name, key: cell, ...,
    key + "_comparison": Comparison | None}``; a cell reads ``"+2.8 (more than the spread)"``,
    ``"+0.4 (inside the spread)"`` or ``"n/a"``; the sign is method minus baseline of the means.

    Raises:
        KeyError: ``baseline`` not in ``values``.
    """
    from ..conclusions import compare

    if baseline not in values:
        raise KeyError(f"baseline {baseline!r} not among {list(values)}")
    rows = []
    for name, figs in values.items():
        if name == baseline:
            continue
        row: dict = {"method": name}
        for key in keys:
            if key not in figs or key not in values[baseline]:
                row[key], row[key + "_comparison"] = "n/a", None
                continue
            mine, base = list(figs[key]), list(values[baseline][key])
            c = compare({name: mine, baseline: base}, higher_is_better=higher_is_better, digits=digits)
            row[key] = (f"{float(np.mean(mine) - np.mean(base)):+.{digits}f} "
                        f"({'more than' if c.distinguishable else 'inside'} the spread)")
            row[key + "_comparison"] = c
        rows.append(row)
    return rows


def versus_rows(results: Iterable[ContinualResult], baseline: str = "finetune", names: Sequence[str] | None = None,
                kinds: Sequence[str] = ("task", "domain", "class"), key: str = "average_accuracy",
                digits: int = 1) -> list[dict]:
    """Each strategy against ``baseline`` in each scenario (:func:`versus_values` on ``key``,
    in %): rows ``{"strategy": name, kind: cell, kind + "_comparison": Comparison | None}``."""
    results = list(results)
    present = list(dict.fromkeys(r.strategy for r in results))
    names = [n for n in (names or present) if n != baseline]
    values: dict[str, dict[str, list[float]]] = {}
    for name in [baseline, *names]:
        for kind in kinds:
            try:
                values.setdefault(name, {})[kind] = seed_values(results, kind, name, key)
            except KeyError:
                continue
    rows = versus_values(values, baseline, kinds, digits)
    for row in rows:
        row["strategy"] = row.pop("method")
    return [{"strategy": r["strategy"], **{k: v for k, v in r.items() if k != "strategy"}} for r in rows]


def ordering_check(rows: list[dict], kind: str) -> list[tuple[str, str, float, float, bool]]:
    """For consecutive methods in :data:`VAN_DE_VEN_ORDER` [kind]: ``(worse, better, ours_worse,
    ours_better, holds)`` where ``holds`` = our mean accuracy of ``better`` >= that of ``worse``."""
    acc = {r["strategy"]: r["average_accuracy"] for r in rows if r["scenario"] == kind}
    order = [m for m in VAN_DE_VEN_ORDER[kind] if m in acc]
    return [(a, b, acc[a], acc[b], acc[b] >= acc[a]) for a, b in zip(order, order[1:])]


def markdown_table(rows: list[dict], columns: Sequence[tuple[str, str]], digits: int = 1) -> str:
    """A Markdown table: ``columns`` are ``(key, header)``; ``key_std`` entries are shown as ``± std``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            if isinstance(v, float):
                cell = "n/a" if np.isnan(v) else f"{v:.{digits}f}"
                if key + "_std" in r and not np.isnan(v):
                    cell += f" ± {r[key + '_std']:.{digits}f}"
            else:
                cell = "—" if v is None else str(v)
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep(kind: str, name: str, values: Sequence[float], param: str, proto: Protocol | None = None,
          data_seed: int = 0, workers: int = 1) -> list[dict]:
    """Average accuracy and forgetting (mean over the protocol's seeds) for each value of one
    hyper-parameter: ``param`` in ``"ewc_lambda"``, ``"lwf_temperature"``, ``"lwf_weight"``, ``"buffer"``.

    Each row: ``value``, ``average_accuracy``, ``average_accuracy_std``, ``forgetting`` (means,
    in %), and the per-seed figures ``values`` (final average accuracy) and
    ``forgetting_values`` for :func:`course_lib.conclusions.compare`."""
    proto = proto or protocol()
    protos = []
    for v in values:
        if param == "ewc_lambda":
            protos.append(replace(proto, ewc_lambda={**proto.ewc_lambda, kind: float(v)}))
        elif param in ("lwf_temperature", "lwf_weight", "buffer"):
            protos.append(replace(proto, **{param: type(getattr(proto, param))(v)}))
        else:
            raise ValueError(f"unknown hyper-parameter {param!r}")
    jobs = [(kind, name, p, s) for p in protos for s in proto.seeds]
    results = run_many(jobs, data_seed, workers)
    rows = []
    n = len(proto.seeds)
    for k, v in enumerate(values):
        ms = [continual_metrics(r.acc) for r in results[k * n : (k + 1) * n]]
        acc, acc_std = summarize([100 * m["average_accuracy"] for m in ms])
        fgt, _ = summarize([100 * m["forgetting"] for m in ms])
        rows.append({"value": v, "average_accuracy": acc, "average_accuracy_std": acc_std, "forgetting": fgt,
                     "values": [100 * m["average_accuracy"] for m in ms],
                     "forgetting_values": [100 * m["forgetting"] for m in ms]})
    return rows


def ewc_step_times(hidden: int, rounds: int = 30, repeats: int = 5, lam: float = 1e4) -> dict[str, dict[str, float]]:
    """Time one training step (domain-IL Split-Digits, batch 128, after three consolidated
    tasks): a plain step, fused EWC and EWC with the penalty in the loss.

    The variants are timed in interleaved rounds (a few steps each), so neighbours share the
    same background load; each round gives a ratio to the plain step of that round.

    Returns ``{variant: {"ms": median step time, "ratio": median per-round ratio to plain}}``.
    """
    from .. import config as cfg
    from .strategies import EWC, Naive

    sc = split_digits_scenario("domain")
    learners = {}
    for name, strategy in (("plain", Naive()), ("ewc (fused)", EWC(lam, fused=True)),
                           ("ewc (penalty in loss)", EWC(lam, fused=False))):
        learner = ContinualLearner(sc, strategy, TrainConfig(iterations=5), seed=0, model=lambda: mlp(64, 2, hidden))
        for exp in sc.experiences[:3]:
            learner.train_task(exp)
        learner.task_index = 3
        learner.model.train()
        learners[name] = (learner, learner.sample_batch(strategy.training_set(learner, sc.experiences[3])))
    times: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(rounds):
        for name, (learner, batch) in learners.items():
            r = cfg.benchmark(lambda: learner.train_step(batch), warmup=1, repeats=repeats, inference=False)
            times[name].append(r.median)
    plain = np.array(times["plain"])
    return {name: {"ms": 1e3 * float(np.median(v)), "ratio": float(np.median(np.array(v) / plain))}
            for name, v in times.items()}
