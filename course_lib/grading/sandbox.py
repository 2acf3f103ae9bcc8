"""Run untrusted submission code in a separate, restricted worker process.

The trusted test process never imports a submission. It talks to a *worker* process
through a socket, sending inputs and receiving outputs as data only (see
:mod:`course_lib.grading.transport`); references and comparisons stay on the trusted
side, so a submission that monkeypatches torch, numpy, math or pytest only changes its
own process.

Processes::

    trusted test process (pytest)  --ctrl socket-->  zygote  --fork-->  worker (one per test module)
           ^---------------------- rpc socket + output pipe (fds passed by the zygote) ------'

* The **zygote** is trusted code that has imported torch once and never runs tensor code;
  it forks a fresh worker in milliseconds. It is either forked from a clean process (the
  grader does this before pytest starts) or spawned as a fresh interpreter.
* A **worker** runs in its own process group, with its stdout/stderr sent to a capped
  sink, resource limits (file size, CPU time, address space, process count), and, when the
  grader runs as root, a private unprivileged uid (it can read but not write the grader's
  files and cannot signal other processes). It executes the submission's source as module
  ``submission`` and then serves requests. It dies with the zygote, which dies with the
  trusted process.
* Each request has a deadline; a worker that hangs is killed, one that exits or crashes is
  detected, and the next request starts a fresh worker. A module that fails to import
  fails every later request at once, with the reason.
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

from .transport import (
    FnSpec,
    Handle,
    TransportError,
    decode,
    encode,
    map_leaves,
    recv_frame,
    send_frame,
)

DEFAULT_CALL_TIMEOUT = 30.0
OUTPUT_TAIL_BYTES = 4096
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_CAP_DAC_READ_SEARCH = 2
_UID_BASE = 2_000_000
# Environment variables of the grader that a worker must not see.
_SCRUB_ENV_PREFIXES = ("COURSE_GRADE", "COURSE_IMPL", "PYTEST_")


class SubmissionError(Exception):
    """The submission raised, could not be imported, timed out, or its worker died.

    Attributes:
        kind: ``"raised"``, ``"import"``, ``"timeout"``, ``"died"``, ``"missing"`` or
            ``"protocol"`` (it sent something that is not a valid answer).
        type_name: the exception class name for ``raised``/``import`` (else ``""``).
        mro: the names of that class and its bases (e.g. ``["ValueError", "Exception", ...]``).
        remote_message: the exception's message.
    """

    def __init__(self, message: str, kind: str, type_name: str = "", mro=(), remote_message: str = ""):
        super().__init__(message)
        self.kind = kind
        self.type_name = type_name
        self.mro = tuple(mro)
        self.remote_message = remote_message

    def is_a(self, *names: str) -> bool:
        """True if the submission raised an exception of one of these class names."""
        return self.kind == "raised" and any(n in self.mro for n in names)


# ---------------------------------------------------------------------------------------
# small OS helpers (Linux first; other platforms degrade gracefully)


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - non-glibc platforms
        return None


def _prctl(option: int, arg: int) -> bool:
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return libc.prctl(option, arg, 0, 0, 0) == 0


def set_parent_death_signal() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def make_undumpable() -> None:
    """Forbid same-uid processes from ptracing us or opening /proc/<pid>/fd (Linux)."""
    _prctl(_PR_SET_DUMPABLE, 0)


def _fork() -> int:
    """os.fork without Python 3.12's warning about forking with (BLAS) threads: our forks happen
    before any tensor code runs, which is what makes them safe."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):  # pragma: no cover
        return 1024


def _close_fds_except(keep: set[int]) -> None:
    fds: list[int]
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, min(_max_fd(), 65536)))
    for fd in fds:
        if fd not in keep and fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def _cap_permitted() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _capset_read_search_only() -> bool:
    """Keep only CAP_DAC_READ_SEARCH (read any file, write none) after a uid change."""
    libc = _libc()
    if libc is None:
        return False

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    bit = 1 << _CAP_DAC_READ_SEARCH
    data[0].effective = data[0].permitted = bit
    return libc.capset(ctypes.byref(header), data) == 0


