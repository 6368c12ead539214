"""CIFAR-10 from torchvision or a local copy, decoded once into uint8 arrays; transforms.

Two sources give the same arrays:

* torchvision's ``CIFAR10`` (downloads; what Colab uses);
* a local copy in class-folder layout: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``,
  either as folders or inside ``cifar10_train.zip`` / ``cifar10_test.zip``
  (how the offline copy in ``$CIFAR_DATA_DIR/cifar10`` is stored).

Decoded arrays are cached as ``.npz`` in :func:`cifar.utils.cache_dir`, so a second run
does not decode 60,000 JPEGs again.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .utils import cache_dir, data_dir

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ZIP_NAMES = {"train": "cifar10_train.zip", "test": "cifar10_test.zip"}

HOW_TO_GET_DATA = (
    "Either run with internet access so torchvision can download CIFAR-10 "
    "(download=True / --download), or point to a local copy: set the environment variable "
    "CIFAR_DATA_DIR to a folder holding cifar10/cifar10_train.zip and cifar10/cifar10_test.zip "
    "(or cifar10/train/<class>/*.jpg and cifar10/test/<class>/*.jpg), or pass --data-dir."
)


class DataError(ValueError):
    """Raised for data that is missing or not in the expected layout; names path and fix."""


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")


def _decode(data: bytes, name: str) -> np.ndarray:
    """Decode one image to an RGB uint8 array, naming the file if it is unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as error:  # PIL raises several types for broken files
        raise DataError(f"Cannot read image {name}: {error}. Replace or delete this file.") from error


def _stack(images: list[np.ndarray], labels: list[int], where: str) -> tuple[np.ndarray, np.ndarray]:
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise DataError(f"Images under {where} differ in size ({sorted(shapes)[:3]}...); CIFAR-10 is 32x32.")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _class_index(cls: str, where: str) -> int:
    if cls not in CIFAR10_CLASSES:
        raise DataError(
            f"Unknown class folder {cls!r} in {where}; expected the CIFAR-10 classes {', '.join(CIFAR10_CLASSES)}."
        )
    return CIFAR10_CLASSES.index(cls)


