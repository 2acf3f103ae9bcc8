# task: ch3_continual/task4_metrics
# mode: append
"""HOSTILE: exits the process from inside calls (sys.exit for T = 1, os._exit for T = 3)."""
import os as _os
import sys as _sys

_correct = continual_metrics  # noqa: F821 - defined by the solution this code is appended to


def continual_metrics(acc, random_baseline=None):
    T = len(acc)
    if T == 1:
        _sys.exit(0)
    if T == 3:
        _os._exit(0)
    return _correct(acc, random_baseline)
