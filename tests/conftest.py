"""Test-suite wide settings: offline, quick profile, CPU, fixed seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_PROFILE", "quick")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
