"""A simulated Colab run (issue 17): every notebook top to bottom, as a learner with internet runs it.

Each notebook runs in a kernel of its own (nbclient), in ``notebooks/`` like nbval, with what a
fresh Colab runtime gives: ``CIFAR_FAST=1`` (the notebooks' fast lesson, as everywhere in the
tests), no ``CIFAR_DATA_DIR``, an empty cache (``CIFAR_CACHE_DIR``) and torch hub (``TORCH_HOME``)
of its own, and ``CIFAR_DOWNLOAD_MIRROR`` pointing at a :class:`mirror.Mirror` on 127.0.0.1 that
this module starts and stops. Only the base URL of the downloads differs from Colab; the code that
fetches, checks and loads them is the learner's. The server answers upstream's paths with:

* served: the raccoon and fish repositories' files at the pinned commits (the offline copies in
  ``$CIFAR_DATA_DIR``, byte-identical to upstream);
* built: ``~kriz/cifar-10-python.tar.gz`` in torchvision's format, the whole of CIFAR-10 (50,000 +
  10,000 images) from our decoded local copy (JPEG, so not the real archive's pixels);
* faked: torchvision's ImageNet weights for ResNet-50 (IMAGENET1K_V2, notebook 02) and ResNet-34
  (IMAGENET1K_V1, notebook 04) at ``download.pytorch.org``'s paths: the architectures at a seeded
  random initialisation, so the pretrained branches run (their numbers mean nothing).

The built and faked files cannot have upstream's checksums: before the first cell the kernel runs
``mirror.use_stand_in_checksums`` (:data:`PREAMBLE`), the one place that replaces torchvision's
CIFAR-10 md5s and torch.hub's expected hash prefix of the two weight files by the stand-ins'.

Asserted per notebook: no cell fails; the server was asked for exactly the expected files, each
once (every raccoon file, every fish photo, the CIFAR-10 archive, the weights); they landed in the
kernel's cache; and the outputs show the Colab branch ran (the ImageNet-initialised box model in
01, the ``imagenet`` recipe with its two stages in 03) on the same data (CIFAR-10's shapes and
channel statistics, the raccoon and fish counts). Not simulated: a GPU (the kernel uses this
machine's device; ``tests/test_precision.py`` fakes T4/A100 capabilities), the setup cell's clone
and ``pip install`` (they run only under ``google.colab``), Colab's package versions. The offline
path (local data, no weights: random initialisation) is the plain ``pytest --nbval`` run.

Marked ``colab``: CI runs it (``.ci/run``); ``pytest -m "not colab"`` leaves it out locally.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from mirror import (
    Mirror,
    cifar_archive,
    cifar_md5s,
    sha256,
    source_routes,
    url_path,
    weights_stand_in,
)
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from cifar.download import FISH_EGU2017, RACCOON
from cifar.utils import data_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TESTS = Path(__file__).resolve().parent
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MEAN, CIFAR_STD = "(0.4913, 0.4821, 0.4465)", "(0.2452, 0.2428, 0.2606)"  # of our copy (notebook 00)
CELL_TIMEOUT = 900  # seconds, as nbval's --nbval-cell-timeout

pytestmark = pytest.mark.colab

#: Run in the kernel before the notebook's first cell: the stand-ins' checksums (see mirror.use_stand_in_checksums).
PREAMBLE = """\
import sys
sys.path.insert(0, {tests!r})
from mirror import use_stand_in_checksums
use_stand_in_checksums(cifar={cifar!r}, weights={weights!r})
sys.path.remove({tests!r})
del sys.modules["mirror"], use_stand_in_checksums
import cifar
print("cifar from", cifar.__file__)
"""


@dataclass
class Expect:
    """What a notebook must download (URL paths, each once; see :func:`_gets`) and print."""

    downloads: set[str]
    prints: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)  # output that would mean the offline branch ran


@dataclass
class Served:
    mirror: Mirror
    preamble: str
    cifar: str
    raccoon: set[str]
    fish: set[str]
    resnet50: str
    resnet34: str


def _offline_copy() -> Path:
    root = data_dir()
    missing = [n for n in ("cifar10", "raccoon", "fish_egu2017") if root is None or not (root / n).is_dir()]
    if missing:
        pytest.skip(f"offline copies absent: set CIFAR_DATA_DIR to a folder holding {', '.join(missing)}/")
    return root


@pytest.fixture(scope="module")
def served():
    """The mirror: upstream's paths -> offline copies, the built CIFAR-10 archive, the weight stand-ins."""
    from torchvision.models import ResNet34_Weights, ResNet50_Weights, resnet34, resnet50

    from cifar.dataset import load_cifar10

    offline = _offline_copy()
    with tempfile.TemporaryDirectory(prefix="colab-mirror-") as folder:
        folder = Path(folder)
        raccoon = source_routes(RACCOON, offline / RACCOON.name)
        fish = source_routes(FISH_EGU2017, offline / FISH_EGU2017.name)
        assert all(p.is_file() for p in [*raccoon.values(), *fish.values()]), "offline copy incomplete"
        # the whole of CIFAR-10 from the local copy (its decoded arrays are cached), stored uncompressed
        tarball, members = cifar_archive(load_cifar10("train"), load_cifar10("test"), compresslevel=0)
        (folder / "cifar-10-python.tar.gz").write_bytes(tarball)
        routes = {**raccoon, **fish, url_path(CIFAR_URL): folder / "cifar-10-python.tar.gz"}
        weights = {}
        for member, build in ((ResNet50_Weights.IMAGENET1K_V2, resnet50), (ResNet34_Weights.IMAGENET1K_V1, resnet34)):
            path, file = weights_stand_in(member, build, folder)
            routes[path] = file
            weights[path] = sha256(file)
        preamble = PREAMBLE.format(tests=str(TESTS), cifar=cifar_md5s(tarball, members), weights=weights)
        del tarball, members
        resnet50_path, resnet34_path = weights
        (folder / "nothing").mkdir()  # only the routes are answered: any other path is a 404
        with Mirror(folder / "nothing", routes) as mirror:
            yield Served(mirror, preamble, url_path(CIFAR_URL), set(raccoon), set(fish), resnet50_path, resnet34_path)


