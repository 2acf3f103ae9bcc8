"""The strategy API: hooks, masks, and what each strategy must achieve."""

import numpy as np
import pytest
import torch

from course_lib.continual.metrics import continual_metrics
from course_lib.continual.models import ProgressiveNet, mlp
from course_lib.continual.strategies import (
    EWC, ContinualLearner, Joint, LwF, Naive, Progressive, Replay, Strategy, TrainConfig,
)

FAST = TrainConfig(iterations=40)


def _learner(sc, strategy, seed=0, hidden=64, config=FAST):
    return ContinualLearner(sc, strategy, config, seed=seed, model=lambda: mlp(64, sc.num_outputs, hidden))


class Recorder(Strategy):
    name = "recorder"

    def __init__(self):
        self.calls = []

    def setup(self, learner):
        self.calls.append("setup")

    def before_task(self, learner, exp):
        self.calls.append(f"before{exp.task_id}")

    def loss_terms(self, learner, batch, raw):
        self.calls.append("terms")
        assert raw.shape == (len(batch.y), learner.scenario.num_outputs)
        return {"zero": raw.sum() * 0.0}

    def after_backward(self, learner):
        self.calls.append("backward")
        assert all(p.grad is not None for p in learner.model.parameters())

    def after_step(self, learner):
        self.calls.append("step")

    def after_task(self, learner, exp):
        self.calls.append(f"after{exp.task_id}")


def test_hooks_are_called_in_order(digits_scenarios):
    rec = Recorder()
    result = _learner(digits_scenarios["domain"], rec, config=TrainConfig(iterations=2)).fit()
    expected = ["setup"]
    for t in range(5):
        expected += [f"before{t}"] + ["terms", "backward", "step"] * 2 + [f"after{t}"]
    assert rec.calls == expected
    assert result.acc.shape == (5, 5) and result.baseline.shape == (5,)
    assert len(result.train_seconds) == 5


def test_output_masks_per_scenario(digits_scenarios):
    task = _learner(digits_scenarios["task"], Naive())
    m = task.competing(torch.tensor([0, 3]))
    assert m[0].nonzero().flatten().tolist() == [0, 1] and m[1].nonzero().flatten().tolist() == [6, 7]
    cls = _learner(digits_scenarios["class"], Naive())
    assert cls.competing(torch.tensor([4]), seen=2)[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    dom = _learner(digits_scenarios["domain"], Naive())
    assert dom.competing(torch.tensor([4]), seen=1).all()


def test_same_seed_same_matrix(digits_scenarios):
    a = _learner(digits_scenarios["class"], Naive(), seed=3).fit()
    b = _learner(digits_scenarios["class"], Naive(), seed=3).fit()
    np.testing.assert_array_equal(a.acc, b.acc)


def test_class_incremental_finetuning_forgets_and_replay_does_not(digits_scenarios):
    sc = digits_scenarios["class"]
    ft = _learner(sc, Naive()).fit()
    rp = _learner(sc, Replay(100, "reservoir")).fit()
    bal = _learner(sc, Replay(100, "balanced")).fit()
    # fine-tuning: every old task is lost, only the last one survives
    assert ft.acc[-1, :-1].max() < 0.1 and ft.acc[-1, -1] > 0.9
    assert continual_metrics(ft.acc)["forgetting"] > 0.8
    assert rp.average_accuracy > 3 * ft.average_accuracy
    assert bal.average_accuracy > 3 * ft.average_accuracy


def test_joint_trains_on_everything_seen(digits_scenarios):
    sc = digits_scenarios["class"]
    learner = _learner(sc, Joint())
    learner.task_index = 2
    data = learner.strategy.training_set(learner, sc.experiences[2])
    assert len(data.y) == sum(len(e.y_train) for e in sc.experiences[:3])
    assert sorted(data.t.unique().tolist()) == [0, 1, 2]


def test_progressive_has_exactly_zero_forgetting(digits_scenarios):
    sc = digits_scenarios["task"]
    learner = ContinualLearner(sc, Progressive(hidden=20), TrainConfig(iterations=10), seed=0)
    probe = sc.experiences[0].x_test[:50]
    outputs = []
    for exp in sc.experiences:
        learner.train_task(exp)
        with torch.no_grad():
            outputs.append(learner.model(probe, column=0).clone())
    assert isinstance(learner.model, ProgressiveNet) and learner.model.num_columns == 5
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])  # bit for bit
    result = ContinualLearner(sc, Progressive(hidden=20), TrainConfig(iterations=10), seed=0).fit()
    for j in range(5):
        assert np.all(result.acc[j:, j] == result.acc[j, j])
    m = continual_metrics(result.acc, result.baseline)
    assert m["forgetting"] == 0.0 and m["bwt"] == 0.0
    assert not np.isnan(result.acc).any()


