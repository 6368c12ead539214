"""Bounding-box regression on real photos: one box per image, a ResNet-50 with a 4-output head.

The library of the raccoon lesson (:mod:`cifar.raccoon`), usable with any CSV of image file + box:

* :func:`read_box_csv` / :class:`BoxDataset`: a CSV of image file + box, validated row by row
  (errors name the row and the file), every image converted to RGB, one box per image
  (images with several boxes keep the largest: :func:`count_multi_box_images` counts them);
* :func:`box_train_transforms` / :func:`box_test_transforms`: albumentations pipelines that move
  the box with the pixels; :func:`plot_augmented_boxes` shows it;
* targets in [0, 1] (:func:`normalize_box`), :func:`box_loss` (MSE, SmoothL1, GIoU);
* :func:`box_iou_per_sample`, :func:`iou_score`, :func:`box_metrics`, :func:`mean_box_baseline`, and
  the original course's "accuracy" (:func:`original_accuracy`), kept only as a contrast;
* :func:`box_model`, :func:`predict_boxes`, :func:`prediction_gallery`, :func:`measure_latency`,
  :func:`save_box_model` / :func:`load_box_model` (the course's weights format);
* debugging a regressor that does not learn: :func:`overfit_batch` (can it fit a few photos?),
  :func:`iou_by_bn_mode` (batch statistics against running statistics), :class:`CenterSizeBoxes`
  (another box encoding), :class:`ScaledLoss` (the loss scale);
* a small head on frozen feature maps: :class:`SpatialBoxHead`, :func:`train_box_head`, :func:`flip_boxes`.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from .artifacts import load_model, save_weights
from .dataset import IMAGENET_MEAN, IMAGENET_STD, DataError, make_loader, read_image
from .model import ResNet50, load_imagenet_into
from .train import predict
from .utils import (
    autocast,
    denormalize,
    derive_seed,
    describe_device,
    plot_history,
    resolve_amp_dtype,
    seeded,
    show_images,
)

#: Box columns of each supported CSV format.
#: ``corners`` (alias ``pascal_voc``): xmin, ymin, xmax, ymax in pixels; x is the column, y the row
#: (the raccoon CSV). ``xyhw``: the original course's [x, y, height, width]: the top-left corner
#: (x, y) and the box's height and width in pixels; there ``height``/``width`` are the box's size.
BOX_COLUMNS = {
    "corners": ("xmin", "ymin", "xmax", "ymax"),
    "pascal_voc": ("xmin", "ymin", "xmax", "ymax"),
    "xyhw": ("x", "y", "height", "width"),
}
#: Optional image-size columns of the corner format, checked against the image file when present.
IMAGE_SIZE_COLUMNS = ("width", "height")
MULTI_BOX_POLICIES = ("largest", "first", "error")


# ----------------------------------------------------------------------------- reading the CSV


def xyhw_to_corners(x: float, y: float, height: float, width: float) -> tuple[float, float, float, float]:
    """The original course's [x, y, height, width] (top-left corner, size) as (xmin, ymin, xmax, ymax)."""
    return x, y, x + width, y + height


