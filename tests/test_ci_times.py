"""CI's timing record (.ci/times.py): steps and per-file times from what CI leaves in its report folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("ci_times", ROOT / ".ci" / "times.py")
times = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(times)

MAIN_XML = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.test_bench" name="test_a" time="1.25" />
<testcase classname="tests.test_bench" name="test_b[x]" time="2.00" />
<testcase classname="tests.test_weights.TestGroup" name="test_c" time="0.5" />
<testcase classname="notebooks.00_setup_check.ipynb" name="Cell 0" time="3.0" />
<testcase classname="notebooks.00_setup_check.ipynb" name="Cell 1" time="4.04" />
</testsuite></testsuites>"""
COLAB_XML = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.test_colab" name="test_notebook_runs_as_in_colab[01_residual_connections.ipynb]"
  time="93.5"/>
<testcase classname="tests.test_colab" name="test_every_notebook_is_simulated" time="0.01"/>
</testsuite></testsuites>"""


def test_the_record_sums_each_file_and_notebook(tmp_path: Path):
    (tmp_path / "steps.tsv").write_text("environment\t148\nlint\t150\nmain_run\t900\ncolab_run\t1190\n")
    (tmp_path / "main.xml").write_text(MAIN_XML)
    (tmp_path / "colab.xml").write_text(COLAB_XML)
    (tmp_path / "notebooks.xml").write_text(
        MAIN_XML.replace("tests.test_bench", "solutions.00_setup_check_solutions.ipynb")
    )
    record = times.main(tmp_path)
    assert record["command"] == "CI=true bash .ci/run" and len(record["commit"]) == 40
    assert record["elapsed_s"] == {"environment": 148, "lint": 150, "main_run": 900, "colab_run": 1190}
    assert record["elapsed_min"]["colab_run"] == 19.8
    assert record["main_tests_s"] == {
        "notebooks/00_setup_check.ipynb": 7.0,
        "tests/test_bench.py": 3.2,
        "tests/test_weights.py": 0.5,
    }
    assert record["notebooks_tests_s"]["solutions/00_setup_check_solutions.ipynb"] == 3.2
    assert record["colab_tests_s"] == {"01_residual_connections.ipynb": 93.5, "tests/test_colab.py": 0.0}
    assert set(record["machine"]) == {"cpu", "cores", "avx512_bf16", "amx"}
    json.dumps(record)  # what .ci/run writes


def test_the_record_of_a_run_without_the_colab_step(tmp_path: Path):
    (tmp_path / "steps.tsv").write_text("environment\t90\n")
    (tmp_path / "main.xml").write_text(MAIN_XML)
    record = times.main(tmp_path)
    assert (
        "colab_tests_s" not in record
        and "notebooks_tests_s" not in record
        and record["elapsed_s"] == {"environment": 90}
    )
