"""Transfer learning: an ImageNet ResNet-34 with a new head, fine-tuned on a class-folder image set.

The fish lesson's recipe (issue 5), built on the course's engine (:func:`cifar.train.fit`):
torchvision ``resnet34`` with ``fc`` replaced by ``nn.Linear(512, num_classes)``; a seeded,
stratified split that keeps every fish on one side; the original augmentation; one-cycle Adam
(max LR 0.01, weight decay 1e-4, gradient clipping 0.1, batch 128, 6 epochs) as head-only
epochs followed by fine-tuning of all layers; class names saved with the weights.

Without internet the ImageNet weights cannot be downloaded: a one-line notice is printed
and the network starts from random weights, which every result records.

    python -m cifar.transfer --data-dir $CIFAR_DATA_DIR/fish_egu2017 --out runs/fish
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .artifacts import save_atomic, save_history
from .dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    ImageFolderDataset,
    fish_group,
    imagenet_eval_transforms,
    imagenet_train_transforms,
    kaggle_group,
    make_loader,
    shared_group_fraction,
    split_indices,
)
from .scheduler import make_optimizer, one_cycle
from .train import FitResult, fit, predict
from .utils import (
    cache_dir,
    confusion_matrix,
    data_dir,
    describe_device,
    get_device,
    resolve_amp_dtype,
    seed_everything,
)

IMAGENET_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WEIGHTS = "random"
HEAD = "fc"  # torchvision ResNets call their classifier layer ``fc``


# ----------------------------------------------------------------------------- the model


def _download_state_dict(weights: str) -> dict:
    """torchvision's ImageNet state_dict for resnet34 (torch hub cache, else a download)."""
    from torchvision.models import ResNet34_Weights

    quiet = io.StringIO()  # torch.hub prints "Downloading: ..." even when it cannot
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        return ResNet34_Weights[weights].get_state_dict(progress=False, check_hash=True)


def resnet34_classifier(
    num_classes: int, weights: str | Path | None = IMAGENET_WEIGHTS, log: Callable[[str], object] = print
) -> tuple[nn.Module, str]:
    """ResNet-34 with a new head ``fc = nn.Linear(512, num_classes)``, and which weights it got.

    ``weights`` is a torchvision weights name (``"IMAGENET1K_V1"``), a local ``.pth`` file of
    resnet34's ImageNet state_dict, or None for random weights. When the weights cannot be
    loaded (no internet), ``log`` gets a one-line notice and the backbone keeps its random
    initialisation. Returns ``(model, weights_used)``; ``weights_used`` is the name or file
    loaded, or ``"random"``. The new head is always randomly initialised (seed first).
    """
    from torchvision.models import ResNet34_Weights, resnet34

    model = resnet34(weights=None)
    used = RANDOM_WEIGHTS
    if weights is not None:
        is_file = Path(weights).is_file()
        if not is_file and str(weights) not in ResNet34_Weights.__members__:
            raise ValueError(
                f"weights must be one of {list(ResNet34_Weights.__members__)}, a .pth file or None, not {weights!r}"
            )
        try:
            if is_file:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            else:
                state = _download_state_dict(str(weights))
            model.load_state_dict(state)
            used = str(weights)
        except Exception as error:  # offline, proxy, hash mismatch, corrupt file...
            url = ResNet34_Weights.IMAGENET1K_V1.url
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            log(
                f"Notice: ImageNet weights {weights} could not be loaded ({reason}); continuing with RANDOM weights. "
                f"To use them offline, put {url.rsplit('/', 1)[-1]} in torch's hub cache "
                "($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints)."
            )
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, used


def freeze_backbone(model: nn.Module, head: str = HEAD) -> nn.Module:
    """Only the head (parameters under ``head``) trains; the backbone's parameters are frozen.

    BatchNorm layers of the backbone still update their running statistics in train mode.
    """
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(head + ".")
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Every parameter trains again (fine-tuning)."""
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


def parameter_groups(model: nn.Module, backbone_lr_factor: float | None = None, head: str = HEAD) -> list[dict]:
    """Trainable parameters as optimizer groups: the head first, then (if any) the backbone.

    ``backbone_lr_factor`` (e.g. 0.1) is stored in each group as ``lr_factor`` and applied by
    :func:`fit_one_cycle` (discriminative learning rates); None puts all in one group.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (all frozen)")
    if backbone_lr_factor is None:
        return [{"params": [p for _, p in trainable], "lr_factor": 1.0}]
    head_params = [p for name, p in trainable if name.startswith(head + ".")]
    backbone = [p for name, p in trainable if not name.startswith(head + ".")]
    groups = [{"params": head_params, "lr_factor": 1.0}, {"params": backbone, "lr_factor": backbone_lr_factor}]
    return [group for group in groups if group["params"]]