def read_box_csv(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    box_format: str = "corners",
    path_column: str = "filename",
    multi_box: str = "largest",
) -> pd.DataFrame:
    """Read and check a CSV of image file + box; one row per image, in order of first appearance.

    ``box_format`` is ``"corners"`` (xmin, ymin, xmax, ymax; the raccoon CSV) or ``"xyhw"`` (the
    original course's x, y, height, width); see :data:`BOX_COLUMNS`. Image paths are relative to
    ``image_dir`` (default: the CSV's folder). Every row is checked and a :class:`DataError`
    names the row (data rows count from 1; the CSV line is row + 1) and the image file for a
    non-numeric or negative coordinate, an empty box, a missing or unreadable image, an image
    size that differs from the CSV's ``width``/``height`` columns, or a box outside its image.
    A missing column is reported with the columns found. Each image is decoded in full once
    (:func:`cifar.dataset.read_image`; a few ms per raccoon photo) and its size taken from the
    pixels, so a truncated file is reported here rather than when a batch first needs it.

    Several boxes on one image (several raccoons): ``multi_box="largest"`` keeps the box of
    largest area (the first one on ties), ``"first"`` the first row, ``"error"`` refuses them.
    The result has ``filename, path, width, height, xmin, ymin, xmax, ymax`` (pixels, corner
    form), ``boxes`` (how many boxes the image had) and ``row`` (the CSV row of the kept box).
    """
    csv_path = Path(csv_path)
    if box_format not in BOX_COLUMNS:
        raise ValueError(f"box_format must be one of {sorted(BOX_COLUMNS)}, not {box_format!r}")
    if multi_box not in MULTI_BOX_POLICIES:
        raise ValueError(f"multi_box must be one of {MULTI_BOX_POLICIES}, not {multi_box!r}")
    frame = _read_box_table(csv_path, path_column, box_format)
    image_dir = Path(image_dir) if image_dir is not None else csv_path.parent
    check_size = box_format != "xyhw" and all(c in frame.columns for c in IMAGE_SIZE_COLUMNS)
    sizes: dict[str, tuple[int, int]] = {}  # (width, height) of each image, decoded once
    records = []
    for i, row in enumerate(frame.to_dict("records")):
        filename = str(row[path_column]).strip()
        where = f"{csv_path.name} row {i + 1} (line {i + 2}), image {filename!r}"
        box = _parse_box(row, box_format, where)
        path = image_dir / filename
        if filename not in sizes:
            sizes[filename] = _image_size(path, filename, where)
        width, height = sizes[filename]
        if check_size:
            _check_stated_size(row, width, height, path, where)
        if box[2] > width or box[3] > height:
            raise DataError(f"{where}: box (xmin, ymin, xmax, ymax) = {box} lies outside the {width}x{height} image.")
        records.append(
            {
                "filename": filename,
                "path": str(path),
                "width": width,
                "height": height,
                "xmin": box[0],
                "ymin": box[1],
                "xmax": box[2],
                "ymax": box[3],
                "row": i + 1,
            }
        )
    return _one_box_per_image(pd.DataFrame(records), multi_box, csv_path.name)


def _read_box_table(csv_path: Path, path_column: str, box_format: str) -> pd.DataFrame:
    """The CSV as text, checked to exist, to have the columns ``box_format`` needs, and to have rows."""
    if not csv_path.is_file():
        raise DataError(f"Box CSV {csv_path} does not exist.")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    required = [path_column, *BOX_COLUMNS[box_format]]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}. "
            f"The {box_format!r} format needs {', '.join(required)}."
        )
    if frame.empty:
        raise DataError(f"{csv_path} has a header but no rows.")
    return frame


def _parse_box(row: dict, box_format: str, where: str) -> tuple[float, float, float, float]:
    """A row's box in corner form (xmin, ymin, xmax, ymax), its coordinates checked to be numbers >= 0."""
    values = []
    for column in BOX_COLUMNS[box_format]:
        text = str(row[column]).strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{where}: column {column!r} is {text!r}, not a number.")
        if value < 0:
            raise DataError(f"{where}: column {column!r} is negative ({text}); coordinates are pixels >= 0.")
        values.append(value)
    box = xyhw_to_corners(*values) if box_format == "xyhw" else tuple(values)
    if not (box[0] < box[2] and box[1] < box[3]):
        raise DataError(f"{where}: empty box (xmin, ymin, xmax, ymax) = {box}; needs xmin < xmax and ymin < ymax.")
    return box


def _image_size(path: Path, filename: str, where: str) -> tuple[int, int]:
    """Width and height of the image at ``path``, decoded in full so that a damaged file is reported here."""
    if not filename or not path.is_file():
        raise DataError(f"{where}: image file {path} not found.")
    try:
        height, width = read_image(path).shape[:2]
    except DataError as error:
        raise DataError(f"{where}: {error}") from error
    return width, height


def _check_stated_size(row: dict, width: int, height: int, path: Path, where: str) -> None:
    """The row's ``width`` and ``height`` columns must be the image's size."""
    stated = tuple(str(row[c]).strip() for c in IMAGE_SIZE_COLUMNS)
    if stated != (str(width), str(height)):
        raise DataError(f"{where}: the CSV says the image is {stated[0]}x{stated[1]} but {path} is {width}x{height}.")


