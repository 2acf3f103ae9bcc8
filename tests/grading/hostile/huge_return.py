# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: answers with a 400 MB tensor, hoping to exhaust the grader's memory."""
import torch


def continual_metrics(acc, random_baseline=None):
    return {"average_accuracy": torch.zeros(100_000_000), "bwt": 0.0, "forgetting": 0.0, "fwt": 0.0}
