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
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

from ..data import load_digits_split


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def http_client(timeout: float = 30.0) -> httpx.Client:
    """An ``httpx.Client`` with ``TCP_NODELAY`` (no Nagle delay between a request's header
    and body segments, which otherwise costs ~40 ms per request with delayed ACKs)."""
    return httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(socket_options=NODELAY))


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
                        with http_client(2.0) as c:
                            ok = c.get(self.url + "/healthz").status_code == 200
                        if ok:
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

    @contextlib.contextmanager
    def guard(self):
        """``with server.guard(): ...`` stops the server if the block raises (then re-raises),
        so a failing notebook cell does not leave it running."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

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
    with http_client(5.0) as c:
        while time.time() < end:
            last = c.get(url + "/metrics").json()
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


def run_stream(url: str, stream: Stream, batch: int = 1, client: httpx.Client | None = None,
               max_pending: int | None = None, timeout: float = 120.0) -> dict[str, np.ndarray]:
    """Predict-then-learn: send the stream in order to ``POST /feedback`` (which predicts
    with the served model before storing the labels), ``batch`` items per request, and
    record whether each prediction was right.

    Args:
        max_pending: pace the stream to the learner: before each request, wait until at most
            this many sent items are still unlearned (``None``: send as fast as possible).

    Returns ``{"correct": bool [n], "version": int [n], "id": int [n]}``.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    own = client is None
    client = client or http_client()
    correct, version, ids = [], [], []
    try:
        for s in range(0, len(stream.y), batch):
            if max_pending is not None and ids:
                end = time.time() + timeout
                while client.get(url + "/metrics").json()["watermark"] < ids[-1] - max_pending:
                    if time.time() > end:
                        raise TimeoutError(f"the service did not learn fast enough (max_pending={max_pending})")
                    time.sleep(0.01)
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


