"""The figures README.md quotes from notebook 00 are the ones its stored outputs print."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            out.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_readme_foundation_figures_match_notebook_00():
    readme = (ROOT / "README.md").read_text()
    printed = _outputs(ROOT / "notebooks" / "00_getting_started.ipynb")
    for figure in ("94.6%", "R@1=0.467", "R@5=0.884", "R@1=0.524", "R@5=0.943", "5,701 images/s"):
        assert figure in readme, f"README no longer quotes {figure}"
        assert figure in printed, f"notebook 00 does not print {figure}: README quotes a figure of another run"


def test_readme_points_to_every_chapter_guide():
    readme = (ROOT / "README.md").read_text()
    for guide in ("docs/ch1_compression.md", "docs/ch2_multimodal.md", "docs/ch3_continual.md"):
        assert f"({guide})" in readme and (ROOT / guide).is_file()
