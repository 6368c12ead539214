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
import zlib
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch.nn import functional as nn_functional
from torch.utils.data import DataLoader, Dataset

from .utils import DataError, cache_dir, data_dir, derive_seed, file_sha256, get_device, seed_transform

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ZIP_NAMES = {"train": "cifar10_train.zip", "test": "cifar10_test.zip"}

HOW_TO_GET_DATA = (
    "Either run with internet access so torchvision can download CIFAR-10 "
    "(download=True / --download), or point to a local copy: set the environment variable "
    "CIFAR_DATA_DIR to a folder holding cifar10/cifar10_train.zip and cifar10/cifar10_test.zip "
    "(or cifar10/train/<class>/*.jpg and cifar10/test/<class>/*.jpg), or pass --data-dir."
)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")


READ_MODES = ("RGB", "RGBA", "L", "LA")  # PIL modes with 8-bit channels that read_image can return


def _unreadable(name: str, error: Exception) -> DataError:
    """The one wording of an image that cannot be read: the file, PIL's reason, the fix."""
    return DataError(f"Cannot read image {name} ({type(error).__name__}: {error}). Replace or delete this file.")


def read_image(source: str | Path | bytes, name: str | None = None, mode: str = "RGB") -> np.ndarray:
    """Decode one image file (or its bytes) completely into a uint8 array, HWC (HW for ``"L"``).

    Every dataset of the package reads its images through here. The pixels are decoded now, not
    just the header, so a truncated or corrupt file fails at once; that, a missing file or an
    unknown format raises :class:`DataError` naming ``name`` (default: the path; give one for
    bytes, e.g. ``archive.zip:member``). ``mode`` is one of :data:`READ_MODES`; a greyscale or
    palette file asked for as ``"RGB"`` is converted.
    """
    if mode not in READ_MODES:
        raise ValueError(f"mode must be one of {READ_MODES}, not {mode!r}")
    if name is None:
        name = "<image bytes>" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return np.asarray(image.convert(mode), dtype=np.uint8)  # convert() decodes every pixel
    except FileNotFoundError as error:
        raise DataError(f"Image file {name} not found. Restore it, or correct the path that names it.") from error
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        raise _unreadable(name, error) from error


#: The name the lessons use (notebook 04): the same function as :func:`read_image`.
read_rgb = read_image


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
            images.append(read_image(path))
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
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # bad CRC, broken deflate stream
                raise _unreadable(f"{archive}:{name}", error) from error
            images.append(read_image(data, f"{archive}:{name}"))
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
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, images=images, labels=labels)
            tmp.replace(cached)
        return images, labels
    if not download:
        raise DataError(f"No local CIFAR-10 given. {HOW_TO_GET_DATA}")
    return _download_cifar10(split, Path(root) if root is not None else cache_dir() / "torchvision")


def class_balanced_subset(images, labels, total: int | None, seed: int):
    """About ``total`` samples in all, the same number of each class, drawn with ``seed``.

    Each class gives ``total // classes`` samples (at least one), in their original order; the
    whole split when ``total`` is None or not below its size.
    """
    if total is None or total >= len(labels):
        return images, labels
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, total // len(classes))
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    keep.sort()
    return images[keep], labels[keep]