# ---------------------------------------------------------------------- load and crash trials
def _run_async(make_coroutine):
    """``asyncio.run(make_coroutine())``, in a helper thread when an event loop is already
    running in this one (as in a Jupyter kernel)."""
    import asyncio
    import threading

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(make_coroutine())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="load-test")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def load_test(url: str, x: np.ndarray, clients: int = 50, requests_per_client: int = 40,
              timeout: float = 120.0) -> dict[str, float]:
    """``clients`` concurrent keep-alive connections, each sending ``requests_per_client``
    single-row ``POST /predict`` requests back to back.

    The load generator is a minimal asyncio HTTP/1.1 client (one connection per client)
    so that it costs far less CPU than the server it measures; latency is measured per
    request at the client, from sending the request to reading the whole response.

    Returns ``{"requests", "errors", "seconds", "predictions_per_s", "p50_ms", "p99_ms"}``.
    """
    import asyncio

    if clients < 1 or requests_per_client < 1:
        raise ValueError("clients and requests_per_client must be >= 1")
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    bodies = [json.dumps({"x": row.tolist()}).encode() for row in np.asarray(x, dtype=np.float32)]

    def request(body: bytes) -> bytes:
        return (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def one(k: int, latencies: list[float], errors: list[str]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for j in range(requests_per_client):
                t0 = time.perf_counter()
                writer.write(request(bodies[(k * 31 + j) % len(bodies)]))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(int(v.split(":", 1)[1]) for v in lines if v.lower().startswith("content-length:"))
                await reader.readexactly(length)
                if " 200 " not in lines[0] + " ":
                    errors.append(lines[0])
                    continue
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    async def main() -> tuple[list[float], list[str], float]:
        latencies: list[float] = []
        errors: list[str] = []
        t0 = time.perf_counter()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(k, latencies, errors) for k in range(clients)), return_exceptions=True), timeout)
        errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
        return latencies, errors, time.perf_counter() - t0

    latencies, errors, seconds = _run_async(main)
    lat = np.array(latencies) * 1e3
    return {"requests": float(len(lat)), "errors": float(len(errors)), "seconds": seconds,
            "predictions_per_s": len(lat) / seconds,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


@dataclass
class CrashReport:
    """Outcome of :func:`crash_recovery_trial`.

    Attributes:
        acknowledged: feedback items answered 200 before the kill.
        killed_updating: the server reported an update in progress just before the kill.
        killed_version: the served model version at the kill.
        missing: acknowledged ids absent from the database after the restart.
        corrupted: acknowledged ids whose stored features or label differ from what was sent.
        watermark, max_acknowledged: learned-up-to id after the restart vs the largest acknowledged id.
        restored: the restarted server loaded a checkpoint.
        version_after: model version once everything was learned.
        accuracy_on_acknowledged: the restarted model's accuracy on the acknowledged items.
        recovery_seconds: restart until every acknowledged item was learned.
    """

    acknowledged: int
    killed_updating: bool
    killed_version: int
    missing: list[int]
    corrupted: list[int]
    watermark: int
    max_acknowledged: int
    restored: bool
    version_after: int
    accuracy_on_acknowledged: float
    recovery_seconds: float


def crash_recovery_trial(data_dir: str | Path, x: np.ndarray, y: np.ndarray, options: Sequence[str] = (),
                         writers: int = 3, min_acknowledged: int = 40, timeout: float = 60.0) -> CrashReport:
    """Start the service, send labelled feedback from ``writers`` threads, ``kill -9`` it
    while an update is running (after at least one checkpoint), restart it on the same
    folder, wait until it learned everything acknowledged, and check the database.

    Args:
        data_dir: an empty folder for the service.
        x, y: Digits features float32 ``[n, 64]`` and labels ``[n]`` to send.
        options: extra ``course-serve`` options (make updates long enough to be caught).
    """
    import sqlite3
    import threading

    data_dir = Path(data_dir)
    acked: dict[int, int] = {}
    stop, lock = threading.Event(), threading.Lock()
    url_box: list[str] = []

    def writer(offset: int) -> None:
        with http_client(10.0) as c:
            i = offset
            while not stop.is_set():
                try:
                    r = c.post(url_box[0] + "/feedback", json={"x": x[i].tolist(), "label": int(y[i])})
                except httpx.HTTPError:
                    return  # the server is gone: this item was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked[r.json()["id"]] = i
                i = (i + writers) % len(x)

    srv = ServerProcess(data_dir, options).start()
    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(writers)]
    try:
        url_box.append(srv.url)
        for t in threads:
            t.start()
        wait_until(srv.url, lambda m: m["model_version"] >= 1 and len(acked) >= min_acknowledged,
                   timeout=timeout, interval=0.02)
        m = wait_until(srv.url, lambda m: m["updating"], timeout=timeout, interval=0.005)
        srv.kill()
    finally:
        stop.set()
        srv.stop()
    for t in threads:
        t.join(timeout=15)
    with lock:
        acked_now = dict(acked)
    max_acked = max(acked_now)
    t0 = time.time()
    with ServerProcess(data_dir, options) as again:
        after = wait_until(again.url, lambda mm: mm["watermark"] >= max_acked, timeout=timeout)
        recovery = time.time() - t0
        idx = np.array(list(acked_now.values()))
        preds = []
        with http_client() as c:
            for s in range(0, len(idx), 200):
                preds += c.post(again.url + "/predict", json={"x": x[idx[s : s + 200]].tolist()}).json()["predictions"]
    with sqlite3.connect(f"file:{data_dir / 'feedback.sqlite3'}?mode=ro", uri=True) as db:
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, x, label FROM feedback")}
    missing = [fid for fid in acked_now if fid not in rows]
    corrupted = [fid for fid, i in acked_now.items() if fid in rows and (
        rows[fid][1] != int(y[i]) or not np.array_equal(np.frombuffer(rows[fid][0], dtype=np.float32), x[i]))]
    return CrashReport(len(acked_now), bool(m["updating"]), int(m["model_version"]), missing, corrupted,
                       int(after["watermark"]), max_acked, bool(after["restored_from_checkpoint"]),
                       int(after["model_version"]), float(np.mean(np.array(preds) == y[idx])), recovery)
