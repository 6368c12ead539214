"""The docs pages' numbers and facts against their sources (issue 30).

``tests/test_readme.py`` checks the tables of the README and of ``docs/experiments.md`` row by row
against each row's own sources. This module checks the rest of every page:

* the prose (and any table that ``test_readme.SOURCES`` does not check) of ``README.md``,
  ``docs/experiments.md`` and ``docs/performance.md``: every number must appear in the course's
  committed results (the notebooks' outputs and every run record in ``weights/``), read by
  ``test_readme``'s rules, or be listed in ``UNSOURCED`` with the reason it cannot be checked there;
* ``docs/data.md``: the repositories, commits and file counts are ``cifar/download.py``'s and the
  manifests', the albumentations release is the installed one's, the other numbers are
  ``download.py``'s, the lessons' numbers, or the cited year of CIFAR-10's report;
* ``docs/testing.md``: the Colab versions table is ``constraints/colab.txt``'s, and every number of
  the page is in that file, ``requirements.txt``, ``.ci/colab`` or a CI timing record
  (``docs/records/ci_*.json``, written by ``.ci/times.py``).

``docs/performance.md`` and ``docs/testing.md`` also read the measurement records of ``docs/records/``
(``PAGE_RECORDS``); the Colab estimate's arithmetic is computed again (``DERIVED``) from the benchmark's
record, the GPU sweep and torchinfo, with the two datasheet peaks it starts from.

Every page in ``docs/`` must be named in ``PAGES``, so a new page needs its check.
"""

from __future__ import annotations

import json
import re
import statistics
from decimal import Decimal
from functools import cache
from importlib.metadata import version
from pathlib import Path

