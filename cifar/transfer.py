"""Transfer learning: a pretrained network with a new head, fine-tuned on a class-folder image set.

The library of the fish lesson (:mod:`cifar.fish`), built on the course's engine
(:func:`cifar.train.fit`): torchvision's ImageNet weights for ``resnet34`` (:func:`resnet34_weights`,
with a one-line notice and random weights where they cannot be had), the network with a new head
``fc = nn.Linear(512, num_classes)`` (:func:`resnet34_classifier`); the course's own S10 network
trained on CIFAR-10 as a backbone that exists offline (:func:`s10_backbone_weights`,
:func:`s10_classifier`); what a backbone's features are worth as they are (:func:`extract_features`,
:func:`linear_probe`); batch-norm statistics re-estimated (:func:`recompute_bn_statistics`); :func:`freeze_backbone` /
:func:`unfreeze`, discriminative learning rates (:func:`parameter_groups`), the one-cycle recipe
:func:`fit_one_cycle`, and the classifier saved with its class names in the course's weights
format (:func:`save_classifier` / :func:`load_classifier`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .artifacts import load_model, load_weights, save_weights
from .dataset import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from .model import CustomResNet, imagenet_notice, imagenet_weights
from .scheduler import make_optimizer, one_cycle
from .train import FitOptions, FitResult, fit, predict, to_device
from .utils import autocast, get_device, resolve_amp_dtype

IMAGENET_WEIGHTS = "IMAGENET1K_V1"
RANDOM_WEIGHTS = "random"
HEAD = "fc"  # torchvision ResNets, and the course's CustomResNet, call their classifier layer ``fc``
#: The normalization the S10 network was trained with (CIFAR-10's channel statistics, as in the record of
#: ``weights/s10_custom_resnet.pt``); its fish classifier uses it from either start, CIFAR-10 or random.
S10_MEAN = CIFAR10_MEAN
S10_STD = CIFAR10_STD


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
    if is_file:
        try:
            return torch.load(weights, map_location="cpu", weights_only=True), str(weights)
        except Exception as error:  # a corrupt or foreign file
            log(imagenet_notice(str(weights), error, ResNet34_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]))
            return None, RANDOM_WEIGHTS
    state = imagenet_weights(ResNet34_Weights[str(weights)], log)
    return (state, str(weights)) if state is not None else (None, RANDOM_WEIGHTS)


def resnet34_classifier(num_classes: int, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """torchvision's ResNet-34 holding ``state`` (ImageNet's, see :func:`resnet34_weights`; None: random
    weights) with a new head ``fc = nn.Linear(512, num_classes)``, randomly initialised (seed first)."""
    from torchvision.models import resnet34

    model = resnet34(weights=None)
    if state is not None:
        model.load_state_dict(state)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def s10_backbone_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state_dict and record of S10 weights trained on CIFAR-10 (``weights/s10_custom_resnet.pt``).

    No fallback: the file is part of the course, so a missing or foreign file raises.
    """
    state, record = load_weights(path)
    if record.get("architecture") != "CustomResNet":
        raise ValueError(f"{path} holds a {record.get('architecture')!r}, not the S10 CustomResNet")
    return state, record


