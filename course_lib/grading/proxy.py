"""Trusted-side proxies: make a submission running in a worker look like a module.

``impl = RemoteModule(sandbox)``; then ``impl.quantize_affine(x, axis=0)`` sends ``x`` to
the worker, runs the submission's function there and returns its result as data.
Classes become remote objects: ``buf = impl.ReservoirBuffer(5, seed=0)``, ``buf.add(x, y)``,
``len(buf)``, ``buf.num_seen``. ``impl.helper(name, ...)`` runs one of the trusted helpers
of :mod:`course_lib.grading.helpers` inside the worker (gradients, model round trips).

After every call ``impl.last_mutated`` lists the tensor arguments the call modified in
place (e.g. ``["x"]``); tests that check "does not modify its inputs" read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .sandbox import DEFAULT_CALL_TIMEOUT, Sandbox, SubmissionError
from .tasks import submission_root
from .transport import Handle, map_leaves

IMPL_ENV = "COURSE_IMPL"
TIMEOUT_ENV = "COURSE_CALL_TIMEOUT"


def resolve_impl_root(value: str | None, repo_root: Path) -> Path:
    """Map ``COURSE_IMPL`` to a folder: ``solutions``, ``exercises`` or a path.

    Unset: ``solutions`` in the teacher's course, ``exercises`` where there is no
    ``solutions/`` (the student handout). Raises ValueError for ``solutions`` without one."""
    value = (value or "").strip() or ("solutions" if (repo_root / "solutions").is_dir() else "exercises")
    if value in ("solutions", "exercises"):
        if not (repo_root / value).is_dir():
            raise ValueError(f"{IMPL_ENV}={value}: there is no {value}/ folder in {repo_root}"
                             + (" (a student handout has none; use exercises)" if value == "solutions" else ""))
        return repo_root / value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return submission_root(path)


def call_timeout_from_env(default: float = DEFAULT_CALL_TIMEOUT) -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, default))
    except ValueError:
        return default


def _describe_args(args: tuple, kwargs: dict) -> str:
    return "..." if (args or kwargs) else ""


class RemoteModule:
    """The object the ``impl`` fixture returns (see the module docstring)."""

    def __init__(self, sandbox: Sandbox):
        self._sandbox = sandbox
        self.last_mutated: list[str] = []

    def __getattr__(self, name: str) -> "RemoteCallable":
        if name.startswith("__"):
            raise AttributeError(name)
        return RemoteCallable(self, name)

    def __repr__(self) -> str:
        return f"<submission {self._sandbox.display_name}>"

    # -- plumbing ---------------------------------------------------------------------
    def _request(self, message: dict, what: str) -> dict:
        return self._sandbox.request(message, what)

    def _wrap(self, value: Any) -> Any:
        """Turn handles inside a decoded value into RemoteObjects."""
        generation = self._sandbox.generation
        return map_leaves(value, lambda v: RemoteObject(self, v, generation) if isinstance(v, Handle) else v)

    def _unwrap(self, value: Any) -> Any:
        """Turn RemoteObjects inside arguments back into handles."""
        def leaf(v: Any) -> Any:
            if isinstance(v, RemoteObject):
                v._check_alive()
                return v._handle
            return v

        return map_leaves(value, leaf)

    def _call(self, message: dict, args: tuple, kwargs: dict, what: str, check_mutation: bool = True) -> Any:
        message = dict(message, args=self._unwrap(list(args)), kwargs=self._unwrap(dict(kwargs)),
                       check_mutation=check_mutation)
        self.last_mutated = []
        reply = self._request(message, what)
        mutated = reply.get("mutated", [])
        self.last_mutated = [str(m) for m in mutated] if isinstance(mutated, list) else []
        return self._wrap(reply.get("value"))

    # -- public helpers ---------------------------------------------------------------
    def helper(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run trusted helper ``name`` (from course_lib.grading.helpers) inside the worker."""
        message = {"op": "helper", "name": name, "args": self._unwrap(list(args)), "kwargs": self._unwrap(kwargs)}
        reply = self._request(message, f"{name} (a check that calls your code)")
        return self._wrap(reply.get("value"))

    def output_tail(self) -> str:
        """What the submission printed recently (stdout and stderr, last few KB)."""
        return self._sandbox.output_tail()

    @property
    def isolation(self) -> str:
        return self._sandbox.isolation

    def close(self) -> None:
        self._sandbox.close()


class RemoteCallable:
    """A module-level function or class of the submission."""

    def __init__(self, owner: RemoteModule, name: str):
        self._owner = owner
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call({"op": "call", "name": self._name}, args, kwargs,
                                 f"{self._name}({_describe_args(args, kwargs)})")

    def __repr__(self) -> str:
        return f"<remote {self._name}>"


class RemoteObject:
    """An object that lives in the worker (an instance of a submitted class, a submodule)."""

    def __init__(self, owner: RemoteModule, handle: Handle, generation: int):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_generation", generation)

    def _check_alive(self) -> None:
        if self._owner._sandbox.generation != self._generation:
            raise SubmissionError(
                f"this {self._handle.type_name} object was lost when the process running your code "
                "stopped (see the earlier failure)", "died")

    @property
    def type_name(self) -> str:
        return self._handle.type_name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._check_alive()
        reply = self._owner._request({"op": "getattr", "handle": self._handle.id, "name": name},
                                     f"reading {self._handle.type_name}.{name}")
        if reply.get("callable"):
            return RemoteMethod(self, name)
        return self._owner._wrap(reply.get("value"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("remote objects are read-only from the tests")

    def call_method(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._check_alive()
        what = f"{self._handle.type_name}.{name}({_describe_args(args, kwargs)})"
        if name == "__call__":
            what = f"{self._handle.type_name}(...) forward"
        return self._owner._call({"op": "method", "handle": self._handle.id, "name": name}, args, kwargs, what)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call_method("__call__", *args, **kwargs)

    def __len__(self) -> int:
        value = self.call_method("__len__")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SubmissionError(f"len() of {self._handle.type_name} must be a non-negative int, got {value!r}",
                                  "protocol")
        return value

    def __repr__(self) -> str:
        return f"<remote {self._handle.type_name} #{self._handle.id}>"


class RemoteMethod:
    def __init__(self, obj: RemoteObject, name: str):
        self._obj = obj
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj.call_method(self._name, *args, **kwargs)
