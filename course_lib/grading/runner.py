"""Grade submissions: one test process per (submission, task), with a time limit each.

The grader imports torch, pytest and the tests' reference libraries once, then (on Linux)
*forks* one trusted child per task. The child runs the task's graded test module with
``pytest.main`` and streams results back through a pipe (:mod:`.plugin`); the submission
itself runs only inside the child's bubblewrap sandbox (:mod:`.sandbox`), which can write
nothing but its private ``/tmp`` and dies with the child.

* A task that hangs, crashes, exits or floods output costs that task only: its child is
  killed at ``timeout`` seconds and keeps the points of the tests that finished.
* Submissions are read as plain files: each task file is opened without following
  symbolic links, along a path without links, and must be a regular file of at most
  :data:`MAX_SOURCE_BYTES`; anything else scores 0 with the reason. The child sees only
  that copy.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import Task

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = PACKAGE_DIR.parents[1]  # the folder holding course_lib/ (the repo root in a checkout)
DEFAULT_TIMEOUT = 60.0
MAX_SOURCE_BYTES = 256 * 1024


class UsageError(Exception):
    """Bad command line or missing folders: the CLI exits with status 2."""


@dataclass
class TestOutcome:
    name: str
    passed: bool
    points: int
    message: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "points": self.points, "message": self.message}


@dataclass
class TaskReport:
    task: str
    tests: list[TestOutcome]
    note: str = ""  # why the task did not run to completion, if it did not

    @property
    def score(self) -> int:
        return sum(t.points for t in self.tests if t.passed)

    @property
    def max_score(self) -> int:
        return sum(t.points for t in self.tests)

    @property
    def passed(self) -> int:
        return sum(t.passed for t in self.tests)

    def to_dict(self) -> dict:
        return {"task": self.task, "score": self.score, "max_score": self.max_score, "note": self.note,
                "tests": [t.to_dict() for t in self.tests]}


@dataclass
class SubmissionReport:
    label: str
    root: Path
    tasks: list[TaskReport] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)  # similarity signals (see :mod:`.similarity`)

    @property
    def score(self) -> int:
        return sum(t.score for t in self.tasks)

    @property
    def max_score(self) -> int:
        return sum(t.max_score for t in self.tasks)

    def to_dict(self) -> dict:
        out = {"score": self.score, "max_score": self.max_score, "tasks": [t.to_dict() for t in self.tasks]}
        if self.flags:
            out["similar_to"] = self.flags
        return out


# ---------------------------------------------------------------------------------------
# locating things


def find_tests_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the graded tests (``tests/exercises``).

    Looked for in: ``explicit``; ``./tests/exercises``; next to the installed package
    (a source checkout). Raises UsageError naming the places searched.
    """
    candidates = [Path(explicit)] if explicit else [Path.cwd() / "tests" / "exercises",
                                                     PACKAGE_ROOT / "tests" / "exercises"]
    for cand in candidates:
        if (cand / "conftest.py").is_file():
            return cand.resolve()
    raise UsageError("cannot find the graded tests (tests/exercises/conftest.py); looked in: "
                     + ", ".join(str(c) for c in candidates) + ". Run course-grade from the course folder.")


def default_submission() -> Path:
    """``exercises/`` in the current folder, else in the course checkout holding this package."""
    for cand in (Path.cwd() / "exercises", PACKAGE_ROOT / "exercises"):
        if cand.is_dir():
            return cand.resolve()
    raise UsageError(f"no exercises/ folder in {Path.cwd()} or {PACKAGE_ROOT}; pass --submission DIR")


