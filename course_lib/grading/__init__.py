"""Automatic grading of the 12 practice tasks.

* ``course-grade`` / ``python -m course_lib.grading`` (:mod:`.cli`): grade a submission
  folder or a class, print a table, write JSON/CSV (:mod:`.report`).
* :mod:`.runner`: one subprocess per task with a time limit; integrity of the grader's files.
* :mod:`.sandbox` and :mod:`.proxy`: submissions run in restricted worker processes; the
  tests talk to them through data-only messages (:mod:`.transport`), so untrusted code can
  never change the tests' references or comparisons.
* :mod:`.plugin`: the ``points`` marker and result streaming; :mod:`.testing`: assertion
  helpers for the graded tests.

This package never imports ``exercises/`` or ``solutions/``; it finds them by path.
"""

from .tasks import TASK_IDS, TASKS, Task, find_task

__all__ = ["TASKS", "TASK_IDS", "Task", "find_task"]
