"""Online learning from a feedback log: batched background updates, atomic checkpoints,
consistent model versions.

:class:`OnlineLearner` serves predictions from an immutable :class:`Snapshot` (a model
copy that is never trained again, and its version number) and learns in a background
thread:

1. take up to ``max_batch`` feedback items with ``id > watermark`` from the
   :class:`~course_lib.continual.feedback_store.FeedbackStore` once ``min_batch`` are
   waiting (or the oldest waited ``max_wait`` seconds);
2. train a private copy of the model for ``steps_per_update`` steps on the new items plus
   a replayed batch from a reservoir memory, with an online-EWC guard (the Fisher of the
   memory, anchored at the model before the update) against drifting too far;
3. write the checkpoint atomically (temporary file, ``fsync``, ``os.replace``, ``fsync``
   of the folder): model, optimiser, memory, EWC state, version, and the watermark = the
   id of the last learned item;
4. publish a new snapshot (one reference assignment, atomic for readers).

On start it loads the checkpoint if there is one and then learns every item after the
checkpoint's watermark: nothing acknowledged is ever skipped, whatever moment the
process was killed at.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .buffers import ReservoirBuffer
from .feedback_store import FeedbackStore
from .models import mlp
from .regularization import EWCPenalty, fisher_diagonal, trainable_parameters

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class OnlineConfig:
    """Settings of the online learner (recorded in every checkpoint).

    Attributes:
        dim, num_classes, hidden: the MLP ``dim -> hidden -> hidden -> num_classes``.
        lr: Adam learning rate.
        min_batch: start an update once this many items are waiting ...
        max_wait: ... or once the oldest waited this many seconds.
        max_batch: at most this many new items per update.
        steps_per_update: optimiser steps per update.
        batch_size: new items per step (sampled from the update's items).
        replay_capacity, replay_batch: reservoir memory size and replayed items per step
            (``replay_batch=0``: no replay).
        ewc_lambda, ewc_gamma: online-EWC guard strength and Fisher decay (0 = no guard).
        fisher_samples: memory items used to estimate the Fisher after each update.
        seed: initialisation and sampling seed.
    """

    dim: int = 64
    num_classes: int = 10
    hidden: int = 128
    lr: float = 2e-3
    min_batch: int = 16
    max_wait: float = 0.5
    max_batch: int = 256
    steps_per_update: int = 20
    batch_size: int = 32
    replay_capacity: int = 1000
    replay_batch: int = 32
    ewc_lambda: float = 10.0
    ewc_gamma: float = 0.9
    fisher_samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.dim, self.num_classes, self.hidden, self.min_batch, self.max_batch,
               self.steps_per_update, self.batch_size, self.replay_capacity) < 1:
            raise ValueError(f"sizes and counts must be >= 1: {self}")
        if self.min_batch > self.max_batch:
            raise ValueError(f"min_batch ({self.min_batch}) must be <= max_batch ({self.max_batch})")
        if self.replay_batch < 0:
            raise ValueError(f"replay_batch must be >= 0, got {self.replay_batch}")
        if self.lr <= 0 or self.max_wait < 0 or self.ewc_lambda < 0 or not 0 < self.ewc_gamma <= 1:
            raise ValueError(f"need lr > 0, max_wait >= 0, ewc_lambda >= 0, 0 < ewc_gamma <= 1: {self}")


@dataclass(frozen=True)
class Snapshot:
    """A published model: never modified after publication."""

    version: int
    watermark: int
    model: torch.nn.Module


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OnlineLearner:
    """Predicts from the latest snapshot and learns feedback in the background.

    Args:
        data_dir: holds ``feedback.sqlite3`` and ``checkpoint.pt``.
        config: used for a fresh start; a checkpoint's recorded config wins on restart.
    """

    def __init__(self, data_dir: str | Path, config: OnlineConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.data_dir.glob(".*.tmp"):  # half-written checkpoints of a killed process
            stale.unlink(missing_ok=True)
        self.checkpoint_path = self.data_dir / CHECKPOINT_NAME
        self.config = config or OnlineConfig()
        self.restored = False
        state = None
        if self.checkpoint_path.exists():
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            self.config = OnlineConfig(**state["config"])
            self.restored = True
        cfg = self.config
        self.store = FeedbackStore(self.data_dir / "feedback.sqlite3", cfg.dim)
        torch.manual_seed(cfg.seed)
        self._model = mlp(cfg.dim, cfg.num_classes, cfg.hidden)
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=cfg.lr)
        self.buffer = ReservoirBuffer(cfg.replay_capacity, seed=cfg.seed)
        self.guard = EWCPenalty("online", cfg.ewc_gamma)
        self._gen = torch.Generator().manual_seed(cfg.seed)
        version, watermark = 0, 0
        if state is not None:
            self._model.load_state_dict(state["model"])
            self._optimizer.load_state_dict(state["optimizer"])
            self.buffer.load_state_dict(state["buffer"])
            self.guard.load_state_dict(state["guard"])
            self._gen.set_state(state["generator"])
            version, watermark = int(state["version"]), int(state["watermark"])
        self._snapshot = Snapshot(version, watermark, self._frozen_copy())
        self._outcomes: deque[bool] = deque(self.store.recent_outcomes(200), maxlen=200)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters below
        self.predictions_served = 0
        self.updates = 0
        self.updating = False
        self.last_update_seconds = 0.0
        self.last_error: str | None = None
        self.started = time.time()

    # ------------------------------------------------------------------ serving
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _frozen_copy(self) -> torch.nn.Module:
        model = copy.deepcopy(self._model).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Predictions for float32 ``[n, dim]``: ``(labels int64 [n], probabilities [n, C], version)``,
        all from one snapshot."""
        snap = self._snapshot  # read the reference once: one consistent model
        with torch.no_grad():
            probs = torch.softmax(snap.model(torch.as_tensor(x, dtype=torch.float32)), dim=1)
        with self._lock:
            self.predictions_served += len(x)
        return probs.argmax(1).numpy(), probs.numpy(), snap.version

    def add_feedback(self, x: np.ndarray, labels: np.ndarray | list[int]) -> tuple[list[int], list[int], int]:
        """Predict ``x`` (float32 ``[n, dim]``) with the current snapshot (for the running
        accuracy), then store the labelled items durably in one transaction.

        Returns ``(feedback ids, predicted labels, model version)``.
        """
        pred, _, version = self.predict(x)
        ids = self.store.add_many(x, labels, predicted=pred.tolist(), model_version=version)
        with self._lock:
            self._outcomes.extend(int(p) == int(t) for p, t in zip(pred, labels))
        self._wake.set()
        return ids, pred.tolist(), version

    def metrics(self) -> dict:
        snap = self._snapshot
        with self._lock:
            outcomes = list(self._outcomes)
            served, updates, updating = self.predictions_served, self.updates, self.updating
        return {
            "model_version": snap.version,
            "watermark": snap.watermark,
            "feedback_total": self.store.count(),
            "feedback_pending": self.store.count(after=snap.watermark),
            "predictions_served": served,
            "running_accuracy": float(np.mean(outcomes)) if outcomes else None,
            "running_window": len(outcomes),
            "buffer_size": len(self.buffer),
            "updates": updates,
            "updating": updating,
            "last_update_seconds": self.last_update_seconds,
            "restored_from_checkpoint": self.restored,
            "uptime_seconds": time.time() - self.started,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ learning
    def _train(self, x: torch.Tensor, y: torch.Tensor) -> None:
        cfg, model = self.config, self._model
        model.train()
        for _ in range(cfg.steps_per_update):
            idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=self._gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if len(self.buffer) and cfg.replay_batch > 0:
                xr, yr = self.buffer.sample(cfg.replay_batch)
                loss = loss + F.cross_entropy(model(xr), yr)
            if cfg.ewc_lambda > 0 and self.guard.num_tasks:
                loss = loss + 0.5 * cfg.ewc_lambda * self.guard(model)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        model.eval()

    def _consolidate(self) -> None:
        if self.config.ewc_lambda <= 0 or not len(self.buffer):
            return
        xs, ys = self.buffer.sample(self.config.fisher_samples)
        fisher = fisher_diagonal(self._model, xs, ys)
        self.guard.consolidate(fisher, trainable_parameters(self._model))

    def update_once(self) -> int:
        """Learn the next batch of pending feedback (if any); return how many items were learned."""
        cfg = self.config
        snap = self._snapshot
        ids, x, y = self.store.fetch_after(snap.watermark, limit=cfg.max_batch)
        if len(ids) == 0:
            return 0
        t0 = time.perf_counter()
        with self._lock:
            self.updating = True
        try:
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            self._train(xt, yt)
            self.buffer.add(xt, yt)
            self._consolidate()
            version, watermark = snap.version + 1, int(ids[-1])
            self._write_checkpoint(version, watermark)
            self._snapshot = Snapshot(version, watermark, self._frozen_copy())
        finally:
            with self._lock:
                self.updating = False
                self.updates += 1
                self.last_update_seconds = time.perf_counter() - t0
        return len(ids)

    def checkpoint_bytes(self, version: int, watermark: int) -> bytes:
        buf = io.BytesIO()
        torch.save({
            "config": asdict(self.config), "version": version, "watermark": watermark,
            "model": self._model.state_dict(), "optimizer": self._optimizer.state_dict(),
            "buffer": self.buffer.state_dict(), "guard": self.guard.state_dict(),
            "generator": self._gen.get_state(),
        }, buf)
        return buf.getvalue()

    def _write_checkpoint(self, version: int, watermark: int) -> None:
        atomic_write(self.checkpoint_path, self.checkpoint_bytes(version, watermark))

    def save_snapshot(self) -> dict:
        """Write the published model to ``snapshots/model-v{version}.pt`` (atomically)."""
        snap = self._snapshot
        buf = io.BytesIO()
        torch.save({"version": snap.version, "watermark": snap.watermark, "config": asdict(self.config),
                    "model": snap.model.state_dict()}, buf)
        data = buf.getvalue()
        folder = self.data_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        path = folder / f"model-v{snap.version}.pt"
        atomic_write(path, data)
        return {"version": snap.version, "watermark": snap.watermark, "path": str(path),
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def _pending_ready(self) -> bool:
        watermark = self._snapshot.watermark
        if self.store.count(after=watermark) >= self.config.min_batch:
            return True
        age = self.store.oldest_age(after=watermark)
        return age is not None and age >= self.config.max_wait

    def run_forever(self, poll: float = 0.05) -> None:
        """The trainer loop (blocking); :meth:`stop` ends it."""
        while not self._stop.is_set():
            try:
                if self._pending_ready():
                    self.update_once()
                    continue
            except Exception as exc:  # keep serving; report the error in /metrics
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._wake.wait(poll)
            self._wake.clear()

    def start(self) -> None:
        """Start the background trainer thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self.run_forever, name="online-trainer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_learned(self, feedback_id: int, timeout: float = 30.0) -> bool:
        """Block until the watermark reaches ``feedback_id`` (True) or ``timeout`` passes (False)."""
        end = time.time() + timeout
        while time.time() < end:
            if self._snapshot.watermark >= feedback_id:
                return True
            time.sleep(0.02)
        return self._snapshot.watermark >= feedback_id


def prequential_run(x: np.ndarray, y: np.ndarray, config: OnlineConfig, data_dir: str | Path,
                    every: int = 16) -> np.ndarray:
    """Drive an :class:`OnlineLearner` in-process (no HTTP, no thread): predict each group of
    ``every`` items with the current snapshot, store their labels, learn them with one
    :meth:`~OnlineLearner.update_once`, go on. Deterministic for a given ``config.seed``.

    Args:
        x: float32 ``[n, dim]`` features in stream order; y: int ``[n]`` labels.
        config: the learner's settings (e.g. ``replay_batch=0, ewc_lambda=0`` for plain
            online fine-tuning).
        data_dir: an empty folder for the learner's database and checkpoints.
        every: items per update.

    Returns:
        bool ``[n]``: whether each item was predicted correctly before it was learned.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as items (>= 1), got {len(x)} items and {len(y)} labels")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    learner = OnlineLearner(data_dir, config)
    if learner.restored or learner.store.count():
        raise ValueError(f"{data_dir} already holds a learner's data: use an empty folder")
    correct: list[bool] = []
    for s in range(0, len(y), every):
        xs, ys = np.asarray(x[s:s + every], dtype=np.float32), [int(v) for v in y[s:s + every]]
        _, pred, _ = learner.add_feedback(xs, ys)
        correct += [p == t for p, t in zip(pred, ys)]
        learner.update_once()
    learner.store.close()
    return np.array(correct, dtype=bool)


#: the two learners of :func:`guard_trial`: the service's defaults, and plain online fine-tuning
GUARD_CONFIGS: dict[str, dict] = {"replay + EWC guard": {}, "plain fine-tuning": {"replay_batch": 0, "ewc_lambda": 0.0}}


def guard_trial(seed: int, phases, every: int = 16, steps_per_update: int = 20) -> dict[str, np.ndarray]:
    """One drifting stream (:func:`~course_lib.continual.client.drift_stream` with ``seed``),
    learned in-process by :func:`prequential_run` twice: with the service's guard (replay +
    online EWC, the :class:`OnlineConfig` defaults) and as plain online fine-tuning
    (``replay_batch=0, ewc_lambda=0``); ``seed`` also seeds both learners.

    Returns ``{"phase": int [n], "replay + EWC guard": bool [n], "plain fine-tuning": bool [n]}``.
    """
    import tempfile

    from .client import drift_stream

    stream = drift_stream(phases, seed=seed)
    out: dict[str, np.ndarray] = {"phase": stream.phase}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, overrides) in enumerate(GUARD_CONFIGS.items()):
            cfg = OnlineConfig(min_batch=every, steps_per_update=steps_per_update, seed=seed, **overrides)
            out[name] = prequential_run(stream.x, stream.y, cfg, Path(tmp) / str(k), every)
    return out


def guard_figures(trial: dict[str, np.ndarray], head: int = 100) -> dict[str, dict[str, float]]:
    """Per learner of a :func:`guard_trial`: prequential accuracy (%) of each phase ``k``
    (key ``"phase<k>"``) and of its first ``head`` items (``"phase<k>_first"``)."""
    phase = np.asarray(trial["phase"])
    figs: dict[str, dict[str, float]] = {}
    for name, correct in trial.items():
        if name == "phase":
            continue
        c = np.asarray(correct, dtype=float)
        figs[name] = {}
        for k in np.unique(phase):
            sel = c[phase == k]
            figs[name][f"phase{int(k)}"] = 100 * float(sel.mean())
            figs[name][f"phase{int(k)}_first"] = 100 * float(sel[:head].mean())
    return figs
