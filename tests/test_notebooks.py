"""Static checks of the committed notebooks: Colab-ready, executed in order, no machine paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cifar.colab import REPO_URL, SETUP_CELL, colab_badge, first_code_cell

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
NOTEBOOKS = LESSONS + SOLUTIONS
MACHINE_PATHS = re.compile(r"/work/|/root/|/home/\w+/|/tmp/|site-packages|\.venv/")


def _code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def _output_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        text = output.get("text", "")
        parts.append("".join(text) if isinstance(text, list) else text)
        for key in ("text/plain", "text/html", "text/markdown"):
            value = output.get("data", {}).get(key, "")
            parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def test_there_are_numbered_notebooks():
    assert LESSONS, "no notebooks found"
    for path in LESSONS:
        assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", path.name), path.name
    for path in SOLUTIONS:
        assert re.match(r"\d\d_[a-z0-9_]+_solutions\.ipynb$", path.name), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_colab_setup(path):
    assert first_code_cell(path) == SETUP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_in_order_without_errors(path):
    counts = [cell["execution_count"] for cell in _code_cells(path)]
    assert None not in counts, f"{path.name} has cells that were not executed"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"
    for cell in _code_cells(path):
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", [])), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_paths_in_outputs(path):
    for cell in _code_cells(path):
        found = MACHINE_PATHS.search(_output_text(cell))
        assert found is None, f"{path.name}: output shows a path of the machine that ran it: {found.group(0)!r}"


def test_readme_has_a_colab_badge_per_notebook():
    readme = (REPO / "README.md").read_text()
    for path in LESSONS:
        assert colab_badge(path.name) in readme, f"README lacks the Colab badge of {path.name}"
    assert REPO_URL in SETUP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_were_drawn(path):
    """A figure shown as a cell's result has its picture (a notebook executed under MPLBACKEND=Agg has only text)."""
    for cell in _code_cells(path):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if text.startswith("<Figure size"):
                assert "image/png" in data, f"{path.name}: a figure without its picture (executed under Agg?)"
