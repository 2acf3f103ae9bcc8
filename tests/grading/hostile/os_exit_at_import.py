# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: kills its own process at import with os._exit(0)."""
import os

os._exit(0)
