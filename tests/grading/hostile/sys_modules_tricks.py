# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: rewires the worker's own machinery through sys.modules.

It replaces the grading modules' reply function so that every call "succeeds" with a
made-up value, hides input mutation, and swaps sys.modules["torch"] for a fake. The
trusted side still checks every value it receives, so none of this earns points.
"""
import sys
import types


try:
    from course_lib.grading import sandbox

    _real_send = sandbox._safe_send

    def _lying_send(sock, obj, handle_for=None):
        if isinstance(obj, dict) and "ok" in obj:
            obj = {"ok": True, "value": {"average_accuracy": 0.5, "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0},
                   "mutated": []}
        return _real_send(sock, obj, handle_for)

    sandbox._safe_send = _lying_send
    sandbox._same = lambda a, b: True
    sys.modules["course_lib.grading.transport"] = types.SimpleNamespace(encode=lambda *a, **k: b"garbage")
except Exception:
    pass
sys.modules["torch"] = types.SimpleNamespace(allclose=lambda *a, **k: True)


def continual_metrics(acc, random_baseline=None):
    raise RuntimeError("never reached: replies are forged above")
