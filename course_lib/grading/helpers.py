"""Trusted helpers that run *inside* a worker, next to the submission.

Some checks need more than "call a function, look at the result": a gradient of the
submitted loss, a model that the submission mutates in place, hundreds of reservoir runs.
These helpers do that work where the submission lives and send back plain data. They are
part of the grader (never of a submission); each takes the worker state first.

Everything they return is data that the trusted side checks against its own references,
so a submission that tampers with them in its own process can only send wrong data.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import modelspec
from .transport import FnSpec, map_leaves


# ---------------------------------------------------------------------------------------
# trusted callables built from data (e.g. a service-time function)


def make_function(spec: FnSpec) -> Callable:
    params = spec.params
    if spec.name == "table":
        table = {int(k): float(v) for k, v in dict(params).items()}

        def service_time(batch_size):
            if isinstance(batch_size, bool) or not isinstance(batch_size, int):
                raise TypeError(f"service_time expects the batch size (an int), got {type(batch_size).__name__}")
            if batch_size not in table:
                raise ValueError(f"service_time called with batch size {batch_size}; this test only has sizes "
                                 f"{sorted(table)}")
            return table[batch_size]

        return service_time
    if spec.name == "affine":
        base, per_item = float(params["base"]), float(params["per_item"])

        def service_time(batch_size):
            if isinstance(batch_size, bool) or not isinstance(batch_size, int):
                raise TypeError(f"service_time expects the batch size (an int), got {type(batch_size).__name__}")
            return base + per_item * batch_size

        return service_time
    raise ValueError(f"unknown function spec {spec.name!r}")


def _submission(state, name: str) -> Any:
    return getattr(state.module, name)


# ---------------------------------------------------------------------------------------
# models


def build_model(state, arch: str, kwargs: dict, weights: dict, dtype: torch.dtype | None = None) -> nn.Module:
    return modelspec.build_with_state(arch, kwargs, weights, dtype)


def state_dict(state, obj: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in obj.state_dict().items()}


def load_state_dict(state, obj: nn.Module, weights: dict, strict: bool = True) -> dict:
    result = obj.load_state_dict(weights, strict=strict)
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}


def param_info(state, obj: nn.Module) -> list:
    return [[name, list(p.shape), bool(p.requires_grad)] for name, p in obj.named_parameters()]


def param_ids(state, obj: nn.Module) -> dict:
    return {name: id(p) for name, p in obj.named_parameters()}


def get_grads(state, obj: nn.Module) -> dict:
    return {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in obj.named_parameters()}


def set_grads(state, obj: nn.Module, grads: dict) -> None:
    for name, p in obj.named_parameters():
        if name in grads:
            p.grad = None if grads[name] is None else grads[name].clone().to(p.dtype)


def set_train(state, obj: nn.Module, mode: bool) -> None:
    obj.train(mode)


def module_mode(state, obj: nn.Module) -> bool:
    return bool(obj.training)


# ---------------------------------------------------------------------------------------
# gradients through submitted code


def call_with_grad(state, name: str, args: list, kwargs: dict, wrt: list[int], grad_output=None) -> dict:
    """Call submission function ``name`` with the positional tensor arguments at indices
    ``wrt`` as leaves that require grad, backpropagate ``grad_output`` (default: ones) and
    return ``{"value", "grads": [grad or None per index], "error"?}``."""
    fn = _submission(state, name)
    args = list(args)
    leaves = []
    for i in wrt:
        args[i] = args[i].detach().clone().requires_grad_(True)
        leaves.append(args[i])
    out = fn(*args, **kwargs)
    if not isinstance(out, torch.Tensor):
        return {"value": out, "grads": [None] * len(leaves), "error": "the result is not a tensor"}
    if not out.requires_grad:
        return {"value": out.detach(), "grads": [None] * len(leaves),
                "error": "the result is not connected to the inputs in the autograd graph"}
    g = torch.ones_like(out) if grad_output is None else grad_output.to(out.dtype)
    grads = torch.autograd.grad(out, leaves, grad_outputs=g, allow_unused=True)
    return {"value": out.detach(), "grads": [None if v is None else v.detach() for v in grads]}


def _param_grads_of(out: Any, model: nn.Module, grad_output=None) -> dict:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not isinstance(out, torch.Tensor):
        return {"value": out, "grads": {}, "error": "the result is not a tensor"}
    if not out.requires_grad:
        return {"value": out.detach(), "grads": {n: None for n, _ in params},
                "error": "the result is not connected to the parameters in the autograd graph"}
    g = torch.ones_like(out) if grad_output is None else grad_output.to(out.dtype)
    grads = torch.autograd.grad(out, [p for _, p in params], grad_outputs=g, allow_unused=True)
    named = {n: (None if v is None else v.detach()) for (n, _), v in zip(params, grads)}
    return {"value": out.detach(), "grads": named}


def call_with_param_grads(state, name: str, args: list, kwargs: dict, model: nn.Module, grad_output=None) -> dict:
    """Call submission function ``name`` and return its value and d(value)/d(parameters of model)."""
    out = _submission(state, name)(*args, **kwargs)
    return _param_grads_of(out, model, grad_output)


def method_with_param_grads(state, obj: nn.Module, method: str, args: list, kwargs: dict, grad_output=None) -> dict:
    """Call ``obj.method(*args)`` (``__call__`` for forward) and return value and parameter grads.

    Parameters with ``requires_grad=False`` get no entry; the others get a tensor or None.
    """
    fn = obj if method == "__call__" else getattr(obj, method)
    out = fn(*args, **kwargs)
    if isinstance(out, tuple):
        out = out[0]
    return _param_grads_of(out, obj, grad_output)


def method_with_input_grads(state, obj: nn.Module, args: list, wrt: list[int], grad_output=None) -> dict:
    """Forward ``obj(*args)`` with positional tensor arguments ``wrt`` as leaves; input grads."""
    args = list(args)
    leaves = []
    for i in wrt:
        args[i] = args[i].detach().clone().requires_grad_(True)
        leaves.append(args[i])
    out = obj(*args)
    if isinstance(out, tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return {"grads": [None] * len(leaves), "error": "the output is not connected to the inputs"}
    g = torch.ones_like(out) if grad_output is None else grad_output.to(out.dtype)
    grads = torch.autograd.grad(out, leaves, grad_outputs=g, allow_unused=True)
    return {"grads": [None if v is None else v.detach() for v in grads]}


# ---------------------------------------------------------------------------------------
# task-specific batch runners (many calls in one request)


def reservoir_trials(state, capacity: int, batch_sizes: list[int], seeds: list[int], width: int = 2) -> dict:
    """Run one ReservoirBuffer per seed over the same stream of items, return what it keeps.

    Item ``i`` of the stream is ``x = [i, -i, ...]`` (``width`` columns, float32) with label
    ``y = 3 * i + 1`` (int64). After adding all batches, ``sample(capacity)`` is called.
    Returns ``ids`` [len(seeds), capacity] (item ids as read from x[:, 0], -1 padding),
    ``labels_ok`` (every label matches its x), ``lengths``, ``num_seen`` and ``sample_sizes``.
    """
    cls = _submission(state, "ReservoirBuffer")
    total = sum(batch_sizes)
    ids = torch.full((len(seeds), capacity), -1, dtype=torch.int64)
    labels_ok, lengths, seen, sizes = [], [], [], []
    stream = torch.arange(total, dtype=torch.float32)
    x_all = torch.stack([stream * (1 if c % 2 == 0 else -1) + c // 2 * 0.5 for c in range(width)], dim=1)
    y_all = 3 * torch.arange(total, dtype=torch.int64) + 1
    for r, seed in enumerate(seeds):
        buf = cls(capacity, seed=seed)
        start = 0
        for size in batch_sizes:
            buf.add(x_all[start : start + size].clone(), y_all[start : start + size].clone())
            start += size
        xs, ys = buf.sample(capacity)
        xs = torch.as_tensor(xs)
        ys = torch.as_tensor(ys)
        got = torch.zeros(0, dtype=torch.int64)
        if xs.ndim == 2 and xs.shape[0] > 0:
            got = xs[:, 0].round().to(torch.int64)
        sizes.append(int(got.numel()))
        ids[r, : min(capacity, got.numel())] = got[:capacity]
        expected_rows = x_all[got.clamp(0, max(total - 1, 0))] if total else xs
        labels_ok.append(bool(
            xs.shape == expected_rows.shape and torch.equal(xs.float(), expected_rows)
            and ys.shape == got.shape and torch.equal(ys.to(torch.int64), 3 * got + 1)))
        lengths.append(len(buf))
        ns = buf.num_seen
        seen.append(int(ns() if callable(ns) else ns))
    return {"ids": ids, "labels_ok": labels_ok, "lengths": lengths, "num_seen": seen, "sample_sizes": sizes}


def _stream(total: int, width: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Items of reservoir_trials' stream: x[i] = [i, -i, ...] (float32), y[i] = 3 i + 1 (int64)."""
    stream = torch.arange(total, dtype=torch.float32)
    x_all = torch.stack([stream * (1 if c % 2 == 0 else -1) + c // 2 * 0.5 for c in range(width)], dim=1)
    return x_all, 3 * torch.arange(total, dtype=torch.int64) + 1


def _sample_pair(buf: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = buf.sample(n)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"sample({n}) should return a tuple (x, y), got {type(out).__name__}")
    xs, ys = out
    if not isinstance(xs, torch.Tensor) or not isinstance(ys, torch.Tensor):
        raise TypeError(f"sample({n}) should return two tensors, got {type(xs).__name__} and {type(ys).__name__}")
    return xs, ys


def reservoir_draws(state, capacity: int, seed: int, n: int, calls: int) -> dict:
    """Fill a ReservoirBuffer with exactly ``capacity`` items of the stream (so it stores all of
    them), then call ``sample(n)`` ``calls`` times. Returns ``ids`` [calls, n] (the item ids of
    each sample as read from x[:, 0], -1 padding) and ``sizes`` (rows per sample)."""
    cls = _submission(state, "ReservoirBuffer")
    x_all, y_all = _stream(capacity)
    buf = cls(capacity, seed=seed)
    buf.add(x_all.clone(), y_all.clone())
    ids = torch.full((calls, n), -1, dtype=torch.int64)
    sizes = []
    for r in range(calls):
        xs, _ = _sample_pair(buf, n)
        got = xs[:, 0].round().to(torch.int64) if xs.ndim == 2 else torch.zeros(0, dtype=torch.int64)
        sizes.append(int(got.numel()))
        ids[r, : min(n, got.numel())] = got[:n]
    return {"ids": ids, "sizes": sizes}


def reservoir_aliasing(state, capacity: int, num_items: int, seed: int, n: int) -> dict:
    """Does a ReservoirBuffer share memory with the caller's tensors or with what it hands out?

    Adds ``num_items`` items of the stream and reads everything back (``sample(capacity)``);
    then overwrites the caller's x and y in place and reads everything back; then overwrites
    a ``sample(n)`` in place and reads everything back again. Returns the three read-backs
    (x, y) as data: a buffer that shares no memory gives the same items (in any order)."""
    cls = _submission(state, "ReservoirBuffer")
    x_all, y_all = _stream(num_items)
    x, y = x_all.clone(), y_all.clone()
    buf = cls(capacity, seed=seed)
    buf.add(x, y)
    xs, ys = _sample_pair(buf, capacity)
    before = (xs.detach().clone(), ys.detach().clone())
    x.fill_(-7.0)
    y.fill_(-7)
    xs, ys = _sample_pair(buf, capacity)
    after_add = (xs.detach().clone(), ys.detach().clone())
    xs, ys = _sample_pair(buf, n)
    with torch.no_grad():
        xs.fill_(-9.0)
        ys.fill_(-9)
    xs, ys = _sample_pair(buf, capacity)
    return {"before": before, "after_add": after_add, "after_sample": (xs.detach().clone(), ys.detach().clone())}


# ---------------------------------------------------------------------------------------
# devices: run submitted code on PyTorch's "meta" device (a device without data)


def _device_error_text(exc: BaseException) -> str:
    try:
        return str(exc)[:500]
    except Exception:
        return "<unprintable>"


def on_meta(state, target: Any, method: str, args: list, kwargs: dict) -> dict:
    """Call ``target`` (a submission function name, or an object and its ``method``) with every
    tensor and module of the arguments moved to the ``meta`` device (modules are copied first).

    Returns ``{"tensors": [[path, device], ...]}`` for the tensors in the result, or
    ``{"raised": type name, "message": ...}`` if the call raised."""
    import copy

    def to_meta(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().to("meta")
        if isinstance(v, nn.Module):
            return copy.deepcopy(v).to("meta")
        return v

    try:
        args = map_leaves(list(args), to_meta)
        kwargs = {k: map_leaves(v, to_meta) for k, v in dict(kwargs).items()}
        if isinstance(target, str):
            fn = _submission(state, target)
        else:
            obj = to_meta(target)
            fn = obj if method == "__call__" else getattr(obj, method)
        out = fn(*args, **kwargs)
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": _device_error_text(exc)}
    found: list = []

    def walk(v: Any, path: str) -> None:
        if isinstance(v, torch.Tensor):
            found.append([path, v.device.type])
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]")
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(item, f"{path}[{k!r}]")

    walk(out, "")
    return {"tensors": found[:200]}


HELPERS: dict[str, Callable] = {f.__name__: f for f in (
    build_model, state_dict, load_state_dict, param_info, param_ids, get_grads, set_grads, set_train, module_mode,
    call_with_grad, call_with_param_grads, method_with_param_grads, method_with_input_grads, reservoir_trials,
    reservoir_draws, reservoir_aliasing, on_meta,
)}
