"""Benchmarks: ``python -m course_lib.bench <chapter>`` prints a chapter's measured tables.

Each chapter owns ``course_lib.<chapter>.bench`` with ``main(argv) -> int``; timings are
reported as ratios against a baseline measured side by side in the same run.
"""

from __future__ import annotations

import importlib

CHAPTERS: tuple[str, ...] = ("compression", "multimodal", "continual")


def run(chapter: str, argv: list[str] | None = None) -> int:
    """Run one chapter's benchmark; raises ValueError for an unknown chapter."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}: expected one of {CHAPTERS}")
    module = importlib.import_module(f"course_lib.{chapter}.bench")
    return int(module.main(argv or []) or 0)
