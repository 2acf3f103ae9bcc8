"""Pytest plugin of the grader: reads ``@pytest.mark.points(n)`` and streams results.

The grader runs each task's test module with ``pytest.main(..., plugins=[Recorder(emit)])``;
``emit`` receives one dict per event, written as a JSON line to a pipe the grader reads:

* ``{"event": "collected", "tests": [{"name", "points", "file"}]}`` after collection,
* ``{"event": "result", "name", "passed", "points", "message"}`` after each test
  (``points`` is the test's weight; it counts towards the score when ``passed``),
* ``{"event": "done"}`` at the end of the session.

Results stream as tests finish, so a task stopped by its time limit keeps the points of
the tests that completed. Messages are short and written for the learner: the failing
assertion's message, or what the submission raised, never a full traceback of the test.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

MESSAGE_LIMIT = 1500


def test_points(item: pytest.Item) -> int:
    marker = item.get_closest_marker("points")
    if marker is None or not marker.args:
        return 0
    return int(marker.args[0])


def test_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[-1]


def failure_message(excinfo: Any) -> str:
    """A learner-facing message for a failed test (no traceback of the test itself)."""
    exc = excinfo.value
    if isinstance(exc, AssertionError):
        text = str(exc)
        # pytest's assertion rewriting appends "assert <expr>" details after the message
        if "\nassert " in text and not text.startswith("assert "):
            text = text.split("\nassert ", 1)[0]
        text = text or "assertion failed"
    elif type(exc).__name__ == "SubmissionError":
        text = str(exc)
    elif isinstance(exc, pytest.skip.Exception):
        text = f"skipped: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = text.strip()
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 20] + " ... (truncated)"
    return text


class Recorder:
    """Collects outcomes per test (setup, call and teardown together) and emits them."""

    def __init__(self, emit: Callable[[dict], None]):
        self.emit = emit
        self.outcomes: dict[str, dict] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        self.emit({"event": "collected", "tests": [
            {"name": test_name(item), "points": test_points(item), "file": str(item.path)} for item in items]})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        record = self.outcomes.setdefault(item.nodeid, {
            "name": test_name(item), "points": test_points(item), "passed": None, "message": ""})
        if report.when == "call" and report.passed and record["passed"] is None:
            record["passed"] = True
        if report.failed or report.skipped:
            if record["passed"] is not False:
                record["message"] = failure_message(call.excinfo) if call.excinfo is not None else report.outcome
            record["passed"] = False

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        record = self.outcomes.get(nodeid)
        if record is None:
            return
        passed = bool(record["passed"])
        self.emit({"event": "result", "name": record["name"], "passed": passed,
                   "points": record["points"], "message": "" if passed else record["message"]})

    @pytest.hookimpl
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.emit({"event": "done", "exitstatus": int(exitstatus)})