def _one_box_per_image(boxes: pd.DataFrame, multi_box: str, csv_name: str) -> pd.DataFrame:
    """One row per image, in order of first appearance, with ``boxes`` (how many it had); see :func:`read_box_csv`."""
    boxes["area"] = (boxes.xmax - boxes.xmin) * (boxes.ymax - boxes.ymin)
    boxes["boxes"] = boxes.groupby("filename", sort=False)["row"].transform("size")
    if multi_box == "error" and (boxes.boxes > 1).any():
        first = boxes[boxes.boxes > 1].iloc[0]
        raise DataError(
            f"{csv_name} row {first.row}, image {first.filename!r}: {first.boxes} boxes on one "
            "image, and multi_box='error'."
        )
    if multi_box == "largest":  # stable sort: the first row wins a tie
        keep = boxes.sort_values("area", ascending=False, kind="stable").drop_duplicates("filename").index
    else:
        keep = boxes.drop_duplicates("filename").index
    order = boxes.drop_duplicates("filename")["filename"].tolist()
    kept = boxes.loc[keep].set_index("filename").loc[order].reset_index()
    return kept.drop(columns="area")


def count_multi_box_images(csv_path: str | Path, path_column: str = "filename") -> int:
    """How many images of a CSV carry more than one box (16 in the full raccoon CSV)."""
    counts = pd.read_csv(csv_path, dtype=str, keep_default_na=False)[path_column].value_counts()
    return int((counts > 1).sum())


# ----------------------------------------------------------------------------- dataset, transforms


def normalize_box(box: Sequence[float], width: float, height: float) -> torch.Tensor:
    """Corner box in pixels -> (xmin/W, ymin/H, xmax/W, ymax/H), each in [0, 1].

    Why divide by the image's own size: the network sees the image resized to a square, so
    the only thing it can infer is where the box lies *relative to the image*; that fraction
    is unchanged by the resize and means the same for a 259x194 and a 960x576 photo. The
    original course divided every coordinate by the largest coordinate in the whole CSV: a
    box then depends on the biggest photo of the data set, x and y share one scale whatever
    the aspect ratio, and the same box position on two photos of different size gets
    different targets that the resized input cannot explain. The [0, 1] range also suits the
    sigmoid head and keeps MSE values comparable between images.
    """
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return (torch.as_tensor(box, dtype=torch.float32) / scale).clamp(0, 1)


def _bbox_params() -> A.BboxParams:
    # clip: a box pushed partly out of the frame by the affine is cut at the border, not refused
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=0.0)


def box_train_transforms(
    size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> A.Compose:
    """Training augmentation that moves the box with the pixels (albumentations 2.x, pascal_voc boxes).

    Resize to ``size`` x ``size`` (aspect ratio not kept, as in the original course), horizontal
    flip, a small shift/scale/rotate (``A.Affine``; the rotated box is the bounding box of the
    rotated ellipse inscribed in it, which is tighter than the rotated corners), colour jitter,
    ImageNet normalization, CHW tensor. Box labels go in the ``labels`` field.
    """
    return A.Compose(
        [
            A.Resize(size, size),
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), rotate_method="ellipse", p=0.5
            ),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.5),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            ToTensorV2(),
        ],
        bbox_params=_bbox_params(),
    )


