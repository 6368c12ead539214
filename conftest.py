"""Test configuration: where the data lives, fast mode for notebooks, per-notebook timings (nbval, simulated Colab).

`CIFAR_DATA_DIR` is taken from the environment; when unset and a `shared/data` folder sits
beside the repository (as on the course's CI machines), it is used. `CIFAR_FAST=1` is set
for every test run unless already set, so notebooks run their fast lesson under nbval.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent

if not os.environ.get("CIFAR_DATA_DIR") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["CIFAR_DATA_DIR"] = str(REPO.parent / "shared" / "data")
os.environ.setdefault("CIFAR_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_notebook_seconds: dict[str, float] = defaultdict(float)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.perf_counter()
    yield
    if str(item.fspath).endswith(".ipynb"):
        _notebook_seconds[Path(str(item.fspath)).name] += time.perf_counter() - start
    simulated = getattr(getattr(item, "callspec", None), "params", {}).get("name")
    if item.get_closest_marker("colab") and simulated:  # tests/test_colab.py: the simulated Colab run
        _notebook_seconds[f"{simulated} (simulated Colab)"] += time.perf_counter() - start


def pytest_terminal_summary(terminalreporter):
    if _notebook_seconds:
        terminalreporter.section("time per notebook")
        for name, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


def cifar10_dir() -> Path | None:
    """The real CIFAR-10 folder if the data is present, else None."""
    root = os.environ.get("CIFAR_DATA_DIR")
    path = Path(root) / "cifar10" if root else None
    return path if path is not None and (path / "cifar10_test.zip").is_file() else None


@pytest.fixture
def cifar10_root() -> Path:
    path = cifar10_dir()
    if path is None:
        pytest.skip("real CIFAR-10 absent: set CIFAR_DATA_DIR to a folder holding cifar10/cifar10_test.zip")
    return path
