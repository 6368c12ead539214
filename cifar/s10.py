"""The S10 lesson: CustomResNet on CIFAR-10, its recipes, their records, and ``python -m cifar.s10``.

A recipe is an :class:`S10Config` (the lesson's own is the default; :data:`RECIPES` names the
others). :func:`s10_data`, :func:`s10_model`, :func:`s10_max_lr` and :func:`s10_fit` run it
with the engine of :mod:`cifar.train`; :func:`save_s10_weights` writes the weights with the
record that :func:`restore_run` and the weights tests check.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from . import cli
from .artifacts import load_model, read_summary, record_path, save_atomic, save_history, save_weights, write_summary
from .dataset import (
    CIFAR10_CLASSES,
    AlbumentationsDataset,
    BatchAugment,
    TensorBatches,
    class_balanced_subset,
    file_sha256,
    load_cifar10,
    local_cifar10_source,
    make_loader,
    mean_std,
    test_transforms,
    train_transforms,
)
from .model import (
    CustomResNet,
    freeze_batch_norm_weights,
    init_dirac_,
    init_whitening_,
    set_batch_norm_momentum,
    use_ghost_batch_norm,
)
from .scheduler import (
    LRFinderResult,
    find_lr,
    lr_trace,
    make_optimizer,
    one_cycle,
    range_test_figure,
    weight_and_bias_groups,
)
from .train import (
    CHECKPOINT_NAME,
    FitOptions,
    FitResult,
    WeightAverage,
    accuracy_score,
    first_epoch_reaching,
    fit,
    predict,
    run_seconds,
)
from .utils import (
    PRECISIONS,
    data_dir,
    derive_seed,
    describe_device,
    get_device,
    plot_history,
    plot_lrs,
    precision_name,
    resolve_amp_dtype,
    seed_loader,
    seeded,
)


@dataclass
class Tricks:
    """Optional fast-training tricks for the S10 network; all off by default (the lesson's recipe).

    They change how the network is initialised, optimised, fed and tested, never the network
    itself (its 6,573,130 parameters; weights trained with them load into a plain CustomResNet).
    """

    whiten_init: bool = False  # first conv starts as PCA whitening of 3x3 training patches (airbench)
    freeze_whitening: bool = False  # ... and is then never trained: a fixed whitening layer (airbench, Page)
    dirac_init: bool = False  # the other 3x3 convs start as identities on their first in-channels (airbench)
    freeze_bn_weight: bool = False  # batch-norm scales fixed at 1 (Page)
    bias_lr_factor: float = 1.0  # biases train with LR x factor and weight decay / factor (Page: 64)
    ghost_batch: int | None = None  # batch-norm statistics over virtual batches of this size in training (Page: 32)
    bn_momentum: float = 0.1  # PyTorch's convention: the weight of each new batch in the running statistics
    average_every: int | None = None  # weight EMA (batch-norm statistics included) every n steps; tests use it
    average_decay: float = 0.99  # its decay per update, ramped up from 0 (WeightAverage)
    lookahead: bool = False  # the weights are set to their average at every update (airbench's lookahead)
    alternating_flip: bool = False  # each image flipped in every other epoch instead of at random (airbench)
    translate: int = 4  # the random crop's largest shift in pixels (tensor loader; airbench: 2)
    cutout: int = 8  # side of the cut-out hole, on half the images (tensor loader; 0: none)
    shift_tta: bool = False  # multi-crop test-time augmentation: flips of the image and of 1-pixel shifts (airbench)

    def any(self) -> bool:
        return self != Tricks()


LOADERS = ("albumentations", "tensor")  # the values of S10Config.loader


@dataclass
class S10Config:
    """Everything that defines an S10 run; saved with its checkpoints (all fields) and weights
    (:func:`recipe_record`).

    The defaults are the lesson's recipe: Nesterov SGD with weight decay 5e-4, label smoothing
    0.2 and logits scaled by 1/8 (David Page's ResNet-9 recipe for this network), the one-cycle
    peak from the LR range test. :func:`s10_original_recipe` is the Adam recipe it is compared with.
    """

    epochs: int = 24
    batch_size: int = 512
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    max_lr: float | None = None  # None: take the LR range test's suggestion
    finder_start_lr: float = 1e-5
    finder_end_lr: float = 10.0
    finder_iters: int = 100
    # "steepest" is torch-lr-finder's own suggestion; "min/10" (a tenth of the lowest-loss LR,
    # fastai's rule for Adam) gave SGD a peak 15x below Page's 0.4 on this network
    finder_rule: str = "steepest"
    pct_start: float = 5 / 24  # peak LR after epoch 5 of 24
    div_factor: float = 100.0
    final_div_factor: float = 100.0
    label_smoothing: float = 0.2
    dropout: float = 0.0
    seed: int = 1  # every random draw of the run derives from it (cifar.utils.derive_seed)
    eval_every: int = 1  # test after every n-th epoch and after the last (see fit)
    # class-balanced subsets (class_balanced_subset): how many images in all, a tenth of them from
    # each class; None: the whole split
    train_subset: int | None = None
    test_subset: int | None = None
    logit_scale: float = 0.125  # the logits are multiplied by it (CustomResNet(logit_scale=...)); 1.0: plain
    # "albumentations": per-image augmentation on the CPU (cifar.dataset.train_transforms);
    # "tensor": whole batches augmented on the training device (cifar.dataset.TensorBatches), no colour jitter
    loader: Literal["albumentations", "tensor"] = "albumentations"
    flip_tta: bool = False  # test with flip test-time augmentation (each image and its mirror image)
    tricks: Tricks = field(default_factory=Tricks)

    def __post_init__(self):
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {LOADERS}, not {self.loader!r}")


@dataclass
class S10Data:
    """Loaders plus what the lesson shows about the data."""

    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_images: object
    train_labels: object
    test_images: object
    test_labels: object


def s10_data(
    config: S10Config, root: str | Path | None = None, download: bool = False, device: torch.device | None = None
) -> S10Data:
    """Real CIFAR-10 through the data layer, mean/std from the training set, S10 transforms.

    ``device`` (default :func:`cifar.utils.get_device`) is the one the model trains on: the tensor
    loader keeps its images there, and the DataLoaders choose workers and pinned memory for it.
    """
    device = device or get_device()
    train_images, train_labels = load_cifar10("train", root, download)
    test_images, test_labels = load_cifar10("test", root, download)
    mean, std = mean_std(train_images)
    train_images, train_labels = class_balanced_subset(
        train_images, train_labels, config.train_subset, derive_seed(config.seed, "train subset")
    )
    test_images, test_labels = class_balanced_subset(
        test_images, test_labels, config.test_subset, derive_seed(config.seed, "test subset")
    )
    test_set = AlbumentationsDataset(test_images, test_labels, test_transforms(mean, std))
    if config.loader == "tensor":
        tricks = config.tricks
        augment = BatchAugment(config.seed, tricks.translate, tricks.cutout, tricks.alternating_flip)
        train_loader = TensorBatches(train_images, train_labels, config.batch_size, mean, std, True, device, augment)
    else:
        train_set = AlbumentationsDataset(train_images, train_labels, train_transforms(mean, std))
        train_loader = make_loader(train_set, config.batch_size, train=True, seed=config.seed, device=device)
    return S10Data(
        train_loader,
        make_loader(test_set, 1000, train=False, device=device),
        mean,
        std,
        train_images,
        train_labels,
        test_images,
        test_labels,
    )


def s10_model(config: S10Config, data: S10Data | None = None) -> nn.Module:
    """A freshly initialised CustomResNet, with the recipe's initialisation tricks.

    Its initial weights come from ``derive_seed(config.seed, "model")`` through a forked RNG, so
    the same config gives the same network and the caller's random stream is left as it was.
    ``data`` is needed for ``tricks.whiten_init`` (the whitening comes from its training images).
    """
    with seeded(derive_seed(config.seed, "model")):
        model = CustomResNet(dropout=config.dropout, logit_scale=config.logit_scale)
    tricks = config.tricks
    first_conv = model.prep[0]
    if tricks.whiten_init:
        if data is None:
            raise ValueError("tricks.whiten_init needs the data: s10_model(config, data)")
        init_whitening_(first_conv, whitening_sample(data))
    if tricks.freeze_whitening:
        if not tricks.whiten_init:
            raise ValueError("tricks.freeze_whitening freezes the whitening: it needs tricks.whiten_init")
        first_conv.weight.requires_grad_(False)
    if tricks.dirac_init:
        init_dirac_(model, skip=(first_conv,))
    if tricks.freeze_bn_weight:
        freeze_batch_norm_weights(model)
    if tricks.ghost_batch is not None:
        use_ghost_batch_norm(model, tricks.ghost_batch)
    set_batch_norm_momentum(model, tricks.bn_momentum)
    return model


def whitening_sample(data: S10Data, images: int = 5000) -> torch.Tensor:
    """The first ``images`` training images, normalized as the network sees them (N, C, H, W)."""
    sample = torch.from_numpy(data.train_images[:images]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (sample - mean) / std


def s10_loss(config: S10Config) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def s10_find_lr(model: nn.Module, data: S10Data, config: S10Config, device: torch.device):
    """The LR range test of the recipe; its suggestion becomes the one-cycle maximum."""
    seed_loader(data.train_loader, derive_seed(config.seed, "lr range test"))
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.finder_start_lr, config.weight_decay)
    return find_lr(
        model,
        optimizer,
        s10_loss(config),
        data.train_loader,
        device,
        end_lr=config.finder_end_lr,
        num_iter=config.finder_iters,
        rule=config.finder_rule,
    )


def s10_fit(
    model: nn.Module,
    data: S10Data,
    config: S10Config,
    max_lr: float,
    device: torch.device,
    checkpoint_dir: str | Path | None = None,
    options: FitOptions | None = None,
) -> FitResult:
    """One-cycle training of the recipe with ``max_lr`` as the peak; resumable with ``checkpoint_dir``.

    ``options`` says how to run (progress, log, precision, a cap on the batches per epoch, how often
    to save within an epoch; default: a save every 5 minutes); the recipe sets the rest (loss, seed,
    tests, weight average), and the configuration saved with the checkpoints is the recipe's.
    """
    tricks = config.tricks
    groups = weight_and_bias_groups(model, config.weight_decay, tricks.bias_lr_factor)
    max_lrs = [max_lr * group["lr_factor"] for group in groups]
    optimizer = make_optimizer(config.optimizer, groups, max_lr / config.div_factor, config.weight_decay)
    options = options if options is not None else FitOptions(checkpoint_minutes=5.0)
    steps = len(data.train_loader)
    if options.max_steps_per_epoch is not None:
        steps = min(options.max_steps_per_epoch, steps)
    schedule = one_cycle(
        optimizer, max_lrs, config.epochs, steps, config.pct_start, config.div_factor, config.final_div_factor
    )
    average = None
    if tricks.average_every is not None:
        total = config.epochs * steps
        average = WeightAverage(model, total, tricks.average_every, tricks.average_decay, tricks.lookahead)
    options = replace(
        options,
        device=device,
        checkpoint_dir=checkpoint_dir,
        config={**asdict(config), "max_lr": max_lr},
        loss_fn=s10_loss(config),
        seed=config.seed,
        eval_every=config.eval_every,
        tta=s10_tta(config),
        average=average,
    )
    return fit(model, data.train_loader, data.test_loader, optimizer, schedule, config.epochs, options)


def s10_tta(config: S10Config) -> str:
    """The recipe's test-time augmentation (:data:`cifar.train.TTA_VIEWS`): multi-crop, flips or none."""
    return "shift" if config.tricks.shift_tta else "flip" if config.flip_tta else "none"


# The records keep these fields of S10Config under "extra", each only where it differs from the
# value given here (a plain network fed by albumentations), so a record lists what its recipe adds.
RECORD_EXTRA = {"loader": "albumentations", "flip_tta": False, "logit_scale": 1.0}


def recorded_option(record: dict, name: str):
    """The value of the S10Config field ``name`` (one of :data:`RECORD_EXTRA`) in a weights record."""
    return record.get("recipe", {}).get("extra", {}).get(name, RECORD_EXTRA[name])


def recipe_record(config: S10Config, max_lr: float) -> dict:
    """The recipe as the weights' provenance JSON records it (see :data:`RECORD_EXTRA` for ``extra``)."""
    extra = {name: getattr(config, name) for name, plain in RECORD_EXTRA.items() if getattr(config, name) != plain}
    return {
        "optimizer": config.optimizer,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
        "max_lr": max_lr,
        "max_lr_from": "given" if config.max_lr is not None else f"LR range test, rule {config.finder_rule}",
        "schedule": f"OneCycleLR two-phase linear, peak at epoch {config.pct_start * config.epochs:g} of "
        f"{config.epochs}, div_factor {config.div_factor:g}, final_div_factor "
        f"{config.final_div_factor:g}, stepped per batch",
        "label_smoothing": config.label_smoothing,
        "extra": extra,
        "augmentation": "cifar.dataset.TensorBatches"
        if config.loader == "tensor"
        else "cifar.dataset.train_transforms",
        **({"tricks": asdict(config.tricks)} if config.tricks.any() else {}),
    }


def save_s10_weights(
    model: nn.Module,
    path: str | Path,
    config: S10Config,
    max_lr: float,
    history: list[dict],
    summary: dict,
    data: S10Data,
    data_root: str | Path | None,
) -> Path:
    """The weights in the course's format (:func:`cifar.artifacts.save_weights`) with the S10 run's record."""
    root = data_root if data_root is not None else data_dir("cifar10")
    source = local_cifar10_source(Path(root), "train") if root is not None else None
    record = {
        "architecture": type(model).__name__,
        "classes": list(CIFAR10_CLASSES),
        "mean": list(data.mean),
        "std": list(data.std),
        "epochs": config.epochs,
        "recipe": recipe_record(config, max_lr),
        "seed": config.seed,
        "command": summary.get("command"),
        "device": summary.get("device"),
        "wall_seconds": round(summary.get("epoch_seconds", 0.0), 1),
        "wall_seconds_means": "sum of the epochs' training and test-evaluation times (LR range test excluded)",
        "train_data": source.name if source is not None else "torchvision CIFAR10 download",
        "train_data_sha256": file_sha256(source) if source is not None and source.is_file() else None,
        "train_images": int(len(data.train_labels)),
        "test_images": int(len(data.test_labels)),
        "test_accuracy": round(history[-1]["test_acc"], 2),
        "first_epoch_90": first_epoch_reaching(history, 90.0),
        "history": history,
    }
    return save_weights(model, path, record)


def load_s10_weights(path: str | Path) -> tuple[nn.Module, dict]:
    """The CustomResNet saved by :func:`save_s10_weights` (in float32, eval mode) and its record."""
    return load_model(
        path, lambda record: CustomResNet(logit_scale=recorded_option(record, "logit_scale")), "CustomResNet"
    )


TTA_CHOICES = ("recorded", "none", "flip", "shift")


def evaluate_weights(
    path: str | Path,
    root: str | Path | None = None,
    device: torch.device | None = None,
    batch_size: int = 500,
    amp_dtype: torch.dtype | None | str = "auto",
    tta: str = "recorded",
    sample: int | None = None,
) -> dict:
    """Test loss, accuracy (%) and predicted classes of saved S10 weights on the CIFAR-10 test set.

    Uses the normalization and the test-time augmentation recorded beside the weights, or the
    ``tta`` given instead: ``none``, ``flip`` or ``shift`` (flips of the image and of its
    1-pixel shifts), to measure what each adds. ``sample``: only this many test images, a seeded
    random draw (``indices``, in the test set's order), else all of them.
    """
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, not {tta!r}")
    model, record = load_s10_weights(path)
    device = device or get_device()
    images, labels = load_cifar10("test", root)
    indices = np.arange(len(labels))
    if sample is not None:
        indices = np.sort(np.random.default_rng(0).permutation(len(labels))[:sample])
        images, labels = images[indices], labels[indices]
    loader = make_loader(
        AlbumentationsDataset(images, labels, test_transforms(tuple(record["mean"]), tuple(record["std"]))),
        batch_size,
        train=False,
        device=device,
    )
    model.to(device).to(memory_format=torch.channels_last)
    if tta == "recorded":
        shift = bool(record["recipe"].get("tricks", {}).get("shift_tta", False))
        tta = "shift" if shift else "flip" if recorded_option(record, "flip_tta") else "none"
    amp_dtype = resolve_amp_dtype(device, amp_dtype)
    outputs, targets = predict(model, loader, device, amp_dtype, tta=tta)
    return {
        "loss": nn.functional.cross_entropy(outputs, targets).item(),
        "accuracy": accuracy_score(outputs, targets).mean().item(),
        "images": len(labels),
        "predictions": outputs.argmax(1).tolist(),
        "indices": indices.tolist(),
    }


def save_predictions(predictions: list[int], path: str | Path) -> Path:
    """The predicted class of every test image, in the test set's order, as one line of digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(str(label) for label in predictions) + "\n")
    return path


def load_predictions(path: str | Path) -> np.ndarray:
    """The classes :func:`save_predictions` wrote."""
    return np.array([int(digit) for digit in Path(path).read_text().strip()], dtype=np.int64)


def restore_run(
    weights: str | Path, run_dir: str | Path, config: S10Config | None = None, range_test: str | Path | None = None
) -> Path:
    """Rebuild a finished run folder from saved weights and their record, without training.

    ``run_dir`` gets what a finished ``python -m cifar.s10`` leaves there: a checkpoint (the
    weights in float32, the run's history, the LR of every batch recomputed from its schedule),
    ``history.csv``/``.json`` and ``summary.json`` (configuration, peak LR, device, command, time).
    The notebook and :func:`fit` then find a finished run and go straight to its analysis. The
    checkpoint holds no optimizer state: it cannot be trained further. ``config`` (default: the
    lesson's recipe) must be the recipe the record describes. A range test of that recipe already
    run in ``run_dir`` (on another machine, say) is kept for its plot, its suggestion as
    ``rerun_max_lr``; the peak LR becomes the recorded one. ``range_test``, a record written by
    :func:`record_range_test` (``weights/records/s10_range_test.json``), gives the plot instead, so
    that nothing has to run: it replaces any range test of the folder.
    """
    model, record = load_s10_weights(weights)
    config = config or S10Config()
    max_lr = record["recipe"]["max_lr"]
    expected = {"recipe": recipe_record(config, max_lr), "epochs": config.epochs, "seed": config.seed}
    found = {key: record.get(key) for key in expected}
    if found != expected:
        raise ValueError(f"{weights} was trained with another recipe:\n  record: {found}\n  config: {expected}")
    folder = Path(run_dir)
    summary = read_summary(folder)
    if (folder / CHECKPOINT_NAME).is_file() and "restored_from" not in summary:
        raise ValueError(f"{folder} holds a run's own checkpoint; restore into another run folder")
    if summary and summary.get("config") != asdict(config):
        raise ValueError(f"{folder} holds a run of another configuration; use another run folder")
    # a range test run in this folder before (on this machine, say) is kept for its plot: its suggestion as
    # rerun_max_lr, even where it equals the recorded one (restoring a restored folder again keeps the first)
    rerun = {"rerun_max_lr": summary["max_lr"]} if "max_lr" in summary and "restored_from" not in summary else {}
    if range_test is not None:
        rerun = recorded_range_test(range_test, config)
    history = record["history"]
    steps_per_epoch = -(-record["train_images"] // config.batch_size)
    lrs = lr_trace(
        max_lr,
        config.epochs,
        steps_per_epoch,
        pct_start=config.pct_start,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
    ).tolist()
    last_lrs = [lrs[row["epoch"] * steps_per_epoch - 1] for row in history]
    if not all(abs(a - row["lr"]) <= 1e-9 * max_lr for a, row in zip(last_lrs, history)):
        raise ValueError(f"the schedule recomputed for {weights} does not match the LRs of its history")
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": None,
        "scheduler": None,
        "epoch": len(history),
        "history": history,
        "lrs": lrs,
        "config": {**asdict(config), "max_lr": max_lr},
        "restored_from": Path(weights).name,
        "command": record["command"],
        "device": record["device"],
    }
    save_atomic(state, folder / CHECKPOINT_NAME)
    save_history(history, folder)
    write_summary(
        folder,
        config=asdict(config),
        max_lr=max_lr,
        device=record["device"],
        command=record["command"],
        epoch_seconds=record["wall_seconds"],
        history=history,
        first_epoch_90=record["first_epoch_90"],
        restored_from=Path(weights).name,
        **rerun,
    )
    return folder


def run_results(history: list[dict], target: float = 90.0) -> dict:
    """A finished run's results, read from its history: the one source of the notebook's, the command
    line's and the weights' record's numbers.

    ``final_acc``, ``best_acc`` (``best_epoch``): the run's own tests, each of the weights at the end of
    that epoch, in the run's arithmetic and with its recipe's test-time augmentation; ``first_epoch``:
    the first tested epoch at or above ``target`` %; ``training_min``, ``testing_min``, ``total_min``:
    :func:`cifar.train.run_seconds` in minutes.
    """
    tested = [row for row in history if row["test_acc"] is not None]
    best = max(tested, key=lambda row: row["test_acc"])
    minutes = {f"{part}_min": seconds / 60 for part, seconds in run_seconds(history).items()}
    return {
        "epochs": len(history),
        "final_acc": history[-1]["test_acc"],
        "final_train_acc": history[-1]["train_acc"],
        "best_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "target": target,
        "first_epoch": first_epoch_reaching(history, target),
        **minutes,
    }


def run_report(history: list[dict], device: str | None = None, target: float = 90.0) -> str:
    """:func:`run_results` as the lines the notebook and ``python -m cifar.s10`` print."""
    r = run_results(history, target)
    accuracy = (
        f"epochs: {r['epochs']}  |  final test accuracy: {r['final_acc']:.2f}%  |  best: {r['best_acc']:.2f}% "
        f"(epoch {r['best_epoch']})  |  final train accuracy (augmented images): {r['final_train_acc']:.2f}%"
    )
    time = (
        f"time: {r['total_min']:.1f} min = {r['training_min']:.1f} min training + {r['testing_min']:.1f} min "
        "testing (the epochs' own time; the range test and any pause not counted)"
    )
    where = f", on {device}" if device else ""
    return "\n".join([accuracy, f"first epoch at or above {target:g}%: {r['first_epoch']}", time + where])


def recipe_table(*weights: str | Path):
    """The recipes and final accuracies of saved S10 runs side by side, from their records (a DataFrame, one
    column per run): what differs between two recipes, and what each run reached."""
    import pandas as pd

    columns = {}
    for path in weights:
        record = json.loads(record_path(path).read_text())
        recipe, last = record["recipe"], record["history"][-1]
        columns[Path(path).name] = {
            "optimizer": recipe["optimizer"],
            "weight decay": recipe["weight_decay"],
            "label smoothing": recipe["label_smoothing"],
            "logit scale": recorded_option(record, "logit_scale"),
            "peak LR": f"{recipe['max_lr']:.3g}",
            "peak LR from": recipe["max_lr_from"],
            "epochs": record["epochs"],
            "seed": record["seed"],
            "final train accuracy % (augmented)": round(last["train_acc"], 2),
            "final test accuracy %": round(last["test_acc"], 2),
        }
    return pd.DataFrame(columns)


TRICK_NAMES = tuple(Tricks.__dataclass_fields__)
_SWITCHES = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def parse_trick(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` for one field of :class:`Tricks`, the value read by the field's type."""
    name, sep, value = text.partition("=")
    if not sep or name not in TRICK_NAMES:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(TRICK_NAMES)}: {text!r}")
    default = getattr(Tricks(), name)
    try:
        if isinstance(default, bool):
            return name, _SWITCHES[value.lower()]
        if value.lower() == "none":
            return name, None
        return name, float(value) if isinstance(default, float) else int(value)
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{name} takes {type(default).__name__}, not {value!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = S10Config()
    parser = cli.base_parser(
        "python -m cifar.s10",
        "Train the S10 CustomResNet on CIFAR-10 (the lesson's recipe).",
        out="runs/s10",
        data_help="folder with cifar10_{train,test}.zip or train/ test/ class folders "
        "(default: $CIFAR_DATA_DIR/cifar10)",
    )
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision if no local copy")
    parser.add_argument("--weights", default="weights/s10_custom_resnet.pt", help="where to write the final weights")
    parser.add_argument(
        "--recipe",
        type=_recipe_key,
        choices=sorted(RECIPES),
        default="lesson",
        help="lesson: the lesson's recipe (Nesterov SGD, LR from the range test, 24 epochs); "
        "original: the Adam recipe (one-cycle Adam, peak LR by the min/10 rule); "
        "short: s10_short_recipe() (11 epochs); "
        "tricks: s10_tricks_recipe() (6 epochs, the fast-training tricks). "
        "The options below override single fields of it",
    )
    parser.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], help=f"default {defaults.optimizer}")
    parser.add_argument("--weight-decay", type=float, help=f"default {defaults.weight_decay}")
    parser.add_argument("--max-lr", type=float, help="skip the LR range test and use this peak LR")
    parser.add_argument("--finder-end-lr", type=float, help=f"default {defaults.finder_end_lr}")
    parser.add_argument("--finder-iters", type=int, help=f"default {defaults.finder_iters}")
    parser.add_argument(
        "--finder-rule",
        choices=["min/10", "steepest"],
        help=f"how the range test picks the peak LR (default {defaults.finder_rule})",
    )
    parser.add_argument("--label-smoothing", type=float, help=f"default {defaults.label_smoothing}")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument(
        "--eval-every", type=int, help=f"test after every n-th epoch and the last (default {defaults.eval_every})"
    )
    parser.add_argument(
        "--train-subset",
        type=int,
        metavar="N",
        help="train on a class-balanced subset of N images in all (N // 10 of each class)",
    )
    parser.add_argument(
        "--test-subset",
        type=int,
        metavar="N",
        help="test on a class-balanced subset of N images in all (N // 10 of each class)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap batches per epoch (smoke tests)")
    parser.add_argument(
        "--evaluate",
        metavar="WEIGHTS",
        default=None,
        help="no training: evaluate saved weights (e.g. weights/s10_custom_resnet.pt) on the whole "
        "test set and compare with the accuracy recorded beside them",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="recorded",
        help="with --evaluate: the test-time augmentation (default: the one recorded with the weights)",
    )
    parser.add_argument(
        "--predictions",
        metavar="FILE",
        default=None,
        help="with --evaluate: also write the predicted class of every test image to FILE "
        "(weights/predictions/<name>.txt: what the weights test checks a sample against)",
    )
    parser.add_argument(
        "--trick",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=parse_trick,
        help="set one field of the recipe's Tricks, e.g. whiten_init=off or ghost_batch=32 "
        "(repeatable; for ablations); fields: " + ", ".join(TRICK_NAMES),
    )
    parser.add_argument(
        "--range-test",
        metavar="RECORD",
        default=None,
        help="no training: run the recipe's LR range test once and write its record (LRs, losses, suggestions, "
        "command, device, time) to RECORD, e.g. weights/records/s10_range_test.json, which notebook 03 draws",
    )
    parser.add_argument(
        "--restore",
        metavar="WEIGHTS",
        default=None,
        help="no training: rebuild the run folder (--out) of the finished run that wrote WEIGHTS "
        "(recipe from --recipe), so that the notebook analyses that run",
    )
    return parser.parse_args(argv)


def s10_max_lr(model: nn.Module, data: S10Data, config: S10Config, device: torch.device, run_dir=None):
    """The one-cycle peak LR and the range-test figure.

    ``config.max_lr`` when given; otherwise the LR range test's suggestion. The test runs once
    per run folder: its suggestion and plot are saved there and reused when the run resumes,
    so a resumed run keeps exactly the schedule it started with. A folder rebuilt by
    :func:`restore_run` gives the peak LR recorded with the weights, and says where its plot
    (if any) comes from. The figure's title states the peak LR the run used; a range test
    re-run in a restored folder is drawn with the run's peak LR marked beside its own suggestion.
    """
    if config.max_lr is not None:
        return config.max_lr, None
    summary = read_summary(run_dir)
    plot_path = None if run_dir is None else Path(run_dir) / "lr_finder.png"
    if "max_lr" in summary and (plot_path.is_file() or "restored_from" in summary):
        if summary.get("config") != asdict(config):
            raise ValueError(f"{run_dir} holds a run of another configuration; use another run folder.")
        max_lr, rerun = summary["max_lr"], summary.get("rerun_max_lr")
        figure = None
        if "finder" in summary:  # the test's own numbers: drawn again, titled with the run's peak LR
            finder = summary["finder"]
            title = f"LR range test, {len(finder['lrs'])} steps: peak LR {max_lr:.2e}"
            if rerun is not None:
                where = "recorded" if summary.get("range_test_from", {}).get("record") else "re-run here"
                title = f"LR range test {where} (suggests {rerun:.2e}); the run's peak LR {max_lr:.2e}"
            figure = range_test_figure(finder["lrs"], finder["losses"], config.finder_iters, max_lr, title)
        elif plot_path.is_file():
            figure, ax = plt.subplots(figsize=(6, 4))
            ax.imshow(plt.imread(plot_path))
            ax.axis("off")
            plt.close(figure)
        if "restored_from" in summary:
            if figure is None:
                plot = "no range-test plot was kept"
            elif summary.get("range_test_from", {}).get("record"):
                source = summary["range_test_from"]
                plot = (
                    f"the plot is the recorded range test {source['record']} (`{source['command']}`, "
                    f"{source['seconds'] / 60:.1f} min on {source['device']}), which suggests {rerun:.3e}"
                )
            elif "range_test_from" in summary:
                source = summary["range_test_from"]
                plot = (
                    f"the plot is a range test run here ({source['seconds'] / 60:.1f} min on {source['device']}), "
                    f"which suggests {rerun:.3e}"
                )
            elif rerun is not None:
                plot = f"the plot is a range test re-run in this folder, which suggests {rerun:.3e}"
            else:
                plot = "the plot is that run's range test"
            print(
                f"peak LR {max_lr:.3e} from the range test of the run that wrote "
                f"{summary['restored_from']} ({summary.get('device')}); {plot}"
            )
        return max_lr, figure
    result = s10_find_lr(model, data, config, device)
    print(f"LR range test: {len(result.lrs)} steps in {result.seconds / 60:.1f} min")  # its one line of progress
    if plot_path is not None:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        result.figure.savefig(plot_path, dpi=120, bbox_inches="tight")
        write_summary(
            run_dir,
            config=asdict(config),
            max_lr=result.suggested_lr,
            finder={
                "lrs": result.lrs,
                "losses": result.losses,
                "steepest_lr": result.steepest_lr,
                "min_loss_lr": result.min_loss_lr,
                "rule": result.rule,
            },
        )
    return result.suggested_lr, result.figure


def describe_range_test(run_dir: str | Path, reference_lr: float | None = None) -> str:
    """What the range test kept in ``run_dir`` says, and how the peak LR of the run compares with it.

    The steepest-descent point and the lowest loss, what the min/10 rule would take, and how many
    times ``reference_lr`` (default: the short recipe's peak, David Page's 0.4 for this network) is
    that; where the test was re-run in a restored folder, how many of the test's exponential steps
    its suggestion lies from the peak LR the run used.
    """
    summary = read_summary(run_dir)
    finder = summary.get("finder")
    if finder is None:
        return f"no range test kept in {Path(run_dir).name} (peak LR {summary.get('max_lr')})"
    reference_lr = s10_short_recipe().max_lr if reference_lr is None else reference_lr
    lrs, steepest, lowest = finder["lrs"], finder["steepest_lr"], finder["min_loss_lr"]
    lines = [
        f"range test: {len(lrs)} steps from {lrs[0]:.2e} to {lrs[-1]:.2e}; steepest descent at {steepest:.3e}, "
        f"lowest loss at {lowest:.3e}",
        f"min/10 rule: {lowest / 10:.3e}; {reference_lr:g} (Page's peak for this network) is "
        f"{reference_lr / (lowest / 10):.1f} times that",
    ]
    max_lr = summary.get("max_lr")
    if "rerun_max_lr" in summary and max_lr is not None:
        steps = np.log(max_lr / steepest) / np.log(lrs[1] / lrs[0])
        lines.append(
            f"the run trained with the peak LR of its own range test, {max_lr:.3e}: {abs(steps):.1f} of "
            f"this test's steps {'above' if steps > 0 else 'below'} this test's steepest point"
        )
    elif max_lr is not None:
        lines.append(f"the run's peak LR: {max_lr:.3e} (rule {finder['rule']})")
    return "\n".join(lines)


def range_test_record(result: LRFinderResult, config: S10Config, device: torch.device, command: str = "") -> dict:
    """A range test of ``config``'s recipe (:func:`s10_find_lr`) as :func:`record_range_test` writes it: every LR
    tried and its smoothed loss, the suggestions, the command, the machine, the arithmetic and the time."""
    return {
        "what": "the LR range test of the recipe, from its initial weights (s10_find_lr); not the test of a "
        "training run, whose suggestion is in its weights' record",
        "command": command,
        "device": describe_device(device, resolve_amp_dtype(device, "auto")),
        "seconds": round(result.seconds, 1),
        "config": asdict(config),
        "steps": len(result.lrs),
        "lrs": result.lrs,
        "losses": result.losses,
        "steepest_lr": result.steepest_lr,
        "min_loss_lr": result.min_loss_lr,
        "rule": result.rule,
        "suggested_lr": result.suggested_lr,
    }


def record_range_test(
    config: S10Config, path: str | Path, data_root: str | Path | None = None, argv: list[str] | None = None
) -> dict:
    """Run the recipe's LR range test once, from the recipe's initial weights, and write its record to ``path``.

    :func:`restore_run` draws such a record (``weights/records/s10_range_test.json``) in a restored run
    folder, so that studying the committed run does not cost a range test (tens of minutes on a CPU).
    """
    device = get_device()
    data = s10_data(config, data_root, device=device)
    result = s10_find_lr(s10_model(config, data), data, config, device)
    record = range_test_record(result, config, device, cli.command_line("cifar.s10", argv).strip())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{path}: range test of {record['steps']} steps in {result.seconds / 60:.1f} min on {record['device']}; "
        f"suggests {result.suggested_lr:.3e} ({result.rule})"
    )
    return record


# the fields of S10Config a range test depends on: a recorded test is drawn only for a recipe that shares them
RANGE_TEST_FIELDS = (
    "batch_size",
    "optimizer",
    "weight_decay",
    "label_smoothing",
    "logit_scale",
    "seed",
    "loader",
    "train_subset",
    "finder_start_lr",
    "finder_end_lr",
    "finder_iters",
    "finder_rule",
)


def recorded_range_test(source: str | Path | dict, config: S10Config) -> dict:
    """What :func:`restore_run` keeps of a range test: its numbers (``finder``), its suggestion
    (``rerun_max_lr``) and where it comes from (``range_test_from``).

    ``source`` is a record file written by :func:`record_range_test`, or a record just made by
    :func:`range_test_record` (a test run here). It must be a test of ``config``'s recipe.
    """
    record = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    differ = [name for name in RANGE_TEST_FIELDS if record["config"].get(name) != getattr(config, name)]
    if differ:
        raise ValueError(f"the range test is one of another recipe (it differs in {', '.join(differ)})")
    return {
        "finder": {key: record[key] for key in ("lrs", "losses", "steepest_lr", "min_loss_lr", "rule")},
        "rerun_max_lr": record["suggested_lr"],
        "range_test_from": {
            "record": None if isinstance(source, dict) else Path(source).name,
            "command": record["command"],
            "device": record["device"],
            "seconds": record["seconds"],
        },
    }


RUN_CHOICES = ("auto", "train", "restore")


def choose_run(run: str, device: torch.device) -> str:
    """The notebook's switch: ``"train"`` the recipe, or ``"restore"`` the committed run to study it.

    ``"auto"`` trains where a CUDA GPU is present (minutes) and restores elsewhere (hours on a CPU).
    """
    if run not in RUN_CHOICES:
        raise ValueError(f"run must be one of {RUN_CHOICES}, not {run!r}")
    if run == "auto":
        return "train" if device.type == "cuda" else "restore"
    return run


def s10_config(fast: bool = False, recipe: str = "lesson") -> S10Config:
    """A named recipe (see :data:`RECIPES`); ``fast`` shrinks it to a smoke test (small subsets, 2 short epochs)."""
    config = RECIPES[_recipe_key(recipe)]()
    if fast:
        config = replace(config, epochs=2, batch_size=32, finder_iters=12, train_subset=320, test_subset=200)
    return config


def s10_original_recipe() -> S10Config:
    """The Adam recipe (key ``original``, the one this lesson started from): Adam (weight decay 1e-4), range test
    1e-7 to 0.1 read by the min/10 rule, plain logits, no label smoothing."""
    return S10Config(
        optimizer="adam",
        weight_decay=1e-4,
        finder_start_lr=1e-7,
        finder_end_lr=0.1,
        finder_rule="min/10",
        label_smoothing=0.0,
        logit_scale=1.0,
    )


def s10_short_recipe() -> S10Config:
    """Fewer epochs to 90%+: David Page's ResNet-9 recipe on the same network.

    Nesterov SGD peaking at 0.4 after a quarter of 11 epochs, weight decay 5e-4, label
    smoothing 0.2, logits scaled by 1/8, whole-batch augmentation on the device (crop, flip,
    cut-out; the GPU is not left waiting for per-image augmentation on a few CPU cores), and
    flip test-time augmentation, tested after epochs 6 and 11 only (a test costs training time).
    """
    return S10Config(
        epochs=11,
        eval_every=6,
        optimizer="sgd",
        max_lr=0.4,
        weight_decay=5e-4,
        label_smoothing=0.2,
        pct_start=0.25,
        div_factor=20.0,
        final_div_factor=200.0,
        logit_scale=0.125,
        loader="tensor",
        flip_tta=True,
    )


def s10_tricks_recipe() -> S10Config:
    """The short recipe in 6 epochs plus the published fast-training tricks (:class:`Tricks`).

    A fixed whitening layer (the first conv set to the PCA whitening of 3x3 training patches and
    never trained), dirac initialisation, batch-norm scales frozen at 1 with biases at 64x the LR
    (and 1/64 the weight decay), alternating flips, a weight EMA every 10 steps (decay 0.9) that the
    weights are reset to (lookahead), multi-crop test-time augmentation; batch 256 at peak LR 0.5
    and airbench's light augmentation for short runs (shifts of at most 2 pixels, no cut-out); tested
    after epochs 5 and 6. docs/experiments.md ("Time to accuracy") has its runs and the ablation that chose it.
    Ghost batch norm (``ghost_batch``) is left out: it did not help, and its reshapes slow a CPU step.
    """
    tricks = Tricks(
        whiten_init=True,
        freeze_whitening=True,
        dirac_init=True,
        freeze_bn_weight=True,
        bias_lr_factor=64.0,
        average_every=10,
        average_decay=0.9,
        lookahead=True,
        alternating_flip=True,
        translate=2,
        cutout=0,
        shift_tta=True,
    )
    return replace(s10_short_recipe(), epochs=6, eval_every=5, batch_size=256, max_lr=0.5, tricks=tricks)


RECIPES: dict[str, Callable[[], S10Config]] = {
    "lesson": S10Config,
    "original": s10_original_recipe,
    "short": s10_short_recipe,
    "tricks": s10_tricks_recipe,
}

# earlier names still accepted, though not listed: the record weights/s10_fast_recipe.json quotes `--recipe fast`
_RECIPE_ALIASES = {"fast": "short"}


def _recipe_key(name: str) -> str:
    """The key of :data:`RECIPES` for ``name``, which may be an earlier name (:data:`_RECIPE_ALIASES`)."""
    return _RECIPE_ALIASES.get(name, name)


# command-line options that override a field of the chosen recipe when given
_OVERRIDES = (
    "epochs",
    "batch_size",
    "optimizer",
    "weight_decay",
    "max_lr",
    "finder_end_lr",
    "finder_iters",
    "finder_rule",
    "label_smoothing",
    "seed",
    "eval_every",
    "train_subset",
    "test_subset",
)


def main(argv: list[str] | None = None) -> dict:
    """Run an S10 recipe from the command line (or evaluate saved weights); returns the run summary."""
    return cli.run(lambda: _main(parse_args(argv), argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    if args.evaluate:
        result = _evaluate_command(args.evaluate, args.data_dir, PRECISIONS[args.precision], args.tta)
        if args.predictions:
            print(f"predictions: {save_predictions(result['predictions'], args.predictions)}")
        return result
    if args.range_test:
        return record_range_test(config_from_args(args), args.range_test, args.data_dir, argv)
    if args.restore:
        folder = restore_run(args.restore, args.out, config_from_args(args))
        print(f"{folder}: finished run restored from {args.restore} (no training)")
        return read_summary(folder)
    return _run_s10(config_from_args(args), args, argv)


def config_from_args(args: argparse.Namespace) -> S10Config:
    """The named recipe with the fields given on the command line replaced."""
    config = cli.apply_overrides(s10_config(args.fast, args.recipe), args, _OVERRIDES)
    tricks = dict(getattr(args, "trick", []))
    return replace(config, tricks=replace(config.tricks, **tricks)) if tricks else config


def _evaluate_command(
    path: str, data_dir: str | None, amp_dtype: torch.dtype | None | str = "auto", tta: str = "recorded"
) -> dict:
    result = evaluate_weights(path, data_dir, amp_dtype=amp_dtype, tta=tta)
    claimed = json.loads(record_path(path).read_text()).get("test_accuracy")
    views = "" if tta == "recorded" else f" with test-time augmentation '{tta}'"
    print(
        f"{path}: test accuracy {result['accuracy']:.2f}% on {result['images']:,} images{views} "
        f"(recorded: {claimed}%), mean loss {result['loss']:.4f}"
    )
    return result


def _run_s10(config: S10Config, args: argparse.Namespace, argv: list[str] | None) -> dict:
    device = get_device()
    out = Path(args.out)
    data = s10_data(config, args.data_dir, args.download, device)
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision])
    print(
        f"device: {describe_device(device)}; {precision_name(amp_dtype)}; train {len(data.train_labels)} / "
        f"test {len(data.test_labels)} images; mean {data.mean} std {data.std}"
    )
    model = s10_model(config, data)
    max_lr, _ = s10_max_lr(model, data, config, device, out)
    print(f"one-cycle peak LR {max_lr:.3e}")
    command = cli.command_line("cifar.s10", argv)
    device_name, previous = describe_device(device, amp_dtype), read_summary(out).get("device")
    if previous and (out / CHECKPOINT_NAME).is_file():  # a resumed run keeps naming where it began
        device_name = previous if previous.endswith(device_name) else f"{previous}, resumed on {device_name}"
    write_summary(out, config=asdict(config), max_lr=max_lr, device=device_name, command=command.strip())
    options = FitOptions(max_steps_per_epoch=args.max_steps, amp_dtype=amp_dtype, checkpoint_minutes=5.0)
    result = s10_fit(model, data, config, max_lr, device, out, options)
    history = result.history
    # the epochs' own time (training + tests, cifar.train.run_seconds): interruptions and the range test do not count
    summary = write_summary(
        out,
        epoch_seconds=run_seconds(history)["total"],
        history=history,
        first_epoch_90=first_epoch_reaching(history, 90.0),
    )
    plot_history(history).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    plot_lrs(result.lrs, len(result.lrs) // config.epochs).savefig(out / "lr_trace.png", dpi=120, bbox_inches="tight")
    if args.weights:
        save_s10_weights(model, args.weights, config, max_lr, history, summary, data, args.data_dir)
    print(run_report(history))
    return summary


if __name__ == "__main__":
    main()
