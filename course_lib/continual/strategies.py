"""A small strategy API for continual learning (in the spirit of Avalanche and mammoth).

:class:`ContinualLearner` owns the network, the optimiser and the training loop; a
:class:`Strategy` is a plug-in that changes the loop through hooks::

    setup(learner)                      once, before the stream (may replace the model)
    before_task(learner, exp)           e.g. freeze a teacher (LwF), add a column (PNN)
    training_set(learner, exp)          the data batches are drawn from (Joint: all so far)
    current_weight(learner)             weight of the current batch's cross-entropy
    loss_terms(learner, batch, raw)     extra loss terms before backward (replay, LwF, EWC)
    after_backward(learner)             edit gradients before the step (fused EWC)
    after_step(learner)                 after each optimiser step
    after_task(learner, exp)            e.g. store exemplars, consolidate a Fisher
    logits(learner, x, task_ids)        override the forward pass (PNN: pick a column)

Strategies here: :class:`Naive` (fine-tuning, the lower bound), :class:`Joint` (all data
so far, the upper bound), :class:`Replay` (reservoir or class-balanced memory),
:class:`EWC` and online EWC, :class:`LwF` and :class:`Progressive` (task-incremental only).

Protocol defaults follow van de Ven & Tolias (2019): Adam (lr 1e-3, betas 0.9/0.999),
batch 128, the optimiser reset at each task; in the class scenario only the classes seen
so far compete in the softmax; replay and LwF weight the current loss by ``1/t`` and the
replayed/distilled loss by ``1 - 1/t`` (``t`` = tasks seen including the current one).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .buffers import ClassBalancedBuffer, ReservoirBuffer
from .models import ProgressiveNet, build_model
from .regularization import EWCPenalty, distillation_loss, fisher_diagonal, trainable_parameters
from .scenarios import Experience, Scenario


@dataclass
class TrainConfig:
    """Optimisation settings of one continual run.

    Attributes:
        iterations: optimiser steps per task (van de Ven: 2000 on Split-MNIST).
        batch_size: current-task samples per step (and replayed samples per step).
        lr: Adam learning rate.
        reset_optimizer: a fresh Adam state at every task.
    """

    iterations: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    reset_optimizer: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need iterations >= 1, batch_size >= 1 and lr > 0, got {self}")


@dataclass
class Batch:
    """Inputs ``x [B, ...]``, targets ``y [B]`` (output units) and task ids ``t [B]``."""

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor


@dataclass
class ContinualResult:
    """The outcome of one run.

    Attributes:
        acc: ``[T, T]`` float64, ``acc[i, j]`` = test accuracy on task ``j`` after training task ``i``.
        baseline: ``[T]`` accuracy of the untrained network under the same evaluation as
            ``acc[j-1, j]`` (the reference of forward transfer).
        train_seconds: wall time spent training each task.
    """

    scenario: str
    strategy: str
    seed: int
    acc: np.ndarray
    baseline: np.ndarray
    train_seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def average_accuracy(self) -> float:
        return float(self.acc[-1].mean())


class Strategy:
    """Base class: plain sequential fine-tuning; override hooks to change the loop."""

    name = "strategy"
    #: scenarios the strategy can run in
    scenarios: tuple[str, ...] = ("task", "domain", "class")

    def setup(self, learner: "ContinualLearner") -> None:
        """Called once before the first task."""

    def before_task(self, learner: "ContinualLearner", exp: Experience) -> None:
        """Called before training ``exp``."""

    def training_set(self, learner: "ContinualLearner", exp: Experience) -> Batch:
        """The data training batches are drawn from (default: the current task)."""
        return Batch(exp.x_train, exp.y_train, torch.full_like(exp.y_train, exp.task_id))

    def current_weight(self, learner: "ContinualLearner") -> float:
        """Weight of the current batch's cross-entropy in the loss."""
        return 1.0

    def loss_terms(self, learner: "ContinualLearner", batch: Batch, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra, already weighted, loss terms to add before ``backward()``.

        ``raw`` are the unmasked outputs ``[B, U]`` of the current batch."""
        return {}

    def after_backward(self, learner: "ContinualLearner") -> None:
        """Called between ``backward()`` and the optimiser step (gradients are in ``.grad``)."""

    def after_step(self, learner: "ContinualLearner") -> None:
        """Called after each optimiser step."""

    def after_task(self, learner: "ContinualLearner", exp: Experience) -> None:
        """Called after training ``exp``."""

    def logits(self, learner: "ContinualLearner", x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor | None:
        """Raw outputs ``[B, U]``; ``None`` = ``learner.model(x)``."""
        return None

    def describe(self) -> str:
        return self.name


class ContinualLearner:
    """Trains one network on a scenario's tasks in order and records the accuracy matrix.

    Args:
        scenario: the benchmark.
        strategy: the plug-in.
        config: optimisation settings.
        seed: seeds the network's initialisation and the batch order.
        model: a network ``[B, ...] -> [B, scenario.num_outputs]``, or a function
            returning one (called after seeding, so the initialisation follows ``seed``);
            default :func:`~course_lib.continual.models.build_model`.
        device: where to train.
    """

    def __init__(
        self,
        scenario: Scenario,
        strategy: Strategy,
        config: TrainConfig | None = None,
        seed: int = 0,
        model: nn.Module | Callable[[], nn.Module] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if scenario.kind not in strategy.scenarios:
            raise ValueError(f"{strategy.name} does not apply to the {scenario.kind!r} scenario "
                             f"(it needs one of {strategy.scenarios})")
        self.scenario, self.strategy = scenario, strategy
        self.config = config or TrainConfig()
        self.seed, self.device = seed, torch.device(device)
        torch.manual_seed(seed)
        if model is None:
            model = build_model(scenario.input_shape, scenario.num_outputs)
        elif not isinstance(model, nn.Module):
            model = model()
        self.model = model.to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.task_index = -1  # the task being trained (or last trained)
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._head_mask = torch.zeros(scenario.num_tasks, scenario.num_outputs, dtype=torch.bool)
        for t in range(scenario.num_tasks):
            self._head_mask[t, scenario.task_units[t]] = True
        self._seen_masks: dict[int, torch.Tensor] = {}
        strategy.setup(self)

    # ------------------------------------------------------------------ outputs
    @property
    def tasks_seen(self) -> int:
        """Tasks trained so far, including the one being trained."""
        return self.task_index + 1

    def competing(self, task_ids: torch.Tensor, seen: int | None = None) -> torch.Tensor:
        """bool ``[B, U]``: output units allowed to compete for each input."""
        if self.scenario.kind == "task":
            return self._head_mask[task_ids.cpu()].to(self.device)
        seen = seen if seen is not None else self.tasks_seen
        if seen not in self._seen_masks:
            mask = torch.zeros(self.scenario.num_outputs, dtype=torch.bool)
            mask[self.scenario.units(0, seen)] = True
            self._seen_masks[seen] = mask.to(self.device)
        return self._seen_masks[seen].expand(len(task_ids), -1)

    def raw_logits(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Outputs ``[B, U]`` of the network (or of the strategy's forward pass)."""
        out = self.strategy.logits(self, x, task_ids)
        return self.model(x) if out is None else out

    def masked_logits(self, x: torch.Tensor, task_ids: torch.Tensor, seen: int | None = None) -> torch.Tensor:
        """Outputs with non-competing units set to ``-inf``."""
        return self.raw_logits(x, task_ids).masked_fill(~self.competing(task_ids, seen), float("-inf"))

    # ------------------------------------------------------------------ training
    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.config.lr, betas=self.config.betas, foreach=True)

    def sample_batch(self, data: Batch, size: int | None = None) -> Batch:
        n = len(data.y)
        k = min(size or self.config.batch_size, n)
        idx = torch.randperm(n, generator=self.generator)[:k]
        return Batch(data.x[idx].to(self.device), data.y[idx].to(self.device), data.t[idx].to(self.device))

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on ``batch`` plus the strategy's loss terms (the model must be
        in training mode, as :meth:`train_task` leaves it); returns the loss parts."""
        raw = self.raw_logits(batch.x, batch.t)
        ce = F.cross_entropy(raw.masked_fill(~self.competing(batch.t), float("-inf")), batch.y)
        terms = self.strategy.loss_terms(self, batch, raw)
        loss = self.strategy.current_weight(self) * ce + sum(terms.values(), torch.zeros((), device=self.device))
        if self.optimizer is None:
            self.optimizer = self._new_optimizer()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.strategy.after_backward(self)
        self.optimizer.step()
        self.step += 1
        self.strategy.after_step(self)
        return {"ce": float(ce.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def train_task(self, exp: Experience) -> float:
        """Train on one experience; returns the wall time in seconds."""
        t0 = time.perf_counter()
        self.task_index = exp.task_id
        self.strategy.before_task(self, exp)
        if self.optimizer is None or self.config.reset_optimizer:
            self.optimizer = self._new_optimizer()
        data = self.strategy.training_set(self, exp)
        self.model.train()
        for _ in range(self.config.iterations):
            self.train_step(self.sample_batch(data))
        self.strategy.after_task(self, exp)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int, seen: int | None = None, batch_size: int = 1024) -> torch.Tensor:
        """Predicted output units ``[N]`` for inputs of task ``task_id``."""
        self.model.eval()
        preds = []
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size].to(self.device)
            tid = torch.full((len(xb),), task_id, dtype=torch.int64)
            preds.append(self.masked_logits(xb, tid, seen).argmax(1).cpu())
        return torch.cat(preds)

    def evaluate(self, exp: Experience, seen: int | None = None) -> float:
        """Test accuracy on one experience (``seen``: tasks trained, default so far)."""
        return (self.predict(exp.x_test, exp.task_id, seen) == exp.y_test).float().mean().item()

    def fit(self, keep_states: bool = False) -> ContinualResult:
        """Train on every task in order; evaluate on every task after each one.

        Args:
            keep_states: also keep a copy of the model's ``state_dict`` before training and
                after each task, in ``result.extra["states"]`` (``T + 1`` entries).
        """
        exps = self.scenario.experiences
        n = len(exps)
        acc = np.zeros((n, n))
        baseline = np.zeros(n)
        for j, exp in enumerate(exps):  # untrained network, evaluated like acc[j-1, j]
            baseline[j] = self._evaluate_future(exp, seen=j)
        times = []
        states = [copy.deepcopy(self.model.state_dict())] if keep_states else []
        for i, exp in enumerate(exps):
            times.append(self.train_task(exp))
            for j, other in enumerate(exps):
                acc[i, j] = self._evaluate_future(other, seen=i + 1) if j > i else self.evaluate(other, seen=i + 1)
            if keep_states:
                states.append(copy.deepcopy(self.model.state_dict()))
        return ContinualResult(self.scenario.name + "/" + self.scenario.kind, self.strategy.describe(),
                               self.seed, acc, baseline, times, {"states": states} if keep_states else {})

    def _evaluate_future(self, exp: Experience, seen: int) -> float:
        """Accuracy on a task not trained yet. A progressive network has no column for it
        yet: evaluate a copy with freshly initialised columns (global RNG state restored)."""
        net = self.model
        if not isinstance(net, ProgressiveNet) or net.num_columns > exp.task_id:
            return self.evaluate(exp, seen)
        rng = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed + 7919 * (exp.task_id + 1))
            self.model = copy.deepcopy(net)
            while self.model.num_columns <= exp.task_id:
                self.model.add_column(len(self.scenario.task_units[self.model.num_columns]))
            return self.evaluate(exp, seen)
        finally:
            self.model = net
            torch.random.set_rng_state(rng)


# ---------------------------------------------------------------------- strategies
class Naive(Strategy):
    """Sequential fine-tuning: nothing against forgetting (the lower bound)."""

    name = "finetune"


class Joint(Strategy):
    """Train on the union of all tasks so far (the upper bound; needs all old data)."""

    name = "joint"

    def training_set(self, learner: ContinualLearner, exp: Experience) -> Batch:
        seen = learner.scenario.experiences[: exp.task_id + 1]
        return Batch(torch.cat([e.x_train for e in seen]), torch.cat([e.y_train for e in seen]),
                     torch.cat([torch.full_like(e.y_train, e.task_id) for e in seen]))


class Replay(Strategy):
    """Experience replay: a memory of old samples mixed into every step.

    Loss = ``1/t * CE(current) + (1 - 1/t) * CE(replayed)``, one replayed batch of
    ``batch_size`` items per step. The memory is filled at the end of each task.

    Args:
        capacity: items in memory (all tasks together).
        policy: ``"reservoir"`` (uniform over everything seen) or ``"balanced"``
            (equal share per class).
    """

    name = "replay"

    def __init__(self, capacity: int = 200, policy: str = "reservoir", seed: int = 0) -> None:
        if policy not in ("reservoir", "balanced"):
            raise ValueError(f"policy must be 'reservoir' or 'balanced', got {policy!r}")
        self.capacity, self.policy = capacity, policy
        self.buffer = ReservoirBuffer(capacity, seed) if policy == "reservoir" else ClassBalancedBuffer(capacity, seed)

    def describe(self) -> str:
        return f"replay-{self.policy}({self.capacity})"

    def current_weight(self, learner: ContinualLearner) -> float:
        return 1.0 / learner.tasks_seen if len(self.buffer) else 1.0

    def loss_terms(self, learner: ContinualLearner, batch: Batch, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        if not len(self.buffer):
            return {}
        x, y, t = (v.to(learner.device) for v in self.buffer.sample(learner.config.batch_size))
        replay_ce = F.cross_entropy(learner.masked_logits(x, t), y)
        return {"replay": (1.0 - 1.0 / learner.tasks_seen) * replay_ce}

    def after_task(self, learner: ContinualLearner, exp: Experience) -> None:
        order = torch.randperm(len(exp.y_train), generator=learner.generator)
        self.buffer.add(exp.x_train[order], exp.y_train[order], torch.full_like(exp.y_train, exp.task_id))


class EWC(Strategy):
    """Elastic weight consolidation (``online=False``) or online EWC (``online=True``).

    Loss = ``CE + lambda / 2 * sum F (theta - theta*)^2``; the Fisher is estimated after
    each task on up to ``fisher_samples`` of its training samples, with only that task's
    competing output units in the softmax.

    ``fused=True`` (default) skips autograd for the penalty: its gradient
    ``lambda * A * (theta - m)`` is added to ``.grad`` with three multi-tensor ops in
    :meth:`after_backward` - the same update, a cheaper step. ``fused=False`` adds the
    penalty to the loss, as in the formula.
    """

    name = "ewc"

    def __init__(self, lam: float = 1e4, online: bool = False, gamma: float = 1.0,
                 fisher_samples: int | None = None, labels: str = "empirical", fused: bool = True) -> None:
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        self.lam, self.online, self.fisher_samples, self.labels = lam, online, fisher_samples, labels
        self.fused = fused
        self.penalty = EWCPenalty("online" if online else "separate", gamma)
        self._fused_state: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None

    def describe(self) -> str:
        return f"{'online-' if self.online else ''}ewc(lambda={self.lam:g})"

    def loss_terms(self, learner: ContinualLearner, batch: Batch, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fused or not self.penalty.num_tasks:
            return {}
        return {"ewc": 0.5 * self.lam * self.penalty(learner.model)}

    def after_backward(self, learner: ContinualLearner) -> None:
        if not self.fused or self._fused_state is None:
            return
        params, importance, anchor = self._fused_state
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            diff = torch._foreach_sub(params, anchor)
            torch._foreach_mul_(diff, importance)
            torch._foreach_add_([p.grad for p in params], diff, alpha=self.lam)

    def after_task(self, learner: ContinualLearner, exp: Experience) -> None:
        n = len(exp.y_train) if self.fisher_samples is None else min(self.fisher_samples, len(exp.y_train))
        idx = torch.randperm(len(exp.y_train), generator=learner.generator)[:n]
        x, y = exp.x_train[idx].to(learner.device), exp.y_train[idx].to(learner.device)
        mask = learner.competing(torch.tensor([exp.task_id]))[0]
        fisher = fisher_diagonal(learner.model, x, y, output_mask=mask, labels=self.labels)
        self.penalty.consolidate(fisher, trainable_parameters(learner.model))
        named = dict(learner.model.named_parameters())
        names = list(self.penalty.importance)
        self._fused_state = ([named[n] for n in names], [self.penalty.importance[n] for n in names],
                             [self.penalty.anchor[n] for n in names])


class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem, 2016), as in van de Ven & Tolias:
    the network before the current task is a frozen teacher; on the *current* inputs the
    student's old outputs are distilled towards the teacher's at temperature ``T``.

    Old outputs: the heads of earlier tasks (task), the shared head (domain), the units
    of earlier classes (class). Loss = ``1/t * CE + weight * (1 - 1/t) * KD``.
    """

    name = "lwf"

    def __init__(self, temperature: float = 2.0, weight: float = 1.0) -> None:
        if temperature <= 0 or weight < 0:
            raise ValueError(f"need temperature > 0 and weight >= 0, got {temperature}, {weight}")
        self.temperature, self.weight = temperature, weight
        self.teacher: nn.Module | None = None

    def describe(self) -> str:
        return f"lwf(T={self.temperature:g})"

    def before_task(self, learner: ContinualLearner, exp: Experience) -> None:
        self.teacher = None
        if exp.task_id > 0:
            self.teacher = copy.deepcopy(learner.model).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def current_weight(self, learner: ContinualLearner) -> float:
        return 1.0 / learner.tasks_seen if self.teacher is not None else 1.0

    def _old_unit_groups(self, learner: ContinualLearner) -> list[list[int]]:
        sc, t = learner.scenario, learner.task_index
        if sc.kind == "task":
            return [list(sc.task_units[k]) for k in range(t)]
        if sc.kind == "domain":
            return [list(sc.task_units[0])]
        return [sc.units(0, seen=t)]

    def loss_terms(self, learner: ContinualLearner, batch: Batch, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        with torch.no_grad():
            target = self.teacher(batch.x)
        student = raw
        groups = self._old_unit_groups(learner)
        kd = sum(distillation_loss(student[:, g], target[:, g], self.temperature) for g in groups) / len(groups)
        return {"distill": self.weight * (1.0 - 1.0 / learner.tasks_seen) * kd}


class Progressive(Strategy):
    """Progressive networks: a new column per task, earlier columns frozen (task scenario).

    The learner's model is replaced by a :class:`ProgressiveNet`; column ``k`` produces
    the head of task ``k``. Needs the task identity at test time.
    """

    name = "progressive"
    scenarios = ("task",)

    def __init__(self, hidden: int = 100, num_layers: int = 2) -> None:
        self.hidden, self.num_layers = hidden, num_layers

    def describe(self) -> str:
        return f"progressive(h={self.hidden})"

    def setup(self, learner: ContinualLearner) -> None:
        in_dim = int(np.prod(learner.scenario.input_shape))
        learner.model = ProgressiveNet(in_dim, self.hidden, self.num_layers).to(learner.device)

    def before_task(self, learner: ContinualLearner, exp: Experience) -> None:
        net = learner.model
        assert isinstance(net, ProgressiveNet)
        while net.num_columns <= exp.task_id:
            net.add_column(len(learner.scenario.task_units[net.num_columns]))
        net.to(learner.device)

    def logits(self, learner: ContinualLearner, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        net = learner.model
        assert isinstance(net, ProgressiveNet)
        out = torch.full((len(x), learner.scenario.num_outputs), float("-inf"), device=x.device)
        for t in task_ids.unique().tolist():
            rows = (task_ids == t).nonzero().squeeze(1).to(x.device)
            units = torch.tensor(learner.scenario.task_units[t], device=x.device)
            col = net(x[rows], column=t)
            out[rows.unsqueeze(1), units.unsqueeze(0)] = col
        return out


STRATEGIES: dict[str, type[Strategy]] = {
    "finetune": Naive, "joint": Joint, "replay": Replay, "ewc": EWC, "lwf": LwF, "progressive": Progressive,
}
