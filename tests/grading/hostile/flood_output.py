# task: ch3_continual/task4_metrics
# mode: append
"""HOSTILE (but correct): prints 8 MB when imported and 200 KB on every call."""
import sys as _sys

_sys.stdout.write("x" * 4_000_000 + "\n")
_sys.stderr.write("y" * 4_000_000 + "\n")
_correct = continual_metrics  # noqa: F821 - defined by the solution this code is appended to


def continual_metrics(acc, random_baseline=None):
    print("z" * 200_000)
    return _correct(acc, random_baseline)
