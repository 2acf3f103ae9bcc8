# task: ch3_continual/task4_metrics
# mode: append
"""HOSTILE: correct results, but it overwrites the caller's accuracy matrix afterwards."""
_correct = continual_metrics  # noqa: F821 - defined by the solution this code is appended to


def continual_metrics(acc, random_baseline=None):
    result = _correct(acc, random_baseline)
    acc.mul_(0.0)
    return result
