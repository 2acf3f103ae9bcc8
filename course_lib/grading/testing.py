"""Assertion helpers for the graded tests (trusted side).

Results from a submission arrive as plain data; these helpers check their type and shape
first (a wrong type fails with a clear message instead of crashing the test) and word the
failure for a learner: what was expected, what came back, and a hint where one helps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from .sandbox import SubmissionError

__all__ = [
    "SubmissionError",
    "describe",
    "expect_error",
    "as_tensor",
    "assert_close",
    "assert_equal_tensor",
    "as_float",
    "assert_not_mutated",
    "as_scalar",
    "assert_gradients",
    "fmt",
    "EPS",
    "input_precision",
    "assert_precision",
    "assert_on_input_device",
]


def fmt(t: Any, limit: int = 8) -> str:
    """Short printable form of a small tensor/list (at most ``limit`` values)."""
    if isinstance(t, torch.Tensor):
        flat = t.detach().flatten()
        vals = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in flat[:limit].tolist())
        more = ", ..." if flat.numel() > limit else ""
        return f"[{vals}{more}] (shape {list(t.shape)}, {str(t.dtype).replace('torch.', '')})"
    return repr(t)


def describe(value: Any) -> str:
    """How a returned value is named in messages (objects left in the worker by their class)."""
    if hasattr(value, "type_name") and type(value).__name__ == "RemoteObject":
        return f"a {value.type_name} object"
    return type(value).__name__


def expect_error(fn: Callable, *args: Any, errors: Iterable[str] = ("ValueError",), what: str = "",
                 **kwargs: Any) -> SubmissionError:
    """Call ``fn`` and require it to raise one of the exception classes named in ``errors``."""
    errors = tuple(errors)
    label = what or "this input"
    try:
        fn(*args, **kwargs)
    except SubmissionError as exc:
        if exc.kind != "raised":
            raise
        if exc.is_a("NotImplementedError"):
            raise AssertionError("the function still raises NotImplementedError: implement it first") from None
        if exc.is_a(*errors):
            return exc
        raise AssertionError(f"{label}: expected a clear {' or '.join(errors)}, but it raised "
                             f"{exc.type_name}: {exc.remote_message[:300]}") from None
    raise AssertionError(f"{label}: expected {' or '.join(errors)} (bad input must be rejected with a clear "
                         "message), but the call returned normally")


def as_tensor(value: Any, name: str, shape: tuple | list | None = None, dtype: torch.dtype | None = None,
              floating: bool = False) -> torch.Tensor:
    """Require a tensor (optionally of a given shape/dtype)."""
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{name} should be a torch.Tensor, got {describe(value)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{name} should have shape {list(shape)}, got {list(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{name} should have dtype {dtype}, got {value.dtype}")
    if floating and not value.is_floating_point():
        raise AssertionError(f"{name} should be a floating-point tensor, got {value.dtype}")
    return value


def as_float(value: Any, name: str) -> float:
    """Require a real number (Python number or one-element tensor) and return it as float."""
    if isinstance(value, bool):
        raise AssertionError(f"{name} should be a number, got a bool")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.reshape(()).item())
    raise AssertionError(f"{name} should be a number, got {describe(value)}")


def assert_close(actual: Any, expected: torch.Tensor, name: str, atol: float = 1e-6, rtol: float = 1e-5,
                 hint: str = "", show: bool = True) -> None:
    """Compare a returned tensor with a reference (shape, then values; NaN never matches)."""
    expected = torch.as_tensor(expected)
    actual = as_tensor(actual, name)
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{name} should have shape {list(expected.shape)}, got {list(actual.shape)}"
                             + (f". {hint}" if hint else ""))
    a = actual.detach().to(torch.float64) if not actual.is_complex() else actual.detach()
    e = expected.detach().to(a.dtype)
    if not torch.isfinite(a).all() and torch.isfinite(e).all():
        raise AssertionError(f"{name} contains NaN or inf" + (f". {hint}" if hint else ""))
    ok = torch.isclose(a, e, atol=atol, rtol=rtol) | (torch.isnan(a) & torch.isnan(e))
    if not bool(ok.all()):
        diff = (a - e).abs().nan_to_num(nan=math.inf)
        idx = int(diff.flatten().argmax())
        pos = list(torch.unravel_index(torch.tensor(idx), a.shape)) if a.dim() else []
        where = f" at index {[int(p) for p in pos]}" if pos else ""
        detail = (f": expected {e.flatten()[idx].item():.6g}, got {a.flatten()[idx].item():.6g}{where}"
                  if show else f" (largest difference {diff.flatten()[idx].item():.3g}{where})")
        n_bad = int((~ok).sum())
        raise AssertionError(f"{name} is wrong in {n_bad} of {ok.numel()} entries{detail}"
                             + (f". {hint}" if hint else ""))


def assert_equal_tensor(actual: Any, expected: torch.Tensor, name: str, hint: str = "") -> None:
    """Exact comparison (integers, booleans)."""
    actual = as_tensor(actual, name)
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{name} should have shape {list(expected.shape)}, got {list(actual.shape)}")
    if not torch.equal(actual.to(expected.dtype), expected) or (actual.dtype.is_floating_point
                                                                and not expected.dtype.is_floating_point
                                                                and not torch.equal(actual, actual.round())):
        bad = (actual.to(expected.dtype) != expected)
        n_bad = int(bad.sum())
        raise AssertionError(f"{name} differs from the expected values in {n_bad} of {bad.numel()} entries: "
                             f"expected {fmt(expected)}, got {fmt(actual)}" + (f". {hint}" if hint else ""))


def assert_not_mutated(impl: Any, function: str) -> None:
    """After a call through ``impl``, require that no tensor argument was modified in place."""
    if impl.last_mutated:
        raise AssertionError(f"{function} modified its input(s) {', '.join(impl.last_mutated)} in place; callers "
                             "expect their tensors untouched (work on a copy or use out-of-place operations)")


def as_scalar(value: Any, name: str) -> float:
    """Require a 0-dim tensor (a loss) and return its value."""
    value = as_tensor(value, name)
    if value.dim() != 0:
        raise AssertionError(f"{name} should be a 0-dim tensor (a scalar), got shape {list(value.shape)}")
    return float(value)


def assert_gradients(impl: Any, function: str, args: list, wrt: list[int], reference: Callable, names: list[str],
                     atol: float = 1e-6, rtol: float = 1e-4) -> None:
    """Compare d function(*args) / d args[i] (i in ``wrt``), computed next to the submission by a
    trusted helper, with autograd through ``reference`` in float64 on this side."""
    out = impl.helper("call_with_grad", function, list(args), {}, list(wrt))
    if "error" in out:
        raise AssertionError(f"{function} must be differentiable with respect to {', '.join(names)}: {out['error']} "
                             "(avoid .item(), .detach(), torch.no_grad() and numpy on the way)")
    full = list(args)
    leaves = []
    for i in wrt:
        full[i] = args[i].detach().double().requires_grad_(True)
        leaves.append(full[i])
    reference(*full).backward()
    for got, leaf, name in zip(out["grads"], leaves, names):
        if got is None:
            raise AssertionError(f"no gradient of {function} reached {name} (is it detached somewhere?)")
        assert_close(got, leaf.grad, f"d {function} / d {name}", atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------
# precision and devices
#
# Policy (each graded test file states how it applies it in its "Tolerances" paragraph):
# where a contract does not fix the result's dtype, a result must be as accurate as
# arithmetic in the *inputs'* precision allows. float32 inputs: float32 or float64 work and
# results both pass. float64 inputs: the result must be float64-accurate, so work done in
# float32 (or float16) and converted back at the end fails. A tolerance is
# ``factor * eps(input dtype) * magnitude`` where ``magnitude`` bounds how much the problem
# amplifies rounding errors (its conditioning), so it means the same thing in every dtype.

EPS: dict[torch.dtype, float] = {dt: torch.finfo(dt).eps for dt in
                                 (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
_RANK = {torch.float16: 0, torch.bfloat16: 0, torch.float32: 1, torch.float64: 2}


def input_precision(*values: Any) -> torch.dtype:
    """The precision a result must reach: float64 if every floating tensor among ``values`` is
    float64, else float32 (float16/bfloat16 inputs are held to float32's standard too)."""
    dtypes = [v.dtype for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return torch.float64 if dtypes and all(d == torch.float64 for d in dtypes) else torch.float32


def assert_precision(actual: Any, expected: Any, name: str, dtype: torch.dtype, magnitude: float = 1.0,
                     factor: float = 64.0, hint: str = "") -> None:
    """Compare ``actual`` (tensor or number) with a float64 reference ``expected`` to within
    ``factor * eps(dtype) * magnitude`` (absolute), ``dtype`` being the inputs' precision.

    A result tensor in a lower precision than ``dtype`` fails with a message naming both."""
    if isinstance(actual, torch.Tensor):
        if actual.is_floating_point() and _RANK.get(actual.dtype, 2) < _RANK[dtype]:
            raise AssertionError(
                f"{name} came back as {str(actual.dtype).replace('torch.', '')} for "
                f"{str(dtype).replace('torch.', '')} inputs: keep the inputs' dtype through the computation "
                "(no .float() / .half(), and create new tensors with dtype=x.dtype)" + (f". {hint}" if hint else ""))
        if actual.is_complex():
            raise AssertionError(f"{name} should be real, got {actual.dtype}")
        a = actual.detach().to(torch.float64)
    elif isinstance(actual, (int, float)) and not isinstance(actual, bool):
        a = torch.tensor(float(actual), dtype=torch.float64)
    else:
        raise AssertionError(f"{name} should be a number or a tensor, got {describe(actual)}")
    e = (expected.detach() if isinstance(expected, torch.Tensor)
         else torch.as_tensor(expected, dtype=torch.float64)).to(torch.float64)
    if tuple(a.shape) != tuple(e.shape):
        raise AssertionError(f"{name} should have shape {list(e.shape)}, got {list(a.shape)}")
    tol = factor * EPS[dtype] * magnitude
    if not bool(torch.isfinite(a).all()):
        raise AssertionError(f"{name} contains NaN or inf" + (f". {hint}" if hint else ""))
    diff = (a - e).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    if worst > tol:
        where = ""
        if a.dim():
            idx = int(diff.flatten().argmax())
            where = f" (at index {[int(p) for p in torch.unravel_index(torch.tensor(idx), a.shape)]})"
        lower = ""
        if dtype == torch.float64 and 1e3 * tol < worst < 1e10 * tol:
            lower = (" (if your formula is right, an error this size comes from float32 arithmetic: for float64 "
                     "inputs compute in float64 - no .float(), new tensors with dtype=x.dtype, accumulators with "
                     "torch.zeros_like(...))")
        elif dtype == torch.float32 and 30 * tol < worst < 3e5 * tol:
            lower = (" (if your formula is right, an error this size comes from float16/bfloat16 arithmetic: "
                     "compute in float32 or float64)")
        raise AssertionError(f"{name} is off by {worst:.3g}{where}; allowed {tol:.2g} for "
                             f"{str(dtype).replace('torch.', '')} inputs{lower}" + (f". {hint}" if hint else ""))


_DEVICE_ERRORS = ("is not on the expected device", "same device", "found at least two devices",
                  "Expected all tensors to be on", "to be on the same device", "device meta is not",
                  "device cpu is not")


def _device_error(message: str) -> bool:
    return any(s.lower() in message.lower() for s in _DEVICE_ERRORS)


def assert_on_input_device(impl: Any, what: str, target: Any, args: list, kwargs: dict | None = None,
                           method: str = "__call__") -> None:
    """Run ``target`` (a function name, or a remote object and its ``method``) with every tensor
    and module of ``args`` moved to PyTorch's ``meta`` device, which stands in for a GPU on a
    machine without one: tensors there have a device but no data.

    Fails if the call mixes devices (a tensor created without ``device=``) or returns a tensor
    that is not on the inputs' device. A call that cannot run on ``meta`` for other reasons
    (it reads values, e.g. ``.item()`` or ``.tolist()``) proves nothing either way and passes."""
    out = impl.helper("on_meta", target, method, list(args), dict(kwargs or {}))
    if not isinstance(out, dict):
        raise AssertionError("the device check did not get an answer (see the other tests)")
    if "raised" in out:
        message = str(out.get("message", ""))[:300]
        if _device_error(message):
            raise AssertionError(
                f"{what} fails when its inputs live on another device ({out['raised']}: {message}). Create new "
                "tensors on the inputs' device (torch.arange(n, device=x.device), torch.zeros_like(x), "
                "x.new_zeros(...)). Checked with PyTorch's 'meta' device, which stands in for a GPU")
        return
    wrong = [(path, dev) for path, dev in out.get("tensors", []) if dev != "meta"]
    if wrong:
        path, dev = wrong[0]
        raise AssertionError(
            f"{what}: the result{path} is on the {dev} device, but the inputs were on another one ('meta', which "
            "stands in for a GPU here); results belong on the inputs' device (create tensors with device=x.device)")
