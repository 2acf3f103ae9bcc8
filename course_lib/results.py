"""Committed results with provenance: ``results/<name>.json``.

Some effects need the full profile (more data, more steps, more seeds) to show. The
notebook then prints its own quick figure *beside* the full-profile figure read from a
committed results file, and the chapter guides and README quote only figures that come
from such files or from notebook outputs (``tests/test_docs_figures.py`` checks it).

A results file is written by one documented command and records how it was made::

    {"name": "ch1_distillation",
     "command": "python -m course_lib.bench compression --profile full --only distillation",
     "profile": "full", "seeds": [0, 1, 2],
     "hardware": "2 x86_64 CPUs (AMD EPYC ...), no GPU",
     "versions": {"python": "3.11.7", "torch": "2.x", ...},
     "created": "2026-12-02",
     "figures": {...}}

Usage::

    from course_lib.results import load_results, write_results
    write_results("ch1_distillation", figures, command=..., profile="full", seeds=[0, 1, 2])
    full = load_results("ch1_distillation")      # -> Results; full.figures["student_acc"]
    print(full.provenance())
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["RESULTS_DIR", "Results", "load_results", "write_results", "hardware_summary", "library_versions",
           "lookup"]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_LIBRARIES = ("torch", "torchvision", "numpy", "open_clip_torch", "pot", "faiss-cpu", "onnxruntime", "scikit-learn")
_REQUIRED = ("name", "command", "profile", "seeds", "hardware", "versions", "created", "figures")


@dataclass(frozen=True)
class Results:
    """One committed results file (see the module docstring for its fields)."""

    name: str
    command: str
    profile: str
    seeds: list
    hardware: str
    versions: dict
    created: str
    figures: dict

    def provenance(self) -> str:
        """One line naming how these figures were produced."""
        libs = ", ".join(f"{k} {v}" for k, v in self.versions.items() if k in ("torch", "python"))
        return (f"results/{self.name}.json: `{self.command}` (profile {self.profile}, seeds {self.seeds}; "
                f"{self.hardware}; {libs}; {self.created})")

    def get(self, path: str) -> Any:
        """A figure by dotted path, e.g. ``results.get("student.accuracy")``."""
        return lookup(self.figures, path)


def lookup(tree: Any, path: str) -> Any:
    """Follow a dotted path (``"a.b.0"``) through nested dicts/lists; KeyError names the missing part."""
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(f"no figure {path!r} (missing {part!r})")
    return node


def hardware_summary() -> str:
    """E.g. ``"2 x86_64 CPUs (AMD EPYC 7B13), no GPU"`` or ``"... , 1x NVIDIA H200"``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "no GPU"
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{cpus} {platform.machine()} CPUs ({model}), {gpu}"


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Python and the installed versions of the course's main libraries."""
    versions = {"python": platform.python_version()}
    for name in (*_LIBRARIES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _path(name: str, folder: Path | None) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"results name must be lower-case letters, digits and '_', got {name!r}")
    return (folder or RESULTS_DIR) / f"{name}.json"


def write_results(name: str, figures: dict, command: str, profile: str, seeds: Sequence[int],
                  folder: Path | None = None) -> Path:
    """Write ``results/<name>.json`` with provenance; returns its path.

    Raises:
        ValueError: bad name, empty command, unknown profile, or figures that are not JSON
            (NaN and inf are refused: a committed figure is a finite number or null).
    """
    if not command.strip():
        raise ValueError("command must be the shell command that reproduces these figures")
    if profile not in ("quick", "full"):
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    record = {"name": name, "command": command, "profile": profile, "seeds": [int(s) for s in seeds],
              "hardware": hardware_summary(), "versions": library_versions(),
              "created": _dt.date.today().isoformat(), "figures": figures}
    try:
        text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"figures of {name!r} must be finite JSON numbers: {exc}") from exc
    path = _path(name, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(name: str, folder: Path | None = None) -> Results:
    """Read ``results/<name>.json``.

    Raises:
        FileNotFoundError: naming the file and the command that writes it is the caller's
            job; the message names the path.
        ValueError: a field of the provenance is missing.
    """
    path = _path(name, folder)
    if not path.is_file():
        raise FileNotFoundError(f"no committed results file {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path} lacks provenance fields {missing}")
    return Results(**{k: data[k] for k in _REQUIRED})
