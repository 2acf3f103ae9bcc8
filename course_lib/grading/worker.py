"""The worker: runs *inside* the sandbox, next to one submitted module.

Started by :class:`course_lib.grading.sandbox.Sandbox` as
``python -c "...; from course_lib.grading.worker import main; main(FD)"`` with the RPC socket
on file descriptor ``FD`` and stdout/stderr going to a capped pipe. It receives the
submission's source in its first message, executes it as module ``submission`` and then
serves requests (calls, methods, attribute reads, trusted helpers) until the socket
closes. Everything crosses the socket as data (:mod:`.transport`).

Inside the sandbox only this file, :mod:`.transport`, :mod:`.helpers` and :mod:`.modelspec`
of ``course_lib`` exist: the rest of the course (its own implementations of the tasks,
the tests, ``solutions/``) is not there to import or read.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import traceback
import types
from typing import Any

from .transport import FnSpec, Handle, TransportError, decode, encode, map_leaves, recv_frame, send_frame

_MISSING = object()


class _WorkerState:
    def __init__(self, module: types.ModuleType, filename: str):
        self.module = module
        self.filename = filename
        self.handles: dict[int, Any] = {}
        self.next_id = 1

    def handle_for(self, obj: Any) -> Handle:
        hid = self.next_id
        self.next_id += 1
        self.handles[hid] = obj
        return Handle(hid, type(obj).__name__)

    def resolve(self, value: Any) -> Any:
        """Replace handles by their objects and function specs by trusted callables."""
        from . import helpers

        def leaf(v: Any) -> Any:
            if isinstance(v, Handle):
                if v.id not in self.handles:
                    raise KeyError(f"unknown object handle {v.id}")
                return self.handles[v.id]
            return helpers.make_function(v) if isinstance(v, FnSpec) else v

        return map_leaves(value, leaf)


def _safe_send(sock: socket.socket, obj: Any, handle_for=None) -> None:
    try:
        payload = encode(obj, handle_for)
    except TransportError as exc:
        payload = encode({"ok": False, "error": {"kind": "protocol", "type": "TransportError",
                                                  "mro": ["TransportError"], "message": str(exc), "traceback": ""}})
    except Exception as exc:
        payload = encode({"ok": False, "error": {"kind": "protocol", "type": type(exc).__name__,
                                                  "mro": ["Exception"], "message": "could not encode the result",
                                                  "traceback": ""}})
    try:
        send_frame(sock, payload)
    except OSError:
        os._exit(0)


def _describe_exception(exc: BaseException, filename: str) -> dict:
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's message could not be printed>"
    if isinstance(exc, SystemExit):
        message = f"the code called sys.exit({exc.code!r}) (never exit the process from a library function)"
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if f.filename == filename]
        tb = "".join(traceback.format_list(mine[-6:]))
    except Exception:
        tb = ""
    return {
        "kind": "raised",
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "message": message[:2000],
        "traceback": tb[-3000:],
    }


def _tensor_snapshots(value: Any, path: str, out: list) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out.append((path, value, value.detach().clone()))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _tensor_snapshots(v, f"{path}[{i}]", out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _tensor_snapshots(v, f"{path}[{k!r}]", out)


def _same(a, b) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(torch.nan_to_num(a, nan=1.2345), torch.nan_to_num(b, nan=1.2345)))
    return bool(torch.equal(a, b))


def _argument_names(fn: Any, args: list, kwargs: dict) -> list[tuple[str, Any]]:
    import inspect

    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        return list(bound.arguments.items())
    except (TypeError, ValueError):
        return [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items())


def _serve(sock: socket.socket, state: _WorkerState) -> None:
    from . import helpers

    while True:
        try:
            request = decode(recv_frame(sock))
        except (EOFError, OSError):
            os._exit(0)
        except TransportError as exc:
            _safe_send(sock, {"ok": False, "error": {"kind": "protocol", "type": "TransportError",
                                                      "mro": ["TransportError"], "message": str(exc), "traceback": ""}})
            continue
        try:
            op = request["op"]
            args = state.resolve(list(request.get("args", [])))
            kwargs = state.resolve(dict(request.get("kwargs", {})))
            if op == "call":
                fn = getattr(state.module, request["name"], _MISSING)
                if fn is _MISSING:
                    raise AttributeError(f"your module has no function or class named {request['name']!r} "
                                         "(define it at module level, spelled exactly like this)")
            elif op == "method":
                obj = state.handles[request["handle"]]
                name = request["name"]
                if name == "__call__":
                    fn = obj
                else:
                    fn = functools.partial(len, obj) if name == "__len__" else getattr(obj, name)
            elif op == "getattr":
                target = state.module if request.get("handle") is None else state.handles[request["handle"]]
                value = getattr(target, request["name"])
                if isinstance(value, (types.MethodType, types.FunctionType, types.BuiltinMethodType,
                                      types.BuiltinFunctionType)):
                    _safe_send(sock, {"ok": True, "callable": True})
                else:
                    _safe_send(sock, {"ok": True, "value": value}, state.handle_for)
                continue
            elif op == "helper":
                helper = helpers.HELPERS[request["name"]]
                value = helper(state, *args, **kwargs)
                _safe_send(sock, {"ok": True, "value": value}, state.handle_for)
                continue
            elif op == "release":
                state.handles.pop(request.get("handle"), None)
                _safe_send(sock, {"ok": True, "value": None})
                continue
            else:
                raise ValueError(f"unknown op {op!r}")
            snapshots: list = []
            if request.get("check_mutation", True):
                for name, value in _argument_names(fn, args, kwargs):
                    _tensor_snapshots(value, name, snapshots)
            value = fn(*args, **kwargs)
            mutated = [path for path, tensor, before in snapshots if not _same(tensor, before)]
            _safe_send(sock, {"ok": True, "value": value, "mutated": mutated}, state.handle_for)
        except BaseException as exc:
            _safe_send(sock, {"ok": False, "error": _describe_exception(exc, state.filename)})


def main(fd: int) -> None:
    """Entry point inside the sandbox: read the source, execute it, serve requests."""
    sock = socket.socket(fileno=fd)
    try:
        start = decode(recv_frame(sock))
    except (EOFError, OSError, TransportError):
        os._exit(0)
    threads = start.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    filename = str(start.get("filename", "submission.py"))
    text = bytes(start.get("source", b"")).decode("utf-8", errors="replace")
    module = types.ModuleType("submission")
    module.__file__ = filename
    sys.modules["submission"] = module
    import linecache

    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    state = _WorkerState(module, filename)
    ready: dict[str, Any] = {"ready": True}
    try:
        exec(compile(text, filename, "exec", dont_inherit=True), module.__dict__)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        ready["error"] = _describe_exception(exc, filename)
    _safe_send(sock, ready)
    if "error" in ready:
        os._exit(0)
    _serve(sock, state)