def _world_readable(path: str) -> bool:
    p = Path(path).resolve()
    for part in [p, *p.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if part.is_dir() and not mode & 0o001:
            return False
    return True


def _drop_privileges(uid: int) -> str:
    """Switch a root worker to an unused uid. Returns the isolation level reached."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "same-uid"
    keep_read = bool(_cap_permitted() & (1 << _CAP_DAC_READ_SEARCH))
    if not keep_read:
        import torch

        needed = [os.path.dirname(os.__file__), os.path.dirname(torch.__file__)]
        if not all(_world_readable(p) for p in needed):
            return "same-uid"
    if keep_read:
        _prctl(_PR_SET_KEEPCAPS, 1)
    for candidate in (uid, 65534):
        try:
            os.setgroups([])
            os.setresgid(candidate, candidate, candidate)
            os.setresuid(candidate, candidate, candidate)
            break
        except OSError:
            continue
    else:
        return "same-uid"
    if keep_read:
        _capset_read_search_only()
        _prctl(_PR_SET_KEEPCAPS, 0)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    return "uid"


def _set_limits(options: dict) -> None:
    import resource

    def setlim(kind: int, value: int) -> None:
        try:
            soft, hard = resource.getrlimit(kind)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(kind, (value, value if hard == resource.RLIM_INFINITY else hard))
        except (ValueError, OSError):
            pass

    setlim(resource.RLIMIT_CORE, 0)
    setlim(resource.RLIMIT_FSIZE, int(options.get("max_file_bytes", 64 << 20)))
    setlim(resource.RLIMIT_CPU, int(options.get("cpu_seconds", 900)))
    extra = int(options.get("memory_bytes", 6 << 30))
    if extra > 0:
        try:
            status = Path("/proc/self/status").read_text().splitlines()
            vm_kb = int(next(line for line in status if line.startswith("VmSize:")).split()[1])
            setlim(resource.RLIMIT_AS, vm_kb * 1024 + extra)
        except (OSError, StopIteration, ValueError):
            pass


def _set_nproc_limit(n: int) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    except (ValueError, OSError):
        pass


# ---------------------------------------------------------------------------------------
# the zygote


def _zygote_main(ctrl: socket.socket, parent_pid: int) -> None:
    """Serve spawn requests forever; never returns (exits with os._exit)."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        set_parent_death_signal()
        if os.getppid() != parent_pid:
            os._exit(0)
        make_undumpable()
        _close_fds_except({ctrl.fileno(), 0, 1, 2})
        statuses: dict[int, int] = {}
        children: set[int] = set()

        def reap(pid: int) -> bool:
            """Record the exit status of child ``pid`` if it ended; True when it is gone."""
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                return True
            if done:
                children.discard(pid)
                statuses[pid] = status
            return bool(done)

        while True:
            for pid in list(children):
                reap(pid)
            ready, _, _ = select.select([ctrl], [], [], 0.2)
            if not ready:
                continue
            try:
                request = decode(recv_frame(ctrl))
            except (EOFError, OSError, TransportError):
                os._exit(0)
            op = request.get("op") if isinstance(request, dict) else None
            if op == "spawn":
                pid, rpc_end, out_read, tmpdir = _spawn_worker(ctrl, request)
                children.add(pid)
                payload = struct.pack(">q", pid) + tmpdir.encode()
                socket.send_fds(ctrl, [struct.pack(">I", len(payload)) + payload], [rpc_end.fileno(), out_read])
                rpc_end.close()
                os.close(out_read)
            elif op == "status":
                pid = int(request["pid"])
                deadline = time.monotonic() + float(request.get("wait", 0.0))
                while pid in children and time.monotonic() < deadline and not reap(pid):
                    time.sleep(0.01)
                send_frame(ctrl, encode({"status": statuses.get(pid)}))
            else:
                os._exit(0)
    except BaseException:  # pragma: no cover - the zygote must never fall back into pytest
        traceback.print_exc()
    finally:
        os._exit(0)


def _spawn_worker(ctrl: socket.socket, request: dict):
    rpc_end, worker_end = socket.socketpair()
    out_read, out_write = os.pipe()
    tmpdir = tempfile.mkdtemp(prefix="course-worker-")
    zygote_pid = os.getpid()
    pid = _fork()
    if pid == 0:  # the worker
        try:
            ctrl.close()
            rpc_end.close()
            os.close(out_read)
            _worker_main(worker_end, out_write, request, tmpdir, zygote_pid)
        finally:
            os._exit(70)
    worker_end.close()
    os.close(out_write)
    return pid, rpc_end, out_read, tmpdir


def _zygote_entry() -> None:
    """Entry point of a spawned zygote: ``python -c ... <fd> <parent pid>``."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    ctrl = socket.socket(fileno=fd)
    _preload()
    _zygote_main(ctrl, parent_pid)


def _preload() -> None:
    """Import what workers will need, so that each fork starts ready."""
    import gc
    import importlib

    for name in ("torch", "torch.nn", "torch.nn.functional", "numpy", "math", "random", "heapq", "bisect",
                 "itertools", "collections", "dataclasses", "typing", "inspect", "linecache",
                 "torch.fx.experimental.symbolic_shapes",  # the first backward pass imports it (sympy, ~2 s)
                 "course_lib.grading.helpers"):
        try:
            importlib.import_module(name)
        except Exception:  # pragma: no cover
            pass
    gc.freeze()  # workers inherit these objects; their garbage collections skip them


class Zygote:
    """Trusted-side handle of a zygote process."""

    def __init__(self, ctrl: socket.socket, pid: int, proc: subprocess.Popen | None = None):
        self.ctrl = ctrl
        self.pid = pid
        self.proc = proc
        self.lock = threading.Lock()

    @classmethod
    def fork_here(cls) -> "Zygote":
        """Fork the zygote from the current process, which must not have run tensor code yet."""
        parent_end, child_end = socket.socketpair()
        parent = os.getpid()
        pid = _fork()
        if pid == 0:
            parent_end.close()
            _zygote_main(child_end, parent)
        child_end.close()
        return cls(parent_end, pid)

    @classmethod
    def spawn(cls) -> "Zygote":
        """Start the zygote as a fresh interpreter (always safe; costs one torch import)."""
        parent_end, child_end = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
        code = "from course_lib.grading.sandbox import _zygote_entry; _zygote_entry()"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(child_end.fileno()), str(os.getpid())],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        child_end.close()
        return cls(parent_end, proc.pid, proc)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            return False

    def start_worker(self, options: dict) -> tuple[int, socket.socket, int, str]:
        with self.lock:
            send_frame(self.ctrl, encode({"op": "spawn", **options}))
            self.ctrl.settimeout(120)
            try:
                msg, fds = self._recv_fds()
            finally:
                self.ctrl.settimeout(None)
        (size,) = struct.unpack(">I", msg[:4])
        payload = msg[4 : 4 + size]
        pid = struct.unpack(">q", payload[:8])[0]
        tmpdir = payload[8:].decode()
        return pid, socket.socket(fileno=fds[0]), fds[1], tmpdir

    def _recv_fds(self) -> tuple[bytes, list[int]]:
        msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, 4096, 2)
        if len(fds) != 2:
            raise RuntimeError("zygote did not pass the worker's file descriptors")
        while len(msg) < 4 or len(msg) < 4 + struct.unpack(">I", msg[:4])[0]:
            more = self.ctrl.recv(4096)
            if not more:
                raise EOFError("zygote closed")
            msg += more
        return msg, fds

    def exit_status(self, pid: int, wait: float = 0.5) -> int | None:
        with self.lock:
            try:
                send_frame(self.ctrl, encode({"op": "status", "pid": pid, "wait": wait}))
                self.ctrl.settimeout(wait + 10)
                reply = decode(recv_frame(self.ctrl))
            except (OSError, EOFError, TransportError):
                return None
            finally:
                self.ctrl.settimeout(None)
        status = reply.get("status") if isinstance(reply, dict) else None
        return status if isinstance(status, int) else None

    def close(self) -> None:
        try:
            self.ctrl.close()
        except OSError:
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_ZYGOTE: Zygote | None = None


def install_forked_zygote() -> None:
    """Fork the zygote now (call this in a clean process, before any tensor code runs)."""
    global _ZYGOTE
    _preload()
    _ZYGOTE = Zygote.fork_here()


def get_zygote() -> Zygote:
    global _ZYGOTE
    if _ZYGOTE is None or not _ZYGOTE.alive():
        _ZYGOTE = Zygote.spawn()
    return _ZYGOTE


# ---------------------------------------------------------------------------------------
# the worker


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


def _worker_main(sock: socket.socket, out_fd: int, request: dict, tmpdir: str, zygote_pid: int) -> None:
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    _close_fds_except({0, 1, 2, sock.fileno()})
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="replace")
    for key in list(os.environ):
        if key.startswith(_SCRUB_ENV_PREFIXES):
            del os.environ[key]
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["HOME"] = os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = tmpdir
    _set_limits(request)
    uid = _UID_BASE + os.getpid()
    try:
        os.chown(tmpdir, uid, uid)
    except OSError:
        pass
    level = _drop_privileges(uid) if request.get("drop_privileges", True) else "same-uid"
    if level == "uid":
        _set_nproc_limit(int(request.get("max_processes", 64)))
    set_parent_death_signal()
    if os.getppid() != zygote_pid:
        os._exit(0)
    try:
        os.chdir(tmpdir)
    except OSError:
        pass
    threads = request.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    filename = str(request.get("filename", "submission.py"))
    source = request.get("source", b"")
    module = types.ModuleType("submission")
    module.__file__ = filename
    sys.modules["submission"] = module
    import linecache

    text = source.decode("utf-8", errors="replace")
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    state = _WorkerState(module, filename)
    ready: dict[str, Any] = {"ready": True, "isolation": level}
    try:
        exec(compile(text, filename, "exec", dont_inherit=True), module.__dict__)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        ready["error"] = _describe_exception(exc, filename)
    _safe_send(sock, ready)
    if "error" in ready:
        os._exit(0)
    _serve(sock, state)


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


# ---------------------------------------------------------------------------------------
# the trusted side: one sandbox per submitted module


class _OutputSink(threading.Thread):
    """Drain a worker's stdout/stderr, keeping only the tail (a worker never blocks on it)."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd = fd
        self.tail = bytearray()
        self.total = 0

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                self.total += len(chunk)
                self.tail += chunk
                if len(self.tail) > 2 * OUTPUT_TAIL_BYTES:
                    del self.tail[:-OUTPUT_TAIL_BYTES]
        except OSError:
            pass
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def text(self) -> str:
        return bytes(self.tail[-OUTPUT_TAIL_BYTES:]).decode("utf-8", errors="replace")


def _describe_status(status: int | None) -> str:
    if status is None:
        return "it ended unexpectedly"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"it exited with status {code} (does the code call os._exit or exit the process?)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        hint = {
            "SIGSEGV": " (a crash in native code)",
            "SIGKILL": " (killed: out of memory, or too much CPU time)",
            "SIGXCPU": " (it used too much CPU time)",
            "SIGXFSZ": " (it wrote a file that is too large)",
        }.get(name, "")
        return f"it was killed by {name}{hint}"
    return "it ended unexpectedly"


