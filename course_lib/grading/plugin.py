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

import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

MESSAGE_LIMIT = 1500
MESSAGE_LINES = 12  # lines of a failure message (at most 100 columns each)
WIDTH = 100


def test_points(item: pytest.Item) -> int:
    marker = item.get_closest_marker("points")
    if marker is None or not marker.args:
        return 0
    return int(marker.args[0])


def test_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[-1]


def _cap_lines(text: str, limit: int) -> str:
    """Wrap at WIDTH columns and keep at most ``limit`` lines (the first ones)."""
    lines = []
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        lines += textwrap.wrap(line, WIDTH, subsequent_indent=indent + "  ", break_long_words=True) or [""]
    if len(lines) > limit:
        lines = lines[: limit - 1] + [f"... ({len(lines) - limit + 1} more lines)"]
    return "\n".join(lines)


def failure_message(excinfo: Any) -> str:
    """A learner-facing message for a failed test: what was expected and what came back (the
    assertion's message, hint included) or what the submission raised with the last lines of its
    own traceback; never the test's traceback. At most MESSAGE_LINES lines of WIDTH columns."""
    exc = excinfo.value
    if isinstance(exc, AssertionError):
        text = str(exc)
        # pytest's assertion rewriting appends "assert <expr>" details after the message
        if "\nassert " in text and not text.startswith("assert "):
            text = text.split("\nassert ", 1)[0]
        text = text or "assertion failed"
    elif type(exc).__name__ == "SubmissionError":
        text = re.sub(r"^\w+ \((a check that calls your code)\)", r"\1", str(exc))  # no helper names
        head, sep, where = text.partition("\n  where (most recent call last):\n")
        if getattr(exc, "type_name", "") == "NotImplementedError" or " raised NotImplementedError" in head:
            text = head + "\n(not implemented yet: replace the `raise NotImplementedError` of the stub)"
        elif sep:  # the two innermost frames of the submission's own traceback: file, line, code
            lines = [ln for ln in where.splitlines() if ln.strip(" ^~")]  # no caret lines
            starts = [i for i, ln in enumerate(lines) if ln.lstrip().startswith('File "')]
            text = head + "\n  where:\n" + "\n".join(lines[starts[-2] if len(starts) > 1 else 0:])
    elif isinstance(exc, pytest.skip.Exception):
        text = f"skipped: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = text.strip()
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 20] + " ... (truncated)"
    return _cap_lines(text, MESSAGE_LINES)


def checked(item: pytest.Item) -> str:
    """What a test checks: its docstring's first line, else its name in words (with parameters)."""
    fn = getattr(item, "function", None)
    doc = (fn.__doc__ or "").strip() if fn is not None else ""
    what = doc.splitlines()[0] if doc else item.name.split("[")[0].removeprefix("test_").replace("_", " ")
    params = item.name[len(item.name.split("[")[0]):]
    points = test_points(item)
    return f"{what}{' ' + params if params else ''} ({points} point{'s' if points != 1 else ''})"


def compact_report(item: pytest.Item, excinfo: Any) -> str:
    """The learner's report of one failed test (at most 14 lines): what was checked, then
    :func:`failure_message`, then where the check is in the test file."""
    lines = [f"checked: {checked(item)}", textwrap.indent(failure_message(excinfo), "  ")]
    entries = [e for e in getattr(excinfo, "traceback", []) if Path(str(e.path)) == Path(str(item.path))]
    if entries:
        try:
            where = Path(str(item.path)).relative_to(Path.cwd())
        except ValueError:
            where = Path(str(item.path))
        lines.append(f"test: {where}:{entries[0].lineno + 1} (--tb=long shows the full traceback)")
    return "\n".join(lines)


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
