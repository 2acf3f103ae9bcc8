"""Driving the online-learning service: start it as a subprocess, talk to it, and feed it
a simulated stream with concept drift.

:class:`ServerProcess` starts ``python -m course_lib.continual.service`` on a free
loopback port with its own data folder, waits until it answers, and always stops it
(context manager, :mod:`atexit`), so a failing notebook cell or test never leaves a
server behind. :func:`drift_stream` builds a Digits stream whose input distribution
changes abruptly, and :func:`run_stream` plays it against the service predict-then-learn
(prequential evaluation).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

from ..data import load_digits_split


class ServerProcess:
    """A ``course-serve`` subprocess bound to 127.0.0.1 on a free port.

    Args:
        data_dir: the service's data folder (feedback database, checkpoints).
        options: extra command-line options, e.g. ``["--steps-per-update", "50"]``.
        startup_timeout: seconds to wait for the first successful ``/healthz``.
        threads: torch threads of the server.
    """

    def __init__(self, data_dir: str | Path, options: Sequence[str] = (), startup_timeout: float = 60.0,
                 threads: int = 1) -> None:
        self.data_dir = Path(data_dir)
        self.options, self.startup_timeout, self.threads = list(options), startup_timeout, threads
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log_path = self.data_dir / "server.log"

    def start(self) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = self.data_dir / "server.json"
        info.unlink(missing_ok=True)  # a stale address from an earlier (killed) run
        cmd = [sys.executable, "-m", "course_lib.continual.service", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", "0", "--threads", str(self.threads), *self.options]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        atexit.register(self.stop)
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}; log:\n{self.log()}")
            if info.exists():
                meta = json.loads(info.read_text())
                if meta.get("pid") == self.proc.pid:
                    self.url = f"http://{meta['host']}:{meta['port']}"
                    try:
                        if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the server did not answer within {self.startup_timeout} s; log:\n{self.log()}")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs in the server."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_until(url: str, predicate, timeout: float = 30.0, interval: float = 0.05) -> dict[str, Any]:
    """Poll ``GET url/metrics`` until ``predicate(metrics)``; return the last metrics.

    Raises:
        TimeoutError: the predicate did not hold within ``timeout`` seconds.
    """
    end = time.time() + timeout
    last: dict[str, Any] = {}
    while time.time() < end:
        last = httpx.get(url + "/metrics", timeout=5.0).json()
        if predicate(last):
            return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s; last metrics: {last}")


# ---------------------------------------------------------------------- simulated stream
DRIFTS: tuple[str, ...] = ("none", "mirror", "invert", "shift")


def apply_drift(x: np.ndarray, kind: str) -> np.ndarray:
    """Transform Digits features ``[n, 64]``: ``mirror`` (left-right flip of the 8x8 image),
    ``invert`` (``1 - x``), ``shift`` (one pixel to the right), or ``none``."""
    if kind not in DRIFTS:
        raise ValueError(f"unknown drift {kind!r}: expected one of {DRIFTS}")
    img = np.asarray(x, dtype=np.float32).reshape(-1, 8, 8)
    if kind == "mirror":
        img = img[:, :, ::-1]
    elif kind == "invert":
        img = 1.0 - img
    elif kind == "shift":
        img = np.concatenate([np.zeros_like(img[:, :, :1]), img[:, :, :-1]], axis=2)
    return np.ascontiguousarray(img.reshape(len(img), 64))


@dataclass
class Stream:
    """A labelled stream: ``x`` float32 ``[n, 64]``, ``y`` int64 ``[n]``, ``phase`` (index into ``phases``)."""

    x: np.ndarray
    y: np.ndarray
    phase: np.ndarray
    phases: list[str] = field(default_factory=list)


def drift_stream(phases: Sequence[tuple[str, int]] = (("none", 600), ("mirror", 600), ("none", 300)),
                 seed: int = 0) -> Stream:
    """Digits drawn at random (training split), one block per ``(drift kind, length)``."""
    xtr, ytr, _, _ = load_digits_split(seed)
    xtr, ytr = xtr.numpy(), ytr.numpy()
    rng = np.random.default_rng(seed)
    xs, ys, ph = [], [], []
    for k, (kind, n) in enumerate(phases):
        if n < 1:
            raise ValueError(f"phase {k} ({kind}) must have >= 1 items, got {n}")
        idx = rng.integers(0, len(xtr), size=n)
        xs.append(apply_drift(xtr[idx], kind))
        ys.append(ytr[idx])
        ph.append(np.full(n, k))
    return Stream(np.concatenate(xs), np.concatenate(ys), np.concatenate(ph), [p for p, _ in phases])


def run_stream(url: str, stream: Stream, batch: int = 1, client: httpx.Client | None = None) -> dict[str, np.ndarray]:
    """Predict-then-learn: send the stream in order to ``POST /feedback`` (which predicts
    with the served model before storing the labels), ``batch`` items per request, and
    record whether each prediction was right.

    Returns ``{"correct": bool [n], "version": int [n], "id": int [n]}``.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    own = client is None
    client = client or httpx.Client(timeout=30.0)
    correct, version, ids = [], [], []
    try:
        for s in range(0, len(stream.y), batch):
            xs, ys = stream.x[s : s + batch], stream.y[s : s + batch]
            payload = {"x": xs.tolist(), "label": ys.tolist()} if batch > 1 else {"x": xs[0].tolist(), "label": int(ys[0])}
            r = client.post(url + "/feedback", json=payload)
            r.raise_for_status()
            body = r.json()
            pred = body["predicted"] if batch > 1 else [body["predicted"]]
            correct += [int(p) == int(t) for p, t in zip(pred, ys)]
            version += [body["model_version"]] * len(ys)
            ids += body["ids"] if batch > 1 else [body["id"]]
    finally:
        if own:
            client.close()
    return {"correct": np.array(correct), "version": np.array(version), "id": np.array(ids)}


def windowed_accuracy(correct: np.ndarray, window: int = 50) -> np.ndarray:
    """Moving average of a 0/1 sequence (``[n - window + 1]``)."""
    c = np.asarray(correct, dtype=np.float64)
    if not 1 <= window <= len(c):
        raise ValueError(f"window must be in [1, {len(c)}], got {window}")
    s = np.concatenate([[0.0], np.cumsum(c)])
    return (s[window:] - s[:-window]) / window
