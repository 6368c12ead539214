"""The CIFAR-10 data layer: real archives, both sources, the cache, and every bad-input error."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar import dataset
from cifar.dataset import CIFAR10_CLASSES, DataError, load_cifar10


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_CACHE_DIR", str(tmp_path / "cache"))


def _jpeg(color: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (color, 255 - color, 7)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tiny_tree(root: Path, split: str = "test", per_class: int = 2) -> Path:
    for index, name in enumerate(CIFAR10_CLASSES):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i:04d}.jpg").write_bytes(_jpeg(20 * index + i))
    return root


def test_classes_in_torchvision_order():
    # torchvision reads them from batches.meta: label 0 is airplane ... label 9 is truck
    assert list(CIFAR10_CLASSES) == ["airplane", "automobile", "bird", "cat", "deer",
                                     "dog", "frog", "horse", "ship", "truck"]  # fmt: skip


def test_real_test_archive(cifar10_root):
    images, labels = load_cifar10("test", root=cifar10_root)
    assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10


def test_real_train_archive_and_mean(cifar10_root):
    images, labels = load_cifar10("train", root=cifar10_root)
    assert images.shape == (50_000, 32, 32, 3)
    assert np.bincount(labels).tolist() == [5000] * 10
    mean, std = dataset.mean_std(images)
    assert mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=1e-4)
    assert std == pytest.approx((0.2452, 0.2428, 0.2606), abs=1e-4)


def test_zip_and_folder_give_identical_arrays(cifar10_root, tmp_path):
    with zipfile.ZipFile(cifar10_root / "cifar10_test.zip") as archive:
        archive.extractall(tmp_path / "unzipped")
    from_zip = load_cifar10("test", root=cifar10_root, use_cache=False)
    folder = tmp_path / "unzipped"
    assert not (folder / "cifar10_test.zip").exists()
    from_folder = load_cifar10("test", root=folder, use_cache=False)
    np.testing.assert_array_equal(from_zip[0], from_folder[0])
    np.testing.assert_array_equal(from_zip[1], from_folder[1])


def test_environment_variable_names_the_data(cifar10_root, monkeypatch):
    monkeypatch.setenv("CIFAR_DATA_DIR", str(cifar10_root.parent))
    images, _ = load_cifar10("test")
    assert len(images) == 10_000


def test_the_cache_folder_is_made_only_when_a_file_is_written_there(tmp_path):
    from cifar.utils import cache_dir

    assert cache_dir() == tmp_path / "cache" and not cache_dir().exists()  # asking for the path makes nothing
    load_cifar10("test", root=_tiny_tree(tmp_path / "data"), use_cache=False)
    assert not cache_dir().exists()
    load_cifar10("test", root=tmp_path / "data")
    assert len(list(cache_dir().glob("cifar10_test_*.npz"))) == 1


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    root = _tiny_tree(tmp_path / "data")
    images, labels = load_cifar10("test", root=root)
    cached = list((tmp_path / "cache").glob("cifar10_test_*.npz"))
    assert len(cached) == 1

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(dataset, "read_class_folders", must_not_decode)
    again, again_labels = load_cifar10("test", root=root)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)


def test_cache_key_changes_with_the_data(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    first, _ = load_cifar10("test", root=root)
    (root / "test" / "cat" / "0000.jpg").write_bytes(_jpeg(250))
    (root / "test" / "cat" / "0099.jpg").write_bytes(_jpeg(3))
    second, _ = load_cifar10("test", root=root)
    assert len(second) == len(first) + 1


def test_missing_folder_names_path_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere") as error:
        load_cifar10("train", root=missing)
    assert "CIFAR_DATA_DIR" in str(error.value)


def test_no_source_at_all_says_what_to_do(monkeypatch):
    monkeypatch.delenv("CIFAR_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="CIFAR_DATA_DIR") as error:
        load_cifar10("test")
    assert "download" in str(error.value)


def test_empty_class_folder(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    for image in (root / "test" / "dog").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"dog.*holds no images"):
        load_cifar10("test", root=root)


def test_unreadable_image_is_named(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    (root / "test" / "frog" / "0001.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"frog/0001\.jpg"):
        load_cifar10("test", root=root)


def test_truncated_image_is_named(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    path = root / "test" / "ship" / "0000.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"ship/0000\.jpg"):
        load_cifar10("test", root=root)


def _zip_tree(root: Path, member_bytes: dict[str, bytes] | None = None) -> Path:
    """cifar10_test.zip (stored, uncompressed) of a tiny tree; ``member_bytes`` replaces members."""
    tree = _tiny_tree(root / "tree")
    with zipfile.ZipFile(root / "cifar10_test.zip", "w") as archive:
        for path in sorted((tree / "test").rglob("*.jpg")):
            name = path.relative_to(tree).as_posix()
            archive.writestr(name, (member_bytes or {}).get(name, path.read_bytes()))
    return root


def test_truncated_zip_member_is_named(tmp_path):
    cut = _jpeg()[:300]
    root = _zip_tree(tmp_path / "data", {"test/ship/0001.jpg": cut})
    with pytest.raises(DataError, match=r"cifar10_test\.zip:test/ship/0001\.jpg"):
        load_cifar10("test", root=root, use_cache=False)


def test_corrupt_zip_member_is_named(tmp_path):
    root = _zip_tree(tmp_path / "data", {"test/ship/0001.jpg": _jpeg(77)})
    archive = root / "cifar10_test.zip"
    data = bytearray(archive.read_bytes())
    start = data.find(_jpeg(77))  # stored members lie in the archive as they are: flip a byte of this one
    data[start + 200] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"cifar10_test\.zip:test/ship/0001\.jpg"):
        load_cifar10("test", root=root, use_cache=False)


def test_unknown_class_folder(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    (root / "test" / "unicorn").mkdir()
    (root / "test" / "unicorn" / "0000.jpg").write_bytes(_jpeg())
    with pytest.raises(DataError, match="unicorn"):
        load_cifar10("test", root=root)


def test_zip_without_expected_layout(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "cifar10_test.zip", "w") as archive:
        archive.writestr("images/cat_0001.jpg", _jpeg())
    with pytest.raises(DataError, match=r"test/<class>/<image>\.jpg"):
        load_cifar10("test", root=root)


def test_zip_that_is_not_a_zip(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar10_test.zip").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable zip"):
        load_cifar10("test", root=root)


def test_zip_missing_a_class(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "cifar10_test.zip", "w") as archive:
        archive.writestr("test/cat/0000.jpg", _jpeg())
    with pytest.raises(DataError, match="airplane"):
        load_cifar10("test", root=root)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_cifar10("valid")


def test_transforms_shapes_and_cutout_fill():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    train = dataset.AlbumentationsDataset(images, np.arange(4), dataset.train_transforms(mean, std))
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    test = dataset.AlbumentationsDataset(images, np.arange(4), dataset.test_transforms(mean, std))
    x, _ = test[1]
    expected = (images[1].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_cutout_fill_is_the_rounded_mean_and_normalizes_close_to_zero_not_to_zero():
    mean, std = (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)  # CIFAR-10's training set
    assert dataset.cutout_fill(mean) == (125, 123, 114)
    cutout = next(t for t in dataset.train_transforms(mean, std).transforms if type(t).__name__ == "CoarseDropout")
    assert tuple(cutout.fill) == dataset.cutout_fill(mean)
    normalized = np.array(dataset.normalized_cutout_fill(mean, std))
    np.testing.assert_allclose(normalized, [-0.0045, 0.0010, 0.0021], atol=1e-4)
    assert (normalized != 0).all()


def test_augmentation_is_seeded():
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    transform = dataset.train_transforms((0.5,) * 3, (0.25,) * 3)
    transform.set_random_seed(7)
    first = [transform(image=images[0])["image"] for _ in range(5)]
    transform.set_random_seed(7)
    second = [transform(image=images[0])["image"] for _ in range(5)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
