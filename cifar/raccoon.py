"""The raccoon lesson (notebook 02, part C): a ResNet-50 regresses one box per photo.

The data is the raccoon set (``$CIFAR_DATA_DIR/raccoon``, else downloaded: 200 photos, 217 boxes,
the author's train/test split of 160/40 images). :class:`RaccoonConfig` is the recipe
(:func:`raccoon_config` gives it, or its smoke test), :func:`raccoon_datasets` the data and
:func:`train_raccoon` the training through :func:`cifar.train.fit`, all on the box library of
:mod:`cifar.boxes`. On the command line::

    python -m cifar.raccoon --epochs 30 --out runs/raccoon
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import cli
from .artifacts import write_summary
from .bench import loader_rate
from .boxes import (
    BOX_LOSSES,
    BoxDataset,
    box_loss,
    box_metrics,
    box_model,
    box_test_transforms,
    box_train_transforms,
    iou_score,
    measure_latency,
    plot_box_history,
    prediction_gallery,
    save_box_model,
)
from .dataset import IMAGENET_MEAN, IMAGENET_STD, DataError, make_loader
from .download import RACCOON, download_source
from .model import ResNet50
from .train import FitOptions, fit, predict
from .utils import PRECISIONS, cache_dir, data_dir, describe_device, get_device, resolve_amp_dtype

HOW_TO_GET_RACCOON = (
    "With CIFAR_DATA_DIR unset the set is downloaded (internet needed). Offline, set the environment "
    "variable CIFAR_DATA_DIR to a folder holding raccoon/train_labels.csv, raccoon/test_labels.csv and "
    "raccoon/images/ (the offline copy of datitran/raccoon_dataset), or pass root= / --data-dir."
)


#: Stored with every checkpoint: a checkpoint written when the history held IoU in % is refused, not resumed.
IOU_UNIT = "fraction"


@dataclass
class RaccoonConfig:
    """Everything that defines a raccoon run; saved with its checkpoints (a resume must match)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    image_size: int = 224
    loss: str = "mse"
    sigmoid: bool = True
    pretrained: bool = False
    amp: bool = True  # bf16/fp16 autocast where fast (cifar.utils.autocast_dtype), for training and testing
    seed: int = 0
    train_images: int | None = None  # None: all 160
    test_images: int | None = None  # None: all 40


def raccoon_config(fast: bool = False, **changes) -> RaccoonConfig:
    """The lesson's settings; ``fast``: 4 train / 4 test images at 64 px, 1 epoch, batch 2 (seconds on a CPU)."""
    if fast:
        changes = {"epochs": 1, "batch_size": 2, "image_size": 64, "train_images": 4, "test_images": 4, **changes}
    return RaccoonConfig(**changes)


def raccoon_root(root: str | Path | None = None) -> Path:
    """The raccoon folder: ``root``, else ``$CIFAR_DATA_DIR/raccoon``, else a download into the cache dir.

    The download (:data:`cifar.download.RACCOON`: pinned commit, every file checked against its
    SHA-256) goes to ``cache_dir()/raccoon`` and is reused. A DataError says how to fix a miss.
    """
    folder = Path(root) if root is not None else data_dir("raccoon")
    if folder is None:
        folder = download_source(RACCOON, cache_dir() / "raccoon")
    if not (folder / "train_labels.csv").is_file():
        raise DataError(f"{folder / 'train_labels.csv'} not found. {HOW_TO_GET_RACCOON}")
    return folder


def raccoon_datasets(config: RaccoonConfig, root: str | Path | None = None) -> tuple[BoxDataset, BoxDataset]:
    """The author's split: train_labels.csv (160 images) with augmentation, test_labels.csv (40) without."""
    folder = raccoon_root(root)
    train_set = BoxDataset(
        folder / "train_labels.csv",
        folder / "images",
        box_train_transforms(config.image_size),
        max_images=config.train_images,
    )
    test_set = BoxDataset(
        folder / "test_labels.csv",
        folder / "images",
        box_test_transforms(config.image_size),
        max_images=config.test_images,
    )
    return train_set, test_set


def time_training_loader(
    batches: int | None = None, num_workers: int = 2, root: str | Path | None = None
) -> dict[str, float]:
    """Images/s of the lesson's training loader (decoding and augmentation, no model) at its size and batch,
    with ``num_workers`` workers; ``batches``: time at most this many after the warm-up one."""
    config = raccoon_config()
    train_set, _ = raccoon_datasets(config, root)
    rate, images = loader_rate(train_set, config.batch_size, num_workers, batches)
    return {"raccoon_img_s": rate, "raccoon_images": images}


@dataclass
class RaccoonRun:
    """What :func:`train_raccoon` returns: the trained model, its history and test metrics."""

    model: ResNet50
    history: list[dict]
    metrics: dict
    init_status: str
    train_set: BoxDataset
    test_set: BoxDataset
    predicted: torch.Tensor  # normalized test boxes, in test_set order
    true: torch.Tensor