def read_class_folders(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``folder/<split>/<class>/*`` into (N, 32, 32, 3) uint8 images and int64 labels."""
    root = Path(folder) / split
    if not root.is_dir():
        raise DataError(f"Missing folder {root}. {HOW_TO_GET_DATA}")
    images, labels = [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"No class folders in {root}; expected {root}/<class>/*.jpg.")
    for class_dir in class_dirs:
        label = _class_index(class_dir.name, str(root))
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        for path in files:
            images.append(_decode(path.read_bytes(), str(path)))
            labels.append(label)
    return _stack(images, labels, str(root))


def read_class_zip(archive: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<split>/<class>/*`` members of a zip archive into uint8 images and labels."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"Missing archive {archive}. {HOW_TO_GET_DATA}")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise DataError(f"{archive} is not a readable zip archive ({error}); download it again.") from error
    images, labels, seen = [], [], set()
    with zf:
        members = sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
        for name in members:
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != split:
                continue
            label = _class_index(parts[1], f"{archive}:{split}/")
            seen.add(parts[1])
            images.append(_decode(zf.read(name), f"{archive}:{name}"))
            labels.append(label)
    if not images:
        raise DataError(
            f"{archive} has no images in the layout {split}/<class>/<image>.jpg; "
            "re-create it with that layout (see the data README)."
        )
    missing = sorted(set(CIFAR10_CLASSES) - seen)
    if missing:
        raise DataError(f"{archive} has no images for class(es) {', '.join(missing)} under {split}/.")
    return _stack(images, labels, f"{archive}:{split}/")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_key(source: Path) -> str:
    """A cache key that changes when the source changes (content hash of a zip, listing of a folder)."""
    if source.is_file():
        return file_sha256(source)[:16]
    listing = sorted((str(p.relative_to(source)), p.stat().st_size) for p in source.rglob("*") if p.is_file())
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def local_cifar10_source(root: Path, split: str) -> Path:
    """The zip archive or class-folder tree in ``root`` that holds ``split``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CIFAR-10 folder {root} does not exist. {HOW_TO_GET_DATA}")
    archive = root / ZIP_NAMES[split]
    if archive.is_file():
        return archive
    if (root / split).is_dir():
        return root
    raise DataError(f"Neither {archive} nor {root / split}/ exists. {HOW_TO_GET_DATA}")


def load_cifar10(
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` as (N, 32, 32, 3) uint8 images and (N,) int64 labels.

    ``root`` (or ``$CIFAR_DATA_DIR/cifar10`` when root is None) is a local copy; when
    neither exists and ``download`` is True, torchvision downloads the dataset.
    """
    _check_split(split)
    if root is None and data_dir("cifar10") is not None:
        root = data_dir("cifar10")
    if root is not None and (Path(root).exists() or not download):
        source = local_cifar10_source(Path(root), split)
        cached = cache_dir() / f"cifar10_{split}_{_source_key(source)}.npz"
        if use_cache and cached.is_file():
            with np.load(cached) as arrays:
                return arrays["images"], arrays["labels"]
        if source.is_file():
            images, labels = read_class_zip(source, split)
        else:
            images, labels = read_class_folders(source, split)
        if use_cache:
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, images=images, labels=labels)
            tmp.replace(cached)
        return images, labels
    if not download:
        raise DataError(f"No local CIFAR-10 given. {HOW_TO_GET_DATA}")
    return _download_cifar10(split, Path(root) if root is not None else cache_dir() / "torchvision")


def _download_cifar10(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(root=str(root), train=(split == "train"), download=True)
    except Exception as error:  # no network, proxy, disk...
        raise DataError(f"Downloading CIFAR-10 into {root} failed ({error}). {HOW_TO_GET_DATA}") from error
    if tuple(dataset.classes) != CIFAR10_CLASSES:
        raise DataError(f"torchvision's CIFAR10 classes changed: {dataset.classes}")
    return np.asarray(dataset.data, dtype=np.uint8), np.asarray(dataset.targets, dtype=np.int64)


def mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 HWC images on the 0..1 scale."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(pixels.mean(0).round(4).tolist()), tuple(pixels.std(0).round(4).tolist())


def train_transforms(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Compose:
    """The S10 training augmentation (albumentations 2.x).

    Colour and geometry work on uint8 pixels and Normalize comes last, so ColorJitter and
    ToGray see real colours, padding reflects real pixels, and the cut-out hole filled with
    the dataset mean becomes exactly 0 after normalization.
    """
    fill = tuple(round(255 * m) for m in mean)
    return A.Compose(
        [
            A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05, p=0.5),
            A.ToGray(num_output_channels=3, p=0.1),
            A.PadIfNeeded(min_height=40, min_width=40, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=32, width=32),
            A.HorizontalFlip(p=0.5),
            A.CoarseDropout(
                num_holes_range=(1, 1), hole_height_range=(8, 8), hole_width_range=(8, 8), fill=fill, p=0.5
            ),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            ToTensorV2(),
        ]
    )


def test_transforms(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Compose:
    """Normalize only."""
    return A.Compose([A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])


class AlbumentationsDataset(Dataset):
    """uint8 HWC images + labels, each sample passed through an albumentations pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: A.Compose | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), int(self.labels[index])
        return self.transform(image=image)["image"], int(self.labels[index])


def make_loader(
    dataset: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int | None = None
) -> DataLoader:
    """A DataLoader with a seeded shuffling generator (re-seeded per epoch by the trainer).

    Workers default to 0 on a CPU-only machine (the model needs both cores) and 2 with CUDA.
    """
    if num_workers is None:
        num_workers = 2 if torch.cuda.is_available() else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=_seed_worker_transform,
    )


def _seed_worker_transform(worker_id: int) -> None:
    """Give each worker's copy of the albumentations pipeline its own (seeded) random stream."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)
