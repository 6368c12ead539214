"""Notebook 03's prose quotes its own outputs (issue 18, "Keep it true").

Every number in a markdown cell of notebook 03, and in ``docs/experiments.md``'s section on the S10 lesson's run,
must appear in notebook 03's committed outputs (stream text, ``text/plain`` and ``text/markdown``,
which includes the package source the notebook prints) or in the records of the runs the notebook
reads (``weights/*.json``). The reading rules are ``tests/test_readme.py``'s (a more precise value
that rounds to the quoted digits counts; code spans and ``>=`` thresholds are not numbers), plus:
section numbers ("section 7", "## 7 ·") are not quoted numbers, and ``DEFINITIONS`` lists the few
numbers that define rather than measure (the recipe's published constants), each with where it is
stated in code.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

from test_readme import (
    LESSON_RUN,
    NB02,
    NB03,
    NUMBER,
    ORIGINAL_RUN,
    SHORT_RUN,
    Record,
    matches,
    quoted_numbers,
    record_numbers,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDS = (Record(LESSON_RUN), Record(ORIGINAL_RUN), Record(SHORT_RUN))
# numbers that define the recipe or cite a publication, not measurements; where each is stated in code
DEFINITIONS = {
    Decimal("0.9"): "SGD momentum: cifar.scheduler.make_optimizer",
    Decimal("94"): "David Page's published accuracy for this network in 24 epochs (cited, not measured here)",
}
SECTION = re.compile(r"(?:section|##)\s*\d+\b", re.IGNORECASE)


def _output_numbers() -> list[Decimal]:
    values = []
    for cell in json.loads((ROOT / NB03).read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            texts = [output.get("text", "")] + [
                output.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")
            ]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                values += [Decimal(m.group(0).replace(",", "")) for m in NUMBER.finditer(text.replace("_", " "))]
    return values


def _unsourced(text: str, sources: list[Decimal]) -> list[str]:
    text = SECTION.sub(" ", text)
    return [
        quoted
        for quoted, value in quoted_numbers(text)
        if value not in DEFINITIONS and not any(matches(value, source) for source in sources)
    ]


def _sources() -> list[Decimal]:
    return _output_numbers() + [value for spec in RECORDS for value in record_numbers(spec)]


def test_notebook_03_prose_quotes_its_outputs():
    sources = _sources()
    missing = {}
    for index, cell in enumerate(json.loads((ROOT / NB03).read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            found = _unsourced("".join(cell["source"]), sources)
            if found:
                missing[index] = found
    assert not missing, f"numbers in notebook 03's markdown (cell: numbers) found in no output or record: {missing}"


def test_experiments_s10_section_quotes_notebook_03():
    page = (ROOT / "docs" / "experiments.md").read_text()
    section = page.split("## The S10 lesson's run", 1)[1].split("\n#", 1)[0]
    section = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", section)  # image links (file names)
    assert not _unsourced(section, _sources())


# ----------------------------------------------------------------------------- notebook 02, the box lesson (issue 29)

NB02_RECORDS = tuple(
    Record(f"weights/records/raccoon_{name}.json") for name in ("resnet50_224", "overfit", "diagnosis")
)
#: the measured sections of notebook 02: every markdown cell from the overfit check on, and the summary
NB02_MEASURED = ("### Step 1", "## Summary")
# numbers of notebook 02's measured prose that define a setting rather than measure; where each is set in code
NB02_DEFINITIONS = {
    Decimal(v): where
    for v, where in {
        "8": "photos of the overfit check, and the head's 1x1 conv width: raccoon.run_study, boxes.HeadOptions",
        "16": "batch size: raccoon.RaccoonConfig",
        "32": "the diagnosis's input size: raccoon.short_recipe",
        "12": "the diagnosis's epochs (raccoon.short_recipe), and the S10 map's side at 96 px",
        "96": "the S10 features' input size: notebook 02's s10_box_features call",
        "3": "seeds: notebook 02",
        "4": "the head's grid: boxes.HeadOptions",
        "160": "training photos: the raccoon split",
        "40": "test photos: the raccoon split",
        "64": "the overfit check's input size: raccoon.run_study",
        "224": "the lesson's input size: raccoon.RaccoonConfig",
        "100": "the loss scale of the diagnosis: raccoon.DIAGNOSIS",
        "1e-4": "a learning rate of the diagnosis: raccoon.DIAGNOSIS",
        "1e-3": "Adam's learning rate: raccoon.RaccoonConfig",
        "120": "the diagnosis's steps: 12 epochs of 10 batches of 16 (raccoon.short_recipe)",
        "10": "where a sigmoid's gradient is near 0 (raccoon.overfit_table's docstring)",
        "2048": "ResNet-50's feature width, the input of its fc head: cifar.model.ResNet",
    }.items()
}


def _nb02_sources() -> list[Decimal]:
    values = []
    for cell in json.loads((ROOT / NB02).read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            for text in [output.get("text", "")] + [output.get("data", {}).get("text/plain", "")]:
                text = "".join(text) if isinstance(text, list) else text
                values += [Decimal(m.group(0).replace(",", "")) for m in NUMBER.finditer(text.replace("_", " "))]
    return values + [value for spec in NB02_RECORDS for value in record_numbers(spec)]


def test_notebook_02_measured_prose_quotes_its_outputs():
    sources = _nb02_sources()
    cells = [c for c in json.loads((ROOT / NB02).read_text())["cells"] if c["cell_type"] == "markdown"]
    texts = ["".join(c["source"]) for c in cells]
    start = next(i for i, text in enumerate(texts) if text.startswith(NB02_MEASURED[0]))
    summary = next(i for i, text in enumerate(texts) if text.startswith(NB02_MEASURED[1]))
    missing = {}
    for index in range(start, summary + 1):
        text = SECTION.sub(" ", texts[index].split("## Exercises", 1)[0])
        found = [
            quoted
            for quoted, value in quoted_numbers(text)
            if value not in NB02_DEFINITIONS and not any(matches(value, source) for source in sources)
        ]
        if found:
            missing[index] = found
    assert not missing, f"numbers in notebook 02's measured prose (markdown cell: numbers) found nowhere: {missing}"
