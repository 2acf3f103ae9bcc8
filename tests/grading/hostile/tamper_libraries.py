# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: monkeypatches everything a test could compare with, then answers wrongly.

torch/numpy/math comparison functions, pytest's helpers, the grading helpers and any
loaded test module (and a fresh import of the graded test module) are patched so that
every comparison "succeeds". None of it reaches the trusted test process.
"""
import builtins
import importlib.util
import math
import sys
from pathlib import Path

import numpy
import torch


def _true(*args, **kwargs):
    return True


def _none(*args, **kwargs):
    return None


class _Anything:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


for _module, _names in [(torch, ["allclose", "equal", "isclose"]), (numpy, ["allclose", "isclose", "array_equal"]),
                        (math, ["isclose"])]:
    for _name in _names:
        try:
            setattr(_module, _name, _true)
        except Exception:
            pass
torch.testing.assert_close = _none
math.isnan = lambda x: True
builtins.abs = lambda x: 0.0
try:
    import pytest

    pytest.approx = lambda *a, **k: _Anything()
    pytest.fail = _none
except Exception:
    pass


def _patch(module):
    for attr in list(vars(module)):
        if attr.startswith(("assert", "_check", "expect", "as_", "_reference", "_scalar")):
            try:
                setattr(module, attr, _none)
            except Exception:
                pass


for _name, _mod in list(sys.modules.items()):
    if _mod is not None and ("test" in _name or _name.startswith("course_lib.grading")):
        _patch(_mod)
try:  # a fresh copy of the graded test module, found next to the package
    import course_lib

    _path = Path(course_lib.__file__).resolve().parents[1] / "tests/exercises/ch3_continual/test_task4_metrics.py"
    _spec = importlib.util.spec_from_file_location("test_task4_metrics", _path)
    _tests = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_tests)
    _patch(_tests)
    _tests._reference = lambda acc, baseline=None: {"average_accuracy": 0.0, "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0}
    sys.modules["test_task4_metrics"] = _tests
except Exception:
    pass


def continual_metrics(acc, random_baseline=None):
    return {"average_accuracy": 0.0, "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0}