def fit_one_cycle(
    epochs: int,
    max_lr: float,
    model: nn.Module,
    train_loader,
    val_loader,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    opt_func: str | Callable = "adam",
    *,
    backbone_lr_factor: float | None = None,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    device: torch.device | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    config: dict | None = None,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    log: Callable[[str], object] = print,
    amp_dtype: torch.dtype | None | str = "auto",
) -> FitResult:
    """The original lesson's ``fit_one_cycle``, on the course's engine (:func:`cifar.train.fit`).

    Trains the parameters that require grad with ``opt_func`` (``"adam"``/``"sgd"``, or a
    class such as ``torch.optim.Adam`` called as ``opt_func(groups, lr=..., weight_decay=...)``)
    under a one-cycle schedule stepped every batch, clipping gradient values to ``grad_clip``.
    Returns :class:`~cifar.train.FitResult`: per-epoch history and the LR of every batch (of
    the head's group). The schedule is :func:`cifar.scheduler.one_cycle` with OneCycleLR's
    default pct_start 0.3, div_factor 25 and final_div_factor 1e4, but linear warm-up and
    annealing where OneCycleLR defaults to cosine annealing. ``backbone_lr_factor`` scales the
    backbone's LR (discriminative LRs). ``checkpoint_dir`` and ``config`` make it resumable.
    ``amp_dtype``: the precision, as in :func:`cifar.train.fit`.
    """
    device = device or get_device()
    groups = parameter_groups(model, backbone_lr_factor)
    max_lrs = [max_lr * group.pop("lr_factor") for group in groups]
    if isinstance(opt_func, str):
        optimizer = make_optimizer(opt_func, groups, max_lr / div_factor, weight_decay)
    else:
        optimizer = opt_func(groups, lr=max_lr / div_factor, weight_decay=weight_decay)
    steps = len(train_loader) if max_steps_per_epoch is None else min(max_steps_per_epoch, len(train_loader))
    schedule = one_cycle(
        optimizer, max_lrs if len(max_lrs) > 1 else max_lrs[0], epochs, steps, pct_start, div_factor, final_div_factor
    )
    return fit(
        model, train_loader, val_loader, optimizer, schedule, epochs, device, seed=seed,
        checkpoint_dir=checkpoint_dir, config=config, progress=progress,
        max_steps_per_epoch=max_steps_per_epoch, grad_clip=grad_clip, log=log, amp_dtype=amp_dtype,
    )  # fmt: skip


# ----------------------------------------------------------------------------- saving with class names


def save_classifier(model: nn.Module, path: str | Path, classes: list[str], extra: dict | None = None) -> Path:
    """Save the state_dict (fp16) with the class names and ``extra`` (weights, image size...).

    The record also goes to a JSON file beside it (same name, ``.json``). Mean and std
    default to ImageNet's; ``extra`` may override them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "architecture": "resnet34",
        "classes": list(classes),
        "num_classes": len(classes),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        **(extra or {}),
    }
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    save_atomic({"info": info, "state_dict": state}, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))
    return path


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A classifier saved by :func:`save_classifier`, in eval mode, and its record (``info["classes"]``...)."""
    saved = torch.load(path, map_location=map_location, weights_only=False)
    info = saved["info"]
    if info.get("architecture") != "resnet34":
        raise ValueError(f"{path} holds a {info.get('architecture')!r}, not a resnet34 classifier")
    model, _ = resnet34_classifier(len(info["classes"]), weights=None)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()})
    return model.to(map_location).eval(), info


# ----------------------------------------------------------------------------- the lesson's run


@dataclass
class TransferConfig:
    """Everything that defines a transfer-learning run; saved with its checkpoints and weights."""

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


def transfer_config(fast: bool = False) -> TransferConfig:
    """The lesson's recipe; ``fast`` shrinks it to a smoke test (8+4 images per class, 64x96, 1 step)."""
    if fast:
        return TransferConfig(
            image_size=(64, 96), batch_size=16, head_epochs=1, fine_tune_epochs=1,
            train_per_class=8, test_per_class=4, max_steps_per_epoch=1,
        )  # fmt: skip
    return TransferConfig()


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
    test_paths: list[Path]
    split: str  # "grouped" or "frames"
    shared_group_fraction: float  # test images whose fish is also in training
    train_images: int
    test_images: int
    config: TransferConfig
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
    from .download import FISH_EGU2017, download_kaggle_fish, download_source, kaggle_fish_root

    if source not in FISH_GROUPS:
        raise ValueError(f"source must be one of {sorted(FISH_GROUPS)}, not {source!r}")
    if source == "kaggle":
        return kaggle_fish_root(root if root is not None else download_kaggle_fish())
    if root is not None:
        return Path(root)
    local = data_dir(FISH_EGU2017.name)
    return local if local is not None else download_source(FISH_EGU2017, cache_dir() / FISH_EGU2017.name)


