"""pyproject.toml and environment.yml list the same packages with the same bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch", "open-clip-torch": "open_clip_torch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req.split(";")[0].split("#")[0])
    assert m, req
    return _norm(m.group(1)), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def _conda() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            if name in ("python", "pip"):
                continue
            out[_norm(CONDA_TO_PYPI.get(name, name))] = spec
        elif isinstance(dep, dict):  # packages only on PyPI, in the pip section
            for req in dep.get("pip", []):
                if not req.startswith("-"):
                    name, spec = _split(req)
                    out[_norm(name)] = spec
    return out


def test_environment_matches_pyproject():
    py, conda = _pyproject(), _conda()
    assert sorted(py) == sorted(conda), f"only in pyproject: {set(py) - set(conda)}; only in environment.yml: {set(conda) - set(py)}"
    for name in py:
        assert py[name] == conda[name], f"{name}: pyproject {py[name]!r} != environment.yml {conda[name]!r}"


def test_environment_pip_section_installs_the_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip and any(".[dev]" in line for line in pip[0]["pip"])


def test_torch_is_not_pinned():
    assert not re.search(r"==", _pyproject()["torch"])


def _readme_block(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {title}", 1)[1]
    return section.split("```bash", 1)[1].split("```", 1)[0].strip()


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = _readme_block("Set up and open the course")
    tests = _readme_block("Run the tests")
    assert 'pip install -e ".[dev]"' in setup and 'pip install -e ".[dev]"' in ci
    assert "python3 -m venv .venv" in setup and "python3 -m venv .venv" in ci
    assert "jupyter lab" in setup
    assert "HF_HUB_OFFLINE=1" in tests and "export HF_HUB_OFFLINE=1" in ci
    assert tests.endswith("python -m pytest") and "\npython -m pytest\n" in ci


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        assert f"({nb.relative_to(ROOT)})" in readme, f"README's chapter map lacks {nb.relative_to(ROOT)}"
