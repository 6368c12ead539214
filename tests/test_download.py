"""Downloads: the learner's code paths, served from a local HTTP server laid out like the real hosts.

``CIFAR_DOWNLOAD_MIRROR`` points every download at ``http://127.0.0.1:<port>/``, which serves a
temporary folder holding the upstream paths (``datitran/raccoon_dataset/<commit>/images/...``,
``~kriz/cifar-10-python.tar.gz``, ``models/resnet34-b627a593.pth``; ``tests/mirror.py``); nothing
else differs from what a learner with internet runs. The raccoon and fish files come from the
offline copies in ``$CIFAR_DATA_DIR``, which are byte-identical to upstream; the CIFAR-10 archive
and the weights are built (with their checksums replaced in ``mirror.use_stand_in_checksums``).
``CIFAR_DATA_DIR`` itself is unset in these tests and the cache is a temporary folder.
"""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
import socket
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mirror import Mirror, cifar_archive, cifar_md5s, sha256, use_stand_in_checksums, weights_stand_in
from PIL import Image

from cifar import fish as lesson
from cifar.boxes import read_box_csv
from cifar.dataset import (
    CIFAR10_CLASSES,
    DataError,
    load_cifar10,
    scan_class_folders,
    shared_group_fraction,
    split_indices,
)
from cifar.download import FISH_EGU2017, RACCOON, download_file, mirror_url
from cifar.fish import fish_group, kaggle_group
from cifar.raccoon import raccoon_root
from cifar.utils import data_dir

OFFLINE = data_dir()  # read at import: the tests below unset CIFAR_DATA_DIR
RACCOON_COMMIT = "93938849301895fb73909842ba04af9b602f677a"
FISH_COMMIT = "47bcb8714f4a8744176817ee3d90e8188d2b8480"