def transfer_data(
    root: str | Path | None, config: TransferConfig, group_fn: Callable[[Path], str] = fish_group
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


def _plan(config: TransferConfig, weights_used: str) -> list[tuple[str, int, float, float | None, bool]]:
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
    config: TransferConfig | None = None,
    out: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
    group_fn: Callable[[Path], str] = fish_group,
) -> TransferResult:
    """Train the lesson's ResNet-34 classifier on a class-folder set and test it.

    Seeded stratified split (by fish unless ``config.grouped`` is False), then one-cycle
    stages through :func:`fit_one_cycle`: with ImageNet weights, ``head_epochs`` with the
    backbone frozen then ``fine_tune_epochs`` of all layers (discriminative LRs); with random
    weights (offline) one stage of all layers for the same number of epochs, as the original
    recipe trained (freezing a random backbone teaches nothing). With ``out`` each stage is
    checkpointed there (a rerun resumes) and the classifier, history and summary are saved.
    """
    config = config or TransferConfig()
    device = device or get_device()
    started = time.perf_counter()
    dataset, train_idx, test_idx, shared = transfer_data(root, config, group_fn)
    classes = dataset.classes
    train_set = dataset.subset(train_idx, imagenet_train_transforms(config.image_size))
    test_set = dataset.subset(test_idx, imagenet_eval_transforms(config.image_size))
    train_loader = make_loader(train_set, config.batch_size, train=True, seed=config.seed, device=device)
    test_loader = make_loader(test_set, config.batch_size, train=False, device=device)
    amp_dtype = resolve_amp_dtype(device)  # the same precision for training, testing and the final test
    seed_everything(config.seed)
    model, weights_used = resnet34_classifier(len(classes), config.weights, log=log)
    split = "grouped" if config.grouped else "frames"
    log(f"{len(classes)} classes; train {len(train_idx)} / test {len(test_idx)} images ({split} split, "
        f"{100 * shared:.0f}% of test images share a fish with training); weights: {weights_used}")  # fmt: skip
    folder = Path(out) if out is not None else None
    history: list[dict] = []
    lrs: list[float] = []
    stages = _plan(config, weights_used)
    for number, (name, epochs, max_lr, factor, frozen) in enumerate(stages, 1):
        if frozen:
            freeze_backbone(model)
        else:
            unfreeze(model)
        log(f"stage {number}/{len(stages)}: {name}, {epochs} epoch(s), one-cycle max LR {max_lr:g}")
        stage_dir = folder / f"stage{number}_{name.replace(' ', '_')}" if folder is not None else None
        result = fit_one_cycle(
            epochs, max_lr, model, train_loader, test_loader, config.weight_decay, config.grad_clip,
            config.optimizer, backbone_lr_factor=factor, device=device, seed=config.seed * 100 + number,
            checkpoint_dir=stage_dir, config={**asdict(config), "stage": name, "weights_used": weights_used},
            progress=progress, max_steps_per_epoch=config.max_steps_per_epoch, log=log, amp_dtype=amp_dtype,
        )  # fmt: skip
        offset = len(history)
        history += [{**row, "epoch": offset + row["epoch"], "stage": name} for row in result.history]
        lrs += result.lrs
    unfreeze(model)
    outputs, targets = predict(model, test_loader, device, amp_dtype)
    accuracy = (outputs.argmax(1) == targets).float().mean().item() * 100
    result = TransferResult(
        model=model, classes=classes, weights=weights_used, stages=[s[0] for s in stages], history=history,
        lrs=lrs, test_accuracy=accuracy, confusion=confusion_matrix(outputs.argmax(1), targets, len(classes)),
        outputs=outputs, targets=targets, test_paths=list(test_set.paths), split=split,
        shared_group_fraction=shared, train_images=len(train_idx), test_images=len(test_idx), config=config,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    log(f"test accuracy {accuracy:.2f}% ({split} split, weights: {weights_used})")
    if folder is not None:
        _save_run(result, folder, root, device)
    return result


def _save_run(result: TransferResult, folder: Path, root, device: torch.device) -> None:
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
        "device": describe_device(device),
        "seconds": round(result.seconds, 1),
        "config": asdict(result.config),
    }
    save_classifier(result.model, folder / "classifier.pt", result.classes, record)
    (folder / "summary.json").write_text(
        json.dumps({**record, "confusion": result.confusion.tolist(), "classes": result.classes}, indent=1)
    )


