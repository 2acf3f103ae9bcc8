"""The online-learning HTTP service (FastAPI + uvicorn).

Endpoints (JSON in, JSON out; every response that involves the model carries
``model_version``):

* ``POST /predict``  ``{"x": [64 floats]}`` or ``{"x": [[64 floats], ...]}`` (at most
  ``max_rows``) -> ``{"predictions", "confidences", "model_version"}``.
* ``POST /feedback`` ``{"x": [64 floats], "label": 0..9}`` -> ``{"id", "predicted",
  "model_version"}``, sent only after the item is committed to disk (``predicted`` is
  what the served model said before learning it). A batch ``{"x": [[...], ...],
  "label": [...]}`` is stored in one transaction -> ``{"ids", "predicted", "model_version"}``.
* ``GET /metrics``  counts, running accuracy (predict-then-learn, last 200 feedback
  items), model version, watermark, buffer size, pending items, update state.
* ``POST /snapshot`` writes the served model to ``snapshots/model-v{version}.pt``.
* ``GET /healthz``  ``{"ok": true}``.

Bad requests get a 4xx and a reason: 400 (not JSON / not an object), 413 (body larger
than ``max_body_bytes``), 422 (wrong shape or type, NaN/inf, values outside [0, 1],
unknown label).

Start it with ``course-serve --data-dir DIR`` (or ``python -m course_lib.continual.service``);
it binds 127.0.0.1 by default; ``--port 0`` picks a free port, and the address is written
to ``DIR/server.json`` once the socket listens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .online import OnlineConfig, OnlineLearner, atomic_write


@dataclass
class ServiceLimits:
    """Request limits: body size in bytes and rows per prediction request."""

    max_body_bytes: int = 256 * 1024
    max_rows: int = 256


class BadRequest(Exception):
    """A client error with its HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object; 413 past ``limit`` bytes (checked while reading), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequest(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        except ValueError:
            raise BadRequest(400, "invalid Content-Length header") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body exceeds the limit of {limit} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"expected a JSON object, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_vector(value: Any, dim: int, field: str = "x") -> np.ndarray:
    """One feature vector: a list of ``dim`` finite numbers in [0, 1] -> float32 ``[dim]``."""
    if not isinstance(value, list):
        raise BadRequest(422, f"{field} must be a list of {dim} numbers, got {type(value).__name__}")
    if len(value) != dim:
        raise BadRequest(422, f"{field} must have {dim} values (8x8 pixels in [0, 1]), got {len(value)}")
    bad = next((i for i, v in enumerate(value) if not _is_number(v)), None)
    if bad is not None:
        raise BadRequest(422, f"{field}[{bad}] is {type(value[bad]).__name__}, expected a number")
    bad = next((i for i, v in enumerate(value) if not math.isfinite(v)), None)
    if bad is not None:
        raise BadRequest(422, f"{field}[{bad}] is {value[bad]}: NaN and infinity are not allowed")
    arr = np.asarray(value, dtype=np.float32)
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise BadRequest(422, f"{field} values must be in [0, 1], got range [{arr.min():g}, {arr.max():g}]")
    return arr


def parse_inputs(data: dict[str, Any], dim: int, max_rows: int) -> np.ndarray:
    """``x`` as one vector or a list of vectors -> float32 ``[n, dim]``."""
    if "x" not in data:
        raise BadRequest(422, "missing field 'x'")
    x = data["x"]
    if isinstance(x, list) and x and isinstance(x[0], list):
        if len(x) > max_rows:
            raise BadRequest(422, f"at most {max_rows} rows per request, got {len(x)}")
        return np.stack([parse_vector(row, dim, f"x[{i}]") for i, row in enumerate(x)])
    if isinstance(x, list) and not x:
        raise BadRequest(422, "x is empty")
    return parse_vector(x, dim)[None]


def parse_labels(data: dict[str, Any], num_classes: int, rows: int) -> list[int]:
    """``label``: one integer (one row) or a list of ``rows`` integers, each in [0, num_classes)."""
    if "label" not in data:
        raise BadRequest(422, "missing field 'label'")
    raw = data["label"]
    labels = raw if isinstance(raw, list) else [raw]
    if len(labels) != rows:
        raise BadRequest(422, f"got {rows} example(s) but {len(labels)} label(s)")
    for label in labels:
        if not isinstance(label, int) or isinstance(label, bool):
            raise BadRequest(422, f"label must be an integer, got {type(label).__name__}")
        if not 0 <= label < num_classes:
            raise BadRequest(422, f"unknown label {label}: expected an integer in [0, {num_classes - 1}]")
    return labels


def create_app(learner: OnlineLearner, limits: ServiceLimits | None = None, train: bool = True) -> FastAPI:
    """The FastAPI app around ``learner``; its trainer thread runs while the app does
    (``train=False`` leaves training to the caller, e.g. in tests)."""
    limits = limits or ServiceLimits()
    cfg = learner.config

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if train:
            learner.start()
        try:
            yield
        finally:
            learner.stop()

    app = FastAPI(title="course_lib online learner", lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await read_json(request, limits.max_body_bytes)
        x = parse_inputs(data, cfg.dim, limits.max_rows)
        labels, probs, version = learner.predict(x)
        return {"predictions": labels.tolist(), "confidences": probs.max(1).round(6).tolist(),
                "model_version": version}

    @app.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        data = await read_json(request, limits.max_body_bytes)
        x = parse_inputs(data, cfg.dim, limits.max_rows)
        batch = isinstance(data["x"][0], list)
        labels = parse_labels(data, cfg.num_classes, len(x))
        if batch != isinstance(data["label"], list):
            raise BadRequest(422, "give one vector with one label, or a list of vectors with a list of labels")
        ids, predicted, version = await run_in_threadpool(learner.add_feedback, x, labels)
        if batch:
            return {"ids": ids, "predicted": predicted, "model_version": version}
        return {"id": ids[0], "predicted": predicted[0], "model_version": version}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return await run_in_threadpool(learner.metrics)

    @app.post("/snapshot")
    async def snapshot() -> dict[str, Any]:
        return await run_in_threadpool(learner.save_snapshot)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "model_version": learner.snapshot.version}

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course-serve", description="Online-learning HTTP service (chapter 3).")
    p.add_argument("--data-dir", default="course_serve_data", help="feedback database and checkpoints (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 = any free port (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=ServiceLimits.max_body_bytes)
    p.add_argument("--max-rows", type=int, default=ServiceLimits.max_rows)
    for name, default in vars(OnlineConfig()).items():
        if name in ("dim", "num_classes"):
            continue
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help=f"online learner: {name} (default: %(default)s; a checkpoint's value wins)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console script ``course-serve``."""
    import torch
    import uvicorn

    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("--threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    config = OnlineConfig(**{k: getattr(args, k) for k in vars(OnlineConfig()) if k not in ("dim", "num_classes")})
    learner = OnlineLearner(args.data_dir, config)
    app = create_app(learner, ServiceLimits(args.max_body_bytes, args.max_rows))

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on small responses
    sock.bind((args.host, args.port))
    sock.listen(1024)
    host, port = sock.getsockname()[:2]
    atomic_write(Path(args.data_dir) / "server.json",
                 json.dumps({"host": host, "port": port, "pid": os.getpid()}).encode())
    print(f"course-serve: listening on http://{host}:{port} (data in {args.data_dir}, "
          f"model version {learner.snapshot.version}, watermark {learner.snapshot.watermark})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
