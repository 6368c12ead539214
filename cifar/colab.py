"""The first code cell of every notebook: makes it run in Google Colab, does nothing elsewhere.

The repository URL lives here (``REPO_URL``) and only here; ``tests/test_notebooks.py``
checks that every notebook starts with exactly :data:`SETUP_CELL` and that the README's
"Open in Colab" badges point at the same repository. ``python -m cifar.colab`` rewrites the
first cell of every notebook from this template after the URL changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_URL = "https://github.com/resnet-course/resnet-course"
BRANCH = "main"

SETUP_CELL = f"""# Colab setup: in Google Colab, clone the course and install its `cifar` package
# (torch and torchvision stay as Colab has them). Anywhere else this cell does nothing.
import os
import subprocess
import sys

REPO_URL = "{REPO_URL}"
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/course"):
        clone = ["git", "clone", "--depth", "1", "--branch", "{BRANCH}", REPO_URL, "/content/course"]
        subprocess.run(clone, check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/course"], check=True)
    os.chdir("/content/course/notebooks")"""


def colab_badge(notebook: str, folder: str = "notebooks") -> str:
    """Markdown for an "Open in Colab" badge of ``<folder>/<notebook>`` (``notebooks`` or ``solutions``)."""
    path = REPO_URL.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/{folder}/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def first_code_cell(notebook: str | Path) -> str:
    """Source of the first code cell of a notebook file."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = next(cell["source"] for cell in cells if cell["cell_type"] == "code")
    return "".join(source) if isinstance(source, list) else source


def main(paths: list[str]) -> None:
    """Replace the first code cell of each notebook by :data:`SETUP_CELL` (outputs kept empty)."""
    for path in paths:
        notebook = json.loads(Path(path).read_text())
        cell = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
        cell["source"] = SETUP_CELL.splitlines(keepends=True)
        Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