def _expectations(s: Served) -> dict[str, Expect]:
    return {
        "00_setup_check.ipynb": Expect(
            {s.cifar},
            [
                "train: images (50000, 32, 32, 3) uint8 | labels (50000,) int64",
                "test:  images (10000, 32, 32, 3) uint8 | labels (10000,) int64",
                f"mean {CIFAR_MEAN} std {CIFAR_STD}",  # the downloaded archive holds our copy's pixels
            ],
        ),
        "01_residual_connections.ipynb": Expect(
            {s.cifar},
            [
                "resnet56: 56 weighted layers, 853,018 parameters (0.85M)",
                "restore: plain20, plain56, resnet20, resnet56",
            ],
        ),
        "02_resnet50_from_scratch.ipynb": Expect(
            s.raccoon | {s.resnet50},
            [
                "Pretrained weights loaded: ResNet50_Weights.IMAGENET1K_V2.",
                "fine-tuned from ImageNet:",
                "200 images, 217 boxes",
            ],
            ["not loaded", "Skipped"],
        ),
        "03_s10_custom_resnet.ipynb": Expect({s.cifar}, [f"mean: {CIFAR_MEAN}", f"std:  {CIFAR_STD}"]),
        "04_fish_transfer_learning.ipynb": Expect(
            s.fish | {s.resnet34},
            [
                "1,053 images, 7 classes",
                "weights: IMAGENET1K_V1",
                "weights: IMAGENET1K_V1; stages: ['head', 'fine-tune']",
            ],
            ["RANDOM weights", "weights: random"],
        ),
    }


def _gets(downloads: set[str], cifar: str) -> Counter:
    """The GETs the server must see for ``downloads``: one per file, two for the CIFAR-10 archive.

    torchvision's ``download_url`` first opens the URL to follow redirects (a GET it closes
    unread), then downloads it; a real host sees the same.
    """
    return Counter({path: 2 if path == cifar else 1 for path in downloads})