def _offline(name: str) -> Path:
    path = OFFLINE / name if OFFLINE is not None else None
    if path is None or not path.is_dir():
        pytest.skip(f"offline copy absent: set CIFAR_DATA_DIR to a folder holding {name}/")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving ``.root``; ``.url`` is its base URL, ``.requests`` the paths asked."""
    root = tmp_path / "served"
    root.mkdir()
    with Mirror(root) as mirror:
        yield mirror


@pytest.fixture(autouse=True)
def learner(tmp_path, monkeypatch):
    """No local data given (as in Colab) and a private cache; returns the cache folder."""
    monkeypatch.delenv("CIFAR_DATA_DIR", raising=False)
    monkeypatch.delenv("CIFAR_DOWNLOAD_MIRROR", raising=False)
    monkeypatch.setenv("CIFAR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_raccoon(server) -> Path:
    """The offline raccoon copy under the upstream paths: images/*.jpg and data/*.csv at the commit."""
    offline = _offline("raccoon")
    base = server.root / "datitran" / "raccoon_dataset" / RACCOON_COMMIT
    shutil.copytree(offline / "images", base / "images")
    (base / "data").mkdir()
    for csv in ("raccoon_labels.csv", "train_labels.csv", "test_labels.csv"):
        shutil.copy(offline / csv, base / "data" / csv)
    return base


def _raccoon_local_files() -> dict[str, bytes]:
    offline = _offline("raccoon")
    files = {f"images/{p.name}": p.read_bytes() for p in sorted((offline / "images").glob("*.jpg"))}
    files.update({csv: (offline / csv).read_bytes() for csv in ("raccoon_labels.csv", "train_labels.csv",
                                                                 "test_labels.csv")})  # fmt: skip
    return files


def test_mirror_replaces_scheme_and_host_only(monkeypatch):
    url = f"https://raw.githubusercontent.com/datitran/raccoon_dataset/{RACCOON_COMMIT}/images/raccoon-1.jpg"
    assert mirror_url(url) == url
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", "http://127.0.0.1:8123/")
    assert mirror_url(url) == f"http://127.0.0.1:8123/datitran/raccoon_dataset/{RACCOON_COMMIT}/images/raccoon-1.jpg"
    assert mirror_url("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz") == (
        "http://127.0.0.1:8123/~kriz/cifar-10-python.tar.gz"
    )
    assert RACCOON.base_url == f"https://raw.githubusercontent.com/datitran/raccoon_dataset/{RACCOON_COMMIT}/"
    assert FISH_EGU2017.base_url == f"https://raw.githubusercontent.com/kratzert/EGU2017_public/{FISH_COMMIT}/"


def test_manifests_pin_every_offline_file():
    raccoon = dict(RACCOON.files())
    assert len(raccoon) == 203 and len(set(raccoon)) == 203
    assert {RACCOON.local_path(p): d for p, d in raccoon.items()} == {
        name: _sha256(data) for name, data in _raccoon_local_files().items()
    }
    fish = dict(FISH_EGU2017.files())
    offline = _offline("fish_egu2017")
    assert len(fish) == 1053 and all(p.startswith("data/") and p.endswith(".png") for p in fish)
    assert {FISH_EGU2017.local_path(p) for p in fish} == {
        p.relative_to(offline).as_posix() for p in offline.rglob("*.png")
    }


# ----------------------------------------------------------------------------- raccoon


def test_raccoon_downloads_into_the_cache_and_loads(server, learner, monkeypatch):
    _serve_raccoon(server)
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)
    expected = _raccoon_local_files()
    # leftovers of an earlier attempt: an interrupted download and a wrong file under a final name
    (learner / "raccoon" / "images").mkdir(parents=True)
    (learner / "raccoon" / "images" / "raccoon-1.jpg.part").write_bytes(expected["images/raccoon-1.jpg"][:999])
    (learner / "raccoon" / "images" / "raccoon-2.jpg").write_bytes(b"not the pinned file")

    root = raccoon_root()

    assert root == learner / "raccoon"
    assert _files(root) == expected  # byte-identical, nothing else (no .part left)
    assert len(server.requests) == 203
    table = read_box_csv(root / "train_labels.csv", root / "images")
    assert len(table) == 160 and table.boxes.sum() == 173
    assert len(read_box_csv(root / "test_labels.csv", root / "images")) == 40
    # a second call checks the files and downloads nothing
    assert raccoon_root() == root and len(server.requests) == 203


def test_checksum_mismatch_names_the_file_and_leaves_nothing(server, learner, monkeypatch):
    base = _serve_raccoon(server)
    corrupt = base / "images" / "raccoon-7.jpg"
    data = bytearray(corrupt.read_bytes())
    data[500] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)
    with pytest.raises(DataError) as error:
        raccoon_root()
    message = str(error.value)
    assert "raccoon-7.jpg" in message and "Checksum mismatch" in message
    assert dict(RACCOON.files())["images/raccoon-7.jpg"] in message and _sha256(bytes(data)) in message
    assert "CIFAR_DATA_DIR" in message and "Run again" in message
    images = learner / "raccoon" / "images"
    assert not (images / "raccoon-7.jpg").exists() and not (images / "raccoon-7.jpg.part").exists()
    assert not list((learner / "raccoon").rglob("*.part"))


def test_unreachable_server_names_the_url(learner, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError) as error:
        raccoon_root()
    message = str(error.value)
    assert f"Cannot download http://127.0.0.1:{port}/datitran/raccoon_dataset/{RACCOON_COMMIT}/" in message
    assert "CIFAR_DATA_DIR" in message and "connection" in message and "raccoon/" in message
    assert not [p for p in (learner / "raccoon").rglob("*") if p.is_file()]


def test_http_error_names_the_url(server, learner, monkeypatch):
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)  # serves nothing: 404
    with pytest.raises(DataError) as error:
        lesson.fish_root()
    assert f"Cannot download {server.url}kratzert/EGU2017_public/{FISH_COMMIT}/data/" in str(error.value)
    assert "HTTP 404" in str(error.value) and "fish_egu2017/" in str(error.value)


def test_a_part_file_is_never_taken_for_a_finished_one(server, tmp_path, monkeypatch):
    data = _raccoon_local_files()["images/raccoon-3.jpg"]
    url = f"https://raw.githubusercontent.com/datitran/raccoon_dataset/{RACCOON_COMMIT}/images/raccoon-3.jpg"
    digest = dict(RACCOON.files())["images/raccoon-3.jpg"]
    dest = tmp_path / "got" / "raccoon-3.jpg"
    part = dest.with_name("raccoon-3.jpg.part")
    part.parent.mkdir()
    # complete and correct bytes, but only a .part: without the server it is not used
    part.write_bytes(data)
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(DataError, match="Cannot download"):
        download_file(url, dest, digest)
    assert not dest.exists() and not part.exists()
    # a truncated .part with the server up: downloaded afresh, not resumed or appended to
    part.write_bytes(data[:1234] + b"garbage")
    base = server.root / "datitran" / "raccoon_dataset" / RACCOON_COMMIT / "images"
    base.mkdir(parents=True)
    (base / "raccoon-3.jpg").write_bytes(data)
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)
    assert download_file(url, dest, digest) == dest
    assert dest.read_bytes() == data and not part.exists()


# ----------------------------------------------------------------------------- fish


def test_fish_downloads_into_the_cache_in_the_class_folder_layout(server, learner, monkeypatch):
    offline = _offline("fish_egu2017")
    base = server.root / "kratzert" / "EGU2017_public" / FISH_COMMIT / "data"
    for species in sorted(p for p in offline.iterdir() if p.is_dir()):
        shutil.copytree(species, base / species.name)
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)

    root = lesson.fish_root()

    assert root == learner / "fish_egu2017"
    expected = {p.relative_to(offline).as_posix(): p.read_bytes() for p in sorted(offline.rglob("*.png"))}
    assert len(expected) == 1053 and _files(root) == expected
    dataset, train_idx, test_idx, shared = lesson.transfer_data(None, lesson.fish_config(fast=True))
    assert len(dataset) == 1053 and len(dataset.classes) == 7 and dataset.paths[0].is_relative_to(root)
    assert shared == 0.0


# ----------------------------------------------------------------------------- CIFAR-10 through torchvision


@functools.cache
def _cifar_slice(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images of each class of the offline JPEG copy, classes interleaved."""
    archive = _offline("cifar10") / f"cifar10_{split}.zip"
    with zipfile.ZipFile(archive) as zf:
        by_class: dict[str, list[str]] = {c: [] for c in CIFAR10_CLASSES}
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            by_class[name.split("/")[1]].append(name)
        by_class = {c: names[:per_class] for c, names in by_class.items()}
        order = [(label, by_class[c][i]) for i in range(per_class) for label, c in enumerate(CIFAR10_CLASSES)]
        images = [np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")) for _, n in order]
    return np.stack(images), np.asarray([label for label, _ in order], dtype=np.int64)


@pytest.fixture
def cifar_tarball(server, monkeypatch):
    """A small CIFAR-10 tarball served where torchvision's URL points (through the mirror).

    The one test-only change to the learner's code path: torchvision's expected md5s (class
    attributes of ``CIFAR10``) become those of this tarball and its members, as it is not the
    real one (``mirror.use_stand_in_checksums``). URL (mirrored), download, md5 checks, extraction
    and loading are torchvision's own.
    """
    from torchvision.datasets import CIFAR10

    train, test = _cifar_slice("train", 30), _cifar_slice("test", 10)
    tarball, members = cifar_archive(train, test)
    use_stand_in_checksums(cifar=cifar_md5s(tarball, members), set_attribute=monkeypatch.setattr)
    assert CIFAR10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    (server.root / "~kriz").mkdir()
    (server.root / "~kriz" / "cifar-10-python.tar.gz").write_bytes(tarball)
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)
    return types.SimpleNamespace(train=train, test=test, data=tarball, path=server.root / "~kriz" / CIFAR10.filename)


def test_cifar10_downloads_through_torchvision(cifar_tarball, learner):
    # an interrupted earlier download, where torchvision writes it: not used as a finished file
    (learner / "torchvision").mkdir(parents=True)
    (learner / "torchvision" / "cifar-10-python.tar.gz").write_bytes(cifar_tarball.data[:5000])
    for split, (images, labels) in (("train", cifar_tarball.train), ("test", cifar_tarball.test)):
        got_images, got_labels = load_cifar10(split, download=True)
        assert got_images.shape == images.shape == ((300, 32, 32, 3) if split == "train" else (100, 32, 32, 3))
        assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    assert (learner / "torchvision" / "cifar-10-python.tar.gz").read_bytes() == cifar_tarball.data


def test_cifar10_corrupt_download_is_a_clear_error_and_removed(cifar_tarball, learner, server):
    cifar_tarball.path.write_bytes(cifar_tarball.data[: len(cifar_tarball.data) // 2])  # cut short
    with pytest.raises(DataError) as error:
        load_cifar10("train", download=True)
    message = str(error.value)
    assert f"{server.url}~kriz/cifar-10-python.tar.gz" in message and "corrupted" in message
    assert "CIFAR_DATA_DIR" in message
    assert not (learner / "torchvision" / "cifar-10-python.tar.gz").exists()


def test_cifar10_unreachable_server_names_the_url(learner, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as error:
        load_cifar10("test", download=True)
    assert f"http://127.0.0.1:{port}/~kriz/cifar-10-python.tar.gz" in str(error.value)
    assert "CIFAR_DATA_DIR" in str(error.value)


# ----------------------------------------------------------------------------- torchvision's ImageNet weights


def test_imagenet_weights_come_through_the_mirror(server, tmp_path, monkeypatch):
    """torchvision's weights download (cifar.model.torchvision_state_dict) takes the mirror like the data."""
    from torchvision.models import ResNet34_Weights, resnet34

    from cifar.transfer import resnet34_weights

    path, file = weights_stand_in(ResNet34_Weights.IMAGENET1K_V1, resnet34, tmp_path)
    assert path == "/models/resnet34-b627a593.pth"
    server.routes[path] = file
    cached = tmp_path / "torch" / "hub" / "checkpoints" / file.name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", server.url)
    messages = []
    # torch.hub checks the hash prefix in upstream's file name: the stand-in is refused, the run goes on from random
    assert resnet34_weights("IMAGENET1K_V1", log=messages.append) == (None, "random")
    assert "invalid hash value" in messages[0] and not cached.exists()
    use_stand_in_checksums(weights={path: sha256(file)}, set_attribute=monkeypatch.setattr)
    state, used = resnet34_weights("IMAGENET1K_V1", log=pytest.fail)
    assert used == "IMAGENET1K_V1" and set(state) == set(resnet34().state_dict())
    assert cached.read_bytes() == file.read_bytes()
    assert server.requests == [path, path]
    resnet34_weights("IMAGENET1K_V1", log=pytest.fail)  # from torch hub's cache: nothing asked
    assert len(server.requests) == 2


# ----------------------------------------------------------------------------- Kaggle's fish set (an option)

KAGGLE_CLASSES = [
    "Black Sea Sprat", "Gilt-Head Bream", "Hourse Mackerel", "Red Mullet", "Red Sea Bream",
    "Sea Bass", "Shrimp", "Striped Red Mullet", "Trout",
]  # fmt: skip


def _png(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (10, 8), (value, 255 - value, 9) if mode == "RGB" else value).save(path)


def _kaggle_replica(top: Path, nested: bool, per_class: int = 4) -> Path:
    """Kaggle's download, small: Fish_Dataset/ (images, GT masks) and NA_Fish_Dataset/ side by side."""
    fish = top / "Fish_Dataset" / ("Fish_Dataset" if nested else "")
    for c, name in enumerate(KAGGLE_CLASSES):
        for i in range(1, per_class + c % 2 + 1):  # same names 00001.png... in every class
            _png(fish / name / name / f"{i:05d}.png", 20 * c + i)
            _png(fish / name / f"{name} GT" / f"{i:05d}.png", 255, mode="L")
        for i in range(1, 3):
            _png(top / "NA_Fish_Dataset" / name / f"{i:05d}.png", 20 * c)
    (fish / "README.txt").write_text("not an image")
    return top


@pytest.mark.parametrize("nested", [True, False], ids=["Fish_Dataset/Fish_Dataset", "Fish_Dataset"])
def test_kaggle_layout_gives_nine_classes_without_masks(tmp_path, nested):
    top = _kaggle_replica(tmp_path / "kaggle", nested)
    assert scan_class_folders(top)[0] == ["Fish_Dataset", "NA_Fish_Dataset"]  # the download itself: wrong classes
    root = lesson.fish_root(top, source="kaggle")
    assert root == top / "Fish_Dataset" and lesson.fish_root(root, source="kaggle") == root
    classes, samples = scan_class_folders(root)
    assert classes == KAGGLE_CLASSES
    assert len(samples) == sum(4 + c % 2 for c in range(9))
    assert not any(" GT" in p.parent.name or "NA_Fish_Dataset" in p.parts for p, _ in samples)
    assert all(p.parent.name == classes[label] for p, label in samples)


def test_kaggle_grouping_never_merges_classes(tmp_path):
    root = lesson.fish_root(_kaggle_replica(tmp_path / "kaggle", nested=True), source="kaggle")
    _, samples = scan_class_folders(root)
    paths, labels = [p for p, _ in samples], np.asarray([label for _, label in samples])
    assert len({fish_group(p) for p in paths}) == 5  # the EGU2017 rule would merge 00001.png of all 9 classes
    groups = [lesson.FISH_GROUPS["kaggle"](p) for p in paths]
    assert lesson.FISH_GROUPS["kaggle"] is kaggle_group and len(set(groups)) == len(paths)
    assert kaggle_group(paths[0]) == "Black Sea Sprat/00001"
    train_idx, test_idx = split_indices(labels, 0.25, seed=0, groups=groups)
    assert shared_group_fraction(groups, train_idx, test_idx) == 0.0
    assert sorted(np.bincount(labels[test_idx], minlength=9)) == [1] * 9  # stratified: one of 4-5 per class
    config = lesson.fish_config(fast=True)
    dataset, _, test_idx, shared = lesson.transfer_data(root, config, lesson.FISH_GROUPS["kaggle"])
    assert dataset.classes == KAGGLE_CLASSES and shared == 0.0 and len(set(dataset.labels[test_idx])) == 9


def test_kaggle_needs_kagglehub_and_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub raises ImportError
    with pytest.raises(DataError, match="pip install kagglehub"):
        lesson.fish_root(source="kaggle")
    top = _kaggle_replica(tmp_path / "kaggle", nested=True)
    asked = []

    def dataset_download(handle: str) -> str:
        asked.append(handle)
        return str(top)

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=dataset_download))
    assert lesson.fish_root(source="kaggle") == top / "Fish_Dataset"
    assert asked == ["crowww/a-large-scale-fish-dataset"]
    with pytest.raises(DataError, match="NA_Fish_Dataset"):
        lesson.fish_root(tmp_path, source="kaggle")
    with pytest.raises(ValueError, match="source"):
        lesson.fish_root(source="flickr")
