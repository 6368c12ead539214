"""Class-folder image datasets: class order, the Kaggle layout, unreadable files, grouped stratified splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar.dataset import (
    DataError,
    ImageFolderDataset,
    class_counts,
    imagenet_eval_transforms,
    imagenet_train_transforms,
    read_image,
    read_rgb,
    scan_class_folders,
    shared_group_fraction,
    split_indices,
    split_leak,
)
from cifar.fish import fish_group, video_group
from cifar.utils import data_dir


def _png(path: Path, color: int = 100, size=(12, 8), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    value = {"RGB": (color, 255 - color, 7), "RGBA": (color, 0, 0, 128), "L": color}[mode]
    Image.new(mode, size, value).save(path)
    return path


def _tree(root: Path, classes=("trout", "bream", "Perch"), per_class: int = 3) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"{name}_cam_fish{i}_frame{i}.png", 30 * c + i)
    return root


def _relative(samples, root: Path):
    return [(path.relative_to(root).as_posix(), label) for path, label in samples]


@pytest.fixture
def fish_root() -> Path:
    path = data_dir("fish_egu2017")
    if path is None or not path.is_dir():
        pytest.skip("offline fish set absent: set CIFAR_DATA_DIR to a folder holding fish_egu2017/")
    return path


# ----------------------------------------------------------------------------- scanning


def test_class_order_is_sorted_and_independent_of_listing_order(tmp_path, monkeypatch):
    first = _tree(tmp_path / "a", classes=("trout", "bream", "Perch"))
    second = _tree(tmp_path / "b", classes=("Perch", "bream", "trout"))  # created in another order
    classes_a, samples_a = scan_class_folders(first)
    classes_b, samples_b = scan_class_folders(second)
    assert classes_a == classes_b == ["Perch", "bream", "trout"]  # code-point order, like sorted()
    assert _relative(samples_a, first) == _relative(samples_b, second)
    # the file system listing reversed: same classes, same labels, same sample order
    real_iterdir, real_rglob = Path.iterdir, Path.rglob
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=True)))
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: iter(sorted(real_rglob(self, pattern), reverse=True)))
    classes_c, samples_c = scan_class_folders(first)
    assert classes_c == classes_a and _relative(samples_c, first) == _relative(samples_a, first)
    dataset = ImageFolderDataset.from_folder(first)
    assert dataset.classes == classes_a and dataset.labels.tolist() == [label for _, label in samples_a]


def test_kaggle_layout_nested_folders_and_gt_masks_skipped(tmp_path):
    top = tmp_path / "archive"  # Kaggle's download unzipped: archive/Fish_Dataset/Fish_Dataset/<Class>/
    root = top / "Fish_Dataset" / "Fish_Dataset"
    for c, name in enumerate(["Trout", "Black Sea Sprat", "Shrimp"]):
        for i in range(2 + c):
            _png(root / name / name / f"{i:05d}.png", 40 * c + i)
            _png(root / name / f"{name} GT" / f"{i:05d}.png", 255, mode="L")  # masks: never samples
    (root.parent / "README.txt").write_text("not an image")
    (root / "license.txt").write_text("not an image")
    (root / "Shrimp" / "Shrimp" / ".DS_Store").write_bytes(b"\0")
    (root / "Shrimp" / "Shrimp" / "._00000.png").write_bytes(b"macOS resource fork")
    for where in (top, root.parent, root):  # single folders are stepped into
        classes, samples = scan_class_folders(where)
        assert classes == ["Black Sea Sprat", "Shrimp", "Trout"]
        assert Counter(label for _, label in samples) == {0: 3, 1: 4, 2: 2}
        assert not any("GT" in part for path, _ in samples for part in path.parts[-3:])
    dataset = ImageFolderDataset.from_folder(top)
    assert len(dataset) == 9 and dataset.classes[dataset.labels[0]] == "Black Sea Sprat"


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_class_folders(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="No class folders"):
        scan_class_folders(tmp_path / "empty_root")
    _tree(tmp_path / "r")
    (tmp_path / "r" / "salmon").mkdir()
    with pytest.raises(DataError, match="salmon holds no images"):
        scan_class_folders(tmp_path / "r")


# ----------------------------------------------------------------------------- reading


def test_unreadable_file_is_named_in_the_error(tmp_path):
    root = _tree(tmp_path / "r")
    bad = root / "bream" / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderDataset.from_folder(root)
    with pytest.raises(DataError, match="broken.png"):
        read_rgb(bad)
    unchecked = ImageFolderDataset.from_folder(root, check=False)  # lazily: named when it is read
    with pytest.raises(DataError, match="broken.png"):
        unchecked[unchecked.paths.index(bad)]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _noise(path: Path, size=(64, 48)) -> Path:
    """Random pixels: they compress badly, so half the file is half the pixel data."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", ["truncated.png", "truncated.jpg"])
