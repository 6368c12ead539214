"""Notebooks 03 and 04: their prose quotes their own outputs (issue 18, "Keep it true"; issue 29 for 04).

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

import pytest
from test_readme import (
    LESSON_RUN,
    NB02,
    NB03,
    NB04,
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


def _output_numbers(notebook: str = NB03) -> list[Decimal]:
    values = []
    for cell in json.loads((ROOT / notebook).read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            texts = [output.get("text", "")] + [
                output.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")
            ]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                values += [Decimal(m.group(0).replace(",", "")) for m in NUMBER.finditer(text.replace("_", " "))]
    return values


def _unsourced(text: str, sources: list[Decimal], definitions: dict = DEFINITIONS) -> list[str]:
    """The numbers ``text`` quotes that are in no source and not among ``definitions``."""
    text = SECTION.sub(" ", text)
    return [
        quoted
        for quoted, value in quoted_numbers(text)
        if value not in definitions and not any(matches(value, source) for source in sources)
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


RANGE_TEST = "weights/records/s10_range_test.json"
TIME_LINE = re.compile(r"this notebook ran for ([\d.]+) min \(RUN = 'restore', RANGE_TEST = 'recorded'\)")


def _printed(pattern: re.Pattern) -> re.Match:
    for cell in json.loads((ROOT / NB03).read_text())["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            found = pattern.search("".join(output.get("text", "")))
            if found:
                return found
    raise AssertionError(f"notebook 03 prints no line matching {pattern.pattern!r}")


def test_restore_mode_costs_what_the_executed_notebook_printed():
    """Restore mode's time in the lesson's opening and in docs/performance.md is the committed run's own,
    which runs no range test: the one drawn took its record's time to make, and both pages say so."""
    minutes = _printed(TIME_LINE).group(1)
    record = json.loads((ROOT / RANGE_TEST).read_text())
    range_minutes = f"{record['seconds'] / 60:.1f}"
    opening = "".join(json.loads((ROOT / NB03).read_text())["cells"][0]["source"])
    assert f"took\n{minutes} min" in opening or f"took {minutes} min" in opening, minutes
    assert f"{range_minutes} min" in opening, range_minutes
    row = next(line for line in (ROOT / "docs" / "performance.md").read_text().splitlines()
               if line.startswith('| 03 S10, `RUN = "restore"`'))  # fmt: skip
    assert row.split("|")[2].strip().startswith(f"{minutes} min"), row
    assert f"{range_minutes} min to make" in row, row
    with pytest.raises(AssertionError):
        _printed(re.compile(r"LR range test: \d+ steps in"))  # the line a range test run here prints: none ran
    printed = _printed(re.compile(r"the plot is the recorded range test s10_range_test\.json \(.*?, ([\d.]+) min on"))
    assert printed.group(1) == range_minutes


# ----------------------------------------------------------------------------- notebook 04, the fish lesson

# numbers in notebook 04's prose that cite rather than measure: the sources' years
DEFINITIONS_04 = {
    Decimal("2014"): "Yosinski et al.'s year (Sources)",
    Decimal("2015"): "He et al.'s year (Sources)",
    Decimal("2017"): "the EGU 2017 poster of the fish photos (Sources)",
}


def test_notebook_04_prose_quotes_its_outputs():
    """Every number in notebook 04's markdown (the over-fitting epochs and losses, the batch-norm test, the
    burbot counts, the seeds' accuracies, the time) is in one of its committed outputs."""
    sources = _output_numbers(NB04)
    missing = {}
    for index, cell in enumerate(json.loads((ROOT / NB04).read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            found = _unsourced("".join(cell["source"]), sources, DEFINITIONS_04)
            if found:
                missing[index] = found
    assert not missing, f"numbers in notebook 04's markdown (cell: numbers) found in no output: {missing}"


def test_notebook_04_offline_notice_is_one_line():
    """Re-executed offline, the ImageNet notice is the one-line 'offline: random weights', never a URLError."""
    text = json.dumps(json.loads((ROOT / NB04).read_text())["cells"])
    assert "URLError" not in text and "Name or service not known" not in text
    assert "offline: random weights" in text


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
        found = _unsourced(texts[index].split("## Exercises", 1)[0], sources, NB02_DEFINITIONS)
        if found:
            missing[index] = found
    assert not missing, f"numbers in notebook 02's measured prose (markdown cell: numbers) found nowhere: {missing}"
