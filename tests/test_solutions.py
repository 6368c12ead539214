"""Every lesson is a lesson: an opening, a summary, exercises, sources, links, and tested solutions.

A lesson notebook (``notebooks/NN_name.ipynb``) opens with what the learner will be able to do (3 to
5 outcomes), what they need first and the time it takes; it ends with ``## Summary``, ``## Exercises``
(at least four, numbered ``1. **(Kind)** ...``, at least two of them ``Code``), its sources and the
links to the previous and next lessons. ``solutions/NN_name_solutions.ipynb`` answers each exercise
under ``## Exercise k`` with code; pytest runs it under nbval like the lessons (``testpaths``), so a
change to the package that breaks a solution fails CI.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from test_readme import matches, quoted_numbers

REPO = Path(__file__).resolve().parents[1]
LESSONS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXERCISE = re.compile(r"^(\d+)\. \*\*\(([^)]*)\)\*\*", re.MULTILINE)
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def markdown(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in cells(path) if cell["cell_type"] == "markdown"]


def exercises(path: Path) -> list[tuple[int, str]]:
    """(number, kind) of each exercise of a lesson, from its ``## Exercises`` section."""
    text = "\n".join(markdown(path))
    assert "## Exercises" in text, f"{path.name} has no '## Exercises' section"
    section = text.split("## Exercises", 1)[1]
    return [(int(number), kind) for number, kind in EXERCISE.findall(section)]


def solution_of(lesson: Path) -> Path:
    return REPO / "solutions" / f"{lesson.stem}_solutions.ipynb"


def test_lessons_exist():
    assert len(LESSONS) >= 5, [path.name for path in LESSONS]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_opening_states_outcomes_prerequisites_and_time(path):
    opening = markdown(path)[0]
    assert opening.startswith(f"# {path.name[:2]} · "), f"{path.name}: the first cell is not the lesson's title"
    assert "**What you will be able to do**" in opening, path.name
    outcomes = opening.split("**What you will be able to do**", 1)[1].split("\n\n", 1)[0]
    count = len(re.findall(r"^- ", outcomes, re.MULTILINE))
    assert 3 <= count <= 5, f"{path.name}: {count} outcomes (3 to 5 expected)"
    assert "**What you need first:**" in opening, path.name
    assert "**Time:**" in opening, path.name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_closing_has_summary_exercises_sources_and_links(path):
    text = "\n".join(markdown(path))
    assert "## Summary" in text, path.name
    found = exercises(path)
    numbers = [number for number, _ in found]
    assert numbers == list(range(1, len(found) + 1)), f"{path.name}: exercises numbered {numbers}"
    assert len(found) >= 4, f"{path.name}: {len(found)} exercises (at least 4)"
    coding = [number for number, kind in found if "Code" in kind]
    assert len(coding) >= 2, f"{path.name}: {len(coding)} exercises that write code (at least 2)"
    sources = text.split("**Sources:**", 1)
    assert len(sources) == 2 and "https://" in sources[1], f"{path.name}: no '**Sources:**' with links"
    index = LESSONS.index(path)
    for label, other in (("**Previous:**", LESSONS[index - 1] if index else None),
                         ("**Next:**", LESSONS[index + 1] if index + 1 < len(LESSONS) else None)):  # fmt: skip
        if other is not None:
            assert label in text, f"{path.name}: no {label} link"
            after = text.split(label, 1)[1]
            assert LINK.search(after).group(1) == other.name, f"{path.name}: {label} does not link {other.name}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_no_reference_a_learner_cannot_open(path):
    for text in markdown(path):
        assert "the original" not in text.lower(), f"{path.name}: 'the original' (a course the learner cannot see)"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_exercise_has_a_solution_with_code(path):
    solution = solution_of(path)
    assert solution.is_file(), f"no solutions/{solution.name} for {path.name}"
    headings, code_after = [], {}
    current = None
    for cell in cells(solution):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            for number in re.findall(r"^## Exercise (\d+)\b", source, re.MULTILINE):
                current = int(number)
                headings.append(current)
        elif current is not None and source.strip():
            code_after[current] = code_after.get(current, 0) + 1
    expected = [number for number, _ in exercises(path)]
    assert headings == expected, f"{solution.name}: exercise headings {headings}, the lesson has {expected}"
    missing = [number for number in expected if not code_after.get(number)]
    assert not missing, f"{solution.name}: no code for exercises {missing}"
    title = markdown(solution)[0]
    assert title.startswith(f"# {path.name[:2]} · Solutions"), f"{solution.name}: title {title[:60]!r}"
    assert path.name in title, f"{solution.name}: the title cell does not link its lesson"


# Numbers that solutions and lessons 00-01 state without measuring them: cited or defined, with where from.
CITED = {
    "00_setup_check.ipynb": {"2.303": "ln 10, computed in the cell below it", "2009": "year", "2019": "year"},
    "01_residual_connections.ipynb": {
        "0.27": "the paper's Table 6",
        "0.85": "the paper's Table 6",
        "8.75": "the paper's Table 6",
        "6.97": "the paper's Table 6",
        "64,000": "the paper's iterations (section 4.2)",
        "128": "the paper's batch size",
        "33": "64,000 / 1,955, rounded",
        "391": "batches per epoch: ceil(50,000 / 128)",
        "1,955": "5 epochs x 391 batches",
        "160": "64,000 iterations x 128 / 50,000 images, about",
        "10,000": "CIFAR-10's test set",
        "50,000": "CIFAR-10's training set",
        "34.76": "61.54 - 26.78, the training errors printed above",
    },
    "00_setup_check_solutions.ipynb": {
        "256": "a width of CustomResNet (cifar/model.py, shown by show_source)",
        "512": "a width of CustomResNet (cifar/model.py, shown by show_source)",
    },
    "01_residual_connections_solutions.ipynb": {
        "1%": "2,752 / 269,722",
        "64,000": "the paper's iterations (section 4.2)",
        "164": "64,000 iterations x 128 / 50,000 images",
        "2,000": "the short CPU version's subset, set in the cell",
    },
}
YEAR = re.compile(r"^(19|20)\d\d$")


def output_numbers(path: Path) -> list[Decimal]:
    values = []
    for cell in cells(path):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [
                output.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")
            ]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                values += [value for _, value in quoted_numbers(text.replace("_", " "))]
    return values


NUMBERED = [*LESSONS[:2], *sorted((REPO / "solutions").glob("0[01]_*.ipynb"))]


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_prose_quotes_the_outputs(path):
    """Every number in the prose is in the notebook's outputs (a solution's: or its lesson's), or cited in CITED."""
    lesson = REPO / "notebooks" / path.name.replace("_solutions", "")
    sources = output_numbers(path) + (output_numbers(lesson) if lesson != path else [])
    cited = CITED.get(path.name, {})
    missing = []
    for text in markdown(path):
        text = re.sub(r"\[[^\]]*\]\(http[^)]*\)", " ", text)  # link texts of sources (titles, years)
        for quoted, value in quoted_numbers(re.sub(r"^#+ .*$", " ", text, flags=re.MULTILINE)):
            if quoted in cited or quoted.rstrip("%") in cited or YEAR.match(quoted) or value <= 10:
                continue
            if not any(matches(value, source) for source in sources):
                missing.append(quoted)
    assert not missing, f"{path.name}: numbers in no output and not in CITED: {missing}"