def box_test_transforms(
    size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> A.Compose:
    """Resize and normalize only."""
    return A.Compose(
        [A.Resize(size, size), A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()],
        bbox_params=_bbox_params(),
    )


class BoxDataset(Dataset):
    """Images and one box each from a CSV (see :func:`read_box_csv`), through an albumentations pipeline.

    An item is ``(image, target)``: the transformed image (a float CHW tensor with the lesson's
    transforms; uint8 CHW at the original size when ``transform`` is None) and the box after
    the transform as a float tensor ``(xmin/W, ymin/H, xmax/W, ymax/H)`` in [0, 1], W and H
    being the transformed image's width and height (:func:`normalize_box`). Every image is
    converted to RGB (a few raccoon photos are greyscale). ``max_images`` keeps the first
    images of the CSV (fast runs); ``cache_images`` keeps decoded photos in memory.
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_dir: str | Path | None = None,
        transform: A.Compose | None = None,
        box_format: str = "corners",
        path_column: str = "filename",
        multi_box: str = "largest",
        max_images: int | None = None,
        cache_images: bool = True,
    ):
        self.csv_path = Path(csv_path)
        records = read_box_csv(csv_path, image_dir, box_format, path_column, multi_box)
        self.records = records.iloc[:max_images].reset_index(drop=True) if max_images else records
        self.transform = transform
        self.cache_images = cache_images
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def multi_box_images(self) -> int:
        """How many of this dataset's images had several boxes (only the largest is kept)."""
        return int((self.records["boxes"] > 1).sum())

    @property
    def sizes(self) -> torch.Tensor:
        """(N, 2) original (width, height) of every image, in pixels."""
        return torch.tensor(self.records[["width", "height"]].to_numpy(dtype=np.float32))

    def box(self, index: int) -> np.ndarray:
        """The kept box of image ``index`` in original pixels, corner form."""
        return self.records.loc[index, ["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=np.float32)

    def load_image(self, index: int) -> np.ndarray:
        """Image ``index`` as an RGB uint8 HWC array at its original size."""
        if index in self._cache:
            return self._cache[index]
        array = read_image(self.records.loc[index, "path"])
        if self.cache_images:
            self._cache[index] = array
        return array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, box = self.load_image(index), self.box(index)
        if self.transform is None:
            height, width = image.shape[:2]
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), normalize_box(box, width, height)
        for _ in range(10):  # a box pushed wholly out of the frame is dropped: draw another augmentation
            out = self.transform(image=image, bboxes=box[None], labels=[0])
            if len(out["bboxes"]):
                break
        else:
            raise DataError(f"The transform keeps dropping the box of {self.records.loc[index, 'path']}.")
        result = out["image"]
        height, width = result.shape[-2:] if isinstance(result, torch.Tensor) else result.shape[:2]
        return result, normalize_box(np.asarray(out["bboxes"][0], dtype=np.float32), width, height)


# ----------------------------------------------------------------------------- losses and metrics


class GIoULoss(nn.Module):
    """Mean generalized-IoU loss (torchvision) on corner boxes; corners are sorted first.

    Sorting makes any 4 numbers a valid box, so an early prediction with xmax < xmin still
    gets a useful gradient instead of a meaningless area.
    """

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import generalized_box_iou_loss

        return generalized_box_iou_loss(sort_corners(outputs.float()), targets.float(), reduction="mean")


def sort_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (min x, min y, max x, max y)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


#: The regression losses by name (see :func:`box_loss`).
BOX_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "smoothl1": lambda: nn.SmoothL1Loss(beta=0.05),
    "giou": GIoULoss,
}


def box_loss(name: str = "mse") -> nn.Module:
    """The regression loss by name, on normalized corner boxes.

    ``"mse"`` (the original course's), ``"smoothl1"`` (Huber with beta 0.05: errors of a few
    % of the image are squared, bigger ones linear; beta=1 would make it plain MSE/2 on
    [0, 1] coordinates) or ``"giou"`` (:class:`GIoULoss`, which optimises overlap directly).
    """
    if name not in BOX_LOSSES:
        raise ValueError(f"loss must be one of {sorted(BOX_LOSSES)}, not {name!r}")
    return BOX_LOSSES[name]()


class ScaledLoss(nn.Module):
    """``scale`` times a loss: with Adam the scale cancels out (the update divides by the gradient's RMS)."""

    def __init__(self, loss: nn.Module, scale: float = 1.0):
        super().__init__()
        self.loss, self.scale = loss, scale

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.scale * self.loss(outputs, targets)


def center_size_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (xmin, ymin, xmax, ymax), any common scale."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


class CenterSizeBoxes(nn.Module):
    """A regressor whose 4 outputs are read as (centre x, centre y, width, height), returned as corners.

    Another box encoding for the same network: the loss and the IoU still see corners, but the head now
    moves a box's position and size separately instead of its four edges.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return center_size_to_corners(self.model(x))


def box_iou_per_sample(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted box with its own true box (corner form, any common scale), in [0, 1].

    Equal to the diagonal of ``torchvision.ops.box_iou(predicted, true)`` for valid boxes, in
    O(N) instead of O(N^2). A prediction is read as the box spanned by its two corners
    (:func:`sort_corners`), as :class:`GIoULoss` reads it: a network trained with that loss is
    free to emit the corners in either order. IoU is unchanged when x and y are scaled (even by
    different factors), so it is the same on normalized coordinates, on the resized image and
    on the original photo.
    """
    predicted, true = sort_corners(predicted.float()), true.float()
    width = (torch.minimum(predicted[:, 2], true[:, 2]) - torch.maximum(predicted[:, 0], true[:, 0])).clamp(min=0)
    height = (torch.minimum(predicted[:, 3], true[:, 3]) - torch.maximum(predicted[:, 1], true[:, 1])).clamp(min=0)
    intersection = width * height

    def area(b: torch.Tensor) -> torch.Tensor:
        return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)

    union = area(predicted) + area(true) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def iou_score(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU as a fraction (0..1): the ``score_fn`` given to :func:`cifar.train.fit` (``score_name="iou"``).

    A fraction, as in :func:`box_metrics` and the figures, so that the training log (``iou 0.63``), the
    history and the tables state IoU on one scale.
    """
    return box_iou_per_sample(outputs, targets)


def original_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """The original course's "accuracy": 100 - mean relative error of the coordinates, in %.

    Kept only as a contrast to IoU. Both arguments must be on the same scale (pixels, or both
    normalized: the relative error is the same). It is not a localisation measure: it is not
    bounded below, it punishes an error near the top-left corner (small coordinates) far more
    than the same error near the bottom-right, and a box can score ~90 with little overlap.
    Coordinates equal to 0 are skipped (their relative error is undefined); NaN if none is left.
    """
    predicted, true = predicted.double(), true.double()
    usable = true != 0
    if not usable.any():
        return math.nan
    relative = (predicted - true).abs()[usable] / true.abs()[usable]
    return float(100 - 100 * relative.mean())


def to_pixels(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Normalized corner boxes (N, 4) back to pixels, given each image's (width, height) (N, 2)."""
    return boxes.float() * sizes.float().repeat(1, 2)


def box_metrics(predicted: torch.Tensor, true: torch.Tensor, sizes: torch.Tensor | None = None) -> dict[str, float]:
    """Mean IoU, share of images with IoU >= 0.5, and the original "accuracy" (contrast only).

    ``predicted``/``true`` are normalized corner boxes. With ``sizes`` (N, 2) the mean absolute
    corner error in pixels of the original photos is added.
    """
    iou = box_iou_per_sample(predicted, true)
    metrics = {
        "images": len(iou),
        "mean_iou": float(iou.mean()),
        "share_iou_50": float((iou >= 0.5).float().mean()),
        "original_accuracy_contrast": original_accuracy(predicted, true),
    }
    if sizes is not None:
        metrics["mean_abs_error_px"] = float((to_pixels(predicted, sizes) - to_pixels(true, sizes)).abs().mean())
    return metrics


def mean_box_baseline(train_set: BoxDataset, test_set: BoxDataset) -> dict[str, float]:
    """Metrics of a model that ignores the image and predicts the mean training box (normalized).

    The yardstick a trained regressor must beat: raccoons often fill much of the photo, so a
    large central box already overlaps most true boxes.
    """

    def normalized(dataset: BoxDataset) -> torch.Tensor:
        return torch.stack([normalize_box(dataset.box(i), *dataset.sizes[i].tolist()) for i in range(len(dataset))])

    mean_box = normalized(train_set).mean(0)
    true = normalized(test_set)
    return box_metrics(mean_box.expand_as(true), true, test_set.sizes)


# ----------------------------------------------------------------------------- figures


def _draw(image: torch.Tensor, boxes: torch.Tensor, colors: list[str], width: int) -> np.ndarray:
    from torchvision.utils import draw_bounding_boxes

    drawn = draw_bounding_boxes(image, sort_corners(boxes.float()), colors=colors, width=width)
    return drawn.permute(1, 2, 0).numpy()


def _boxed(photo: np.ndarray, boxes: torch.Tensor, colors: list[str], thumbnail: int | None) -> np.ndarray:
    """An RGB uint8 HWC photo with ``boxes`` (pixels, corner form) drawn; shrunk first to ``thumbnail`` pixels.

    With ``thumbnail`` the photo is resized (Lanczos, aspect ratio kept) so that its longer side is at most
    that many pixels, and the boxes are scaled with it: a grid of thumbnails says what the full-size photos
    say at a fraction of the bytes in a notebook. None draws at the original size.
    """
    height, width = photo.shape[:2]
    if thumbnail is not None and max(height, width) > thumbnail:
        scale = thumbnail / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))
        boxes = boxes * torch.tensor([size[0] / width, size[1] / height] * 2)
    line = max(2, int(max(photo.shape[:2]) / 150))
    return _draw(torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))), boxes, colors, line)


