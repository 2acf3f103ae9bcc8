"""The real service as a subprocess on loopback: 50 concurrent clients, and kill -9 in the
middle of an update followed by a restart that loses and forgets nothing acknowledged."""

import sqlite3
import threading
import time

import httpx
import numpy as np
import pytest

from course_lib.continual.client import ServerProcess, wait_until
from course_lib.data import load_digits_split

CLIENTS = 50


@pytest.fixture(scope="module")
def digits():
    x, y, _, _ = load_digits_split(0)
    return x.numpy(), y.numpy()


def test_fifty_concurrent_clients(tmp_path, digits):
    x, y = digits
    results, errors = [], []

    def client(k):
        try:
            with httpx.Client(timeout=30.0) as c:
                for j in range(4):
                    r = c.post(url + "/predict", json={"x": x[(k * 7 + j) % len(x)].tolist()})
                    results.append(("predict", r.status_code, r.json()))
                for j in range(2):
                    i = (k * 2 + j) % len(x)
                    r = c.post(url + "/feedback", json={"x": x[i].tolist(), "label": int(y[i])})
                    results.append(("feedback", r.status_code, r.json()))
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    with ServerProcess(tmp_path / "svc", ["--min-batch", "16", "--steps-per-update", "5"]) as srv:
        url = srv.url
        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        start = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, 90 - (time.time() - start)))
        assert not any(t.is_alive() for t in threads), "clients did not finish in time"
        assert errors == []
        assert len(results) == CLIENTS * 6 and all(status == 200 for _, status, _ in results)
        assert all(isinstance(body["model_version"], int) for _, _, body in results)
        ids = [body["id"] for kind, _, body in results if kind == "feedback"]
        assert sorted(ids) == list(range(1, 2 * CLIENTS + 1))  # unique, none lost
        m = wait_until(url, lambda m: m["feedback_pending"] == 0, timeout=60)
        assert m["feedback_total"] == 2 * CLIENTS and m["watermark"] == 2 * CLIENTS
        assert m["predictions_served"] >= CLIENTS * 6  # feedback predicts too


def test_kill_9_mid_update_loses_nothing_acknowledged(tmp_path, digits):
    x, y = digits
    data_dir = tmp_path / "svc"
    acked: dict[int, int] = {}  # feedback id -> index into the digits
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(offset):
        with httpx.Client(timeout=10.0) as c:
            i = offset
            while not stop.is_set():
                try:
                    r = c.post(url + "/feedback", json={"x": x[i].tolist(), "label": int(y[i])})
                except httpx.HTTPError:
                    return  # the server is gone: this item was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked[r.json()["id"]] = i
                i = (i + 3) % len(x)

    options = ["--min-batch", "8", "--max-batch", "256", "--steps-per-update", "150", "--hidden", "64"]
    srv = ServerProcess(data_dir, options).start()
    try:
        url = srv.url
        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        # wait for a checkpoint (version >= 1), then for the next update to be running
        wait_until(url, lambda m: m["model_version"] >= 1 and len(acked) >= 40, timeout=60, interval=0.02)
        m = wait_until(url, lambda m: m["updating"], timeout=60, interval=0.005)
        srv.kill()  # SIGKILL: no shutdown code runs
        killed_version = m["model_version"]
    finally:
        stop.set()
        srv.stop()
    for t in threads:
        t.join(timeout=15)
    assert killed_version >= 1 and len(acked) >= 40

    with ServerProcess(data_dir, options) as again:
        m = wait_until(again.url, lambda m: m["watermark"] >= max(acked), timeout=60)
        assert m["restored_from_checkpoint"] and m["model_version"] > killed_version
        assert m["feedback_total"] >= len(acked)
        # every acknowledged item is in the database, unchanged
        with sqlite3.connect(f"file:{data_dir / 'feedback.sqlite3'}?mode=ro", uri=True) as db:
            rows = {r[0]: r[1:] for r in db.execute("SELECT id, x, label FROM feedback")}
        for fid, i in acked.items():
            blob, label = rows[fid]
            assert label == int(y[i])
            np.testing.assert_array_equal(np.frombuffer(blob, dtype=np.float32), x[i])
        # ... and learned: the restarted model fits them
        idx = np.array(list(acked.values()))
        r = httpx.post(again.url + "/predict", json={"x": x[idx[:200]].tolist()}, timeout=30)
        accuracy = float(np.mean(np.array(r.json()["predictions"]) == y[idx[:200]]))
        assert accuracy > 0.6, accuracy