class Sandbox:
    """Runs one submitted module in worker processes and forwards requests to it.

    Args:
        path: the submission's ``.py`` file (may not exist: every request then fails).
        display_name: how messages name the file, e.g. ``ch1_compression/task1_quantization.py``.
        call_timeout: seconds each request may take.
    """

    def __init__(self, path: Path | None, display_name: str, call_timeout: float = DEFAULT_CALL_TIMEOUT,
                 options: dict | None = None):
        self.path = path
        self.display_name = display_name
        self.call_timeout = call_timeout
        self.options = dict(options or {})
        self.generation = 0
        self.isolation = ""
        self._pid: int | None = None
        self._sock: socket.socket | None = None
        self._sink: _OutputSink | None = None
        self._tmpdir: str | None = None
        self._fatal: SubmissionError | None = None
        self._zygote: Zygote | None = None

    # -- lifecycle --------------------------------------------------------------------
    def _start(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self.path is None or not self.path.is_file():
            self._fatal = SubmissionError(
                f"the submission has no file {self.display_name} (expected at {self.path})", "missing")
            raise self._fatal
        source = self.path.read_bytes()
        self._zygote = get_zygote()
        options = {"source": source, "filename": str(self.path), **self.options}
        pid, sock, out_fd, tmpdir = self._zygote.start_worker(options)
        self._pid, self._sock, self._tmpdir = pid, sock, tmpdir
        self._sink = _OutputSink(out_fd)
        self._sink.start()
        try:
            ready = self._receive(time.monotonic() + self.call_timeout, "importing the module")
        except SubmissionError as exc:
            what = {"timeout": "did not finish importing", "died": "crashed while being imported"}.get(
                exc.kind, "failed to import")
            self._fatal = SubmissionError(f"{self.display_name} {what}: {exc}", "import", exc.type_name, exc.mro,
                                          exc.remote_message)
            raise self._fatal from None
        if not isinstance(ready, dict) or not ready.get("ready"):
            self._kill()
            self._fatal = SubmissionError(f"{self.display_name}: the worker sent a malformed greeting", "protocol")
            raise self._fatal
        self.isolation = str(ready.get("isolation", ""))
        if "error" in ready:
            err = ready["error"] if isinstance(ready["error"], dict) else {}
            self._kill()
            self._fatal = SubmissionError(
                f"importing {self.display_name} raised {err.get('type', '?')}: {err.get('message', '')}"
                + _format_tb(err.get("traceback", "")),
                "import", str(err.get("type", "")), err.get("mro", ()), str(err.get("message", "")))
            raise self._fatal

    def _kill(self) -> None:
        if self._pid is not None:
            for target in (lambda: os.killpg(self._pid, signal.SIGKILL), lambda: os.kill(self._pid, signal.SIGKILL)):
                try:
                    target()
                except (ProcessLookupError, PermissionError, OSError):
                    pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self._pid is not None:
            self.generation += 1  # objects living in the old worker are gone
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._pid = None
        if self._tmpdir and os.path.basename(self._tmpdir).startswith("course-worker-"):
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None

    def close(self) -> None:
        self._kill()

    def output_tail(self) -> str:
        """The last few KB the submission printed (stdout and stderr)."""
        return self._sink.text() if self._sink is not None else ""

    # -- requests ---------------------------------------------------------------------
    def _receive(self, deadline: float, what: str) -> Any:
        assert self._sock is not None
        try:
            frame = recv_frame(self._sock, deadline=deadline)
            return decode(frame)
        except socket.timeout:
            self._kill()
            raise SubmissionError(
                f"{what} did not finish within {self.call_timeout:g} s (an endless loop, or far too slow?)",
                "timeout") from None
        except (EOFError, ConnectionError, OSError):
            pid, zygote = self._pid, self._zygote
            status = zygote.exit_status(pid) if (pid is not None and zygote is not None) else None
            self._kill()
            raise SubmissionError(f"the process running your code stopped while {what}: {_describe_status(status)}",
                                  "died") from None
        except TransportError as exc:
            self._kill()
            raise SubmissionError(f"while {what}, the worker sent data that cannot be checked: {exc}",
                                  "protocol") from None

    def request(self, message: dict, what: str) -> dict:
        """Send one request; returns the reply dict (``ok`` true) or raises SubmissionError."""
        if self._sock is None:
            self._start()
        assert self._sock is not None
        try:
            send_frame(self._sock, encode(message))
        except (OSError, EOFError):
            self._kill()
            self._start()
            send_frame(self._sock, encode(message))
        reply = self._receive(time.monotonic() + self.call_timeout, what)
        if not isinstance(reply, dict):
            self._kill()
            raise SubmissionError(f"while {what}, the worker sent a malformed reply", "protocol")
        if not reply.get("ok"):
            err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            kind = str(err.get("kind", "raised"))
            if kind == "protocol":
                raise SubmissionError(f"{what}: {err.get('message', '')}", "protocol")
            raise SubmissionError(
                f"{what} raised {err.get('type', '?')}: {err.get('message', '')}"
                + _format_tb(err.get("traceback", "")),
                "raised", str(err.get("type", "")), err.get("mro", ()), str(err.get("message", "")))
        return reply


def _format_tb(tb: Any) -> str:
    if not isinstance(tb, str) or not tb.strip():
        return ""
    return "\n  where (most recent call last):\n" + "\n".join("  " + line for line in tb.rstrip().splitlines())
