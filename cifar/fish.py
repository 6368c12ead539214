"""The fish lesson (notebook 04): transfer learning on underwater photos of 7 species.

The data (:func:`fish_root`): 1,053 photos from Austrian fish passes, ``$CIFAR_DATA_DIR/fish_egu2017``
or downloaded, split by :func:`transfer_data` into a seeded, stratified split that keeps every
video on one side (``FishConfig.split``: ``"video"``, the lesson's; ``"fish"`` and ``"frames"`` for
comparison, both leaky; :data:`FISH_SPLITS`). The recipe is a :class:`FishConfig`
(:data:`FISH_RECIPES`): ``imagenet``, the usual fine-tuning of a ResNet-34 from ImageNet
weights (head, then all layers); ``random``, the same network from random weights, for when the
ImageNet weights cannot be downloaded; ``s10``, the course's S10 network trained on CIFAR-10 in
lesson 03 (committed weights, so a transfer that exists offline) with a new head, at 48x72.
:func:`run_transfer` trains one run (for ResNet-34 it tries the weights and trains with the recipe
that fits the start it got), :func:`run_seeds` a recipe over several seeds into a table, which
:func:`seed_summary` and :func:`compare_seeds` read. On the command line::

    python -m cifar.fish --data-dir $CIFAR_DATA_DIR/fish_egu2017 --out runs/fish
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import cli
from .artifacts import save_history, write_summary
from .bench import loader_rate
from .dataset import (
    ImageFolderDataset,
    imagenet_eval_transforms,
    imagenet_train_transforms,
    make_loader,
    shared_group_fraction,
    split_indices,
)
from .download import FISH_EGU2017, download_kaggle_fish, download_source, kaggle_fish_root
from .train import FitOptions, predict
from .transfer import (
    IMAGENET_WEIGHTS,
    NORMALIZATION,
    RANDOM_WEIGHTS,
    OneCycle,
    extract_features,
    fit_one_cycle,
    freeze_backbone,
    linear_probe,
    resnet34_classifier,
    resnet34_weights,
    s10_backbone_weights,
    s10_classifier,
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

#: The S10 weights trained on CIFAR-10 in lesson 03, relative to the repository's root.
S10_WEIGHTS = "weights/s10_custom_resnet.pt"


def s10_weights_path(name: str = S10_WEIGHTS) -> Path:
    """Where the committed S10 weights are: from the repository's root (the command line), from
    ``notebooks/`` (a notebook, Colab included), else beside an editable install of the package."""
    candidates = [Path(name), Path("..") / name, Path(__file__).resolve().parents[1] / name]
    return next((path for path in candidates if path.is_file()), candidates[0])


@dataclass
class FishConfig:
    """Everything that defines a fish run; saved with its checkpoints and weights."""

    image_size: tuple[int, int] = (160, 240)  # (height, width): Resize(160, 240)
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
    split: str = "video"  # keep every video on one side; "fish": every fish (leaks by video); "frames": leaky
    seed: int = 1
    arch: str = "resnet34"  # or "s10": the course's CustomResNet (weights: its CIFAR-10 weights file, or None)
    weights: str | None = IMAGENET_WEIGHTS
    stages: str = "auto"  # "auto": head + fine-tune when pretrained, one all-layer stage when random; "two"; "one"
    train_per_class: int | None = None  # subsample (fast mode)
    test_per_class: int | None = None
    max_steps_per_epoch: int | None = None
    on_error: str = "raise"
    cache: bool = False
    extra: dict = field(default_factory=dict)


def fish_imagenet_recipe() -> FishConfig:
    """From ImageNet weights: the usual fine-tuning recipe, one-cycle Adam (peak LR 0.01, weight decay 1e-4,
    gradient clipping 0.1), batch 128, 2 epochs of the head (backbone frozen) then 4 of all layers."""
    return FishConfig()


def fish_random_recipe() -> FishConfig:
    """From random weights (offline): 15 epochs of all layers in one stage, batch 32, peak LR 3e-3.

    The ImageNet recipe's 6 epochs at batch 128 (42 steps) are far too few for a network that must
    learn everything from these photos, and its peak of 0.01 is a fine-tuning LR.
    """
    return replace(FishConfig(), weights=None, batch_size=32, head_epochs=5, fine_tune_epochs=10, max_lr=3e-3)


def fish_s10_recipe() -> FishConfig:
    """The S10 network of lesson 03 as the backbone, from its CIFAR-10 weights; ``weights=None`` gives the
    same network from random weights, trained the same way, for the comparison.

    48x72 input (the S10 network is costly per pixel: it keeps 64 and then 128 channels at full
    resolution before its first pooling, and the lesson runs this recipe many times on a CPU), batch 32,
    and the same two stages for both starts: 1 epoch of the head alone (peak LR 0.01; it starts the
    new head off while the batch norms re-estimate their statistics on the fish), then 3 epochs of all
    layers at one peak LR, 2e-3, for backbone and head alike, so that neither start is handicapped by
    a recipe made for the other. Few epochs, for the same reason. Images are decoded once and kept in
    memory. What the features are worth before any training: :func:`probe_seeds`.
    """
    return replace(
        FishConfig(),
        arch="s10",
        weights=str(s10_weights_path()),
        image_size=(48, 72),
        batch_size=32,
        stages="two",
        head_epochs=1,
        fine_tune_epochs=3,
        max_lr=1e-2,
        fine_tune_lr=2e-3,
        backbone_lr_factor=None,
        cache=True,
    )


#: The lesson's recipes: ResNet-34 from ImageNet weights or random ones, and the S10 network from CIFAR-10's.
FISH_RECIPES: dict[str, Callable[[], FishConfig]] = {
    "imagenet": fish_imagenet_recipe,
    "random": fish_random_recipe,
    "s10": fish_s10_recipe,
}


def fish_config(recipe: str = "imagenet", fast: bool = False) -> FishConfig:
    """A recipe of :data:`FISH_RECIPES`; ``fast`` shrinks it to a smoke test (8+4 images per class, 1 step per
    epoch, input at most 64x96)."""
    config = FISH_RECIPES[recipe]()
    if fast:
        size = min(config.image_size, (64, 96))  # the recipe's own if smaller (the S10 recipe's)
        config = replace(
            config,
            image_size=size,
            batch_size=16,
            head_epochs=1,
            fine_tune_epochs=1,
            train_per_class=8,
            test_per_class=4,
            max_steps_per_epoch=1,
        )
    return config


@dataclass
class TransferResult:
    """What a run produced: the trained model, its record and the test-set predictions."""

    model: nn.Module
    classes: list[str]
    weights: str  # which weights the backbone started from: "IMAGENET1K_V1", a weights file, or "random"
    stages: list[str]
    history: list[dict]  # one row per epoch, with its "stage"
    lrs: list[float]  # LR of every batch (head group), all stages
    test_accuracy: float
    confusion: np.ndarray  # counts[true, predicted]
    outputs: torch.Tensor  # test logits
    targets: torch.Tensor
    test_set: ImageFolderDataset  # the test images in the order of outputs, with the test transforms
    split: str  # "video", "fish" or "frames"
    leak: float  # test images whose video (the source's group) also has images in training
    train_images: int
    test_images: int
    config: FishConfig  # the recipe it trained with
    seconds: float

    @property
    def start(self) -> str:
        """Where the backbone started, in words: "ImageNet", "CIFAR-10" or "random"."""
        return _start_name(self.config, self.weights)


def _start_name(config: FishConfig, weights_used: str) -> str:
    if weights_used == RANDOM_WEIGHTS:
        return "random"
    return "CIFAR-10" if config.arch == "s10" else "ImageNet"


def _per_class(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None:
        return indices
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(indices[labels[indices] == c])[:n] for c in np.unique(labels[indices])]
    return np.sort(np.concatenate(keep))


# ----------------------------------------------------------------------------- the file-name rules


def fish_group(path: str | Path) -> str:
    """The fish an image shows: its file name up to ``fishN`` (also ``nofishN``).

    ``20150413_165229_B562_00408CF4B573_fish1_frame22.png`` -> ``..._fish1``; frames of one
    fish share it. A name without ``fishN`` is its own group (its stem).
    """
    stem = Path(path).stem
    match = re.match(r"(.*?fish\d+)", stem)
    return match.group(1) if match else stem


def kaggle_group(path: str | Path) -> str:
    """The group of an image of Kaggle's fish set: its class folder and file stem, i.e. the image alone.

    Kaggle's names (``00001.png`` ... in every class) say nothing about which fish a photo shows,
    and :func:`fish_group` would put ``Trout/00001.png`` and ``Shrimp/00001.png`` in one group.
    """
    path = Path(path)
    return f"{path.parent.name}/{path.stem}"


def video_group(path: str | Path) -> str:
    """The video an image comes from: its file name before ``_fishN`` / ``_nofishN`` (a stricter key).

    One video can hold several tracks of what may be the same fish (one brown-trout video of the
    offline set has 21), so grouping by video rules out that leak too, at the cost of fewer groups.
    """
    stem = Path(path).stem
    match = re.match(r"(.*?)_(?:no)?fish\d+", stem)
    return match.group(1) if match else stem


#: How each split of the offline set groups its images: whole videos, whole fish, or none (single frames).
FISH_SPLITS: dict[str, Callable[[Path], str] | None] = {"video": video_group, "fish": fish_group, "frames": None}
#: The fish lesson's data sources and the group that overrides the split's for a source whose file names
#: name no fish or video (None: the split's own, :data:`FISH_SPLITS`).
FISH_GROUPS: dict[str, Callable[[Path], str] | None] = {"egu2017": None, "kaggle": kaggle_group}


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


def read_fish(root: str | Path | None, config: FishConfig) -> ImageFolderDataset:
    """The class-folder set under ``root`` (None: :func:`fish_root`), read as ``config`` says (``on_error``,
    ``cache``: decode every image once and keep it in memory)."""
    return ImageFolderDataset.from_folder(
        fish_root() if root is None else root, on_error=config.on_error, cache=config.cache
    )


def time_training_loader(
    batches: int | None = None, num_workers: int = 2, root: str | Path | None = None
) -> dict[str, float]:
    """Images/s of the ImageNet recipe's training loader (decoding and augmentation, no model) at its size and
    batch, with ``num_workers`` workers; ``batches``: time at most this many after the warm-up one."""
    recipe = fish_config("imagenet")
    photos = read_fish(root, recipe)
    photos = photos.subset(np.arange(len(photos)), imagenet_train_transforms(recipe.image_size))
    rate, images = loader_rate(photos, recipe.batch_size, num_workers, batches)
    return {"fish_img_s": rate, "fish_images": images}


def split_groups(paths: Sequence[Path], split: str, group_fn: Callable[[Path], str] | None = None) -> list[str] | None:
    """The group of every path for ``split`` (:data:`FISH_SPLITS`), or None for the ungrouped ``"frames"``.

    ``group_fn`` replaces the split's grouping for another source (Kaggle's, :data:`FISH_GROUPS`).
    """
    if split not in FISH_SPLITS:
        raise ValueError(f"split must be one of {sorted(FISH_SPLITS)}, not {split!r}")
    grouping = FISH_SPLITS[split] if group_fn is None or split == "frames" else group_fn
    return None if grouping is None else [grouping(path) for path in paths]


def transfer_data(
    root: str | Path | None,
    config: FishConfig,
    group_fn: Callable[[Path], str] | None = None,
    dataset: ImageFolderDataset | None = None,
) -> tuple[ImageFolderDataset, np.ndarray, np.ndarray, float]:
    """The class-folder set under ``root`` and its seeded, stratified split (``config.split``).

    Returns ``(dataset, train_idx, test_idx, leak)``; ``leak`` is the fraction of test images
    whose video (``group_fn``'s group for another source) also has images in training: 0 for the
    video split, whatever it is for the others. ``root`` None means :func:`fish_root`:
    ``$CIFAR_DATA_DIR/fish_egu2017``, else downloaded. ``dataset``: the set already read (runs
    over several seeds share one, and its decoded images).
    """
    dataset = dataset if dataset is not None else read_fish(root, config)
    groups = split_groups(dataset.paths, config.split, group_fn)
    train_idx, test_idx = split_indices(dataset.labels, config.test_fraction, config.seed, groups)
    train_idx = _per_class(train_idx, dataset.labels, config.train_per_class, config.seed)
    test_idx = _per_class(test_idx, dataset.labels, config.test_per_class, config.seed + 1)
    leak_groups = [(group_fn or video_group)(path) for path in dataset.paths]
    return dataset, train_idx, test_idx, shared_group_fraction(leak_groups, train_idx, test_idx)


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


def _start(
    config: FishConfig, random_config: FishConfig | None, log: Callable[[str], object]
) -> tuple[FishConfig, dict | None, str]:
    """The recipe, the backbone's weights and their name: ResNet-34's ImageNet weights are tried (random ones
    when they cannot be had, and then ``random_config``'s recipe); the S10's CIFAR-10 file must load."""
    if config.arch == "s10":
        if config.weights is None:
            return config, None, RANDOM_WEIGHTS
        return config, s10_backbone_weights(config.weights)[0], str(config.weights)
    if config.arch != "resnet34":
        raise ValueError(f"arch must be 'resnet34' or 's10', not {config.arch!r}")
    state, weights_used = resnet34_weights(config.weights, log)
    if weights_used == RANDOM_WEIGHTS and random_config is not None:
        config = random_config
    return config, state, weights_used


def _classifier(config: FishConfig, state: dict | None, num_classes: int) -> nn.Module:
    """``config.arch``'s network with ``state`` as its backbone and a new head, initialised from the run's seed."""
    with seeded(derive_seed(config.seed, "model")):
        return (s10_classifier if config.arch == "s10" else resnet34_classifier)(num_classes, state)


def _loaders(dataset: ImageFolderDataset, train_idx, test_idx, config: FishConfig, device: torch.device):
    """The training loader (seeded shuffling, augmentation) and the test loader, with the network's normalization."""
    mean, std = NORMALIZATION[config.arch]
    train_set = dataset.subset(train_idx, imagenet_train_transforms(config.image_size, mean, std))
    test_set = dataset.subset(test_idx, imagenet_eval_transforms(config.image_size, mean, std))
    return (
        make_loader(train_set, config.batch_size, train=True, seed=config.seed, device=device),
        make_loader(test_set, config.batch_size, train=False, device=device),
    )


def _train_stages(model, stages, loaders, config, weights_used, folder, options: FitOptions):
    """Each stage of ``stages`` in turn (frozen backbone or all layers) with :func:`fit_one_cycle`;
    returns the history (epochs numbered across stages, each row with its stage) and every batch's LR."""
    log = options.log
    history: list[dict] = []
    lrs: list[float] = []
    for number, (name, epochs, max_lr, factor, frozen) in enumerate(stages, 1):
        if frozen:
            freeze_backbone(model)
        else:
            unfreeze(model)
        log(f"stage {number}/{len(stages)}: {name}, {epochs} epoch(s), one-cycle max LR {max_lr:g}")
        stage_dir = folder / f"stage{number}_{name.replace(' ', '_')}" if folder is not None else None
        cycle = OneCycle(config.optimizer, config.weight_decay, backbone_lr_factor=factor)
        stage_options = replace(
            options,
            grad_clip=config.grad_clip,
            seed=derive_seed(config.seed, "stage", number),
            checkpoint_dir=stage_dir,
            config={**asdict(config), "stage": name, "weights_used": weights_used},
            max_steps_per_epoch=config.max_steps_per_epoch,
        )
        result = fit_one_cycle(epochs, max_lr, model, *loaders, cycle, stage_options)
        history += [{**row, "epoch": len(history) + row["epoch"], "stage": name} for row in result.history]
        lrs += result.lrs
    unfreeze(model)
    return history, lrs


def run_transfer(
    root: str | Path | None = None,
    config: FishConfig | None = None,
    out: str | Path | None = None,
    options: FitOptions | None = None,
    group_fn: Callable[[Path], str] | None = None,
    random_config: FishConfig | None = None,
    dataset: ImageFolderDataset | None = None,
) -> TransferResult:
    """Train the lesson's classifier (``config.arch``) on a class-folder set and test it.

    ResNet-34's weights ``config.weights`` are tried first; when its backbone starts from random
    weights (they could not be loaded, or are None) and ``random_config`` is given, the run trains
    with that recipe instead (:func:`fish_random_recipe`). Seeded stratified split
    (:func:`transfer_data`), then one-cycle stages (:func:`_plan`): pretrained, ``head_epochs`` with
    the backbone frozen then ``fine_tune_epochs`` of all layers; random, one stage of all layers for
    as many epochs, unless ``stages="two"``. ``out``: each stage checkpointed there (a rerun resumes),
    and the classifier, history and summary saved. ``options`` (:class:`~cifar.train.FitOptions`): the
    device, precision (the same for training, testing and the final test), progress bar and log.
    """
    config, started = config or fish_config(), time.perf_counter()
    options = options if options is not None else FitOptions()
    device = options.device if options.device is not None else get_device()
    amp_dtype = resolve_amp_dtype(device, options.amp_dtype)
    options, log = replace(options, device=device, amp_dtype=amp_dtype), options.log
    config, state, weights_used = _start(config, random_config, log)
    dataset, train_idx, test_idx, leak = transfer_data(root, config, group_fn, dataset)
    train_loader, test_loader = _loaders(dataset, train_idx, test_idx, config, device)
    model = _classifier(config, state, len(dataset.classes))
    log(
        f"{len(dataset.classes)} classes; train {len(train_idx)} / test {len(test_idx)} images ({config.split} split, "
        f"{100 * leak:.0f}% of test images share a video with training); weights: {weights_used}"
    )
    folder, stages = Path(out) if out is not None else None, _plan(config, weights_used)
    loaders = (train_loader, test_loader)
    history, lrs = _train_stages(model, stages, loaders, config, weights_used, folder, options)
    outputs, targets = predict(model, test_loader, device, amp_dtype)
    accuracy = (outputs.argmax(1) == targets).float().mean().item() * 100
    result = TransferResult(
        model=model,
        classes=dataset.classes,
        weights=weights_used,
        stages=[s[0] for s in stages],
        history=history,
        lrs=lrs,
        test_accuracy=accuracy,
        confusion=confusion_matrix(outputs.argmax(1), targets, len(dataset.classes)),
        outputs=outputs,
        targets=targets,
        test_set=test_loader.dataset,
        split=config.split,
        leak=leak,
        train_images=len(train_idx),
        test_images=len(test_idx),
        config=config,
        seconds=time.perf_counter() - started,
    )
    log(f"test accuracy {accuracy:.2f}% ({config.split} split, weights: {weights_used})")
    if folder is not None:
        _save_run(result, folder, root, describe_device(device, amp_dtype))
    return result


def _save_run(result: TransferResult, folder: Path, root, device_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_history(result.history, folder)
    record = {
        "weights": result.weights,
        "stages": result.stages,
        "image_size": list(result.config.image_size),
        "split": result.split,
        "video_leak": round(result.leak, 4),
        "train_images": result.train_images,
        "test_images": result.test_images,
        "test_accuracy": round(result.test_accuracy, 2),
        "data": str(root) if root is not None else str(data_dir("fish_egu2017")),
        "device": device_name,
        "seconds": round(result.seconds, 1),
        "config": asdict(result.config),
    }
    save_classifier(result.model, folder / "classifier.pt", result.classes, record, result.config.arch)
    write_summary(folder, **record, confusion=result.confusion.tolist(), classes=result.classes)


# ----------------------------------------------------------------------------- several seeds


def seed_row(result: TransferResult, name: str | None = None) -> dict:
    """One run as a row of :func:`run_seeds`' table: its configuration, seed, split and accuracies.

    ``final acc %`` is the test accuracy after the last epoch (the run's result); ``best acc %`` the
    best of its epochs' tests, an optimistic number, since choosing the epoch by the test set is
    choosing on the test set; ``head acc %`` the test accuracy after the head stage (backbone frozen),
    NaN for a run without one: a short stage, no converged linear probe (that is :func:`probe_seeds`).
    """
    tested = [row for row in result.history if row.get("test_acc") is not None]
    best = max(tested, key=lambda row: row["test_acc"])
    head = [row["test_acc"] for row in tested if row["stage"] == "head"]
    return {
        "config": name or f"{result.config.arch} {result.start} {result.split}",
        "seed": result.config.seed,
        "split": result.split,
        "model": result.config.arch,
        "start": result.start,
        "train images": result.train_images,
        "test images": result.test_images,
        "video leak %": round(100 * result.leak, 1),
        "head acc %": round(head[-1], 2) if head else float("nan"),
        "final acc %": round(result.test_accuracy, 2),
        "best acc %": round(best["test_acc"], 2),
        "best epoch": best["epoch"],
        "epochs": len(result.history),
        "minutes": round(result.seconds / 60, 2),
    }


def run_seeds(
    config: FishConfig,
    seeds: Sequence[int] = (1, 2, 3),
    root: str | Path | None = None,
    name: str | None = None,
    dataset: ImageFolderDataset | None = None,
    options: FitOptions | None = None,
    random_config: FishConfig | None = None,
) -> pd.DataFrame:
    """The recipe ``config`` once per seed; a tidy table, one row per run (:func:`seed_row`'s columns).

    The seed sets the split (which videos are tested), the new head's initialisation and the order
    and augmentation of the batches, so the spread over seeds is the spread a learner rerunning the
    lesson would see. Two recipes run with the same seeds share their splits: compare them seed by
    seed (:func:`compare_seeds`). Each run prints one line (``options.log``); ``options`` (device,
    precision) and ``random_config`` go to :func:`run_transfer`; no checkpoints.
    """
    dataset = dataset if dataset is not None else read_fish(root, config)
    options = options if options is not None else FitOptions()
    quiet, log = replace(options, progress=False, log=_silent), options.log
    rows = []
    for seed in seeds:
        result = run_transfer(
            root, replace(config, seed=seed), None, quiet, random_config=random_config, dataset=dataset
        )
        rows.append(seed_row(result, name))
        row = rows[-1]
        log(
            f"{row['config']}, seed {seed}: final {row['final acc %']:.1f}%, best {row['best acc %']:.1f}% "
            f"(epoch {row['best epoch']}), {row['minutes']:.1f} min"
        )
    return pd.DataFrame(rows)


def probe_seeds(
    config: FishConfig,
    seeds: Sequence[int] = (1, 2, 3),
    root: str | Path | None = None,
    name: str | None = None,
    dataset: ImageFolderDataset | None = None,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None | str = "auto",
    group_fn: Callable[[Path], str] | None = None,
) -> pd.DataFrame:
    """A linear probe (:func:`cifar.transfer.linear_probe`) of the backbone that ``config`` starts from, per seed.

    The backbone is frozen as it starts (its weights file, or random weights drawn from the first
    seed), and the features of the images the seeds' splits use are extracted once, resized without
    augmentation; each seed then fits a linear classifier on its training images and tests it on its
    test images. One row per seed, in :func:`run_seeds`' layout: ``config``, ``seed``, ``split``,
    ``start``, ``probe acc %``.
    """
    device = device or get_device()
    dataset = dataset if dataset is not None else read_fish(root, replace(config, cache=False))  # features once
    splits = {seed: transfer_data(root, replace(config, seed=seed), group_fn, dataset)[1:3] for seed in seeds}
    used = np.unique(np.concatenate([np.concatenate(split) for split in splits.values()]))
    config, state, weights_used = _start(replace(config, seed=seeds[0]), None, _silent)
    model = _classifier(config, state, len(dataset.classes))
    mean, std = NORMALIZATION[config.arch]
    images = dataset.subset(used, imagenet_eval_transforms(config.image_size, mean, std))
    features, targets = extract_features(
        model, make_loader(images, config.batch_size, False, device=device), device, amp_dtype
    )
    position = {index: row for row, index in enumerate(used.tolist())}
    start = _start_name(config, weights_used)
    rows = []
    for seed, (train_idx, test_idx) in splits.items():
        train, test = [position[i] for i in train_idx.tolist()], [position[i] for i in test_idx.tolist()]
        accuracy = linear_probe(features[train], targets[train], features[test], targets[test])
        rows.append(
            {
                "config": name or f"{config.arch} {start}",
                "seed": seed,
                "split": config.split,
                "start": start,
                "probe acc %": round(accuracy, 2),
            }
        )
    return pd.DataFrame(rows)


def _silent(*_) -> None:
    return None


def seed_summary(table: pd.DataFrame, metrics: Sequence[str] = ("final acc %", "best acc %")) -> pd.DataFrame:
    """Per configuration of a :func:`run_seeds` table (in order of appearance): how many seeds, and the
    mean, min and max of each metric."""
    order = list(dict.fromkeys(table["config"]))
    grouped = table.groupby("config", sort=False)
    summary = pd.DataFrame({"seeds": grouped["seed"].count()})
    for metric in metrics:
        stats = grouped[metric].agg(["mean", "min", "max"]).round(1)
        for stat in ("mean", "min", "max"):
            summary[f"{metric.removesuffix(' %')} {stat}"] = stats[stat]
    return summary.loc[order]


def compare_seeds(table: pd.DataFrame, a: str, b: str, metric: str = "final acc %") -> str:
    """Whether configuration ``a`` beats ``b`` in a :func:`run_seeds` table, seed by seed, in one sentence.

    The runs are paired by seed (same seed, same split). The difference is called supported only
    when ``a`` is ahead on every seed and the two ranges (min to max over seeds) do not overlap;
    ahead on every seed with overlapping ranges is "suggestive"; anything else is within the spread.
    """
    pairs = table.pivot_table(index="seed", columns="config", values=metric)
    pairs = pairs.dropna(subset=[a, b]) if {a, b} <= set(pairs.columns) else pairs.iloc[:0]
    if pairs.empty:
        raise ValueError(f"no seed has runs of both {a!r} and {b!r}")
    gap = pairs[a] - pairs[b]
    ahead, seeds = int((gap > 0).sum()), len(pairs)
    overlap = pairs[a].min() <= pairs[b].max() and pairs[b].min() <= pairs[a].max()
    if ahead == seeds and not overlap:
        verdict = f"{a} is ahead on every seed and the ranges do not overlap: a difference these seeds support"
    elif ahead == seeds:
        verdict = f"{a} is ahead on every seed but the ranges overlap: suggestive, not established"
    else:
        verdict = f"{a} is ahead on {ahead} of {seeds} seeds: within the spread, no difference is established"
    return (
        f"{metric}, {a} vs {b} over {seeds} seeds: mean {pairs[a].mean():.1f} vs {pairs[b].mean():.1f} "
        f"(range {pairs[a].min():.1f}-{pairs[a].max():.1f} vs {pairs[b].min():.1f}-{pairs[b].max():.1f}); "
        f"paired differences {', '.join(f'{d:+.1f}' for d in gap)}. {verdict}."
    )


# ----------------------------------------------------------------------------- command line

# command-line options that override a field of the recipe when given
_OVERRIDES = (
    "head_epochs",
    "fine_tune_epochs",
    "batch_size",
    "max_lr",
    "fine_tune_lr",
    "image_size",
    "seed",
    "stages",
    "split",
    "on_error",
    "max_steps_per_epoch",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = fish_imagenet_recipe()
    parser = cli.base_parser(
        "python -m cifar.fish",
        "Fine-tune a pretrained network on a class-folder image set (the fish lesson).",
        out="runs/fish",
        data_help="class-folder root (default: $CIFAR_DATA_DIR/fish_egu2017, else downloaded)",
    )
    parser.add_argument(
        "--recipe",
        choices=["auto", *FISH_RECIPES],
        default="auto",
        help="auto (default): the imagenet recipe (head, then all layers; batch 128, 2 + 4 epochs, "
        "peak LR 0.01) when the ImageNet weights load, else the random one (all layers; batch 32, "
        "15 epochs, peak LR 3e-3); s10: the S10 network from its CIFAR-10 weights (head, then "
        "all layers; 48x72, batch 32, 1 + 3 epochs). Options below override its fields",
    )
    parser.add_argument(
        "--source",
        choices=sorted(FISH_GROUPS),
        default="egu2017",
        help="kaggle: Kaggle's fish set (--data-dir: its download folder; else kagglehub)",
    )
    parser.add_argument(
        "--weights",
        help=f"the weights to try: {defaults.weights} (default), a resnet34 .pth file, "
        f"or 'none' (random weights); with --recipe s10: the S10 weights file (default {S10_WEIGHTS}) "
        "or 'none'",
    )
    parser.add_argument(
        "--stages",
        choices=["auto", "one", "two"],
        help="auto (default): head + fine-tuning with ImageNet weights, one stage without",
    )
    parser.add_argument("--head-epochs", type=int, help="epochs of the head stage (default: the recipe's)")
    parser.add_argument("--fine-tune-epochs", type=int, help="epochs of the fine-tuning stage (default: the recipe's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-lr", type=float)
    parser.add_argument("--fine-tune-lr", type=float)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--split",
        choices=sorted(FISH_SPLITS),
        help="video (default): every video on one side; fish: every fish (leaks by video); frames: "
        "single frames (leaks by fish); the last two for comparison",
    )
    parser.add_argument("--on-error", choices=["raise", "skip"], help="unreadable images (default: raise)")
    parser.add_argument("--max-steps", dest="max_steps_per_epoch", type=int, help="cap batches per epoch (smoke tests)")
    parser.add_argument(
        "--time-loader",
        action="store_true",
        help="instead of training: the training loader's images/s (2 workers; --fast: 2 batches)",
    )
    parser.add_argument("--record", help="with --time-loader: also write the rate (with the command) to this JSON file")
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
    if args.time_loader:
        results = time_training_loader(2 if args.fast else None, root=args.data_dir)
        print(
            f"fish photos' training loader, 2 workers: {results['fish_img_s']:.0f} images/s "
            f"over {results['fish_images']} images"
        )
        if args.record:
            cli.save_record(results, args.record, cli.command_line("cifar.fish", argv))
        return results
    config = config_from_args(args, "imagenet" if args.recipe == "auto" else args.recipe)
    random_config = None
    if args.recipe == "auto":  # --weights names the weights to try, not those of the random start
        random_config = replace(config_from_args(args, "random"), weights=None)
    out = Path(args.out)
    device = get_device()
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision])
    print(f"device: {describe_device(device, amp_dtype)}")
    root = fish_root(args.data_dir, args.source)
    options = FitOptions(device=device, amp_dtype=amp_dtype)
    result = run_transfer(root, config, out, options, FISH_GROUPS[args.source], random_config)
    plot_history(result.history, target=None).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    steps = max(1, len(result.lrs) // max(1, len(result.history)))
    plot_lrs(result.lrs, steps).savefig(out / "lr_trace.png", dpi=120, bbox_inches="tight")
    plot_confusion(result.confusion, result.classes).savefig(out / "confusion.png", dpi=120, bbox_inches="tight")
    print(per_class_accuracy(result.confusion, result.classes).to_string())
    return write_summary(out, command=cli.command_line("cifar.fish", argv))


if __name__ == "__main__":
    main()