def run_leaky_split(root: str | Path | None = None, config: TransferConfig | None = None, **kwargs) -> TransferResult:
    """The same run on the leaky frame-level split (stratified, ungrouped), for comparison.

    Frames of one fish then land on both sides, so the test accuracy measures memory of
    individual fish rather than recognition of species.
    """
    config = config or TransferConfig()
    return run_transfer(root, TransferConfig(**{**asdict(config), "grouped": False}), **kwargs)


def split_table(results: list[TransferResult]):
    """One row per run: its split, test images, share of test fish seen in training, test accuracy."""
    import pandas as pd

    return pd.DataFrame([
        {"split": r.split, "test images": r.test_images,
         "share of test fish seen in training %": round(100 * r.shared_group_fraction, 1),
         "test accuracy %": round(r.test_accuracy, 2)}
        for r in results
    ]).set_index("split")  # fmt: skip


def compare_splits(root: str | Path | None = None, config: TransferConfig | None = None, **kwargs):
    """Train the same recipe on the fair (by fish) and the leaky (by frame) split: :func:`split_table`."""
    return split_table([run_transfer(root, config, **kwargs), run_leaky_split(root, config, **kwargs)])


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TransferConfig()
    parser = argparse.ArgumentParser(
        prog="python -m cifar.transfer",
        description="Fine-tune an ImageNet ResNet-34 on a class-folder image set (the fish lesson).",
    )
    parser.add_argument("--data-dir", help="class-folder root (default: $CIFAR_DATA_DIR/fish_egu2017, else downloaded)")
    parser.add_argument("--source", choices=sorted(FISH_GROUPS), default="egu2017",
                        help="kaggle: Kaggle's fish set (--data-dir: its download folder; else kagglehub)")  # fmt: skip
    parser.add_argument("--out", default="runs/fish", help="run folder: checkpoints, history, classifier, figures")
    parser.add_argument("--fast", action="store_true", help="smoke test: few images, 64x96, 1 step per epoch")
    parser.add_argument("--weights", default=defaults.weights, help="IMAGENET1K_V1, a resnet34 .pth file, or 'none'")
    parser.add_argument("--stages", choices=["auto", "one", "two"], default=defaults.stages)
    parser.add_argument("--head-epochs", type=int)
    parser.add_argument("--fine-tune-epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-lr", type=float)
    parser.add_argument("--fine-tune-lr", type=float)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--leaky", action="store_true", help="use the leaky frame-level split (for comparison)")
    parser.add_argument("--on-error", choices=["raise", "skip"], default=defaults.on_error)
    parser.add_argument("--max-steps", type=int, help="cap batches per epoch (smoke tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the lesson from the command line; writes the run folder and returns its summary."""
    args = parse_args(argv)
    config = transfer_config(args.fast)
    overrides = {
        "head_epochs": args.head_epochs, "fine_tune_epochs": args.fine_tune_epochs, "batch_size": args.batch_size,
        "max_lr": args.max_lr, "fine_tune_lr": args.fine_tune_lr, "seed": args.seed,
        "image_size": tuple(args.image_size) if args.image_size else None, "max_steps_per_epoch": args.max_steps,
    }  # fmt: skip
    values = {**asdict(config), **{k: v for k, v in overrides.items() if v is not None}}
    values.update(
        weights=None if str(args.weights).lower() == "none" else args.weights, stages=args.stages,
        grouped=not args.leaky, on_error=args.on_error,
    )  # fmt: skip
    config = TransferConfig(**values)
    from .utils import per_class_accuracy, plot_confusion, plot_history, plot_lrs

    out = Path(args.out)
    device = get_device()
    print(f"device: {describe_device(device)}")
    try:
        root = fish_root(args.data_dir, args.source)
        result = run_transfer(root, config, out, device, group_fn=FISH_GROUPS[args.source])
    except DataError as error:
        sys.exit(f"error: {error}")
    plot_history(result.history, target=None).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    steps = max(1, len(result.lrs) // max(1, len(result.history)))
    plot_lrs(result.lrs, steps).savefig(out / "lr_trace.png", dpi=120, bbox_inches="tight")
    plot_confusion(result.confusion, result.classes).savefig(out / "confusion.png", dpi=120, bbox_inches="tight")
    print(per_class_accuracy(result.confusion, result.classes).to_string())
    summary = json.loads((out / "summary.json").read_text())
    summary["command"] = " ".join(["python -m cifar.transfer", *(argv if argv is not None else sys.argv[1:])])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
