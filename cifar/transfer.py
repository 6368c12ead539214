"""Transfer learning: an ImageNet ResNet-34 with a new head, fine-tuned on a class-folder image set.

The library of the fish lesson (:mod:`cifar.fish`), built on the course's engine
(:func:`cifar.train.fit`): torchvision's ImageNet weights for ``resnet34`` (:func:`resnet34_weights`,
with a one-line notice and random weights where they cannot be had), the network with a new head
``fc = nn.Linear(512, num_classes)`` (:func:`resnet34_classifier`), :func:`freeze_backbone` /
:func:`unfreeze`, discriminative learning rates (:func:`parameter_groups`), the original lesson's
:func:`fit_one_cycle`, and the classifier saved with its class names in the course's weights
format (:func:`save_classifier` / :func:`load_classifier`).

``python -m cifar.transfer`` runs the fish lesson's command line (:func:`cifar.fish.main`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .artifacts import load_weights, save_weights
from .dataset import IMAGENET_MEAN, IMAGENET_STD
from .model import torchvision_state_dict
from .scheduler import make_optimizer, one_cycle
from .train import FitResult, fit
from .utils import get_device

IMAGENET_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WEIGHTS = "random"
HEAD = "fc"  # torchvision ResNets call their classifier layer ``fc``


# ----------------------------------------------------------------------------- the model


def resnet34_weights(
    weights: str | Path | None = IMAGENET_WEIGHTS, log: Callable[[str], object] = print
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """resnet34's ImageNet state_dict and the name of the weights it holds, or ``(None, "random")``.

    ``weights`` is a torchvision weights name (``"IMAGENET1K_V1"``: torch hub's cache, else a
    download), a local ``.pth`` file of resnet34's ImageNet state_dict, or None for random weights.
    When the weights cannot be loaded (no internet), ``log`` gets a one-line notice and the
    result is ``(None, "random")``: the caller goes on from random weights.
    """
    from torchvision.models import ResNet34_Weights

    if weights is None:
        return None, RANDOM_WEIGHTS
    is_file = Path(weights).is_file()
    if not is_file and str(weights) not in ResNet34_Weights.__members__:
        raise ValueError(
            f"weights must be one of {list(ResNet34_Weights.__members__)}, a .pth file or None, not {weights!r}"
        )
    try:
        if is_file:
            return torch.load(weights, map_location="cpu", weights_only=True), str(weights)
        return torchvision_state_dict(ResNet34_Weights[str(weights)]), str(weights)
    except Exception as error:  # offline, proxy, hash mismatch, corrupt file...
        url = ResNet34_Weights.IMAGENET1K_V1.url
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        log(
            f"Notice: ImageNet weights {weights} could not be loaded ({reason}); continuing with RANDOM weights. "
            f"To use them offline, put {url.rsplit('/', 1)[-1]} in torch's hub cache "
            "($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints)."
        )
        return None, RANDOM_WEIGHTS


def resnet34_classifier(num_classes: int, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """torchvision's ResNet-34 holding ``state`` (ImageNet's, see :func:`resnet34_weights`; None: random
    weights) with a new head ``fc = nn.Linear(512, num_classes)``, randomly initialised (seed first)."""
    from torchvision.models import resnet34

    model = resnet34(weights=None)
    if state is not None:
        model.load_state_dict(state)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


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


def save_classifier(model: nn.Module, path: str | Path, classes: list[str], record: dict | None = None) -> Path:
    """Save a ResNet-34 classifier in the course's weights format (:func:`cifar.artifacts.save_weights`).

    Its JSON record holds the class names, ImageNet's mean and std (``record`` may override them)
    and ``record`` (the weights it started from, the image size...).
    """
    record = {
        "architecture": "resnet34",
        "classes": list(classes),
        "num_classes": len(classes),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        **(record or {}),
    }
    return save_weights(model, path, record)


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """The classifier saved by :func:`save_classifier` (float32, eval mode) and its record (``["classes"]``...)."""
    state, record = load_weights(path)
    if record.get("architecture") != "resnet34":
        raise ValueError(f"{path} holds a {record.get('architecture')!r}, not a resnet34 classifier")
    model = resnet34_classifier(len(record["classes"]))
    model.load_state_dict(state)
    return model.eval(), record


if __name__ == "__main__":
    from .fish import main

    main()
