"""Grade submissions: one subprocess per (submission, task), with a time limit each.

The grader process imports torch, pytest and the tests' reference libraries once and then
(on Linux) *forks* one child per task: the child runs the task's graded test module with
``pytest.main`` and streams results back through a pipe. Before pytest starts, the child
forks the zygote of its submission workers (see :mod:`course_lib.grading.sandbox`), so no
process re-imports torch. Where forking is not available or not safe, children are fresh
interpreters instead ("spawn" mode, slower).

Guarantees:

* a task that hangs, crashes, exits or floods output costs that task only: the child is
  killed at ``timeout`` seconds and keeps the points of the tests that finished;
* the grader's own files (the graded tests, this package) and the staged copies of the
  submissions are checked after every task; if a submission changed them they are
  restored, and the tasks that could have done it are graded again one at a time, the
  culprit getting zero for that task.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
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
        return {"task": self.task, "score": self.score, "max_score": self.max_score,
                "tests": [t.to_dict() for t in self.tests]}


@dataclass
class SubmissionReport:
    label: str
    root: Path
    tasks: list[TaskReport] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(t.score for t in self.tasks)

    @property
    def max_score(self) -> int:
        return sum(t.max_score for t in self.tasks)

    def to_dict(self) -> dict:
        return {"score": self.score, "max_score": self.max_score, "tasks": [t.to_dict() for t in self.tasks]}


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


# ---------------------------------------------------------------------------------------
# integrity of the grader's files


class Snapshot:
    """In-memory copy of trusted files; ``check_and_restore`` undoes any change.

    ``roots`` are folders (their ``*.py`` files, added files included) or single files;
    ``absent`` are paths that must not appear (e.g. a conftest.py above the tests).
    """

    def __init__(self, roots: list[Path], patterns: tuple[str, ...] = ("*.py",), absent: list[Path] = ()):
        self.roots = [r for r in roots if r.exists()]
        self.patterns = patterns
        self.absent = [p for p in absent if not p.exists()]
        self.files = self._scan()

    def _paths(self) -> set[Path]:
        out: set[Path] = set()
        for root in self.roots:
            if root.is_file():
                out.add(root)
                continue
            for pattern in self.patterns:
                out.update(p for p in root.rglob(pattern) if "__pycache__" not in p.parts)
        return out

    def _scan(self) -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in self._paths() if p.is_file()}

    def check_and_restore(self) -> list[str]:
        """Return the paths that had changed (and are now restored); [] when intact."""
        changed: list[str] = []
        current = self._paths() | {p for p in self.absent if p.exists() or p.is_symlink()}
        for path in current - set(self.files):
            changed.append(f"{path} (added)")
            try:
                path.unlink()
            except OSError:
                pass
        for path, data in self.files.items():
            try:
                same = path.is_file() and not path.is_symlink() and path.read_bytes() == data
            except OSError:
                same = False
            if not same:
                changed.append(str(path))
                try:
                    if path.is_symlink() or path.is_dir():
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path)
                        else:
                            path.unlink()
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                except OSError:
                    pass
        return changed


# ---------------------------------------------------------------------------------------
# the task child


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


BASE_PRELOAD = ["torch", "torch.nn", "torch.nn.functional", "torch.fx.experimental.symbolic_shapes", "numpy",
                "pytest", "_pytest.python",
                "course_lib.grading.plugin", "course_lib.grading.sandbox", "course_lib.grading.proxy",
                "course_lib.grading.helpers", "course_lib.grading.testing"]


def _run_child(spec: dict, write_fd: int, forked: bool) -> None:
    """Body of a task child (forked or spawned). Never returns normally."""
    from .sandbox import _close_fds_except, install_forked_zygote, make_undumpable, set_parent_death_signal

    if forked:
        os.setsid()
    set_parent_death_signal()
    make_undumpable()
    _close_fds_except({write_fd})
    log_fd = os.open(spec.get("log") or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_in, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="replace")
    os.environ.update(spec["env"])
    sys.dont_write_bytecode = True
    sys.pycache_prefix = spec["pycache"]
    os.chdir(spec["rootdir"])

    def emit(event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        while data:
            n = os.write(write_fd, data)
            data = data[n:]

    try:
        _preload(BASE_PRELOAD + list(spec.get("preload", [])))
        if spec.get("needs_workers", True):
            install_forked_zygote()
        import pytest
        import torch

        from .plugin import Recorder

        torch.set_num_threads(1)
        gc.freeze()  # the preloaded libraries are permanent: garbage collections skip them
        # no:unraisableexception - its gc.collect() calls at exit cost ~1 s per task with torch loaded
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
    write_fd = int(sys.argv[1])
    spec = json.loads(sys.argv[2])
    _run_child(spec, write_fd, forked=False)


@dataclass
class _Job:
    label: str
    root: Path          # staged copy of the submission folder
    display_root: Path  # the folder the teacher pointed at (for messages)
    task: Task
    attempt: int = 0


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
        mode: ``"fork"``, ``"spawn"`` or ``"auto"`` (fork on Linux when safe).
    """

    def __init__(self, tests_dir: Path, timeout: float = DEFAULT_TIMEOUT, jobs: int = 2,
                 call_timeout: float | None = None, mode: str = "auto", log_dir: Path | None = None,
                 progress=None):
        self.tests_dir = Path(tests_dir).resolve()
        self.rootdir = self.tests_dir.parents[1]
        self.timeout = float(timeout)
        self.jobs = max(1, int(jobs))
        self.call_timeout = call_timeout if call_timeout is not None else max(2.0, min(30.0, self.timeout / 2))
        self.mode = mode
        self.log_dir = log_dir
        self.progress = progress or (lambda msg: None)
        self.workdir = Path(tempfile.mkdtemp(prefix="course-grade-"))
        os.chmod(self.workdir, 0o700)
        # pytest reads only this (empty) config: nothing in the course's pyproject.toml applies
        self._ini = self.workdir / "pytest.ini"
        self._ini.write_text("[pytest]\n")
        self._collected: dict[str, list[tuple[str, int]]] = {}
        self._staged = 0

    # -- plumbing ---------------------------------------------------------------------
    def _resolve_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
            return "spawn"
        return "fork"

    def _spec(self, files: list[str], job: _Job | None, preload: list[str], collect_only: bool) -> dict:
        env = {
            "HF_HUB_OFFLINE": "1",
            "COURSE_PROFILE": "quick",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "COURSE_CALL_TIMEOUT": str(self.call_timeout),
            "TOKENIZERS_PARALLELISM": "false",
        }
        if job is not None:
            env["COURSE_IMPL"] = str(job.root)
            env["COURSE_IMPL_DISPLAY"] = str(job.display_root)
        pycache = tempfile.mkdtemp(prefix="pyc-", dir=self.workdir)
        log = None
        if self.log_dir is not None and job is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = str(self.log_dir / f"{job.label}__{job.task.id.replace('/', '__')}.log")
        return {"files": files, "env": env, "pycache": pycache, "rootdir": str(self.rootdir), "preload": preload,
                "inifile": str(self._ini), "confcutdir": str(self.tests_dir),
                "collect_only": collect_only, "needs_workers": not collect_only, "log": log}

    def _start(self, spec: dict, mode: str) -> tuple[int, int, subprocess.Popen | None]:
        read_fd, write_fd = os.pipe()
        if mode == "fork":
            from .sandbox import _fork

            pid = _fork()
            if pid == 0:
                try:
                    os.close(read_fd)
                    _run_child(spec, write_fd, forked=True)
                finally:
                    os._exit(0)
            os.close(write_fd)
            return pid, read_fd, None
        env = dict(os.environ)
        env["PYTHONPATH"] = str(PACKAGE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        code = "from course_lib.grading.runner import _spawned_entry; _spawned_entry()"
        proc = subprocess.Popen([sys.executable, "-c", code, str(write_fd), json.dumps(spec)], pass_fds=(write_fd,),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        os.close(write_fd)
        return proc.pid, read_fd, proc

    @staticmethod
    def _kill(pid: int) -> None:
        for fn in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                fn()
            except (ProcessLookupError, PermissionError, OSError):
                pass

    @staticmethod
    def _reap(run: _Running, block: bool) -> int | None:
        if run.proc is not None:
            if block:
                return run.proc.wait()
            return run.proc.poll()
        try:
            pid, status = os.waitpid(run.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0
        return status if pid else None

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

    # -- collection -------------------------------------------------------------------
    def collect(self, tasks: list[Task]) -> dict[str, list[tuple[str, int]]]:
        """The tests (name, points) of each task, from one pytest --collect-only run."""
        missing = [t for t in tasks if t.id not in self._collected]
        if missing:
            files = [str(self.tests_dir / t.test_file) for t in missing]
            for t, f in zip(missing, files):
                if not Path(f).is_file():
                    raise UsageError(f"graded tests for {t.id} not found at {f}")
            spec = self._spec(files, None, [], collect_only=True)
            pid, fd, proc = self._start(spec, self._resolve_mode())
            run = _Running(_Job("", Path(), Path(), missing[0]), pid, fd, time.monotonic(), proc)
            deadline = time.monotonic() + max(120.0, self.timeout)
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    run.buffer += chunk
            self._kill(pid)
            self._reap(run, block=True)
            os.close(fd)
            by_file: dict[str, list[tuple[str, int]]] = {}
            for event in self._parse(bytes(run.buffer)):
                if event.get("event") == "collected":
                    for test in event.get("tests", []):
                        by_file.setdefault(str(Path(test["file"]).resolve()), []).append(
                            (str(test["name"]), int(test["points"])))
                if event.get("event") == "crash":
                    raise UsageError(f"collecting the graded tests failed: {event.get('message')}")
            for t, f in zip(missing, files):
                tests = by_file.get(str(Path(f).resolve()))
                if not tests:
                    raise UsageError(f"no graded tests collected for {t.id} from {f}")
                self._collected[t.id] = tests
        return {t.id: self._collected[t.id] for t in tasks}

    # -- grading ----------------------------------------------------------------------
    def _stage(self, label: str, root: Path, tasks: list[Task]) -> Path:
        self._staged += 1
        stage = self.workdir / "submissions" / f"{self._staged:04d}"
        for task in tasks:
            src = root / task.source
            if src.is_file() and not src.is_symlink():
                dst = stage / task.source
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        stage.mkdir(parents=True, exist_ok=True)
        for path in [stage, *stage.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return stage

    def _report(self, job: _Job, events: list[dict], note: str, tampered: list[str] | None = None) -> TaskReport:
        results = {str(e["name"]): e for e in events if e.get("event") == "result" and "name" in e}
        tests = []
        for name, points in self._collected[job.task.id]:
            event = results.get(name)
            if tampered:
                tests.append(TestOutcome(name, False, points, "the submission modified files of the grader: "
                                         + ", ".join(tampered[:3])))
            elif event is None:
                tests.append(TestOutcome(name, False, points, f"not run: {note}" if note else "not run"))
            else:
                passed = event.get("passed") is True
                tests.append(TestOutcome(name, passed, points, "" if passed else str(event.get("message", ""))[:2000]))
        crash = next((e for e in events if e.get("event") == "crash"), None)
        if crash is not None and not note:
            note = f"the grading process failed: {crash.get('message', '')}"
        if tampered:
            note = "tampering with the grader's files"
        return TaskReport(job.task.id, tests, note)

    def _missing_file_report(self, job: _Job) -> TaskReport:
        msg = f"the submission has no file {job.task.source} (expected at {job.display_root / job.task.source})"
        return TaskReport(job.task.id, [TestOutcome(n, False, p, msg) for n, p in self._collected[job.task.id]],
                          "file missing")

    def grade(self, submissions: list[tuple[str, Path]], tasks: list[Task]) -> list[SubmissionReport]:
        """Grade every (submission, task) pair; returns one report per submission, in order."""
        for task in tasks:
            if not (self.tests_dir / task.test_file).is_file():
                raise UsageError(f"graded tests for {task.id} not found at {self.tests_dir / task.test_file}")
        mode = self._resolve_mode()
        # Reference libraries are worth loading once here only when several submissions share them;
        # otherwise each task's child imports its own, in parallel with the other tasks.
        preload = sorted({m for t in tasks for m in t.preload}) if len(submissions) > 1 else []
        if mode == "fork":
            # Safe to fork afterwards: importing starts no OpenMP pool (BLAS pools are fork-aware);
            # this process never runs tensor code, which is what would make fork unsafe.
            _preload(BASE_PRELOAD + preload)
        reports = [SubmissionReport(label, root) for label, root in submissions]
        outcomes: dict[tuple[int, str], tuple[_Job, list[dict], str, list[str] | None]] = {}
        missing: list[tuple[int, _Job]] = []
        jobs: list[tuple[int, _Job]] = []
        for i, (label, root) in enumerate(submissions):
            stage = self._stage(label, root, tasks)
            for task in tasks:
                job = _Job(label, stage, root, task)
                (jobs if (stage / task.source).is_file() else missing).append((i, job))
        # The trusted test process imports only course_lib/__init__.py and course_lib/grading/
        # (plus the graded tests and their conftests): those are the files to guard. The rest of
        # course_lib is never imported by a grading run, and developers edit it concurrently.
        snapshot = Snapshot([self.tests_dir, PACKAGE_DIR, PACKAGE_DIR.parent / "__init__.py",
                             self.workdir / "submissions", self._ini],
                            absent=[self.rootdir / "conftest.py", self.tests_dir.parent / "conftest.py"])
        self._run_jobs(jobs, outcomes, snapshot, mode)
        # the test list of each task comes from its own run; collect separately only where none ran to the end
        for job, events, _, _ in outcomes.values():
            for event in events:
                if event.get("event") == "collected" and job.task.id not in self._collected:
                    self._collected[job.task.id] = [(str(t["name"]), int(t["points"])) for t in event.get("tests", [])]
        unknown = {job.task.id for _, job in missing} | {job.task.id for job, *_ in outcomes.values()}
        self.collect([t for t in tasks if t.id in unknown - set(self._collected)])
        results = {key: self._report(job, events, note, tampered) for key, (job, events, note, tampered)
                   in outcomes.items()}
        results.update({(i, job.task.id): self._missing_file_report(job) for i, job in missing})
        for i, report in enumerate(reports):
            report.tasks = [results[(i, t.id)] for t in tasks]
        return reports

    def _run_jobs(self, jobs: list[tuple[int, _Job]], outcomes: dict, snapshot: Snapshot, mode: str) -> None:
        pending = list(jobs)
        sequential: list[tuple[int, _Job]] = []
        running: dict[int, tuple[int, _Running]] = {}
        suspects: set[int] = set()  # ids of jobs that ran since the last clean check
        done_unverified: dict[int, tuple[int, _Job, list[dict], str]] = {}
        index = {id(job): (i, job) for i, job in jobs}
        parallel = True
        while pending or running or sequential:
            if not pending and not running and sequential:
                pending, sequential, parallel = sequential, [], False
            limit = self.jobs if parallel else 1
            while pending and len(running) < limit:
                i, job = pending.pop(0)
                spec = self._spec([str(self.tests_dir / job.task.test_file)], job, list(job.task.preload), False)
                pid, fd, proc = self._start(spec, mode)
                running[fd] = (i, _Running(job, pid, fd, time.monotonic(), proc))
                suspects.add(id(job))
                self.progress(f"grading {job.label + ': ' if job.label else ''}{job.task.id}")
            ready, _, _ = select.select(list(running), [], [], 0.1)
            finished: list[tuple[int, _Running, str]] = []
            for fd in ready:
                i, run = running[fd]
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if chunk:
                    if len(run.buffer) < (8 << 20):
                        run.buffer += chunk
                    continue
                status = self._reap(run, block=False)
                if status is None:  # pipe closed but process alive: give it a moment
                    time.sleep(0.05)
                    status = self._reap(run, block=False)
                if status is None:
                    self._kill(run.pid)
                    self._reap(run, block=True)
                finished.append((i, run, ""))
            now = time.monotonic()
            for _fd, (i, run) in list(running.items()):
                if any(r is run for _, r, _ in finished):
                    continue
                if now - run.started > self.timeout:
                    self._kill(run.pid)
                    self._reap(run, block=True)
                    finished.append((i, run, f"the task was stopped after {self.timeout:g} s (time limit); "
                                             "tests that finished before kept their points"))
            for i, run, note in finished:
                running.pop(run.fd, None)
                self._kill(run.pid)  # the whole process group (zygote included)
                try:
                    os.close(run.fd)
                except OSError:
                    pass
                events = self._parse(bytes(run.buffer))
                if not note and not any(e.get("event") == "done" for e in events):
                    note = "the grading process for this task ended unexpectedly"
                done_unverified[id(run.job)] = (i, run.job, events, note)
            if not finished:
                continue
            changed = snapshot.check_and_restore()
            if not changed:
                for key in list(done_unverified):
                    i, job, events, note = done_unverified.pop(key)
                    outcomes[(i, job.task.id)] = (job, events, note, None)
                suspects = {id(r.job) for _, r in running.values()}
            elif parallel:
                # someone among the suspects changed trusted files: stop them all and grade
                # each of them again, alone, to find out who did it
                for fd, (_i, run) in list(running.items()):
                    self._kill(run.pid)
                    self._reap(run, block=True)
                    os.close(fd)
                running.clear()
                for key in suspects:
                    done_unverified.pop(key, None)
                    sequential.append(index[key])
                suspects = set()
                snapshot.check_and_restore()
            else:
                for key in list(done_unverified):
                    i, job, events, note = done_unverified.pop(key)
                    outcomes[(i, job.task.id)] = (job, events, note, changed)
                suspects = set()

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
