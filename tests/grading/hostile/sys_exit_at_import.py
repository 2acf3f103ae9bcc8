# task: ch3_continual/task4_metrics
# mode: replace
"""HOSTILE: calls sys.exit(0) at import (a grader that trusts exit codes would see success)."""
import sys

sys.exit(0)
