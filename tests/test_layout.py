"""The package's layout: libraries never import lessons, no import circles, short signatures, formatted code.

Read from the source with ``ast`` (nothing is imported), every module of ``cifar/`` and every import
in it, those inside functions included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cifar"
MODULES = {path.stem: path for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}
#: The lesson modules: each runs its lesson's command (``python -m cifar.<lesson>``); no library imports them.
LESSONS = {"s10", "raccoon", "fish", "residual"}
MAX_PARAMETERS = 8
MAX_FMT_SKIPS = 10


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _imports(name: str) -> set[str]:
    """The modules of ``cifar`` that module ``name`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base == "cifar" or base.startswith("cifar."):
                base = base.removeprefix("cifar").lstrip(".")
                targets = [base.split(".")[0]] if base else [alias.name for alias in node.names]
                found.update(target for target in targets if target in MODULES)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cifar" and len(parts) > 1 and parts[1] in MODULES:
                    found.add(parts[1])
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def test_the_lessons_are_modules_of_the_package():
    assert LESSONS <= set(MODULES)


@pytest.mark.parametrize("library", sorted(set(MODULES) - LESSONS))
def test_a_library_module_imports_no_lesson(library):
    assert GRAPH[library] & LESSONS == set()


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_each_lesson_runs_its_own_command(lesson):
    source = MODULES[lesson].read_text()
    assert 'if __name__ == "__main__":\n    main()' in source and f"python -m cifar.{lesson}" in source


def test_the_import_graph_has_no_circles():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in GRAPH[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    circles = sorted(name for name in MODULES if name in reach(name))
    assert circles == [], {name: sorted(GRAPH[name]) for name in circles}


def test_dataset_and_download_stand_apart():
    assert "download" not in GRAPH["dataset"] or "dataset" not in GRAPH["download"]
    assert "dataset" not in GRAPH["download"]


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    arguments = function.args
    count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
    count += (arguments.vararg is not None) + (arguments.kwarg is not None)
    first = (arguments.posonlyargs + arguments.args)[:1]
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    return count - (method and not is_static and bool(first) and first[0].arg in ("self", "cls"))


def _public_signatures() -> dict[str, int]:
    """Parameters (``self`` not counted) of every public function, method and explicit ``__init__``.

    A dataclass's generated ``__init__`` is not counted: an options or config dataclass is how the
    many settings of a run are kept in one object.
    """
    counts = {}
    for name in MODULES:
        for node in _tree(name).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                counts[f"{name}.{node.name}"] = _parameters(node, method=False)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for item in node.body:
                    if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        continue
                    if not item.name.startswith("_") or item.name == "__init__":
                        counts[f"{name}.{node.name}.{item.name}"] = _parameters(item, method=True)
    return counts


def test_no_public_function_takes_more_than_8_parameters():
    counts = _public_signatures()
    assert counts["train.fit"] <= MAX_PARAMETERS  # the counting itself works on a known function
    assert {name: n for name, n in counts.items() if n > MAX_PARAMETERS} == {}


def test_few_fmt_skips_each_with_a_reason():
    skips = [
        (name, line)
        for name, path in MODULES.items()
        for line in path.read_text().splitlines()
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert len(skips) <= MAX_FMT_SKIPS, skips
    # the reason is a comment before the marker: `...  # a table, one row per line  # fmt: skip`
    assert all(re.search(r"#\s*\w.*#\s*fmt:\s*skip\s*$", line) for _, line in skips), skips
