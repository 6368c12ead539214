"""The raccoon lesson (notebook 02, part C): a ResNet-50 regresses one box per photo.

The data is the raccoon set (``$CIFAR_DATA_DIR/raccoon``, else downloaded: 200 photos, 217 boxes,
the author's train/test split of 160/40 images). :class:`RaccoonConfig` is the recipe
(:func:`raccoon_config` gives it, or its smoke test), :func:`raccoon_datasets` the data and
:func:`train_raccoon` the training through :func:`cifar.train.fit`, all on the box library of
:mod:`cifar.boxes`. On the command line::

    python -m cifar.raccoon --epochs 30 --out runs/raccoon

Why that run does not beat the mean box, and what does: :func:`overfit_check` (can the network fit 8
photos?), :data:`DIAGNOSIS` and :func:`diagnosis_run` (short controlled runs, one candidate cause each),
written as records by ``python -m cifar.raccoon --study overfit|diagnosis --out weights/records``
(:func:`load_record` reads them back); :func:`s10_box_features` and :func:`s10_head_seeds` (a small
spatial head on the frozen features of the course's CIFAR-10 network, over seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import cli
from .artifacts import write_summary
from .bench import loader_rate
from .boxes import (
    BOX_LOSSES,
    BoxDataset,
    CenterSizeBoxes,
    HeadOptions,
    ScaledLoss,
    box_iou_per_sample,
    box_loss,
    box_metrics,
    box_model,
    box_test_transforms,
    box_train_transforms,
    flip_boxes,
    iou_by_bn_mode,
    iou_score,
    measure_latency,
    overfit_batch,
    plot_box_history,
    prediction_gallery,
    save_box_model,
    train_box_head,
)
from .dataset import IMAGENET_MEAN, IMAGENET_STD, DataError, make_loader
from .download import RACCOON, download_source
from .model import ResNet50
from .train import FitOptions, fit, predict
from .transfer import S10_MEAN, S10_STD, s10_backbone_weights, s10_classifier
from .utils import PRECISIONS, cache_dir, data_dir, describe_device, get_device, resolve_amp_dtype

HOW_TO_GET_RACCOON = (
    "With CIFAR_DATA_DIR unset the set is downloaded (internet needed). Offline, set the environment "
    "variable CIFAR_DATA_DIR to a folder holding raccoon/train_labels.csv, raccoon/test_labels.csv and "
    "raccoon/images/ (the offline copy of datitran/raccoon_dataset), or pass root= / --data-dir."
)


#: The box encodings of :attr:`RaccoonConfig.encoding`.
ENCODINGS = ("corners", "center")

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
    augment: bool = True  # False: the training photos are only resized (the diagnosis's control)
    encoding: str = "corners"  # or "center": the head's outputs read as (cx, cy, w, h) (CenterSizeBoxes)
    loss_scale: float = 1.0  # the loss times this (ScaledLoss)


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
    """The author's split: train_labels.csv (160 images) with augmentation (unless ``config.augment`` is
    False), test_labels.csv (40) without."""
    folder = raccoon_root(root)
    train_set = BoxDataset(
        folder / "train_labels.csv",
        folder / "images",
        (box_train_transforms if config.augment else box_test_transforms)(config.image_size),
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
    if config.encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, not {config.encoding!r}")
    if config.encoding == "center":
        model = CenterSizeBoxes(model)
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
        loss_fn=ScaledLoss(box_loss(config.loss), config.loss_scale),
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


# ----------------------------------------------------------------------------- diagnosis; beating the mean box

#: Where the lesson's run records are committed, relative to the repository's root (raccoon_<name>.json).
RECORDS = "weights/records"
#: The S10 weights trained on CIFAR-10 in lesson 03.
S10_WEIGHTS = "weights/s10_custom_resnet.pt"


def record_path(name: str, folder: str | Path | None = None) -> Path:
    """``raccoon_<name>.json`` in ``folder``, else in :data:`RECORDS` seen from the repository's root, from
    ``notebooks/`` or beside an editable install of the package."""
    file = f"raccoon_{name}.json"
    return Path(folder) / file if folder is not None else repo_file(f"{RECORDS}/{file}")


def repo_file(name: str) -> Path:
    """A committed file of the course (``weights/...``) seen from the repository's root, from ``notebooks/``
    or ``solutions/``, else beside an editable install of the package."""
    candidates = [Path(name), Path("..") / name, Path(__file__).resolve().parents[1] / name]
    return next((path for path in candidates if path.is_file()), candidates[0])


def save_record(record: dict, name: str, folder: str | Path | None = None) -> Path:
    """Write a run record (JSON: command, config, history, metrics...) as ``raccoon_<name>.json``."""
    path = record_path(name, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load_record(name: str, folder: str | Path | None = None) -> dict:
    """The committed record ``raccoon_<name>.json`` (see :func:`record_path`)."""
    return json.loads(record_path(name, folder).read_text())


def unaugmented_train_set(config: RaccoonConfig, root: str | Path | None = None) -> BoxDataset:
    """The training photos as the test sees photos: resized and normalized only (to ask "did it fit them?")."""
    return raccoon_datasets(replace(config, augment=False), root)[0]


def overfit_check(
    config: RaccoonConfig | None = None, images: int = 8, steps: int = 300, root: str | Path | None = None
) -> dict:
    """The overfit-one-batch check on the lesson's network: the first ``images`` training photos, unaugmented,
    at ``config.image_size`` (default 64 px), one batch trained ``steps`` times (:func:`cifar.boxes.overfit_batch`,
    Adam at ``config.lr``, fp32 on the CPU).

    Returns ``rows`` (the check's progress), and per photo at the end (eval mode): ``targets``, ``predicted``,
    ``iou`` and the head's ``logits`` (its outputs before the sigmoid; the outputs themselves without one).
    """
    config = config or RaccoonConfig(image_size=64)
    dataset = unaugmented_train_set(replace(config, train_images=images), root)
    batch = [dataset[i] for i in range(len(dataset))]
    inputs, targets = torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])
    model, _ = box_model(config.sigmoid, seed=config.seed)
    rows = overfit_batch(model, inputs, targets, steps, config.lr)
    with torch.no_grad():
        logits = model.fc(model.features(inputs))
        predicted = torch.sigmoid(logits) if config.sigmoid else logits
    return {
        "rows": rows,
        "targets": targets.tolist(),
        "predicted": predicted.tolist(),
        "iou": box_iou_per_sample(predicted, targets).tolist(),
        "logits": logits.tolist(),
    }


def overfit_table(check: dict) -> pd.DataFrame:
    """One row per photo of an :func:`overfit_check`: its IoU, the largest coordinate error and the head's
    largest logit in absolute value (beyond about 10 a sigmoid's gradient is nearly 0: the output is stuck)."""
    targets, predicted, logits = (torch.tensor(check[k]) for k in ("targets", "predicted", "logits"))
    return pd.DataFrame(
        {
            "IoU": check["iou"],
            "largest coordinate error": (predicted - targets).abs().max(1).values.tolist(),
            "largest |logit|": logits.abs().max(1).values.tolist(),
        }
    ).rename_axis("photo")


#: The diagnosis: each candidate cause of the failure to fit, as the change to the short recipe that tests it.
DIAGNOSIS: dict[str, dict] = {
    "short recipe": {},
    "no augmentation": {"augment": False},
    "lr 1e-4": {"lr": 1e-4},
    "loss x100": {"loss_scale": 100.0},
    "centre-size encoding": {"encoding": "center"},
    "linear head (no sigmoid)": {"sigmoid": False},
}


def short_recipe(fast: bool = False) -> RaccoonConfig:
    """The diagnosis's cheap stand-in for the lesson's recipe: 32 px, 12 epochs (120 steps), otherwise the same
    (a minute or two on one CPU core); ``fast``: 4 photos, 1 epoch."""
    if fast:
        return raccoon_config(fast=True, image_size=32)
    return raccoon_config(image_size=32, epochs=12)


def diagnosis_run(
    name: str,
    seed: int = 0,
    base: RaccoonConfig | None = None,
    root: str | Path | None = None,
    device: torch.device | None = None,
) -> dict:
    """One controlled run of :data:`DIAGNOSIS`: the short recipe with one change, trained, then asked whether
    it fitted its training photos (unaugmented; batch norm on batch and on running statistics)."""
    config = replace(base or short_recipe(), seed=seed, **DIAGNOSIS[name])
    started = time.time()
    run = train_raccoon(config, root=root, device=device, progress=False, log=_silent)
    train_fit = iou_by_bn_mode(run.model, unaugmented_train_set(config, root))
    return {
        "name": name,
        "seed": seed,
        "config": asdict(config),
        "history": run.history,
        "metrics": run.metrics,
        "train_fit": train_fit,
        "seconds": round(time.time() - started, 1),
    }


def diagnosis_table(runs: list[dict]) -> pd.DataFrame:
    """One row per change: mean and spread (max - min; NaN for one seed) over its seeds of the test IoU and of the
    IoU on the training photos (eval mode, as a test sees them; train mode, batch statistics); the last epoch's loss."""
    rows = [
        {
            "change": run["name"],
            "seed": run["seed"],
            "train IoU, eval mode": run["train_fit"]["eval_mode_iou"],
            "train IoU, batch stats": run["train_fit"]["train_mode_iou"],
            "test IoU": run["metrics"]["mean_iou"],
            "test IoU >= 0.5": run["metrics"]["share_iou_50"],
            "last train loss / scale": run["history"][-1]["train_loss"] / run["config"]["loss_scale"],
        }
        for run in runs
    ]
    frame = pd.DataFrame(rows)
    grouped = frame.drop(columns="seed").groupby("change", sort=False)
    table = grouped.mean()
    spread = grouped.max() - grouped.min()
    seeds = grouped.size()
    for column in ("train IoU, eval mode", "test IoU"):
        table[f"{column} spread"] = spread[column].where(seeds > 1)  # NaN for one seed: no spread measured
    table.insert(0, "seeds", seeds)
    return table


@dataclass
class BoxFeatures:
    """Frozen feature maps of the raccoon photos: training photos and their mirror images, test photos."""

    train: torch.Tensor  # (2 x 160, C, H, W): the photos, then their mirror images
    train_targets: torch.Tensor
    test: torch.Tensor
    test_targets: torch.Tensor
    train_set: BoxDataset
    test_set: BoxDataset


@torch.no_grad()
def s10_feature_maps(backbone: nn.Module, images: torch.Tensor, batch_size: int = 20) -> torch.Tensor:
    """The S10 network's last feature map (``layer3``, 512 channels, 1/8 of the input's side), eval mode."""
    backbone.eval()
    maps = []
    for batch in images.split(batch_size):
        maps.append(backbone.layer3(backbone.layer2(backbone.layer1(backbone.prep(batch)))))
    return torch.cat(maps)


def s10_box_features(size: int = 64, root: str | Path | None = None, weights: str | Path | None = None) -> BoxFeatures:
    """Feature maps of the CIFAR-10-trained S10 network (``weights/s10_custom_resnet.pt``, frozen) for every raccoon
    photo at ``size`` px (CIFAR-10 normalization), computed once; training photos also mirrored (augmentation)."""
    backbone = s10_classifier(10, s10_backbone_weights(weights or repo_file(S10_WEIGHTS))[0])
    folder = raccoon_root(root)
    sets = [
        BoxDataset(folder / f"{split}_labels.csv", folder / "images", box_test_transforms(size, S10_MEAN, S10_STD))
        for split in ("train", "test")
    ]
    stacked = []
    for dataset in sets:
        items = [dataset[i] for i in range(len(dataset))]
        stacked.append((torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])))
    (train_x, train_y), (test_x, test_y) = stacked
    train = s10_feature_maps(backbone, torch.cat([train_x, train_x.flip(-1)]))
    return BoxFeatures(
        train, torch.cat([train_y, flip_boxes(train_y)]), s10_feature_maps(backbone, test_x), test_y, *sets
    )


