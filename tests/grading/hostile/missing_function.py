# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE (or just a typo): the required function is missing; a misspelled one exists."""


def continual_metric(acc, random_baseline=None):
    return {"average_accuracy": 0.0, "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0}