def _download_cifar10(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's download (its pinned URL and md5 checks); ``$CIFAR_DOWNLOAD_MIRROR`` changes only the URL."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    from .download import mirror_url

    url = mirror_url(CIFAR10.url)
    source = type("CIFAR10", (CIFAR10,), {"url": url})
    try:
        dataset = source(root=str(root), train=(split == "train"), download=True)
    except Exception as error:  # no network, proxy, checksum, disk...
        archive = root / CIFAR10.filename  # torchvision writes it in place: drop a partial or corrupt one
        if archive.is_file() and not check_integrity(str(archive), CIFAR10.tgz_md5):
            archive.unlink()
        raise DataError(f"Downloading CIFAR-10 from {url} into {root} failed ({error}). {HOW_TO_GET_DATA}") from error
    if tuple(dataset.classes) != CIFAR10_CLASSES:
        raise DataError(f"torchvision's CIFAR10 classes changed: {dataset.classes}")
    return np.asarray(dataset.data, dtype=np.uint8), np.asarray(dataset.targets, dtype=np.int64)


def mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 HWC images on the 0..1 scale."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(pixels.mean(0).round(4).tolist()), tuple(pixels.std(0).round(4).tolist())


def cutout_fill(mean: tuple[float, ...]) -> tuple[int, ...]:
    """The cut-out hole's pixel value in :func:`train_transforms`: the dataset mean rounded to whole uint8 values."""
    return tuple(round(255 * m) for m in mean)


def normalized_cutout_fill(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[float, ...]:
    """What the network sees in the cut-out hole: :func:`cutout_fill` after Normalize. Close to 0, not 0,
    because the fill was rounded to whole pixel values before normalization."""
    return tuple((value / 255 - m) / s for value, m, s in zip(cutout_fill(mean), mean, std))


def train_transforms(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Compose:
    """The S10 training augmentation (albumentations 2.x).

    Colour and geometry work on uint8 pixels and Normalize comes last, so ColorJitter and
    ToGray see real colours and padding reflects real pixels. The cut-out hole is filled with
    the dataset mean rounded to uint8 (:func:`cutout_fill`), which is close to 0 after
    normalization but not exactly 0 (:func:`normalized_cutout_fill`).
    """
    fill = cutout_fill(mean)
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
    dataset: Dataset,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
) -> DataLoader:
    """A DataLoader with a seeded shuffling generator (re-seeded per epoch by the trainer).

    ``device`` is where the batches go (default :func:`cifar.utils.get_device`): for CUDA the
    workers default to 2 and memory is pinned; otherwise workers default to 0 (the model needs
    the CPU's cores) and nothing is pinned.
    """
    cuda = torch.device(device if device is not None else get_device()).type == "cuda"
    if num_workers is None:
        num_workers = 2 if cuda else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=cuda,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=_seed_worker_transform,
    )


def _seed_worker_transform(worker_id: int) -> None:
    """Give each worker's copy of the albumentations pipeline its own random stream.

    ``info.seed`` comes from the loader's generator (which :func:`cifar.utils.seed_loader` seeds)
    and differs by worker, so the run stays a function of its seed.
    """
    info = torch.utils.data.get_worker_info()
    seed_transform(info.dataset, info.seed % 2**32)


# ----------------------------------------------------------------------------- batched augmentation on the device


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    pad: int = 4,
    cutout: int = 8,
    flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The S10 recipe's geometric augmentation for a whole uint8 NCHW batch at once, on its device.

    Random crop after reflect padding by ``pad``, horizontal flip with probability 0.5, and one
    ``cutout`` x ``cutout`` hole (centre anywhere in the image, clipped at the border) with
    probability 0.5. Returns the float images (0..255) and the (N, 1, H, W) mask of the holes,
    which :class:`TensorBatches` fills with the dataset mean. ``flip`` (N booleans) decides the
    flips instead of the coin (the random draws stay the same, so the rest of the batch does too).
    """
    n, _, height, width = images.shape
    device = images.device

    def uniform_ints(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n,), generator=generator, device="cpu").to(device)

    padded = nn_functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    top, left = uniform_ints(2 * pad + 1), uniform_ints(2 * pad + 1)
    rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    coin = uniform_ints(2).bool()
    flip = coin if flip is None else flip.to(device)
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    centre_y, centre_x, apply = uniform_ints(height), uniform_ints(width), uniform_ints(2).bool()
    ys = torch.arange(height, device=device)[None, :, None]
    xs = torch.arange(width, device=device)[None, None, :]
    half = cutout // 2
    holes = (
        (ys >= (centre_y - half)[:, None, None])
        & (ys < (centre_y + cutout - half)[:, None, None])
        & (xs >= (centre_x - half)[:, None, None])
        & (xs < (centre_x + cutout - half)[:, None, None])
        & apply[:, None, None]
    )
    return out, holes[:, None]


@dataclass
class BatchAugment:
    """How :class:`TensorBatches` shuffles and augments training batches.

    ``seed`` seeds the shuffling and the draws (the trainer re-seeds them every epoch). ``pad`` is
    the largest shift of the random crop and ``cutout`` the side of the hole (0: no hole).
    ``alternating_flip`` (airbench) replaces the coin flip: every image gets a fixed random
    orientation from ``seed`` in even epochs and the other one in odd epochs, so that consecutive
    epochs show each image both ways.
    """

    seed: int = 0
    pad: int = 4
    cutout: int = 8
    alternating_flip: bool = False


class TensorBatches:
    """A loader that keeps the uint8 images as one tensor on the device and augments whole batches there.

    The fast alternative to per-sample albumentations (for a GPU fed by 2 CPU cores): the same
    geometric recipe (crop with padding, flip, cut-out filled with the mean) via :func:`augment_batch`,
    then normalization; colour jitter and grey-scale are left out. Yields normalized float
    batches in channels-last layout, with labels. Shuffling is seeded through ``generator``
    (the trainer re-seeds it every epoch), so runs are reproducible.

    ``train`` batches are shuffled and augmented as ``augment`` says (:class:`BatchAugment`; None:
    its defaults); test batches come in order, unaugmented. ``set_epoch``, which the trainer calls,
    tells alternating flips which epoch is drawn.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool = False,
        device: torch.device | str = "cpu",
        augment: BatchAugment | None = None,
    ):
        augment = augment if augment is not None else BatchAugment()
        seed, self.drop_last = augment.seed, False
        self.device = torch.device(device)
        self.pad, self.cutout = augment.pad, augment.cutout
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.batch_size, self.train = batch_size, train
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.generator = torch.Generator().manual_seed(seed)
        self.first_flip = None
        if augment.alternating_flip:
            orientations = torch.Generator().manual_seed(derive_seed(seed, "alternating flip"))
            self.first_flip = torch.rand(len(self.labels), generator=orientations) < 0.5
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to be drawn (0-based); only alternating flips depend on it."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.train:
                flip = None
                if self.first_flip is not None:
                    flip = self.first_flip[index.cpu()] ^ bool(self.epoch % 2)
                images, holes = augment_batch(images, self.generator, self.pad, self.cutout, flip=flip)
                images = torch.where(holes, self.mean.expand_as(images), images)
            images = ((images.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]


# ----------------------------------------------------------------------------- Class-folder image datasets
#
# Any image classification set stored as one folder per class, e.g. the offline fish set
# ($CIFAR_DATA_DIR/fish_egu2017/<species>/*.png) or Kaggle's "A Large Scale Fish Dataset"
# (Fish_Dataset/<Class>/<Class>/*.png beside <Class>/<Class> GT/ mask folders).

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The channel statistics of our CIFAR-10 training set (:func:`mean_std`), which the S10 weights were trained with.
CIFAR10_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR10_STD = (0.2452, 0.2428, 0.2606)
MASK_FOLDER_SUFFIX = " GT"  # Kaggle's segmentation masks: <Class>/<Class> GT/


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"


def _is_mask_folder(name: str) -> bool:
    return name.endswith(MASK_FOLDER_SUFFIX)


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and ``(path, label)`` samples of a class-folder image set; reads no pixels.

    Classes are the sub-folder names of ``root``, sorted (so labels never depend on the order
    the file system lists them). Images are found at any depth below a class folder, which
    covers the Kaggle layout ``<Class>/<Class>/*.png``; folders whose name ends with ``" GT"``
    (masks) and hidden files are skipped. Samples are sorted by class, then path. A root that
    holds a single folder (one class is no classification task) is stepped into, so Kaggle's
    ``archive/Fish_Dataset/Fish_Dataset/<Class>/`` works from any of those three levels.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist; expected {root}/<class>/*.png.")
    children = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    class_dirs = [p for p in children if not _is_mask_folder(p.name)]
    if len(class_dirs) == 1:
        return scan_class_folders(class_dirs[0])
    if not class_dirs:
        raise DataError(f"No class folders in {root}; expected {root}/<class>/*.png.")
    classes = [p.name for p in class_dirs]
    samples: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            (
                path
                for path in class_dir.rglob("*")
                if path.suffix.lower() in IMAGE_SUFFIXES
                and path.is_file()
                and not any(_is_hidden(Path(part)) or _is_mask_folder(part) for part in path.relative_to(root).parts)
            ),
            key=lambda path: path.relative_to(class_dir).as_posix(),
        )
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        samples.extend((path, label) for path in files)
    return classes, samples


def _check_image(path: Path) -> DataError | None:
    """None if ``path`` is a whole, readable image, else the :class:`DataError` that names it.

    A PNG is checked with PIL's ``verify``: the CRC of every chunk up to the end marker, which
    catches a truncated file or damaged bytes without decoding (about 20x faster on the fish
    set). PIL verifies no other format, so any other file is decoded in full by :func:`read_image`.
    """
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
                return None
    except Exception as error:  # broken header or chunk: read_image would fail the same way
        return _unreadable(str(path), error)
    try:
        read_image(path)
    except DataError as error:
        return error
    return None


class ImageFolderDataset(Dataset):
    """Image files + labels, decoded lazily to RGB uint8 and passed through an albumentations pipeline.

    ``ImageFolderDataset(paths, labels, transform)`` mirrors the original lesson's
    ``FishDataset(images, labels, transform)``; :meth:`from_folder` builds one from a
    class-folder tree, and :meth:`subset` gives train/test views with their own transform.
    ``cache=True`` keeps decoded images in memory (shared by the views). Without a
    transform an item is the HWC uint8 array itself (images differ in size: not batchable).
    """

    def __init__(
        self,
        paths: list[Path],
        labels,
        transform: A.Compose | None = None,
        classes: list[str] | None = None,
        cache: bool = False,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else [str(c) for c in range(int(self.labels.max()) + 1)]
        self.skipped: list[tuple[Path, str]] = []  # unreadable files left out by from_folder(on_error="skip")
        self._cache: dict[Path, np.ndarray] | None = {} if cache else None

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        transform: A.Compose | None = None,
        on_error: str = "raise",
        cache: bool = False,
        check: bool = True,
    ) -> ImageFolderDataset:
        """Every image under ``root`` (see :func:`scan_class_folders`), checked up front.

        With ``check`` each file is checked once (a PNG by its chunk checksums, any other format
        by decoding it; see :func:`_check_image`), so a truncated file is found here, not
        mid-epoch: an unreadable one raises :class:`DataError` naming it (``on_error="raise"``)
        or is left out with one warning that counts and names the skipped files
        (``on_error="skip"``; they are listed in ``.skipped``). Without ``check`` a broken file
        raises the same error when it is first read.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        classes, samples = scan_class_folders(root)
        skipped: list[tuple[Path, str]] = []
        if check:
            kept = []
            for path, label in samples:
                error = _check_image(path)
                if error is None:
                    kept.append((path, label))
                elif on_error == "raise":
                    raise DataError(f"{error} Or pass on_error='skip' to leave unreadable files out.") from error
                else:
                    skipped.append((path, str(error)))
            if skipped:
                import warnings

                names = ", ".join(str(p) for p, _ in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
                warnings.warn(
                    f"Skipped {len(skipped)} unreadable image(s) of {len(samples)} under {root}: {names}", stacklevel=2
                )
            samples = kept
        if not samples:
            raise DataError(f"No readable images under {root}.")
        dataset = cls([p for p, _ in samples], [y for _, y in samples], transform, classes, cache)
        dataset.skipped = skipped
        return dataset

    def subset(self, indices, transform: A.Compose | None = None) -> ImageFolderDataset:
        """The samples at ``indices`` with ``transform``; shares the in-memory cache."""
        indices = np.asarray(indices, dtype=np.int64)
        view = ImageFolderDataset([self.paths[i] for i in indices], self.labels[indices], transform, self.classes)
        view._cache = self._cache
        return view

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """The decoded RGB uint8 image of sample ``index`` (no transform)."""
        path = self.paths[index]
        if self._cache is not None and path in self._cache:
            return self._cache[path]
        image = read_image(path)
        if self._cache is not None:
            self._cache[path] = image
        return image

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is None:
            return image, int(self.labels[index])
        return self.transform(image=image)["image"], int(self.labels[index])


def split_indices(labels, test_fraction: float = 0.2, seed: int = 0, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/test split: sorted ``(train_idx, test_idx)``.

    Each class gets ``round(test_fraction * n_class)`` test images. With ``groups`` (one key per
    sample, e.g. :func:`cifar.fish.fish_group` of each path) whole groups go to one side: per class the
    groups are shuffled and taken into the test set while that brings its image count closer
    to the target, so no group straddles the split and the proportions hold approximately.
    A group with mixed labels is counted under its most frequent label. Every class with two
    or more groups gets at least one test group.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    labels = np.asarray(labels)
    if groups is None:
        group_ids = np.arange(len(labels))
    else:
        if len(groups) != len(labels):
            raise ValueError(f"{len(groups)} groups but {len(labels)} labels")
        _, group_ids = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(group_ids.tolist()):
        members.setdefault(group, []).append(index)
    by_class: dict = {}
    for group, indices in members.items():  # groups in sorted key order: deterministic
        values, counts = np.unique(labels[indices], return_counts=True)
        by_class.setdefault(values[np.argmax(counts)].item(), []).append(group)
    test: list[int] = []
    for label in sorted(by_class):
        class_groups = by_class[label]
        target = test_fraction * sum(len(members[g]) for g in class_groups)
        taken, count = [], 0
        for position in rng.permutation(len(class_groups)):
            group = class_groups[position]
            size = len(members[group])
            if abs(count + size - target) <= abs(count - target):
                taken.append(group)
                count += size
        if not taken and len(class_groups) > 1 and round(target) > 0:
            taken.append(class_groups[int(rng.integers(len(class_groups)))])
        for group in taken:
            test.extend(members[group])
    test_idx = np.sort(np.asarray(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def shared_group_fraction(groups, train_idx, test_idx) -> float:
    """Fraction of test samples whose group also has samples in training (0 for a fair split)."""
    groups = np.asarray([str(g) for g in groups])
    seen = set(groups[np.asarray(train_idx, dtype=np.int64)].tolist())
    test_groups = groups[np.asarray(test_idx, dtype=np.int64)]
    return float(np.mean([g in seen for g in test_groups])) if len(test_groups) else 0.0


def split_leak(groups, labels, train_idx, test_idx, classes=None):
    """How much a split leaks through ``groups``: per class and overall, the test images whose group
    (e.g. the video, :func:`cifar.fish.video_group` of each path) also has images in training.

    Measures any split, whatever it was grouped by. Returns a DataFrame indexed by class name
    (``classes``, default the label numbers) and ``"all"``, with the columns ``test images``,
    ``leaked`` (test images whose group is also in training) and ``leak %``. A class without
    test images gets ``leak %`` NaN.
    """
    import pandas as pd

    groups = np.asarray([str(g) for g in groups])
    labels = np.asarray(labels)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups but {len(labels)} labels")
    train_idx, test_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    seen = set(groups[train_idx].tolist())
    leaked = np.asarray([g in seen for g in groups[test_idx]], dtype=bool)
    names = list(classes) if classes is not None else [str(c) for c in range(int(labels.max()) + 1)]
    rows = {}
    for label, name in enumerate(names):
        mask = labels[test_idx] == label
        rows[name] = (int(mask.sum()), int(leaked[mask].sum()))
    rows["all"] = (len(test_idx), int(leaked.sum()))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["test images", "leaked"])
    with np.errstate(invalid="ignore", divide="ignore"):
        table["leak %"] = (100 * table["leaked"] / table["test images"].where(table["test images"] > 0)).round(1)
    table.index.name = "class"
    return table


def class_counts(labels, indices, classes=None, **groups):
    """Per class, the images at ``indices`` and how many distinct groups they come from.

    ``groups`` names each grouping: ``class_counts(labels, test_idx, classes, fish=fish_keys,
    videos=video_keys)`` gives the columns ``images``, ``fish`` and ``videos`` (one key per sample
    of the whole set, as for :func:`split_indices`). The last row, ``"all"``, counts the whole
    selection. A class with one or two groups in the test set measures one or two fish (or
    videos), not the species.
    """
    import pandas as pd

    labels = np.asarray(labels)
    indices = np.asarray(indices, dtype=np.int64)
    keys = {name: np.asarray([str(g) for g in values]) for name, values in groups.items()}
    for name, values in keys.items():
        if len(values) != len(labels):
            raise ValueError(f"{len(values)} keys for {name!r} but {len(labels)} labels")
    names = list(classes) if classes is not None else [str(c) for c in range(int(labels.max()) + 1)]
    selections = {name: indices[labels[indices] == label] for label, name in enumerate(names)}
    selections["all"] = indices
    table = pd.DataFrame(
        {
            "images": {name: len(chosen) for name, chosen in selections.items()},
            **{
                group: {name: len(set(values[chosen].tolist())) for name, chosen in selections.items()}
                for group, values in keys.items()
            },
        }
    )
    table.index.name = "class"
    return table


def imagenet_train_transforms(
    size: tuple[int, int] = (160, 240),
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> A.Compose:
    """The fish lesson's augmentation: Resize(height, width), Rotate(35), flips, ImageNet Normalize.

    As in the original: ``A.Rotate(35)`` (limit +-35 degrees, p=0.5, black corners),
    ``HorizontalFlip`` (p=0.5), ``VerticalFlip(p=0.1)``. ``size`` is (height, width).
    """
    height, width = size
    return A.Compose(
        [
            A.Resize(height, width),
            A.Rotate(limit=35),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.1),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            ToTensorV2(),
        ]
    )


def imagenet_eval_transforms(
    size: tuple[int, int] = (160, 240),
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> A.Compose:
    """Resize to (height, width) and ImageNet Normalize: for validation, test and prediction."""
    height, width = size
    return A.Compose([A.Resize(height, width), A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])