def s10_head_seeds(
    features: BoxFeatures, seeds: tuple[int, ...] = (0, 1, 2), options: HeadOptions | None = None
) -> tuple[pd.DataFrame, dict[int, torch.Tensor]]:
    """A :class:`cifar.boxes.SpatialBoxHead` per seed on the frozen S10 features: a row of test metrics per seed
    (and the training photos' mean IoU, unmirrored), and each seed's predicted test boxes."""
    options = options or HeadOptions()
    rows, predicted = [], {}
    half = len(features.train) // 2
    for seed in seeds:
        head = train_box_head(features.train, features.train_targets, replace(options, seed=seed))
        with torch.no_grad():
            predicted[seed] = head(features.test)
            train_iou = box_iou_per_sample(head(features.train[:half]), features.train_targets[:half]).mean()
        metrics = box_metrics(predicted[seed], features.test_targets, features.test_set.sizes)
        rows.append({"seed": seed, "train_iou": float(train_iou), **metrics})
    return pd.DataFrame(rows).set_index("seed"), predicted


def compare_with_mean_box(table: pd.DataFrame, baseline: dict) -> pd.DataFrame:
    """Mean, standard deviation, min and max over seeds of mean IoU and share at IoU >= 0.5, beside the mean box."""
    columns = ["mean_iou", "share_iou_50"]
    summary = table[columns].agg(["mean", "std", "min", "max"]).T
    summary["mean box"] = [baseline[c] for c in columns]
    summary["seeds above the mean box"] = [int((table[c] > baseline[c]).sum()) for c in columns]
    return summary