def s10_classifier(num_classes: int, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The S10 CustomResNet holding ``state`` (CIFAR-10's, see :func:`s10_backbone_weights`; None: random
    weights) as a backbone for images of any size, with a new head ``fc = nn.Linear(512, num_classes)``.

    Two changes to the CIFAR-10 network: the final ``MaxPool2d(4)``, which fits the 4x4 map of a 32x32
    image, becomes a global max pool (the same result at 32x32; one 512-vector at any input size), and the
    head is new, randomly initialised (seed first), without the CIFAR-10 recipe's logit scale.
    """
    model = CustomResNet(num_classes=10)
    if state is not None:
        model.load_state_dict(state)
    model.pool = nn.AdaptiveMaxPool2d(1)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


#: The classifiers that :func:`load_classifier` rebuilds, by the ``architecture`` of their record.
CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {"resnet34": resnet34_classifier, "s10": s10_classifier}
NORMALIZATION = {"resnet34": (IMAGENET_MEAN, IMAGENET_STD), "s10": (S10_MEAN, S10_STD)}


def extract_features(
    model: nn.Module, loader, device: torch.device | None = None, amp_dtype: torch.dtype | None | str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's features (the inputs of the head ``fc``) of every image of ``loader``, in eval mode, and
    their targets: float32 tensors on the CPU."""
    device = device or get_device()
    head = model.fc
    model.fc = nn.Identity()
    try:
        return predict(model.to(device), loader, device, resolve_amp_dtype(device, amp_dtype))
    finally:
        model.fc = head


def linear_probe(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    weight_decay: float = 1e-3,
    steps: int = 200,
) -> float:
    """Test accuracy (%) of a linear classifier on frozen features: how well they separate the classes as they are.

    Multinomial logistic regression (L2 penalty ``weight_decay`` on the weights) fitted by L-BFGS to
    convergence or ``steps`` iterations, on features standardized with the training features' mean
    and std, so that features of any scale (a random network's included) are compared alike.
    Deterministic: no random draws.
    """
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    train_x, test_x = (train_features - mean) / std, (test_features - mean) / std
    classes = int(max(train_targets.max(), test_targets.max())) + 1
    layer = nn.Linear(train_x.shape[1], classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(layer(train_x), train_targets) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (layer(test_x).argmax(1) == test_targets).float().mean().item() * 100


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module, loader, device: torch.device | None = None, amp_dtype: torch.dtype | None | str = "auto"
) -> nn.Module:
    """``model`` (changed in place, returned in eval mode) with every batch norm's running statistics
    re-estimated over the images of ``loader``: a plain average over its batches (``momentum=None``),
    the weights untouched. Tests whether the running statistics a run ended with explain its test
    loss: evaluate before and after."""
    device = device or get_device()
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    model.to(device).train()
    try:
        for inputs, targets in loader:
            inputs, _ = to_device(inputs, targets, device, True)
            with autocast(device, resolve_amp_dtype(device, amp_dtype)):
                model(inputs)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return model


@dataclass
class EpochSnapshots:
    """A :class:`~cifar.train.FitOptions` ``log`` that prints each line and keeps the model of every epoch.

    :func:`cifar.train.fit` logs an epoch's line, then checkpoints it to ``checkpoint`` (a run's, or a
    stage's, ``checkpoint.pt``); at each epoch line the model of the checkpoint on disk, the epoch
    before, is saved as ``folder/epoch<N>.pt``. So epochs 1 to the last but one are kept (the last is
    the trained model itself), to be tested afterwards (:meth:`load`).
    """

    checkpoint: Path
    folder: Path

    def __call__(self, line: str) -> None:
        print(line)
        if line.startswith("epoch") and Path(self.checkpoint).is_file():
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            torch.save(state["model"], Path(self.folder) / f"epoch{state['epoch']}.pt")

    def has(self, epoch: int) -> bool:
        """Whether the model after ``epoch`` was kept (a run of two stages keeps none: its checkpoints differ)."""
        return (Path(self.folder) / f"epoch{epoch}.pt").is_file()

    def load(self, model: nn.Module, epoch: int) -> nn.Module:
        """``model`` (changed in place) holding the weights and statistics kept after ``epoch``."""
        model.load_state_dict(torch.load(Path(self.folder) / f"epoch{epoch}.pt", map_location="cpu"))
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


@dataclass
class OneCycle:
    """The optimizer and schedule of :func:`fit_one_cycle`: fastai-style fine-tuning's, by default.

    ``opt_func``: ``"adam"``/``"sgd"``, or a class such as ``torch.optim.Adam`` called as
    ``opt_func(groups, lr=..., weight_decay=...)``. The schedule is :func:`cifar.scheduler.one_cycle`
    with OneCycleLR's default pct_start 0.3, div_factor 25 and final_div_factor 1e4, but linear
    warm-up and annealing where OneCycleLR defaults to cosine annealing. ``backbone_lr_factor``
    scales the backbone's LR (discriminative LRs, :func:`parameter_groups`).
    """

    opt_func: str | Callable = "adam"
    weight_decay: float = 0.0
    backbone_lr_factor: float | None = None
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4


def fit_one_cycle(
    epochs: int,
    max_lr: float,
    model: nn.Module,
    train_loader,
    val_loader,
    cycle: OneCycle | None = None,
    options: FitOptions | None = None,
) -> FitResult:
    """fastai-style ``fit_one_cycle``, on the course's engine (:func:`cifar.train.fit`).

    Trains the parameters that require grad with ``cycle``'s optimizer under a one-cycle schedule
    stepped every batch (:class:`OneCycle`); ``options`` (:class:`~cifar.train.FitOptions`) says how:
    device, precision, gradient clipping (``grad_clip``), checkpoints (``checkpoint_dir`` and
    ``config`` make it resumable). Returns :class:`~cifar.train.FitResult`: per-epoch history and the
    LR of every batch (of the head's group).
    """
    cycle = cycle if cycle is not None else OneCycle()
    options = options if options is not None else FitOptions()
    groups = parameter_groups(model, cycle.backbone_lr_factor)
    max_lrs = [max_lr * group.pop("lr_factor") for group in groups]
    start_lr = max_lr / cycle.div_factor
    if isinstance(cycle.opt_func, str):
        optimizer = make_optimizer(cycle.opt_func, groups, start_lr, cycle.weight_decay)
    else:
        optimizer = cycle.opt_func(groups, lr=start_lr, weight_decay=cycle.weight_decay)
    steps = len(train_loader)
    if options.max_steps_per_epoch is not None:
        steps = min(options.max_steps_per_epoch, steps)
    peak = max_lrs if len(max_lrs) > 1 else max_lrs[0]
    schedule = one_cycle(optimizer, peak, epochs, steps, cycle.pct_start, cycle.div_factor, cycle.final_div_factor)
    return fit(model, train_loader, val_loader, optimizer, schedule, epochs, options)


# ----------------------------------------------------------------------------- saving with class names


def save_classifier(
    model: nn.Module, path: str | Path, classes: list[str], record: dict | None = None, architecture: str = "resnet34"
) -> Path:
    """Save a classifier of :data:`CLASSIFIERS` in the course's weights format (:func:`cifar.artifacts.save_weights`).

    Its JSON record holds the architecture, the class names, the normalization the network was
    trained with (``record`` may override it) and ``record`` (the weights it started from, the image size...).
    """
    if architecture not in CLASSIFIERS:
        raise ValueError(f"architecture must be one of {sorted(CLASSIFIERS)}, not {architecture!r}")
    mean, std = NORMALIZATION[architecture]
    record = {
        "architecture": architecture,
        "classes": list(classes),
        "num_classes": len(classes),
        "mean": list(mean),
        "std": list(std),
        **(record or {}),
    }
    return save_weights(model, path, record)


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """The classifier saved by :func:`save_classifier` (float32, eval mode) and its record (``["classes"]``...)."""

    def build(record: dict) -> nn.Module:
        if record.get("architecture") not in CLASSIFIERS:
            raise ValueError(
                f"{path} holds a {record.get('architecture')!r}, not a classifier of {sorted(CLASSIFIERS)}"
            )
        return CLASSIFIERS[record["architecture"]](len(record["classes"]))

    return load_model(path, build)
