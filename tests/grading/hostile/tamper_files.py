# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: rewrites the grader's files (graded tests, a conftest, the plugin), then answers wrongly.

Inside the sandbox the course is not even there (``course_lib`` holds only the worker's
files, under /grader, read-only), so every write fails, as root and as a normal user.
"""
from pathlib import Path

import course_lib

ROOT = Path(course_lib.__file__).resolve().parents[1]
PASS_ALL = "def test_everything_passes():\n    assert True\n"
CONFTEST = ("import pytest\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
            "    outcome = yield\n    outcome.get_result().outcome = 'passed'\n")
ATTEMPTS = [
    (ROOT / "tests/exercises/ch3_continual/test_task4_metrics.py", PASS_ALL),
    (ROOT / "tests/exercises/ch3_continual/conftest.py", CONFTEST),
    (ROOT / "tests/exercises/conftest.py", CONFTEST),
    (ROOT / "course_lib/grading/plugin.py", "raise SystemExit(0)\n"),
]
WRITTEN = []


def _tamper():
    for path, text in ATTEMPTS:
        try:
            path.write_text(text)
            WRITTEN.append(str(path))
        except OSError:
            pass


_tamper()


def continual_metrics(acc, random_baseline=None):
    _tamper()
    return {"average_accuracy": -1.0, "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0}
