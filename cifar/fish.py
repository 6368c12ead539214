"""The fish lesson (notebook 03): ResNet-34 transfer learning on underwater photos of 7 species.

The data (:func:`fish_root`): 1,053 photos from Austrian fish passes, ``$CIFAR_DATA_DIR/fish_egu2017``
or downloaded, split by :func:`transfer_data` into a seeded, stratified split that keeps every
fish on one side. The recipe is a :class:`FishConfig`, one per start of the backbone
(:data:`FISH_RECIPES`): ``imagenet``, the original lesson's fine-tuning recipe (head, then all
layers), and ``random``, for a backbone that starts from random weights because the ImageNet
weights could not be downloaded. :func:`run_transfer` tries the weights and trains with the recipe
that fits the start it got, on the library of :mod:`cifar.transfer`. On the command line::

    python -m cifar.transfer --data-dir $CIFAR_DATA_DIR/fish_egu2017 --out runs/fish
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import cli
from .artifacts import save_history, write_summary
from .dataset import (
    ImageFolderDataset,
    fish_group,
    imagenet_eval_transforms,
    imagenet_train_transforms,
    kaggle_group,
    make_loader,
    shared_group_fraction,
    split_indices,
)
from .download import FISH_EGU2017, download_kaggle_fish, download_source, kaggle_fish_root
from .train import predict
from .transfer import (
    IMAGENET_WEIGHTS,
    RANDOM_WEIGHTS,
    fit_one_cycle,
    freeze_backbone,
    resnet34_classifier,
    resnet34_weights,
    save_classifier,
    unfreeze,
)
from .utils import (
    PRECISIONS,
    cache_dir,
    confusion_matrix,
    data_dir,
    derive_seed,
    describe_device,
    get_device,
    per_class_accuracy,
    plot_confusion,
    plot_history,
    plot_lrs,
    resolve_amp_dtype,
    seeded,
)


@dataclass
class FishConfig:
    """Everything that defines a fish run; saved with its checkpoints and weights."""

    image_size: tuple[int, int] = (160, 240)  # (height, width), the original's Resize(160, 240)
    batch_size: int = 128
    head_epochs: int = 2  # backbone frozen
    fine_tune_epochs: int = 4  # all layers
    max_lr: float = 0.01  # one-cycle peak of the head stage (and of the single stage with random weights)
    fine_tune_lr: float = 1e-3  # one-cycle peak of the head during fine-tuning
    backbone_lr_factor: float | None = 0.1  # backbone LR = factor x head LR while fine-tuning
    weight_decay: float = 1e-4
    grad_clip: float | None = 0.1
    optimizer: str = "adam"
    test_fraction: float = 0.2
    grouped: bool = True  # keep every fish (group) on one side; False: the leaky frame-level split
    seed: int = 1
    weights: str | None = IMAGENET_WEIGHTS
    stages: str = "auto"  # "auto": head + fine-tune when pretrained, one all-layer stage when random; "two"; "one"
    train_per_class: int | None = None  # subsample (fast mode)
    test_per_class: int | None = None
    max_steps_per_epoch: int | None = None
    on_error: str = "raise"
    cache: bool = False
    extra: dict = field(default_factory=dict)


def fish_imagenet_recipe() -> FishConfig:
    """From ImageNet weights: the original lesson's recipe, one-cycle Adam (peak LR 0.01, weight decay 1e-4,
    gradient clipping 0.1), batch 128, 2 epochs of the head (backbone frozen) then 4 of all layers."""
    return FishConfig()


def fish_random_recipe() -> FishConfig:
    """From random weights (offline): 15 epochs of all layers in one stage, batch 32, peak LR 3e-3.

    The ImageNet recipe's 6 epochs at batch 128 (42 steps) are far too few for a network that must
    learn everything from these photos, and its peak of 0.01 is a fine-tuning LR.
    """
    return replace(FishConfig(), weights=None, batch_size=32, head_epochs=5, fine_tune_epochs=10, max_lr=3e-3)


#: The lesson's recipes by the start of the backbone: ImageNet weights, or random ones.
FISH_RECIPES: dict[str, Callable[[], FishConfig]] = {"imagenet": fish_imagenet_recipe, "random": fish_random_recipe}


def fish_config(recipe: str = "imagenet", fast: bool = False) -> FishConfig:
    """A recipe of :data:`FISH_RECIPES`; ``fast`` shrinks it to a smoke test (8+4 images per class, 64x96, 1 step)."""
    config = FISH_RECIPES[recipe]()
    if fast:
        config = replace(config, image_size=(64, 96), batch_size=16, head_epochs=1, fine_tune_epochs=1,
                         train_per_class=8, test_per_class=4, max_steps_per_epoch=1)  # fmt: skip
    return config


@dataclass
class TransferResult:
    """What a run produced: the trained model, its record and the test-set predictions."""

    model: nn.Module
    classes: list[str]
    weights: str  # which weights the backbone started from: "IMAGENET1K_V1" or "random"
    stages: list[str]
    history: list[dict]  # one row per epoch, with its "stage"
    lrs: list[float]  # LR of every batch (head group), all stages
    test_accuracy: float
    confusion: np.ndarray  # counts[true, predicted]
    outputs: torch.Tensor  # test logits
    targets: torch.Tensor
    test_set: ImageFolderDataset  # the test images in the order of outputs, with the test transforms
    split: str  # "grouped" or "frames"
    shared_group_fraction: float  # test images whose fish is also in training
    train_images: int
    test_images: int
    config: FishConfig  # the recipe it trained with
    seconds: float


def _per_class(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None:
        return indices
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(indices[labels[indices] == c])[:n] for c in np.unique(labels[indices])]
    return np.sort(np.concatenate(keep))


#: The fish lesson's data sources and how each one groups its images for a fair split.
FISH_GROUPS: dict[str, Callable[[Path], str]] = {"egu2017": fish_group, "kaggle": kaggle_group}


def fish_root(root: str | Path | None = None, source: str = "egu2017") -> Path:
    """The class-folder root of the fish lesson's data.

    ``source="egu2017"`` (the default, online and offline): ``root``, else
    ``$CIFAR_DATA_DIR/fish_egu2017``, else a download into ``cache_dir()/fish_egu2017``
    (:data:`cifar.download.FISH_EGU2017`: pinned commit, every file checked against its SHA-256).
    ``source="kaggle"``: Kaggle's "A Large Scale Fish Dataset" (9 classes): ``root`` is a folder it
    was downloaded to, else kagglehub downloads it (``pip install kagglehub`` and Kaggle credentials);
    split it with ``group_fn=FISH_GROUPS["kaggle"]``, as its file names identify no fish.
    """
    if source not in FISH_GROUPS:
        raise ValueError(f"source must be one of {sorted(FISH_GROUPS)}, not {source!r}")
    if source == "kaggle":
        return kaggle_fish_root(root if root is not None else download_kaggle_fish())
    if root is not None:
        return Path(root)
    local = data_dir(FISH_EGU2017.name)
    return local if local is not None else download_source(FISH_EGU2017, cache_dir() / FISH_EGU2017.name)


def transfer_data(
    root: str | Path | None, config: FishConfig, group_fn: Callable[[Path], str] = fish_group
) -> tuple[ImageFolderDataset, np.ndarray, np.ndarray, float]:
    """The class-folder set under ``root`` and its seeded, stratified (grouped) split.

    Returns ``(dataset, train_idx, test_idx, shared)``; ``shared`` is the fraction of test
    images whose group (``group_fn`` of the path) also has images in training.
    ``root`` None means :func:`fish_root`: ``$CIFAR_DATA_DIR/fish_egu2017``, else downloaded.
    """
    if root is None:
        root = fish_root()
    dataset = ImageFolderDataset.from_folder(root, on_error=config.on_error, cache=config.cache)
    groups = [group_fn(path) for path in dataset.paths]
    train_idx, test_idx = split_indices(
        dataset.labels, config.test_fraction, config.seed, groups if config.grouped else None
    )
    train_idx = _per_class(train_idx, dataset.labels, config.train_per_class, config.seed)
    test_idx = _per_class(test_idx, dataset.labels, config.test_per_class, config.seed + 1)
    return dataset, train_idx, test_idx, shared_group_fraction(groups, train_idx, test_idx)


def _plan(config: FishConfig, weights_used: str) -> list[tuple[str, int, float, float | None, bool]]:
    """(name, epochs, max_lr, backbone_lr_factor, frozen) of each stage."""
    if config.stages not in ("auto", "one", "two"):
        raise ValueError(f"stages must be 'auto', 'one' or 'two', not {config.stages!r}")
    two = config.stages == "two" or (config.stages == "auto" and weights_used != RANDOM_WEIGHTS)
    if two:
        stages = [
            ("head", config.head_epochs, config.max_lr, None, True),
            ("fine-tune", config.fine_tune_epochs, config.fine_tune_lr, config.backbone_lr_factor, False),
        ]
    else:
        stages = [("all layers", config.head_epochs + config.fine_tune_epochs, config.max_lr, None, False)]
    return [stage for stage in stages if stage[1] > 0]


def run_transfer(
    root: str | Path | None = None,
    config: FishConfig | None = None,
    out: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
    group_fn: Callable[[Path], str] = fish_group,
    random_config: FishConfig | None = None,
    amp_dtype: torch.dtype | None | str = "auto",
) -> TransferResult:
    """Train the lesson's ResNet-34 classifier on a class-folder set and test it.

    The weights ``config.weights`` are tried first; when the backbone starts from random weights
    (they could not be loaded, or are None) and ``random_config`` is given, the run trains with
    that recipe instead (:func:`fish_random_recipe`). Seeded stratified split (by fish unless
    ``grouped`` is False), then one-cycle stages through :func:`cifar.transfer.fit_one_cycle`: with
    ImageNet weights, ``head_epochs`` with the backbone frozen then ``fine_tune_epochs`` of all
    layers (discriminative LRs); with random weights one stage of all layers for the same number
    of epochs (freezing a random backbone teaches nothing). With ``out`` each stage is
    checkpointed there (a rerun resumes) and the classifier, history and summary are saved.
    ``amp_dtype``: the precision of training and testing, as in :func:`cifar.train.fit`.
    """
    config = config or fish_config()
    device = device or get_device()
    started = time.perf_counter()
    state, weights_used = resnet34_weights(config.weights, log)
    if weights_used == RANDOM_WEIGHTS and random_config is not None:
        config = random_config
    dataset, train_idx, test_idx, shared = transfer_data(root, config, group_fn)
    classes = dataset.classes
    test_set, train_loader, test_loader = _transfer_loaders(dataset, train_idx, test_idx, config, device)
    amp_dtype = resolve_amp_dtype(device, amp_dtype)  # the same precision for training, testing and the final test
    with seeded(derive_seed(config.seed, "model")):
        model = resnet34_classifier(len(classes), state)
    split = "grouped" if config.grouped else "frames"
    log(f"{len(classes)} classes; train {len(train_idx)} / test {len(test_idx)} images ({split} split, "
        f"{100 * shared:.0f}% of test images share a fish with training); weights: {weights_used}")  # fmt: skip
    folder = Path(out) if out is not None else None
    stages = _plan(config, weights_used)
    history, lrs = _train_stages(
        model, stages, train_loader, test_loader, config, weights_used, folder, device, amp_dtype, progress, log
    )
    unfreeze(model)
    outputs, targets = predict(model, test_loader, device, amp_dtype)
    accuracy = (outputs.argmax(1) == targets).float().mean().item() * 100
    result = TransferResult(
        model=model, classes=classes, weights=weights_used, stages=[s[0] for s in stages], history=history,
        lrs=lrs, test_accuracy=accuracy, confusion=confusion_matrix(outputs.argmax(1), targets, len(classes)),
        outputs=outputs, targets=targets, test_set=test_set, split=split, shared_group_fraction=shared,
        train_images=len(train_idx), test_images=len(test_idx), config=config, seconds=time.perf_counter() - started,
    )  # fmt: skip
    log(f"test accuracy {accuracy:.2f}% ({split} split, weights: {weights_used})")
    if folder is not None:
        _save_run(result, folder, root, describe_device(device, amp_dtype))
    return result


def _transfer_loaders(dataset, train_idx, test_idx, config: FishConfig, device: torch.device):
    """(test_set, train_loader, test_loader) of a split, with the ImageNet-style transforms at ``config.image_size``."""
    train_set = dataset.subset(train_idx, imagenet_train_transforms(config.image_size))
    test_set = dataset.subset(test_idx, imagenet_eval_transforms(config.image_size))
    train_loader = make_loader(train_set, config.batch_size, train=True, seed=config.seed, device=device)
    return test_set, train_loader, make_loader(test_set, config.batch_size, train=False, device=device)


def _train_stages(
    model, stages, train_loader, test_loader, config: FishConfig, weights_used: str, folder: Path | None,
    device: torch.device, amp_dtype, progress: bool, log,
) -> tuple[list[dict], list[float]]:  # fmt: skip
    """Each stage of :func:`_plan` through :func:`cifar.transfer.fit_one_cycle` (checkpointed under ``folder``);
    the joined history (epochs numbered across stages, each row naming its stage) and per-batch LRs."""
    history: list[dict] = []
    lrs: list[float] = []
    for number, (name, epochs, max_lr, factor, frozen) in enumerate(stages, 1):
        if frozen:
            freeze_backbone(model)
        else:
            unfreeze(model)
        log(f"stage {number}/{len(stages)}: {name}, {epochs} epoch(s), one-cycle max LR {max_lr:g}")
        stage_dir = folder / f"stage{number}_{name.replace(' ', '_')}" if folder is not None else None
        result = fit_one_cycle(
            epochs, max_lr, model, train_loader, test_loader, config.weight_decay, config.grad_clip,
            config.optimizer, backbone_lr_factor=factor, device=device, seed=derive_seed(config.seed, "stage", number),
            checkpoint_dir=stage_dir, config={**asdict(config), "stage": name, "weights_used": weights_used},
            progress=progress, max_steps_per_epoch=config.max_steps_per_epoch, log=log, amp_dtype=amp_dtype,
        )  # fmt: skip
        offset = len(history)
        history += [{**row, "epoch": offset + row["epoch"], "stage": name} for row in result.history]
        lrs += result.lrs
    return history, lrs


def _save_run(result: TransferResult, folder: Path, root, device_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_history(result.history, folder)
    record = {
        "weights": result.weights,
        "stages": result.stages,
        "image_size": list(result.config.image_size),
        "split": result.split,
        "shared_group_fraction": round(result.shared_group_fraction, 4),
        "train_images": result.train_images,
        "test_images": result.test_images,
        "test_accuracy": round(result.test_accuracy, 2),
        "data": str(root) if root is not None else str(data_dir("fish_egu2017")),
        "device": device_name,
        "seconds": round(result.seconds, 1),
        "config": asdict(result.config),
    }
    save_classifier(result.model, folder / "classifier.pt", result.classes, record)
    write_summary(folder, **record, confusion=result.confusion.tolist(), classes=result.classes)


def run_leaky_split(
    root: str | Path | None = None,
    config: FishConfig | None = None,
    random_config: FishConfig | None = None,
    **kwargs,
) -> TransferResult:
    """The same run on the leaky frame-level split (stratified, ungrouped), for comparison.

    Frames of one fish then land on both sides, so the test accuracy measures memory of
    individual fish rather than recognition of species.
    """
    leaky = {"grouped": False}
    config = replace(config or fish_config(), **leaky)
    random_config = replace(random_config, **leaky) if random_config is not None else None
    return run_transfer(root, config, random_config=random_config, **kwargs)


def split_table(results: list[TransferResult]):
    """One row per run: its split, test images, share of test fish seen in training, test accuracy."""
    return pd.DataFrame([
        {"split": r.split, "test images": r.test_images,
         "share of test fish seen in training %": round(100 * r.shared_group_fraction, 1),
         "test accuracy %": round(r.test_accuracy, 2)}
        for r in results
    ]).set_index("split")  # fmt: skip


# ----------------------------------------------------------------------------- command line

# command-line options that override a field of the recipe when given
_OVERRIDES = (
    "head_epochs", "fine_tune_epochs", "batch_size", "max_lr", "fine_tune_lr", "image_size", "seed", "stages",
    "grouped", "on_error", "max_steps_per_epoch",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = fish_imagenet_recipe()
    parser = cli.base_parser(
        "python -m cifar.transfer", "Fine-tune an ImageNet ResNet-34 on a class-folder image set (the fish lesson).",
        out="runs/fish", data_help="class-folder root (default: $CIFAR_DATA_DIR/fish_egu2017, else downloaded)",
    )  # fmt: skip
    parser.add_argument("--recipe", choices=["auto", *FISH_RECIPES], default="auto",
                        help="auto (default): the imagenet recipe (head, then all layers; batch 128, 2 + 4 epochs, "
                        "peak LR 0.01) when the ImageNet weights load, else the random one (all layers; batch 32, "
                        "15 epochs, peak LR 3e-3). The options below override single fields of it")  # fmt: skip
    parser.add_argument("--source", choices=sorted(FISH_GROUPS), default="egu2017",
                        help="kaggle: Kaggle's fish set (--data-dir: its download folder; else kagglehub)")  # fmt: skip
    parser.add_argument("--weights", help=f"the weights to try: {defaults.weights} (default), a resnet34 .pth file, "
                        "or 'none' (random weights)")  # fmt: skip
    parser.add_argument("--stages", choices=["auto", "one", "two"],
                        help="auto (default): head + fine-tuning with ImageNet weights, one stage without")  # fmt: skip
    parser.add_argument("--head-epochs", type=int, help="epochs of the head stage (default: the recipe's)")
    parser.add_argument("--fine-tune-epochs", type=int, help="epochs of the fine-tuning stage (default: the recipe's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-lr", type=float)
    parser.add_argument("--fine-tune-lr", type=float)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--leaky", dest="grouped", action="store_const", const=False,
                        help="use the leaky frame-level split (for comparison)")  # fmt: skip
    parser.add_argument("--on-error", choices=["raise", "skip"], help="unreadable images (default: raise)")
    parser.add_argument("--max-steps", dest="max_steps_per_epoch", type=int, help="cap batches per epoch (smoke tests)")
    args = parser.parse_args(argv)
    if args.image_size is not None:
        args.image_size = tuple(args.image_size)
    return args


def config_from_args(args: argparse.Namespace, recipe: str) -> FishConfig:
    """The named recipe (its smoke test with ``--fast``) with the fields given on the command line replaced."""
    config = cli.apply_overrides(fish_config(recipe, args.fast), args, _OVERRIDES)
    if args.weights is None:
        return config
    return replace(config, weights=None if args.weights.lower() == "none" else args.weights)


def main(argv: list[str] | None = None) -> dict:
    """Run the lesson from the command line; writes the run folder and returns its summary."""
    return cli.run(lambda: _main(parse_args(argv), argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    config = config_from_args(args, "imagenet" if args.recipe == "auto" else args.recipe)
    random_config = None
    if args.recipe == "auto":  # --weights names the weights to try, not those of the random start
        random_config = replace(config_from_args(args, "random"), weights=None)
    out = Path(args.out)
    device = get_device()
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision])
    print(f"device: {describe_device(device, amp_dtype)}")
    root = fish_root(args.data_dir, args.source)
    result = run_transfer(root, config, out, device, group_fn=FISH_GROUPS[args.source], random_config=random_config,
                          amp_dtype=amp_dtype)  # fmt: skip
    plot_history(result.history, target=None).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    steps = max(1, len(result.lrs) // max(1, len(result.history)))
    plot_lrs(result.lrs, steps).savefig(out / "lr_trace.png", dpi=120, bbox_inches="tight")
    plot_confusion(result.confusion, result.classes).savefig(out / "confusion.png", dpi=120, bbox_inches="tight")
    print(per_class_accuracy(result.confusion, result.classes).to_string())
    return write_summary(out, command=cli.command_line("cifar.transfer", argv))


if __name__ == "__main__":
    main()
