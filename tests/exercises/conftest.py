"""Graded tests of the 12 practice tasks.

Which implementation is tested comes from ``COURSE_IMPL``: ``solutions`` (the default in the
teacher's course), ``exercises`` (your work; the default where there is no ``solutions/``, as
in the student handout), or a path to a folder laid out like ``exercises/``. Each test
module names its task (``TASK = "ch1_compression/task1_quantization"``) and receives the
implementation through the ``impl`` fixture.

For any implementation but ``solutions/``, a failed test is reported compactly (what was
checked, what was expected and what came back, a hint; see
``course_lib.grading.plugin.compact_report``) unless ``--tb`` or ``--full-trace`` is given.

The implementation never runs in this process: ``impl`` is a proxy to a worker process
(see ``course_lib/grading/sandbox.py``); inputs go there as data and results come back as
data, while the references and comparisons stay here. Every test carries
``@pytest.mark.points(n)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_lib.grading.plugin import compact_report
from course_lib.grading.proxy import IMPL_ENV, RemoteModule, call_timeout_from_env, resolve_impl_root
from course_lib.grading.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): the points a graded test is worth")


def _impl_root() -> Path:
    try:
        return resolve_impl_root(os.environ.get(IMPL_ENV), REPO)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _compact(config: pytest.Config) -> bool:
    """Learner's reports: any implementation but solutions/, and no explicit --tb/--full-trace."""
    return (config.getoption("tbstyle", "auto") == "auto" and not config.getoption("fulltrace", False)
            and _impl_root().resolve() != (REPO / "solutions").resolve())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and _compact(item.config):
        report.longrepr = compact_report(item, call.excinfo)


def pytest_report_header(config: pytest.Config) -> str:
    return f"graded implementation ({IMPL_ENV}): {_impl_root()}"


@pytest.fixture(scope="module")
def impl(request: pytest.FixtureRequest):
    """The implementation of this module's task, running in a sandboxed worker."""
    task = request.module.TASK
    root = _impl_root()
    display_root = Path(os.environ.get("COURSE_IMPL_DISPLAY") or root)
    sandbox = Sandbox(root / f"{task}.py", f"{task}.py", call_timeout_from_env(),
                      options={"threads": 1, "filename": str(display_root / f"{task}.py"),
                               # as root, workers run under a private uid unless this is set (tests of the grader)
                               "drop_privileges": not os.environ.get("COURSE_GRADE_KEEP_UID")})
    remote = RemoteModule(sandbox)
    yield remote
    remote.close()