#: The studies the command line runs (``--study``), each written as a record ``raccoon_<study>.json``.
STUDIES = ("overfit", "diagnosis")


def run_study(study: str, seeds: int = 3, fast: bool = False, out: Path | None = None, command: str = "") -> dict:
    """Run a study of :data:`STUDIES` on this machine and write its record to ``out`` (default :data:`RECORDS`)."""
    device = torch.device("cpu") if study == "overfit" else get_device()
    started = time.time()
    if study == "overfit":  # the lesson's sigmoid head, then a linear head: the same photos, steps and seed
        steps = 20 if fast else 200
        record = {"images": 8, "steps": steps}
        for head, sigmoid in (("sigmoid", True), ("linear", False)):
            config = RaccoonConfig(image_size=64, sigmoid=sigmoid)
            record[head] = {"config": asdict(config), **overfit_check(config, 8, steps)}
    else:
        runs = []
        for name in DIAGNOSIS:  # the recipe over ``seeds`` seeds (its spread), each change over one
            for seed in range(seeds if name == "short recipe" else 1):
                runs.append(diagnosis_run(name, seed, short_recipe(fast), device=device))
                print(f"{name}, seed {seed}: {runs[-1]['train_fit']} test {runs[-1]['metrics']['mean_iou']:.3f}")
        record = {"base": asdict(short_recipe(fast)), "changes": DIAGNOSIS, "runs": runs}
    record = {
        "command": command,
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "wall_seconds": round(time.time() - started, 1),
        **record,
    }
    print(f"{study}: {record['wall_seconds']:.0f} s; {save_record(record, study, out or RECORDS)}")
    return record


def _silent(*_) -> None:
    pass


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
        "--study",
        choices=STUDIES,
        help="instead of the lesson's run: the overfit-one-batch check, or the diagnosis's runs over --seeds "
        "(--fast: smoke tests); the record goes to --out as raccoon_<study>.json",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the diagnosis's base run (default 3)")
    parser.add_argument(
        "--time-loader",
        action="store_true",
        help="instead of training: the training loader's images/s (2 workers; --fast: 2 batches)",
    )
    parser.add_argument("--record", help="with --time-loader: also write the rate (with the command) to this JSON file")
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
        if args.record:
            cli.save_record(results, args.record, cli.command_line("cifar.raccoon", argv))
        return results
    if args.study:
        return run_study(args.study, args.seeds, args.fast, Path(args.out), cli.command_line("cifar.raccoon", argv))
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