def _output_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        text = output.get("text", "")
        parts.append("".join(text) if isinstance(text, list) else text)
        value = output.get("data", {}).get("text/plain", "")
        parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts)


def _kernel_env(mirror_url: str, folder: Path) -> dict[str, str]:
    """A fresh Colab runtime's settings: no local data, empty caches, downloads from the mirror."""
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR_DATA_DIR", "CIFAR_RUNS_DIR")}
    env.update({
        "CIFAR_FAST": "1",
        "CIFAR_DOWNLOAD_MIRROR": mirror_url,
        "CIFAR_CACHE_DIR": str(folder / "cache"),
        "TORCH_HOME": str(folder / "torch"),
        "TMPDIR": str(folder / "tmp"),  # the notebooks' fast-mode run folders
        "MPLBACKEND": "Agg",
    })  # fmt: skip
    (folder / "tmp").mkdir()
    return env


def test_every_notebook_is_simulated():
    names = {path.name for path in NOTEBOOKS.glob("*.ipynb")}
    fake = Served(None, "", "", set(), set(), "", "")
    assert set(_expectations(fake)) == names, "each notebook needs its expectations in _expectations"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_as_in_colab(name, served, record_property):
    expect = _expectations(served)[name]
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})  # fmt: skip
    asked_before = len(served.mirror.requests)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="colab-runtime-") as folder:
        folder = Path(folder)
        with client.setup_kernel(env=_kernel_env(served.mirror.url, folder)):
            preamble = nbformat.v4.new_code_cell(served.preamble)
            client.execute_cell(preamble, -1, store_history=False)
            kernel_cifar = Path(_output_text(preamble).strip().removeprefix("cifar from "))
            assert kernel_cifar.resolve() == REPO / "cifar" / "__init__.py", "the kernel imports another cifar"
            cell_seconds = {}
            for index, cell in enumerate(notebook.cells):
                cell_started = time.perf_counter()
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    pytest.fail(f"{name}, cell {index} failed in the simulated Colab run:\n{error}", pytrace=False)
                cell_seconds[index] = time.perf_counter() - cell_started
        seconds = time.perf_counter() - started
        record_property("seconds", round(seconds, 1))
        slowest = ", ".join(f"cell {i} {t:.0f} s" for i, t in sorted(cell_seconds.items(), key=lambda x: -x[1])[:3])
        print(f"{name}: {seconds:.1f} s in the simulated Colab run (slowest: {slowest})")

        asked, expected = Counter(served.mirror.requests[asked_before:]), _gets(expect.downloads, served.cifar)
        assert set(asked) == set(expected), (
            f"unexpected: {sorted(set(asked) - set(expected))[:5]}, "
            f"not downloaded: {sorted(set(expected) - set(asked))[:5]}"
        )
        assert asked == expected, (
            f"asked more often than expected: {[(p, n) for p, n in asked.items() if n > expected[p]]}"
        )
        cache = folder / "cache"
        landed = {
            served.cifar: cache / "torchvision" / "cifar-10-python.tar.gz",
            served.resnet50: folder / "torch" / "hub" / "checkpoints" / Path(served.resnet50).name,
            served.resnet34: folder / "torch" / "hub" / "checkpoints" / Path(served.resnet34).name,
        }
        for path in expect.downloads:
            if path in landed:
                assert landed[path].is_file(), f"{path} is not in the kernel's cache: {landed[path]}"
        if expect.downloads & served.raccoon:
            assert len([p for p in (cache / "raccoon").rglob("*") if p.is_file()]) == len(served.raccoon)
        if expect.downloads & served.fish:
            assert len(list((cache / "fish_egu2017").rglob("*.png"))) == len(served.fish)

    text = "\n".join(_output_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    for line in expect.prints:
        assert line in text, f"{name}: no output {line!r}"
    for line in expect.never:
        assert line not in text, f"{name}: output {line!r}: the offline branch ran"