def read_plain_file(root: Path, relative: str, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """Read ``root/relative`` refusing links (the root itself included), devices and big files.

    Raises:
        FileNotFoundError: the file is missing.
        PermissionError: with the reason (a symbolic link, not a regular file, too large).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if Path(root).is_symlink():
        raise PermissionError(f"{root} is a symbolic link; submissions must be plain folders and files")
    fd = os.open(root, flags | getattr(os, "O_DIRECTORY", 0))
    try:
        parts = relative.split("/")
        for i, part in enumerate(parts):
            try:
                nxt = os.open(part, flags | (getattr(os, "O_DIRECTORY", 0) if i < len(parts) - 1 else 0)
                              | (os.O_NONBLOCK if i == len(parts) - 1 else 0), dir_fd=fd)
            except OSError as exc:
                if os.path.islink(os.path.join(root, *parts[:i + 1])):
                    raise PermissionError(f"{'/'.join(parts[:i + 1])} is a symbolic link; submissions must be "
                                          "plain files (copy the file itself)") from None
                if isinstance(exc, FileNotFoundError):
                    raise
                raise PermissionError(f"{'/'.join(parts[:i + 1])} cannot be read: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{relative} is not a regular file (a device, pipe or socket)")
        if info.st_size > limit:
            raise PermissionError(f"{relative} is {info.st_size:,} bytes; at most {limit:,} are accepted")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise PermissionError(f"{relative} is larger than {limit:,} bytes")
        return data
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# the task child


BASE_PRELOAD = ["torch", "torch.nn", "torch.nn.functional", "torch.fx.experimental.symbolic_shapes", "numpy",
                "pytest", "_pytest.python", "course_lib.grading.plugin", "course_lib.grading.sandbox",
                "course_lib.grading.proxy", "course_lib.grading.helpers", "course_lib.grading.testing"]


def _preload(modules: list[str]) -> None:
    import importlib

    if "pytest" in modules:  # pytest's built-in plugins, imported by every pytest.main otherwise
        from _pytest.config import default_plugins

        modules = [*modules, *(f"_pytest.{name}" for name in default_plugins)]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass


def _run_child(spec: dict, write_fd: int) -> None:
    """Body of a task child (forked or spawned). Never returns normally."""
    from .sandbox import _die_with_parent

    _die_with_parent()
    null_in = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(spec.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for target, source in ((0, null_in), (1, log_fd), (2, log_fd)):
        os.dup2(source, target)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="replace")
    os.environ.update(spec["env"])
    sys.dont_write_bytecode = True
    sys.pycache_prefix = spec["pycache"]
    os.chdir(spec["rootdir"])

    def emit(event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        while data:
            data = data[os.write(write_fd, data):]

    try:
        _preload(BASE_PRELOAD + list(spec.get("preload", [])))
        import pytest
        import torch

        from .plugin import Recorder

        torch.set_num_threads(1)
        gc.freeze()  # the preloaded libraries are permanent: garbage collections skip them
        # -c: our own empty ini file (the course's pyproject.toml is not read); --confcutdir: only
        # the conftest.py files of the graded tests are loaded, none above them
        args = [*spec["files"], "-q", "--tb=no", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
                "-c", spec["inifile"], "--rootdir", spec["rootdir"], "--confcutdir", spec["confcutdir"],
                "-W", "ignore::DeprecationWarning"]
        if spec.get("collect_only"):
            args.append("--collect-only")
        pytest.main(args, plugins=[Recorder(emit)])
    except BaseException as exc:  # report and leave; never fall back into the grader's code
        try:
            emit({"event": "crash", "message": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(0)


def _spawned_entry() -> None:
    """``python -c 'from course_lib.grading.runner import _spawned_entry; _spawned_entry()' FD SPEC``."""
    _run_child(json.loads(sys.argv[2]), int(sys.argv[1]))


@dataclass
class _Job:
    index: int          # which submission
    label: str
    root: Path          # staged copy of the submission folder
    display_root: Path  # the folder the teacher pointed at (for messages)
    task: Task


@dataclass
class _Running:
    job: _Job
    pid: int
    fd: int
    started: float
    proc: subprocess.Popen | None
    buffer: bytearray = field(default_factory=bytearray)


class Grader:
    """Grade submission folders task by task.

    Args:
        tests_dir: the graded tests (``tests/exercises``).
        timeout: seconds per task (the child is killed after that).
        jobs: tasks graded at the same time.
        call_timeout: seconds per call into a submission (default: half the task timeout, at most 30).
        mode: ``"fork"``, ``"spawn"`` or ``"auto"`` (fork on Linux).
    """

    def __init__(self, tests_dir: Path, timeout: float = DEFAULT_TIMEOUT, jobs: int = 2,
                 call_timeout: float | None = None, mode: str = "auto", log_dir: Path | None = None,
                 progress=None):
        self.tests_dir = Path(tests_dir).resolve()
        self.rootdir = self.tests_dir.parents[1]
        self.timeout = float(timeout)
        self.jobs = max(1, int(jobs))
        self.call_timeout = call_timeout if call_timeout is not None else max(2.0, min(30.0, self.timeout / 2))
        self.mode = mode if mode != "auto" else ("fork" if sys.platform.startswith("linux") else "spawn")
        self.log_dir = log_dir
        self.progress = progress or (lambda msg: None)
        self.workdir = Path(tempfile.mkdtemp(prefix="course-grade-"))
        os.chmod(self.workdir, 0o700)
        self._ini = self.workdir / "pytest.ini"
        self._ini.write_text("[pytest]\n")
        self._collected: dict[str, list[tuple[str, int]]] = {}
        self.staged: dict[str, Path] = {}  # label -> the plain copy graded (read by the similarity signal)

    # -- plumbing ---------------------------------------------------------------------
    def _spec(self, files: list[str], job: _Job | None, preload: list[str], collect_only: bool) -> dict:
        env = {"HF_HUB_OFFLINE": "1", "COURSE_PROFILE": "quick", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
               "COURSE_CALL_TIMEOUT": str(self.call_timeout), "TOKENIZERS_PARALLELISM": "false"}
        log = None
        if job is not None:
            env["COURSE_IMPL"] = str(job.root)
            env["COURSE_IMPL_DISPLAY"] = str(job.display_root)
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log = str(self.log_dir / f"{job.label or 'submission'}__{job.task.id.replace('/', '__')}.log")
        return {"files": files, "env": env, "pycache": tempfile.mkdtemp(prefix="pyc-", dir=self.workdir),
                "rootdir": str(self.rootdir), "preload": preload, "inifile": str(self._ini),
                "confcutdir": str(self.tests_dir), "collect_only": collect_only, "log": log}

    def _start(self, spec: dict) -> _Running:
        read_fd, write_fd = os.pipe()
        proc = None
        if self.mode == "fork":
            import warnings

            with warnings.catch_warnings():  # safe: this process has run no tensor code
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    os.close(read_fd)
                    _run_child(spec, write_fd)
                finally:
                    os._exit(0)
        else:
            env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            code = "from course_lib.grading.runner import _spawned_entry; _spawned_entry()"
            proc = subprocess.Popen([sys.executable, "-c", code, str(write_fd), json.dumps(spec)],
                                    pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, env=env)
            pid = proc.pid
        os.close(write_fd)
        return _Running(None, pid, read_fd, time.monotonic(), proc)  # type: ignore[arg-type]

    @staticmethod
    def _stop(run: _Running) -> None:
        """Kill a task child (its sandboxes die with it), reap it, remove its cgroups."""
        from .sandbox import remove_cgroups_of

        for kill in (lambda: os.killpg(run.pid, signal.SIGKILL), lambda: os.kill(run.pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        if run.proc is not None:
            run.proc.wait()
        else:
            try:
                os.waitpid(run.pid, 0)
            except ChildProcessError:
                pass
        os.close(run.fd)
        remove_cgroups_of(run.pid)

    @staticmethod
    def _parse(buffer: bytes) -> list[dict]:
        events = []
        for line in buffer.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def _drain(self, runs: list[_Running], deadline_of) -> list[tuple[_Running, str]]:
        """Read from running children until at least one finishes; returns (run, note) pairs."""
        finished: list[tuple[_Running, str]] = []
        while not finished:
            ready, _, _ = select.select([r.fd for r in runs], [], [], 0.1)
            for run in runs:
                if run.fd in ready:
                    chunk = os.read(run.fd, 1 << 16)
                    if chunk:
                        if len(run.buffer) < (8 << 20):
                            run.buffer += chunk
                        continue
                    finished.append((run, ""))
                elif time.monotonic() > deadline_of(run):
                    finished.append((run, f"the task was stopped after {self.timeout:g} s (time limit); "
                                          "tests that finished before kept their points"))
        for run, _ in finished:
            self._stop(run)
        return finished

    # -- collection -------------------------------------------------------------------
    def collect(self, tasks: list[Task]) -> dict[str, list[tuple[str, int]]]:
        """The tests (name, points) of each task, from one pytest --collect-only run."""
        missing = [t for t in tasks if t.id not in self._collected]
        if missing:
            files = [str(self.tests_dir / t.test_file) for t in missing]
            run = self._start(self._spec(files, None, [], collect_only=True))
            self._drain([run], lambda r: r.started + max(120.0, self.timeout))
            by_file: dict[str, list[tuple[str, int]]] = {}
            for event in self._parse(bytes(run.buffer)):
                if event.get("event") == "crash":
                    raise UsageError(f"collecting the graded tests failed: {event.get('message')}")
                for test in event.get("tests", []) if event.get("event") == "collected" else []:
                    by_file.setdefault(str(Path(test["file"]).resolve()), []).append(
                        (str(test["name"]), int(test["points"])))
            for t, f in zip(missing, files):
                if not by_file.get(str(Path(f).resolve())):
                    raise UsageError(f"no graded tests collected for {t.id} from {f}")
                self._collected[t.id] = by_file[str(Path(f).resolve())]
        return {t.id: self._collected[t.id] for t in tasks}

    # -- grading ----------------------------------------------------------------------
    def _stage(self, index: int, root: Path, tasks: list[Task]) -> tuple[Path, dict[str, str]]:
        """Copy each task file as a plain file into the grader's folder; returns the reasons of refusals."""
        stage = self.workdir / "submissions" / f"{index:04d}"
        stage.mkdir(parents=True)
        refused: dict[str, str] = {}
        for task in tasks:
            try:
                data = read_plain_file(root, task.source)
            except FileNotFoundError:
                refused[task.id] = f"the submission has no file {task.source} (expected at {root / task.source})"
                continue
            except (PermissionError, OSError) as exc:
                refused[task.id] = f"refused: {exc}"
                continue
            dst = stage / task.source
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        for path in [stage, *stage.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return stage, refused

    def _report(self, job: _Job, events: list[dict], note: str) -> TaskReport:
        results = {str(e["name"]): e for e in events if e.get("event") == "result" and "name" in e}
        tests = []
        for name, points in self._collected[job.task.id]:
            event = results.get(name)
            if event is None:
                tests.append(TestOutcome(name, False, points, f"not run: {note}" if note else "not run"))
            else:
                passed = event.get("passed") is True
                tests.append(TestOutcome(name, passed, points, "" if passed else str(event.get("message", ""))[:2000]))
        crash = next((e for e in events if e.get("event") == "crash"), None)
        if crash is not None and not note:
            note = f"the grading process failed: {crash.get('message', '')}"
        if not note and not any(e.get("event") == "done" for e in events):
            note = "the grading process for this task ended unexpectedly"
        return TaskReport(job.task.id, tests, note)

    def grade(self, submissions: list[tuple[str, Path]], tasks: list[Task]) -> list[SubmissionReport]:
        """Grade every (submission, task) pair; returns one report per submission, in order."""
        from .sandbox import _worker_package, sandbox_status

        for task in tasks:
            if not (self.tests_dir / task.test_file).is_file():
                raise UsageError(f"graded tests for {task.id} not found at {self.tests_dir / task.test_file}")
        sandbox_status(), _worker_package()  # probed once here; children inherit the answers
        preload = sorted({m for t in tasks for m in t.preload}) if len(submissions) > 1 else []
        if self.mode == "fork":
            _preload(BASE_PRELOAD + preload)
        jobs: list[_Job] = []
        refused: dict[tuple[int, str], str] = {}
        for i, (label, root) in enumerate(submissions):
            stage, why = self._stage(i, root, tasks)
            self.staged[label] = stage
            refused.update({(i, tid): reason for tid, reason in why.items()})
            jobs += [_Job(i, label, stage, root, t) for t in tasks if (i, t.id) not in refused]
        outcomes: dict[tuple[int, str], tuple[_Job, list[dict], str]] = {}
        pending, running = list(jobs), []
        while pending or running:
            while pending and len(running) < self.jobs:
                job = pending.pop(0)
                run = self._start(self._spec([str(self.tests_dir / job.task.test_file)], job,
                                             list(job.task.preload), False))
                run.job = job
                running.append(run)
                self.progress(f"grading {job.label + ': ' if job.label else ''}{job.task.id}")
            for run, note in self._drain(running, lambda r: r.started + self.timeout):
                running.remove(run)
                outcomes[(run.job.index, run.job.task.id)] = (run.job, self._parse(bytes(run.buffer)), note)
        for job, events, _ in outcomes.values():  # each task's test list comes from its own run
            for event in events:
                if event.get("event") == "collected" and job.task.id not in self._collected:
                    self._collected[job.task.id] = [(str(t["name"]), int(t["points"])) for t in event["tests"]]
        self.collect([t for t in tasks if t.id not in self._collected])
        reports = [SubmissionReport(label, root) for label, root in submissions]
        for i, report in enumerate(reports):
            for task in tasks:
                if (i, task.id) in refused:
                    msg = refused[(i, task.id)]
                    report.tasks.append(TaskReport(task.id, [TestOutcome(n, False, p, msg) for n, p
                                                             in self._collected[task.id]],
                                                   "file missing" if "has no file" in msg else msg))
                else:
                    report.tasks.append(self._report(*outcomes[(i, task.id)]))
        return reports

    def close(self) -> None:
        from .sandbox import remove_cgroups_of

        remove_cgroups_of()  # any left by processes that are gone (this run's, or an earlier crash's)
        shutil.rmtree(self.workdir, ignore_errors=True)
