# task: ch3_continual/task4_metrics
# mode: append
"""HOSTILE: leaves a child process behind that sleeps (and would hold pipes open)."""
import os as _os
import time as _time

if _os.fork() == 0:
    _time.sleep(600)
    _os._exit(0)