def _panel_inches(thumbnail: int) -> float:
    """A grid panel's side in inches that shows a ``thumbnail``-pixel image at about its own pixels (dpi 100)."""
    return thumbnail / 80


def plot_augmented_boxes(
    dataset: BoxDataset,
    indices: Sequence[int] = (0, 1, 2, 3),
    versions: int = 4,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int | None = 0,
    thumbnail: int | None = 96,
):
    """A grid: each row one image, each column an augmented version with its moved box drawn.

    The images are de-normalized with ``mean``/``std``; the box is the dataset's target scaled
    back to the augmented image's pixels and drawn with ``torchvision.utils.draw_bounding_boxes``
    on a thumbnail whose longer side is ``thumbnail`` pixels (None: the augmented image's size).
    Returns the matplotlib Figure.
    """

    if seed is not None and hasattr(dataset.transform, "set_random_seed"):
        dataset.transform.set_random_seed(seed)
    images, titles = [], []
    for index in indices:
        for version in range(versions):
            image, target = dataset[index]
            if image.dtype == torch.uint8:
                pixels = image
            else:
                pixels = torch.from_numpy((denormalize(image, mean, std) * 255).round().astype(np.uint8))
                pixels = pixels.permute(2, 0, 1)
            height, width = pixels.shape[-2:]
            box = to_pixels(target[None], torch.tensor([[width, height]]))
            images.append(_boxed(pixels.permute(1, 2, 0).numpy(), box, ["yellow"], thumbnail))
            titles.append(f"{dataset.records.loc[index, 'filename']} #{version + 1}")
    size = 2.6 if thumbnail is None else _panel_inches(thumbnail)
    return show_images(images, titles, ncols=versions, size=size, title="Augmented images and their moved boxes")