def test_truncated_image_is_caught_up_front_and_named(tmp_path, name):
    root = _tree(tmp_path / "r")
    bad = _truncate(_noise(root / "bream" / name))
    with pytest.raises(DataError, match=rf"Cannot read image .*{name}.*on_error='skip'"):
        ImageFolderDataset.from_folder(root)
    with pytest.warns(UserWarning, match=rf"Skipped 1 unreadable image\(s\) of 10 .*{name}"):
        dataset = ImageFolderDataset.from_folder(root, on_error="skip")
    assert bad not in dataset.paths and [path for path, _ in dataset.skipped] == [bad]
    with pytest.raises(DataError, match=name):
        read_rgb(bad)


def test_one_reader_for_files_and_bytes(tmp_path):
    assert read_rgb is read_image
    path = _png(tmp_path / "gray.png", 50, size=(6, 4), mode="L")
    from_file, from_bytes = read_image(path), read_image(path.read_bytes(), name="gray.png")
    assert from_file.shape == (4, 6, 3) and from_file.dtype == np.uint8
    np.testing.assert_array_equal(from_file, from_bytes)
    assert read_image(path, mode="L").shape == (4, 6)
    with pytest.raises(DataError, match=r"archive\.zip:gray\.png"):
        read_image(path.read_bytes()[:40], name="archive.zip:gray.png")
    with pytest.raises(DataError, match=r"nowhere\.png not found"):
        read_image(tmp_path / "nowhere.png")


def test_skip_unreadable_files_with_a_counted_warning(tmp_path):
    root = _tree(tmp_path / "r")
    (root / "bream" / "broken.png").write_bytes(b"garbage")
    _png(root / "trout" / "truncated.png", 5, size=(64, 64))
    data = (root / "trout" / "truncated.png").read_bytes()
    (root / "trout" / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image\(s\) of 11"):
        dataset = ImageFolderDataset.from_folder(root, on_error="skip")
    assert len(dataset) == 9 and len(dataset.skipped) == 2
    assert {path.name for path, _ in dataset.skipped} == {"broken.png", "truncated.png"}
    with pytest.raises(ValueError, match="on_error"):
        ImageFolderDataset.from_folder(root, on_error="ignore")


def test_images_become_rgb_arrays_and_transforms_give_tensors(tmp_path):
    _png(tmp_path / "r" / "a" / "gray.png", 50, size=(30, 20), mode="L")
    _png(tmp_path / "r" / "b" / "alpha.png", 50, size=(30, 20), mode="RGBA")
    dataset = ImageFolderDataset.from_folder(tmp_path / "r", cache=True)
    for index in range(2):
        image, label = dataset[index]
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3) and label == index
    train = dataset.subset([0, 1], imagenet_train_transforms((16, 24)))
    test = dataset.subset([1], imagenet_eval_transforms((16, 24)))
    assert train._cache is dataset._cache and len(dataset._cache) == 2  # decoded once, shared
    tensor, label = test[0]
    assert tensor.shape == (3, 16, 24) and tensor.dtype == torch.float32 and label == 1
    assert torch.equal(test[0][0], test[0][0])  # eval transform is deterministic
    assert train[0][0].shape == (3, 16, 24) and test.classes == ["a", "b"]


