"""The real service as a subprocess on loopback: 50 concurrent clients, and kill -9 in the
middle of an update followed by a restart that loses and forgets nothing acknowledged."""

import threading
import time

import httpx
import numpy as np
import pytest

from course_lib.continual.client import ServerProcess, crash_recovery_trial, http_client, wait_until
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
            with http_client() as c:
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
    options = ["--min-batch", "8", "--max-batch", "256", "--steps-per-update", "150", "--hidden", "64"]
    report = crash_recovery_trial(tmp_path / "svc", x, y, options, writers=3, min_acknowledged=40)
    assert report.killed_updating and report.killed_version >= 1 and report.acknowledged >= 40
    assert report.missing == [] and report.corrupted == []  # every acknowledged item, unchanged
    assert report.watermark >= report.max_acknowledged  # ... and learned after the restart
    assert report.restored and report.version_after > report.killed_version
    assert report.accuracy_on_acknowledged > 0.6, report
