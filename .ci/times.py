"""CI's timing record: the steps' wall clock (steps.tsv) and pytest's per-test times (JUnit XML).

``python3 .ci/times.py REPORT_DIR`` prints one JSON object: the machine, the commit, the seconds
from CI's start to the end of each step (``elapsed_s``), and the seconds of every test file and
notebook of the three runs (unit tests, notebooks, simulated Colab run).
``.ci/run`` writes it to ``REPORT_DIR/ci_times.json``; ``docs/records/`` keeps the ones
``docs/testing.md`` quotes. Standard library only (it runs outside the virtual environments).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path


def machine() -> dict:
    """The CPU CI ran on: its model, cores, and whether it has native bf16 (AVX512-BF16 or AMX)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
    }


def test_seconds(junit_xml: Path) -> dict[str, float]:
    """Seconds per test file (a notebook counts as its file; the Colab run's tests by notebook name)."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        name = case.get("classname", "").replace(".", "/")
        if "test_notebook_runs_as_in_colab[" in case.get("name", ""):
            name = case.get("name").split("[", 1)[1].rstrip("]")
        elif name.endswith("/ipynb"):
            name = name[: -len("/ipynb")] + ".ipynb"
        elif name.startswith("tests/"):
            name = name.split("/")[0] + "/" + name.split("/")[1] + ".py"
        seconds[name] += float(case.get("time", 0))
    return {name: round(value, 1) for name, value in sorted(seconds.items())}


def main(report: Path) -> dict:
    steps = {}
    for line in (report / "steps.tsv").read_text().splitlines():
        name, seconds = line.split("\t")
        steps[name] = int(seconds)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {
        "command": "CI=true bash .ci/run",
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "elapsed_s": steps,
        "elapsed_min": {name: round(seconds / 60, 1) for name, seconds in steps.items()},
    }
    for run in ("main", "notebooks", "colab"):
        if (report / f"{run}.xml").exists():
            record[f"{run}_tests_s"] = test_seconds(report / f"{run}.xml")
    return record


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