def test_train_transforms_follow_the_original_recipe():
    names = [type(t).__name__ for t in imagenet_train_transforms()]
    assert names == ["Resize", "Rotate", "HorizontalFlip", "VerticalFlip", "Normalize", "ToTensorV2"]
    resize, rotate, _, vflip, normalize, _ = imagenet_train_transforms()
    assert (resize.height, resize.width) == (160, 240) and tuple(rotate.limit) == (-35, 35)
    assert vflip.p == 0.1 and tuple(normalize.mean) == (0.485, 0.456, 0.406)


# ----------------------------------------------------------------------------- splits


def test_fish_and_video_groups():
    name = "20150413_165229_B562_00408CF4B573_fish12_frame22.png"
    assert fish_group(Path("bream") / name) == "20150413_165229_B562_00408CF4B573_fish12"
    assert fish_group("x/20150924_020410_616F_ACCC8E2F8AB8_nofish1_frame11.png").endswith("_nofish1")
    assert fish_group("00017.png") == "00017"
    assert video_group(name) == video_group(name.replace("fish12", "nofish3")) == "20150413_165229_B562_00408CF4B573"


def _synthetic(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for label, n_groups in enumerate([30, 12, 20]):
        for g in range(n_groups):
            size = int(rng.integers(1, 9))
            labels += [label] * size
            groups += [f"c{label}_g{g}"] * size
    return np.asarray(labels), groups


def _check_stratified(labels, test_idx, fraction, tolerance):
    for label in np.unique(labels):
        share = np.sum(labels[test_idx] == label) / np.sum(labels == label)
        assert abs(share - fraction) <= tolerance, (label, share)


def test_grouped_split_keeps_groups_whole_and_stratifies():
    labels, groups = _synthetic()
    train_idx, test_idx = split_indices(labels, 0.25, seed=3, groups=groups)
    assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(train_idx) + len(test_idx) == len(labels)
    groups = np.asarray(groups)
    assert not set(groups[train_idx]) & set(groups[test_idx])
    assert shared_group_fraction(groups, train_idx, test_idx) == 0.0
    _check_stratified(labels, test_idx, 0.25, 0.08)
    again = split_indices(labels, 0.25, seed=3, groups=list(groups))
    assert all(np.array_equal(a, b) for a, b in zip(again, (train_idx, test_idx)))
    other = split_indices(labels, 0.25, seed=4, groups=list(groups))
    assert not np.array_equal(other[1], test_idx)


def test_ungrouped_split_is_exactly_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 20, 7])
    train_idx, test_idx = split_indices(labels, 0.2, seed=0)
    assert [int(np.sum(labels[test_idx] == c)) for c in range(3)] == [10, 4, 1]
    assert np.array_equal(split_indices(labels, 0.2, seed=0)[1], test_idx)
    with pytest.raises(ValueError, match="test_fraction"):
        split_indices(labels, 1.0)


def test_split_of_the_real_fish_set_keeps_each_fish_on_one_side(fish_root):
    dataset = ImageFolderDataset.from_folder(fish_root, check=False)
    assert dataset.classes == ["bream", "browntrout", "burbot", "chub", "nase", "perch", "rainbowtrout"]
    assert len(dataset) == 1053
    groups = [fish_group(path) for path in dataset.paths]
    train_idx, test_idx = split_indices(dataset.labels, 0.2, seed=1, groups=groups)
    assert not {groups[i] for i in train_idx} & {groups[i] for i in test_idx}
    assert shared_group_fraction(groups, train_idx, test_idx) == 0.0
    _check_stratified(dataset.labels, test_idx, 0.2, 0.06)
    for label in range(7):  # every species is on both sides
        assert np.sum(dataset.labels[test_idx] == label) > 0 and np.sum(dataset.labels[train_idx] == label) > 0
    _, leaky_test = split_indices(dataset.labels, 0.2, seed=1)
    leaky_train = np.setdiff1d(np.arange(len(dataset)), leaky_test)
    assert shared_group_fraction(groups, leaky_train, leaky_test) > 0.8  # most test frames have a sibling in training


# ----------------------------------------------------------------------------- measuring a split