import pytest
from test_readme import (
    NB02,
    NB03,
    NB04,
    SOURCES,
    Outputs,
    Record,
    matches,
    numbers_in,
    quoted_numbers,
    source_numbers,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SWEEP = "weights/records/s10_tricks_gpu_sweep.jsonl"

# page -> {number as written: why it has no committed source}; checked both ways (a listed number must occur)
UNSOURCED: dict[str, dict[str, str]] = {
    "docs/experiments.md": {},
    "docs/performance.md": {
        "1,979": "NVIDIA's H200 datasheet (linked on the page): BF16 tensor core peak with sparsity",
        "65": "NVIDIA's T4 datasheet (linked on the page): FP16 tensor core peak",
    },
    "README.md": {},
    "docs/testing.md": {},
}


def _record_value(path: str, key: str) -> Decimal:
    return Decimal(str(json.loads((ROOT / path).read_text())[key]))


def _mean_of_two_seeds() -> Decimal:
    accuracies = [
        _record_value(p, "test_accuracy")
        for p in ("weights/s10_tricks_recipe.json", "weights/records/s10_tricks_b256.json")
    ]
    return sum(accuracies) / len(accuracies)


def _resnet50_receptive_field() -> Decimal:
    from cifar.rf import course_tables

    return Decimal(int(course_tables()["ResNet-50"].rf_out.iloc[-1]))


# published peaks the Colab estimate of docs/performance.md starts from (the page links each datasheet)
H200_BF16_SPARSE_TFLOPS = 1979  # NVIDIA H200 SXM, BF16 tensor core, with 2:4 sparsity (dense: half)
T4_FP16_TFLOPS = 65  # NVIDIA T4, FP16/FP32 mixed precision tensor core


def _bench_record() -> dict:
    return json.loads((DOCS / "records" / "bench_amd_epyc_avx2.json").read_text())


def _h200_images_per_s() -> Decimal:
    """The median epoch (images/s) of the 27 GPU sweep runs."""
    rows = [json.loads(line) for line in (ROOT / SWEEP).read_text().splitlines()]
    return Decimal(str(statistics.median(epoch["images_per_s"] for row in rows for epoch in row["history"])))


def _forward_gmac(model: str, height: int, width: int) -> Decimal:
    from torchinfo import summary
    from torchvision import models

    network = getattr(models, model)()
    return Decimal(summary(network, input_size=(1, 3, height, width), verbose=0, device="cpu").total_mult_adds) / 10**9


def _s10_gmac() -> Decimal:
    return Decimal(str(_bench_record()["gmac_per_image"]))


def _h200_tflops() -> Decimal:  # 6 FLOP per MAC for a training step (forward, backward)
    return _h200_images_per_s() * 6 * _s10_gmac() / 1000


def _share_of_h200_peak() -> Decimal:  # percent of the dense bf16 peak
    return 100 * _h200_tflops() / (Decimal(H200_BF16_SPARSE_TFLOPS) / 2)


def _t4_tflops() -> Decimal:
    return _share_of_h200_peak() / 100 * T4_FP16_TFLOPS


def _t4_images_per_s(gmac: Decimal) -> Decimal:
    return _t4_tflops() * 1000 / (6 * gmac)


def _avx2_epoch_minutes() -> Decimal:  # 50,000 images at the benchmark's best training path
    best = max(_bench_record()[f"{path}_img_s"] for path in ("baseline", "default", "tensor", "compile"))
    return Decimal(50_000) / Decimal(str(best)) / 60


def _t4_s10_lesson_minutes() -> Decimal:  # 24 epochs of 50,000 images and a 100-step range test at batch 512
    return (24 * 50_000 + 100 * 512) / _t4_images_per_s(_s10_gmac()) / 60


# numbers a page computes from committed sources: the test computes them again
DERIVED = {
    "docs/performance.md": {
        "56,764": _h200_images_per_s,
        "129": _h200_tflops,
        "13.1": _share_of_h200_peak,
        "8.5": _t4_tflops,
        "4.09": lambda: _forward_gmac("resnet50", 224, 224),
        "2.84": lambda: _forward_gmac("resnet34", 160, 240),
        "3,729": lambda: _t4_images_per_s(_s10_gmac()),
        "346": lambda: _t4_images_per_s(_forward_gmac("resnet50", 224, 224)),
        "499": lambda: _t4_images_per_s(_forward_gmac("resnet34", 160, 240)),
        "5.6": _t4_s10_lesson_minutes,
        "13": _avx2_epoch_minutes,
        "5.1": lambda: 24 * _avx2_epoch_minutes() / 60,
    },
    "docs/experiments.md": {
        "90.06": _mean_of_two_seeds,  # the two seeds of the tricks recipe, 90.20% and 89.92%
        "427": _resnet50_receptive_field,  # ResNet-50's last conv, cifar.rf (RF_Calculation.xlsx)
    },
}
PAGES = {
    "README.md": "prose against the course's results",
    "docs/experiments.md": "prose against the course's results (tables: tests/test_readme.py)",
    "docs/performance.md": "prose and tables against the course's results",
    "docs/data.md": "test_data_page_matches_the_downloads",
    "docs/testing.md": "test_testing_page_matches_the_constraints",
}


# a page -> the measurement records of docs/records/ that are its sources besides the course's results
PAGE_RECORDS = {
    "docs/performance.md": ("bench_*.json", "loader_*.json", "precision_equivalence.json"),
    "docs/testing.md": ("ci_*.json",),
}


@cache
def course_results(page: str = "") -> tuple[Decimal, ...]:
    """Every number of the course's committed results (notebook outputs and every run record), and of
    the measurement records in docs/records/ that ``page`` quotes (``PAGE_RECORDS``)."""
    specs = [Outputs(NB02), Outputs(NB03), Outputs(NB04), Outputs(NB02, line="share_iou_50", scale=100)]
    specs += [Record(str(path.relative_to(ROOT))) for path in sorted((ROOT / "weights").rglob("*.json"))]
    specs += [Record(SWEEP, json.loads(line)["name"]) for line in (ROOT / SWEEP).read_text().splitlines()]
    specs += [Record(str(path.relative_to(ROOT))) for path in page_records(page)]
    return tuple(value for spec in specs for value in source_numbers(spec))


def page_records(page: str) -> list[Path]:
    return sorted(path for pattern in PAGE_RECORDS.get(page, ()) for path in (DOCS / "records").glob(pattern))


def test_every_record_in_docs_is_a_pages_source():
    records = set((DOCS / "records").glob("*.json"))
    quoted = {path for page in PAGE_RECORDS for path in page_records(page)}
    assert records == quoted, f"records no page quotes: {sorted(p.name for p in records - quoted)}"
    for page in PAGE_RECORDS:
        text = (ROOT / page).read_text()
        for path in page_records(page):  # each record is named on its page, with the command that wrote it
            record = json.loads(path.read_text())
            assert f"docs/records/{path.name}" in text, f"{page} does not name {path.name}"
            assert record["command"], path.name


def page_text(page: str) -> str:
    """A page without code blocks, headings, images and the tables that test_readme checks by row."""
    text = re.sub(r"```.*?```", " ", (ROOT / page).read_text(), flags=re.DOTALL)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    checked = {heading for heading in SOURCES}
    kept, heading, table_seen = [], None, False
    for line in text.splitlines():
        if line.startswith("#"):
            heading, table_seen = line.lstrip("#").strip(), False
            continue
        if line.startswith("|") and heading in checked and not table_seen:
            continue  # a table checked row by row against its own sources
        if heading in checked and kept and kept[-1].startswith("|") and not line.startswith("|"):
            table_seen = True
        kept.append(line)
    return "\n".join(kept)


def test_every_docs_page_is_checked():
    pages = {str(path.relative_to(ROOT)) for path in DOCS.glob("*.md")}
    assert pages == {page for page in PAGES if page.startswith("docs/")}, "add the page to PAGES with its check"


@pytest.mark.parametrize("page", ["README.md", "docs/experiments.md", "docs/performance.md"])
def test_page_numbers_appear_in_the_results(page):
    results = course_results(page)
    quoted = quoted_numbers(page_text(page))
    unsourced, derived = UNSOURCED[page], DERIVED.get(page, {})
    for text, compute in derived.items():
        assert text in {t for t, _ in quoted}, f"{page}: DERIVED lists {text}, which the page no longer has"
        assert matches(Decimal(text.replace(",", "")), compute()), f"{page}: {text} is not {compute()}"
    missing = sorted(
        {
            text
            for text, value in quoted
            if text not in unsourced and text not in derived and not any(matches(value, s) for s in results)
        }
    )
    assert not missing, f"{page}: numbers in no notebook output or run record, and not in UNSOURCED: {missing}"
    stale = sorted(set(unsourced) - {text for text, _ in quoted})
    assert not stale, f"{page}: UNSOURCED lists numbers the page no longer has: {stale}"


def test_data_page_matches_the_downloads():
    from cifar import download

    page = (DOCS / "data.md").read_text()
    for source in (download.RACCOON, download.FISH_EGU2017):
        files = len(source.files())
        assert f"`{source.repository}`" in page and f"`{source.commit}`" in page, source.name
        assert f"`cifar/manifests/{source.manifest}`: one SHA-256 per file, {files} files" in page, source.name
    assert f"`{download.KAGGLE_FISH}`" in page
    assert f"albumentations ({version('albumentations')})" in page
    allowed = numbers_in((ROOT / "cifar" / "download.py").read_text()) + [Decimal(version("albumentations")[:3])]
    allowed += [Decimal(len(s.files())) for s in (download.RACCOON, download.FISH_EGU2017)]
    allowed += [Decimal(path.name[:2]) for path in (ROOT / "notebooks").glob("*.ipynb")]  # lesson numbers
    text = re.sub(r"`[0-9a-f]{40}`", " ", page)
    missing = [t for t, v in quoted_numbers(text) if v not in allowed and t not in {version("albumentations"), "2009"}]
    assert not missing, f"docs/data.md numbers with no source: {missing}"


def test_testing_page_matches_the_constraints():
    page = (DOCS / "testing.md").read_text()
    constraints = (ROOT / "constraints" / "colab.txt").read_text()
    pins = dict(re.findall(r"^([a-z]+)==([\d.]+)\.\*$", constraints, flags=re.MULTILINE))
    assert pins, "constraints/colab.txt holds no pins"
    rows = {row.split("|")[1].strip(): row for row in page.splitlines() if row.startswith("| ")}
    for package, minor in pins.items():
        assert f"| {package} | {minor} | {minor} (newest patch) |" in rows.get(package, ""), package
    sources = constraints + (ROOT / "requirements.txt").read_text() + (ROOT / ".ci" / "colab").read_text()
    allowed = numbers_in(sources)
    allowed += [
        value
        for path in page_records("docs/testing.md")
        for value in source_numbers(Record(str(path.relative_to(ROOT))))
    ]
    text = re.sub(r"\d+\.\d+\.\d+\.\d+", " ", page)  # the address 127.0.0.1
    unsourced = UNSOURCED["docs/testing.md"]
    quoted = quoted_numbers(text)
    missing = [t for t, v in quoted if t not in unsourced and not any(matches(v, s) for s in allowed)]
    assert not sorted(set(unsourced) - {t for t, _ in quoted}), "UNSOURCED lists numbers docs/testing.md lacks"
    assert not missing, (
        f"docs/testing.md numbers in no source (constraints, requirements, .ci/colab, a CI record): {missing}"
    )
