"""The online learner: learning from the log, checkpoints, restarts, consistent versions."""

import threading

import numpy as np
import pytest
import torch

from course_lib.continual.feedback_store import FeedbackStore
from course_lib.continual.online import CHECKPOINT_NAME, OnlineConfig, OnlineLearner, atomic_write
from course_lib.data import load_digits_split

CFG = OnlineConfig(min_batch=8, max_batch=128, steps_per_update=30, hidden=64)


@pytest.fixture(scope="module")
def digits():
    x, y, _, _ = load_digits_split(0)
    return x[:240].numpy(), y[:240].numpy()


def test_store_round_trip_and_ids(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite3", dim=3)
    a = store.add(np.array([0.1, 0.2, 0.3]), 1, predicted=0, model_version=5)
    ids = store.add_many(np.ones((2, 3)), [2, 3])
    assert ids == [a + 1, a + 2] and store.max_id() == a + 2 and store.count() == 3 and store.count(after=a) == 2
    got_ids, x, y = store.fetch_after(a)
    assert got_ids.tolist() == ids and y.tolist() == [2, 3] and x.dtype == np.float32
    assert store.recent_outcomes(10) == [False]
    assert store.oldest_age(after=store.max_id()) is None
    with pytest.raises(ValueError, match="shape"):
        store.add(np.ones(4), 1)
    with pytest.raises(ValueError):
        store.add_many(np.ones((2, 3)), [1])
    mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
    sync = store._conn().execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 2  # 2 = FULL


def test_learns_from_feedback_and_publishes_versions(tmp_path, digits):
    x, y = digits
    learner = OnlineLearner(tmp_path, CFG)
    before = (learner.predict(x)[0] == y).mean()
    ids, _, version = learner.add_feedback(x, y.tolist())
    assert version == 0 and ids == list(range(1, 241))
    learned = 0
    while learner.update_once():
        learned += 1
    assert learner.snapshot.watermark == 240 and learner.snapshot.version == learned == 2
    after = (learner.predict(x)[0] == y).mean()
    assert after > 0.8 and after > before + 0.5
    assert (tmp_path / CHECKPOINT_NAME).exists() and len(learner.buffer) == 240
    assert learner.update_once() == 0  # nothing pending


def test_restart_resumes_from_the_checkpoint_watermark(tmp_path, digits):
    x, y = digits
    first = OnlineLearner(tmp_path, CFG)
    first.add_feedback(x[:100], y[:100].tolist())
    first.update_once()
    first.add_feedback(x[100:], y[100:].tolist())  # acknowledged, not learned yet
    probe_before = first.predict(x)[1]
    del first
    second = OnlineLearner(tmp_path, OnlineConfig(hidden=999))  # the checkpoint's config wins
    assert second.restored and second.config.hidden == 64
    assert second.snapshot.version == 1 and second.snapshot.watermark == 100
    np.testing.assert_allclose(second.predict(x)[1], probe_before, rtol=1e-6)
    assert second.store.count(after=second.snapshot.watermark) == 140
    while second.update_once():  # max_batch = 128: two updates
        pass
    assert second.snapshot.watermark == 240 and second.snapshot.version == 3


def test_predictions_are_consistent_per_version_during_updates(tmp_path, digits):
    x, y = digits
    learner = OnlineLearner(tmp_path, OnlineConfig(min_batch=1, max_batch=16, steps_per_update=15, hidden=64))
    probe = x[:32]
    done = threading.Event()

    def trainer():
        for k in range(0, 160, 16):
            learner.add_feedback(x[k : k + 16], y[k : k + 16].tolist())
            learner.update_once()
        done.set()

    t = threading.Thread(target=trainer)
    t.start()
    seen: dict[int, np.ndarray] = {}
    checks = 0
    while not done.is_set() or checks < 5:
        _, probs, version = learner.predict(probe)
        if version in seen:
            np.testing.assert_array_equal(probs, seen[version])  # same version, same model
            checks += 1
        seen[version] = probs
    t.join(60)
    assert len(seen) >= 3 and checks >= 5


def test_atomic_write_and_stale_temporary_files(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two" and list(tmp_path.glob(".*.tmp")) == []
    stale = tmp_path / ".checkpoint.pt.123.456.tmp"
    stale.write_bytes(b"half a checkpoint")
    OnlineLearner(tmp_path, CFG)
    assert not stale.exists()


def test_background_thread_learns_and_stops(tmp_path, digits):
    x, y = digits
    learner = OnlineLearner(tmp_path, OnlineConfig(min_batch=200, max_batch=256, max_wait=0.2, steps_per_update=10, hidden=32))
    learner.start()
    try:
        ids, _, _ = learner.add_feedback(x[:20], y[:20].tolist())  # below min_batch: waits max_wait
        assert learner.wait_learned(ids[-1], timeout=30)
    finally:
        learner.stop()
    assert learner.metrics()["updates"] >= 1 and learner.metrics()["last_error"] is None


@pytest.mark.parametrize("kwargs", [{"min_batch": 0}, {"min_batch": 10, "max_batch": 5}, {"lr": 0.0},
                                    {"ewc_gamma": 0.0}, {"ewc_lambda": -1.0}])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        OnlineConfig(**kwargs)


def test_prequential_run_is_deterministic_and_learns(tmp_path):
    from course_lib.continual.client import drift_stream
    from course_lib.continual.online import prequential_run

    stream = drift_stream((("none", 96),), seed=0)
    cfg = OnlineConfig(min_batch=16, steps_per_update=5, hidden=32, fisher_samples=32)
    a = prequential_run(stream.x, stream.y, cfg, tmp_path / "a")
    b = prequential_run(stream.x, stream.y, cfg, tmp_path / "b")
    assert a.dtype == bool and a.shape == (96,) and np.array_equal(a, b)
    assert a[-32:].mean() > a[:16].mean()  # it learns: the last items are predicted better than the first
    with pytest.raises(ValueError, match="empty folder"):
        prequential_run(stream.x, stream.y, cfg, tmp_path / "a")
    with pytest.raises(ValueError, match="as many labels"):
        prequential_run(stream.x, stream.y[:5], cfg, tmp_path / "c")


def test_guard_trial_runs_both_learners_on_the_same_stream():
    from course_lib.continual.online import guard_trial

    trial = guard_trial(0, (("none", 32), ("mirror", 16)), every=16, steps_per_update=2)
    assert set(trial) == {"phase", "replay + EWC guard", "plain fine-tuning"}
    assert trial["phase"].tolist() == [0] * 32 + [1] * 16
    assert all(v.shape == (48,) and v.dtype == bool for k, v in trial.items() if k != "phase")