def _named_files():
    """A file list with a known leak: (paths, labels, train_idx, test_idx).

    bream: video A holds fish1 (2 frames, train) and fish2 (2 frames, test), video B (1 frame, test);
    perch: video C (train), video D (2 frames, test). Test: 5 images, 2 of them (A's fish2) from a video
    with training images: 2 of 3 bream, 0 of 2 perch, 40% overall.
    """
    names = [
        ("bream", "20150101_A_fish1_frame1"), ("bream", "20150101_A_fish1_frame2"),
        ("bream", "20150101_A_fish2_frame1"), ("bream", "20150101_A_fish2_frame2"),
        ("bream", "20150102_B_fish1_frame1"),
        ("perch", "20150103_C_fish1_frame1"), ("perch", "20150104_D_fish1_frame1"),
        ("perch", "20150104_D_nofish2_frame5"),
    ]  # fmt: skip
    paths = [Path(folder) / f"{stem}.png" for folder, stem in names]
    labels = np.asarray([0 if folder == "bream" else 1 for folder, _ in names])
    return paths, labels, np.asarray([0, 1, 5]), np.asarray([2, 3, 4, 6, 7])


def test_split_leak_measures_the_test_images_whose_video_is_in_training():
    paths, labels, train_idx, test_idx = _named_files()
    videos = [video_group(p) for p in paths]
    table = split_leak(videos, labels, train_idx, test_idx, ["bream", "perch"])
    assert list(table.index) == ["bream", "perch", "all"]
    assert table["test images"].tolist() == [3, 2, 5] and table["leaked"].tolist() == [2, 0, 2]
    assert table["leak %"].tolist() == [66.7, 0.0, 40.0]
    assert table.loc["all", "leak %"] / 100 == shared_group_fraction(videos, train_idx, test_idx)
    by_fish = split_leak([fish_group(p) for p in paths], labels, train_idx, test_idx, ["bream", "perch"])
    assert by_fish["leaked"].tolist() == [0, 0, 0]  # no fish on both sides, yet a video is
    no_test = split_leak(videos, labels, [0, 1, 2, 3, 4], [5, 6, 7], ["bream", "perch"])
    assert no_test.loc["bream", "test images"] == 0 and np.isnan(no_test.loc["bream", "leak %"])
    with pytest.raises(ValueError, match="groups but"):
        split_leak(videos[:3], labels, train_idx, test_idx)


def test_class_counts_counts_images_fish_and_videos():
    paths, labels, _, test_idx = _named_files()
    table = class_counts(labels, test_idx, ["bream", "perch"], fish=[fish_group(p) for p in paths],
                         videos=[video_group(p) for p in paths])  # fmt: skip
    assert list(table.columns) == ["images", "fish", "videos"] and list(table.index) == ["bream", "perch", "all"]
    assert table.loc["bream"].tolist() == [3, 2, 2]  # A's fish2 and B's fish1, in 2 videos
    assert table.loc["perch"].tolist() == [2, 2, 1]  # D's fish1 and nofish2, one video
    assert table.loc["all"].tolist() == [5, 4, 3]
    with pytest.raises(ValueError, match="keys for 'videos'"):
        class_counts(labels, test_idx, videos=["x"])


def test_the_fish_split_of_the_real_set_leaks_by_video_and_the_video_split_does_not(fish_root):
    dataset = ImageFolderDataset.from_folder(fish_root, check=False)
    videos = [video_group(path) for path in dataset.paths]
    fish = [fish_group(path) for path in dataset.paths]
    by_fish = split_indices(dataset.labels, 0.2, seed=1, groups=fish)
    by_video = split_indices(dataset.labels, 0.2, seed=1, groups=videos)
    leak = split_leak(videos, dataset.labels, *by_fish, dataset.classes)
    assert leak.loc["all", "leak %"] == 38.1  # issue 18: 38% of its test images share a video with training
    assert leak.loc["browntrout", "leak %"] == 64.6 and leak.loc["nase", "leak %"] == 88.0
    assert split_leak(videos, dataset.labels, *by_video, dataset.classes)["leaked"].sum() == 0
    counts = class_counts(dataset.labels, by_video[1], dataset.classes, fish=fish, videos=videos)
    assert (counts["videos"] >= 1).all() and counts.loc["all", "images"] == len(by_video[1])
