"""The HTTP API in-process: answers, and a 4xx with a reason for every kind of bad request."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from course_lib.continual.online import OnlineConfig, OnlineLearner
from course_lib.continual.service import ServiceLimits, create_app

DIM = 64


@pytest.fixture()
def learner(tmp_path):
    return OnlineLearner(tmp_path / "svc", OnlineConfig(min_batch=4, steps_per_update=5))


@pytest.fixture()
def client(learner):
    app = create_app(learner, ServiceLimits(max_body_bytes=4096 * 4, max_rows=8), train=False)
    with TestClient(app) as c:
        yield c


def _vec(v=0.5):
    return [v] * DIM


def test_predict_single_and_batch(client):
    r = client.post("/predict", json={"x": _vec()})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == 0 and len(body["predictions"]) == 1 and 0 <= body["predictions"][0] < 10
    r = client.post("/predict", json={"x": [_vec(0.1), _vec(0.9), _vec(0.0)]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3 and len(r.json()["confidences"]) == 3


def test_feedback_is_stored_before_the_answer(client, learner):
    x = np.linspace(0, 1, DIM).round(4)
    r = client.post("/feedback", json={"x": x.tolist(), "label": 7})
    assert r.status_code == 200
    fid = r.json()["id"]
    ids, xs, ys = learner.store.fetch([fid])
    assert ids.tolist() == [fid] and ys.tolist() == [7]
    np.testing.assert_allclose(xs[0], x.astype(np.float32))
    r = client.post("/feedback", json={"x": [_vec(0.2), _vec(0.3)], "label": [1, 2]})
    assert r.status_code == 200 and r.json()["ids"] == [fid + 1, fid + 2]
    m = client.get("/metrics").json()
    assert m["feedback_total"] == 3 and m["feedback_pending"] == 3 and m["watermark"] == 0
    assert m["running_window"] == 3 and 0.0 <= m["running_accuracy"] <= 1.0


def test_metrics_and_snapshot(client, learner, tmp_path):
    for k in range(6):
        client.post("/feedback", json={"x": _vec(k / 10), "label": k})
    assert learner.update_once() == 6
    m = client.get("/metrics").json()
    for key in ("model_version", "watermark", "feedback_total", "predictions_served", "running_accuracy",
                "buffer_size", "updates", "updating", "feedback_pending"):
        assert key in m
    assert m["model_version"] == 1 and m["watermark"] == 6 and m["buffer_size"] == 6 and m["feedback_pending"] == 0
    assert client.post("/predict", json={"x": _vec()}).json()["model_version"] == 1
    snap = client.post("/snapshot").json()
    assert snap["version"] == 1 and snap["watermark"] == 6
    import hashlib
    from pathlib import Path
    assert hashlib.sha256(Path(snap["path"]).read_bytes()).hexdigest() == snap["sha256"]


BAD = [
    ("/predict", {"x": [0.5] * 63}, 422, "64 values"),
    ("/predict", {"x": [0.5] * 65}, 422, "64 values"),
    ("/predict", {"x": [[0.5] * 64, [0.5] * 10]}, 422, "x[1] must have 64"),
    ("/predict", {"x": ["a"] * 64}, 422, "expected a number"),
    ("/predict", {"x": [True] * 64}, 422, "expected a number"),
    ("/predict", {"x": [1.5] * 64}, 422, "in [0, 1]"),
    ("/predict", {"x": [-0.1] + [0.5] * 63}, 422, "in [0, 1]"),
    ("/predict", {"x": []}, 422, "empty"),
    ("/predict", {"x": [[0.5] * 64] * 9}, 422, "at most 8 rows"),
    ("/predict", {"y": [0.5] * 64}, 422, "missing field 'x'"),
    ("/predict", {"x": "0.5"}, 422, "must be a list"),
    ("/feedback", {"x": [0.5] * 64}, 422, "missing field 'label'"),
    ("/feedback", {"x": [0.5] * 64, "label": 10}, 422, "unknown label 10"),
    ("/feedback", {"x": [0.5] * 64, "label": -1}, 422, "unknown label -1"),
    ("/feedback", {"x": [0.5] * 64, "label": 3.0}, 422, "must be an integer"),
    ("/feedback", {"x": [0.5] * 64, "label": "3"}, 422, "must be an integer"),
    ("/feedback", {"x": [0.5] * 64, "label": [3]}, 422, "one vector with one label"),
    ("/feedback", {"x": [[0.5] * 64] * 2, "label": [3]}, 422, "2 example(s) but 1 label"),
    ("/feedback", {"x": [0.5] * 63, "label": 3}, 422, "64 values"),
]


@pytest.mark.parametrize("path,payload,status,reason", BAD)
def test_bad_requests_get_a_reason(client, learner, path, payload, status, reason):
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"]
    assert learner.store.count() == 0  # nothing stored for a rejected request


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(client, learner, token):
    body = '{"x": [' + ", ".join(["0.5"] * 63 + [token]) + '], "label": 1}'
    r = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN and infinity" in r.json()["detail"]
    assert learner.store.count() == 0


@pytest.mark.parametrize("body,reason", [(b"{not json", "not valid JSON"), (b"[1, 2]", "expected a JSON object"),
                                         (b"\xff\xfe", "not valid JSON")])
def test_malformed_bodies(client, body, reason):
    r = client.post("/predict", content=body)
    assert r.status_code == 400 and reason in r.json()["detail"]


def test_oversized_bodies_get_413_with_and_without_content_length(client, learner):
    big = json.dumps({"x": [0.123456789] * 2000}).encode()
    r = client.post("/predict", content=big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]
    r = client.post("/feedback", content=chunks())
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    assert learner.store.count() == 0
