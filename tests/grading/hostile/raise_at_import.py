# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: raises while being imported."""

raise RuntimeError("this module refuses to be imported")


def continual_metrics(acc, random_baseline=None):
    return {}