def predict_boxes(
    model: nn.Module,
    dataset: BoxDataset,
    device: torch.device | None = None,
    batch_size: int = 16,
    amp_dtype: torch.dtype | None | str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true normalized boxes for every image of ``dataset`` (eval mode).

    ``amp_dtype``: "auto" predicts in the precision :func:`cifar.train.fit` tests in on ``device``
    (:func:`cifar.utils.autocast_dtype`), None in fp32.
    """

    device = device or next(model.parameters()).device
    model.to(device)
    loader = make_loader(dataset, batch_size, train=False, num_workers=0, device=device)
    return predict(model, loader, device, resolve_amp_dtype(device, amp_dtype), False)


def prediction_gallery(
    model: nn.Module,
    dataset: BoxDataset,
    indices: Sequence[int] | None = None,
    device: torch.device | None = None,
    ncols: int = 4,
    amp_dtype: torch.dtype | None | str = "auto",
    predicted: torch.Tensor | None = None,
    thumbnail: int | None = 112,
):
    """Photos of ``dataset`` with the true box in green, the predicted box in red, each photo's IoU in its title.

    ``indices`` defaults to the first 8 images. ``predicted``: the normalized boxes already predicted for
    every image of ``dataset``, in its order (e.g. :attr:`cifar.raccoon.RaccoonRun.predicted`, the
    predictions its metrics come from); None predicts them here (``amp_dtype`` as in
    :func:`predict_boxes`). The figure's title gives the mean IoU of the photos shown and, when they are
    a subset, of the whole dataset, so that the two cannot be confused. Photos are drawn as thumbnails
    whose longer side is ``thumbnail`` pixels (None: original size). Returns the matplotlib Figure.
    """
    indices = list(range(min(8, len(dataset)))) if indices is None else list(indices)
    true = torch.stack([normalize_box(dataset.box(i), *dataset.sizes[i].tolist()) for i in range(len(dataset))])
    if predicted is None:
        predicted, _ = predict_boxes(model, dataset, device, amp_dtype=amp_dtype)
    if len(predicted) != len(dataset):
        raise ValueError(f"predicted has {len(predicted)} boxes for a dataset of {len(dataset)} images")
    predicted = predicted.float().cpu()
    iou = box_iou_per_sample(predicted, true)
    images, titles = [], []
    for index in indices:
        boxes = to_pixels(torch.stack([true[index], predicted[index].clamp(0, 1)]), dataset.sizes[[index, index]])
        images.append(_boxed(dataset.load_image(index), boxes, ["lime", "red"], thumbnail))
        titles.append(f"{dataset.records.loc[index, 'filename']}\nIoU {iou[index]:.2f}")
    shown = iou[indices].mean()
    if sorted(indices) == list(range(len(dataset))):
        summary = f"mean IoU {shown:.3f} over all {len(dataset)} photos"
    else:
        summary = f"mean IoU {shown:.3f} over these {len(indices)} photos, {iou.mean():.3f} over all {len(dataset)}"
    title = f"True (green) and predicted (red) boxes\n{summary}"
    return show_images(
        images, titles, ncols=ncols, size=3.0 if thumbnail is None else _panel_inches(thumbnail), title=title
    )


def plot_box_history(history: list[dict], baseline: float | None = None):
    """Loss and mean IoU per epoch, train and test; IoU as a fraction on an axis from 0 to 1, as in the tables.

    IoU is taken as the history holds it (:func:`iou_score`: a fraction). ``baseline``: the test photos' mean
    IoU of the mean training box (:func:`mean_box_baseline`), drawn as a dashed line: the curve a model must
    rise above. No other target line: a mean IoU has no threshold of its own (the 0.5 of "a correct
    detection" applies to each photo's IoU).
    """
    figure = plot_history(history, score_name="iou", score_label="mean IoU (fraction)", target=None)
    ax = figure.axes[1]
    if baseline is not None:
        label = f"mean training box, test ({baseline:.3f})"
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label=label)
    ax.set_ylim(0, 1)
    ax.legend()
    return figure


# ----------------------------------------------------------------------------- debugging a regressor


def overfit_batch(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
    every: int = 25,
) -> list[dict]:
    """The overfit-one-batch check: train ``model`` (Adam, MSE) on one fixed batch, again and again.

    A pipeline that is wired right drives the loss towards 0 and the IoU towards 1 on a handful of
    photos; if it cannot, the bug is in the model, the targets or the loss, not in the data's size.
    Returns a row every ``every`` steps (and the last): ``step``, ``loss``, ``train_mode_iou``
    (the batch's IoU from the forward pass that trained, batch-norm on batch statistics) and
    ``eval_mode_iou`` (running statistics, as a test would see it). On the model's device.
    """
    device = next(model.parameters()).device
    images, targets = images.to(device), targets.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    rows = []
    for step in range(1, steps + 1):
        model.train()
        outputs = model(images)
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                eval_iou = box_iou_per_sample(model(images), targets).mean()
            train_iou = box_iou_per_sample(outputs.detach(), targets).mean()
            row = {"step": step, "loss": loss.item(), "train_mode_iou": float(train_iou)}
            rows.append({**row, "eval_mode_iou": float(eval_iou)})
    model.eval()
    return rows


@torch.no_grad()
def iou_by_bn_mode(model: nn.Module, dataset: Dataset, batch_size: int = 16) -> dict[str, float]:
    """Mean IoU of ``model`` on ``dataset`` with batch norm on batch statistics (train mode, the running
    statistics left untouched) and on its running statistics (eval mode, as at test time).

    A large gap says the running statistics do not describe what the network sees in training (small
    batches, or weights that moved faster than the running averages): a batch-norm problem, not a fit problem.
    """
    device = next(model.parameters()).device
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    result = {}
    try:
        for m in norms:
            m.momentum = 0.0  # batch statistics in the forward pass, running statistics left as they are
        for mode in ("train", "eval"):
            model.train(mode == "train")
            ious = []
            loader = make_loader(dataset, batch_size, train=False, num_workers=0, device=device)
            for images, targets in loader:
                ious.append(box_iou_per_sample(model(images.to(device)).float().cpu(), targets))
            result[f"{mode}_mode_iou"] = float(torch.cat(ious).mean())
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return result


# ----------------------------------------------------------------------------- a head on frozen features


def flip_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Normalized corner boxes of horizontally flipped images: x becomes 1 - x, xmin and xmax swap."""
    xmin, ymin, xmax, ymax = boxes.unbind(-1)
    return torch.stack([1 - xmax, ymin, 1 - xmin, ymax], -1)


class SpatialBoxHead(nn.Module):
    """A small box regressor on a frozen feature map (N, C, H, W): where things are is kept, not pooled away.

    Batch norm on the features, a 1x1 conv to ``width`` channels, ReLU, an average pool to a ``grid`` x
    ``grid`` map, then a linear layer from the flattened map to 4 sigmoid outputs (normalized corners).
    A global pool, as a classifier's head has, would throw away the position of the object.
    """

    def __init__(self, channels: int, width: int = 8, grid: int = 4, dropout: float = 0.2):
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, width, 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width * grid * grid, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(x))


@dataclass
class HeadOptions:
    """How :func:`train_box_head` trains a :class:`SpatialBoxHead`: AdamW, MSE, random mini-batches."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    width: int = 8
    grid: int = 4
    dropout: float = 0.2
    seed: int = 0


def train_box_head(features: torch.Tensor, targets: torch.Tensor, options: HeadOptions | None = None) -> nn.Module:
    """A :class:`SpatialBoxHead` fitted to frozen ``features`` (N, C, H, W) and normalized boxes (N, 4).

    Seeded (the head's initialisation, its dropout and the mini-batches: the same seed gives the same head
    whatever ran before); seconds to a minute on a CPU core for a few hundred maps. Returned in eval mode.
    """
    options = options or HeadOptions()
    with seeded(derive_seed(options.seed, "box head")):  # initialisation and dropout: the caller's RNG is untouched
        head = SpatialBoxHead(features.shape[1], options.width, options.grid, options.dropout)
        generator = torch.Generator().manual_seed(derive_seed(options.seed, "box head batches"))
        optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        head.train()
        for _ in range(options.steps):
            batch = torch.randint(0, len(features), (options.batch_size,), generator=generator)
            loss = nn.functional.mse_loss(head(features[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


# ----------------------------------------------------------------------------- latency, save / load


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    image_size: int = 224,
    batch_sizes: Sequence[int] = (1, 32),
    warmup: int = 5,
    repeats: int = 20,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None | str = "auto",
    progress: bool = True,
) -> dict:
    """Inference time of ``model``: eval mode, no_grad, ``warmup`` untimed runs, median of ``repeats``.

    On CUDA every timing is bracketed by ``torch.cuda.synchronize`` (kernels run asynchronously).
    For each batch size ``b`` the dict has ``batch_<b>_ms_per_image`` and ``batch_<b>_images_per_s``
    (ms/image at batch 1 is the latency, images/s at batch 32 the throughput), plus the device
    and settings. The model's train/eval mode is restored afterwards. ``amp_dtype``: "auto" times the
    precision the model is trained and tested in on ``device`` (:func:`cifar.utils.autocast_dtype`),
    None fp32.
    """

    device = device or next(model.parameters()).device
    amp_dtype = resolve_amp_dtype(device, amp_dtype)
    model.to(device)
    was_training = model.training
    model.eval()
    result: dict = {
        "device": describe_device(device),
        "image_size": image_size,
        "warmup": warmup,
        "repeats": repeats,
        "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
    }
    try:
        for batch in batch_sizes:
            inputs = torch.randn(batch, 3, image_size, image_size, device=device)
            with autocast(device, amp_dtype):
                for _ in range(warmup):
                    model(inputs)
                times = []
                bar = tqdm(
                    range(repeats), desc=f"latency, batch {batch}", disable=not progress, leave=False, file=sys.stdout
                )
                for _ in bar:
                    _synchronize(device)
                    start = time.perf_counter()
                    model(inputs)
                    _synchronize(device)
                    times.append(time.perf_counter() - start)
                    bar.set_postfix(ms_per_image=f"{1000 * statistics.median(times) / batch:.1f}")
            seconds = statistics.median(times)
            result[f"batch_{batch}_ms_per_batch"] = 1000 * seconds
            result[f"batch_{batch}_ms_per_image"] = 1000 * seconds / batch
            result[f"batch_{batch}_images_per_s"] = batch / seconds
    finally:
        model.train(was_training)
    return result


def save_box_model(model: ResNet50, path: str | Path, **record) -> Path:
    """Save a box regressor in the course's weights format (:func:`cifar.artifacts.save_weights`).

    The JSON record holds what :func:`load_box_model` rebuilds the network from (architecture, head
    width, sigmoid) and ``record`` (the config, metrics, normalization...).
    """
    record = {
        "architecture": type(model).__name__,
        "num_classes": model.fc.out_features,
        "sigmoid": bool(getattr(model, "sigmoid", False)),
        **record,
    }
    return save_weights(model, path, record)


def load_box_model(path: str | Path) -> tuple[ResNet50, dict]:
    """The :class:`ResNet50` saved by :func:`save_box_model` (float32, eval mode) and its record."""
    return load_model(path, lambda record: ResNet50(record["num_classes"], sigmoid=record["sigmoid"]), "ResNet50")


def box_model(sigmoid: bool = True, pretrained: bool = False, seed: int | None = None) -> tuple[ResNet50, str]:
    """A box regressor, ``ResNet50(num_classes=4, sigmoid=...)``, and how it was initialised.

    ``sigmoid=True`` (the default here) keeps every predicted coordinate in (0, 1), the range of
    the targets, and starts training from boxes around the image centre; the original course
    used a plain linear head (``sigmoid=False``). ``pretrained`` copies torchvision's ImageNet
    weights into everything but the head where there is internet; offline the status says so
    and the random initialisation stays.
    """
    with seeded(derive_seed(seed, "model")) if seed is not None else nullcontext():
        model = ResNet50(num_classes=4, sigmoid=sigmoid)
    status = load_imagenet_into(model) if pretrained else "Random initialisation (pretrained=False)."
    return model, status