def train_raccoon(
    config: RaccoonConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    root: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    log: Callable[[str], object] = print,
    amp_dtype: torch.dtype | None | str = "auto",
) -> RaccoonRun:
    """The lesson's training: ResNet-50 box regressor, Adam (lr 1e-3), MSE on normalized boxes.

    Seeded; data from ``$CIFAR_DATA_DIR/raccoon`` (or ``root``); trains with
    :func:`cifar.train.fit` (``score_fn=iou_score``, ``score_name="iou"``: the history has
    ``train_iou``/``test_iou``, mean IoU as a fraction). With ``checkpoint_dir`` every epoch is
    checkpointed and a second call with the same config resumes. ``amp_dtype`` is the autocast precision when
    ``config.amp`` ("auto": :func:`cifar.utils.autocast_dtype`); without it the run is fp32.
    ``train_raccoon(raccoon_config(fast=True))`` runs in seconds on a CPU.
    """
    config = config or RaccoonConfig()
    device = device or get_device()
    train_set, test_set = raccoon_datasets(config, root)
    model, status = box_model(config.sigmoid, config.pretrained, seed=config.seed)
    log(status)
    train_loader = make_loader(
        train_set, config.batch_size, train=True, seed=config.seed, num_workers=num_workers, device=device
    )
    test_loader = make_loader(test_set, 2 * config.batch_size, train=False, num_workers=num_workers, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp_dtype = resolve_amp_dtype(device, amp_dtype if config.amp else None)
    options = FitOptions(
        device=device,
        amp_dtype=amp_dtype,
        loss_fn=box_loss(config.loss),
        score_fn=iou_score,
        score_name="iou",
        seed=config.seed,
        checkpoint_dir=checkpoint_dir,
        config={**asdict(config), "iou": IOU_UNIT},
        progress=progress,
        log=log,
    )
    result = fit(model, train_loader, test_loader, optimizer, None, config.epochs, options)
    predicted, true = predict(model, test_loader, device, amp_dtype, False)  # in the precision fit tested in
    metrics = box_metrics(predicted, true, test_set.sizes)
    metrics["test_loss"] = float(box_loss(config.loss)(predicted, true))
    return RaccoonRun(model, result.history, metrics, status, train_set, test_set, predicted, true)


# ----------------------------------------------------------------------------- command line

# command-line options that override a field of the recipe when given
_OVERRIDES = ("epochs", "batch_size", "lr", "image_size", "loss", "sigmoid", "pretrained", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = RaccoonConfig()
    parser = cli.base_parser(
        "python -m cifar.raccoon",
        "Train the ResNet-50 raccoon box regressor (the lesson's recipe).",
        out="runs/raccoon",
        data_help="raccoon folder (default: $CIFAR_DATA_DIR/raccoon, else downloaded)",
    )
    parser.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, help=f"Adam's learning rate (default {defaults.lr:g})")
    parser.add_argument("--image-size", type=int, help=f"square input side in pixels (default {defaults.image_size})")
    parser.add_argument("--loss", choices=sorted(BOX_LOSSES), help=f"default {defaults.loss}")
    parser.add_argument(
        "--linear-head",
        dest="sigmoid",
        action="store_const",
        const=False,
        help="no sigmoid on the 4 outputs (as the original)",
    )
    parser.add_argument(
        "--pretrained", action="store_const", const=True, help="start from ImageNet weights (needs internet)"
    )
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--latency-repeats", type=int, default=20, help="0 skips the latency measurement")
    parser.add_argument(
        "--time-loader",
        action="store_true",
        help="instead of training: the training loader's images/s (2 workers; --fast: 2 batches)",
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RaccoonConfig:
    """The recipe (its smoke test with ``--fast``) with the fields given on the command line replaced."""
    config = cli.apply_overrides(raccoon_config(args.fast), args, _OVERRIDES)
    return replace(config, amp=False) if args.precision == "fp32" else config


def main(argv: list[str] | None = None) -> dict:
    """Command line: train, then save weights, history, curves, gallery, metrics (and latency) in ``--out``."""
    return cli.run(lambda: _main(parse_args(argv), argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    if args.time_loader:
        results = time_training_loader(2 if args.fast else None, root=args.data_dir)
        print(
            f"raccoon photos' training loader, 2 workers: {results['raccoon_img_s']:.0f} images/s "
            f"over {results['raccoon_images']} images"
        )
        return results
    config = config_from_args(args)
    out = Path(args.out)
    device = get_device()
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision] if config.amp else None)
    started = time.time()
    run = train_raccoon(config, out, args.data_dir, device, amp_dtype=amp_dtype)
    seconds = time.time() - started
    save_box_model(
        run.model,
        out / "raccoon_resnet50.pt",
        config=asdict(config),
        metrics=run.metrics,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
    )
    plot_box_history(run.history).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    gallery = prediction_gallery(run.model, run.test_set, predicted=run.predicted, thumbnail=None)
    gallery.savefig(out / "gallery.png", dpi=100, bbox_inches="tight")
    summary = {
        "command": cli.command_line("cifar.raccoon", argv),
        "config": asdict(config),
        "device": describe_device(device, amp_dtype),
        "init": run.init_status,
        "wall_seconds_this_call": round(seconds, 1),
        "metrics": run.metrics,
    }
    if args.latency_repeats > 0:
        summary["latency"] = measure_latency(
            run.model, config.image_size, repeats=args.latency_repeats, device=device, amp_dtype=amp_dtype
        )
    summary = write_summary(out, **summary)
    m = run.metrics
    print(
        f"test: mean IoU {m['mean_iou']:.3f}, IoU >= 0.5 on {100 * m['share_iou_50']:.0f}% of {m['images']} images, "
        f"original 'accuracy' {m['original_accuracy_contrast']:.1f} (contrast only); {out}"
    )
    return summary


if __name__ == "__main__":
    main()