def test_progressive_needs_the_task_identity(digits_scenarios):
    with pytest.raises(ValueError, match="does not apply"):
        ContinualLearner(digits_scenarios["class"], Progressive(), FAST)


def test_fused_ewc_gradient_equals_the_penalty_gradient(digits_scenarios):
    sc = digits_scenarios["domain"]
    ewc = EWC(lam=500.0, fused=False)
    learner = _learner(sc, ewc, config=TrainConfig(iterations=10))
    for exp in sc.experiences[:2]:
        learner.train_task(exp)
    learner.task_index = 2
    with torch.no_grad():  # move away from the anchor so the penalty gradient is not ~0
        for p in learner.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = learner.sample_batch(ewc.training_set(learner, sc.experiences[2]))
    grads = []
    for fused in (False, True):
        ewc.fused = fused
        learner.model.zero_grad(set_to_none=True)
        raw = learner.raw_logits(batch.x, batch.t)
        loss = torch.nn.functional.cross_entropy(raw, batch.y)
        loss = loss + sum(ewc.loss_terms(learner, batch, raw).values(), torch.zeros(()))
        loss.backward()
        ewc.after_backward(learner)
        grads.append([p.grad.clone() for p in learner.model.parameters()])
    assert any(float(g.abs().max()) > 1e-2 for g in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ewc_pulls_parameters_towards_the_anchor(digits_scenarios):
    sc = digits_scenarios["domain"]
    drift = {}
    for lam in (0.0, 1e5):
        learner = _learner(sc, EWC(lam=lam), config=TrainConfig(iterations=30))
        learner.train_task(sc.experiences[0])
        before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
        learner.train_task(sc.experiences[1])
        drift[lam] = sum(float((p.detach() - before[n]).norm()) for n, p in learner.model.named_parameters())
    assert drift[1e5] < 0.5 * drift[0.0]


def test_lwf_distils_from_a_frozen_copy(digits_scenarios):
    sc = digits_scenarios["task"]
    lwf = LwF(temperature=2.0)
    learner = _learner(sc, lwf, config=TrainConfig(iterations=5))
    learner.train_task(sc.experiences[0])
    assert lwf.teacher is None
    learner.train_task(sc.experiences[1])
    assert lwf.teacher is not None and lwf.teacher is not learner.model
    assert not any(p.requires_grad for p in lwf.teacher.parameters())
    batch = learner.sample_batch(lwf.training_set(learner, sc.experiences[1]))
    terms = lwf.loss_terms(learner, batch, learner.raw_logits(batch.x, batch.t))
    assert set(terms) == {"distill"} and float(terms["distill"].detach()) >= 0


def test_bad_configuration():
    with pytest.raises(ValueError):
        TrainConfig(iterations=0)
    with pytest.raises(ValueError):
        Replay(10, policy="fifo")
    with pytest.raises(ValueError):
        EWC(lam=-1)
    with pytest.raises(ValueError):
        LwF(temperature=0)
