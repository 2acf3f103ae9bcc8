# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: never finishes importing."""
while True:
    pass
