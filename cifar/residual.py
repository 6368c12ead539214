"""The residual-connections lesson (notebook 01): plain and residual networks of 20 and 56 layers on CIFAR-10.

He, Zhang, Ren and Sun (2015), section 4.2: a deeper plain network trains to a *higher* training
error than a shallower one (the degradation problem), and the same networks with identity
shortcuts do not. :class:`ResidualConfig` is one run's recipe (SGD with momentum, one-cycle, the
paper's 4-pixel shifts and flips), :func:`train_residual` trains it through :func:`cifar.train.fit`,
and each finished run is kept as fp16 weights with a JSON record (``weights/records/residual_<name>.json``)
that the notebook draws its curves from. On the command line::

    python -m cifar.residual --network plain56 --out runs/residual/plain56 \\
        --weights weights/records/residual_plain56.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import cli
from .artifacts import load_model, save_weights
from .dataset import CIFAR10_MEAN, CIFAR10_STD, BatchAugment, TensorBatches, class_balanced_subset, load_cifar10
from .model import CifarResNet
from .scheduler import one_cycle
from .train import FitOptions, FitResult, fit
from .utils import PRECISIONS, count_parameters, derive_seed, describe_device, get_device, resolve_amp_dtype, seeded

#: The four networks of the lesson: name -> (depth, shortcut). Names as in the paper's Figure 6.
NETWORKS = {
    "plain20": (20, "plain"),
    "plain56": (56, "plain"),
    "resnet20": (20, "residual"),
    "resnet56": (56, "residual"),
}


@dataclass
class ResidualConfig:
    """One run of the lesson; saved with its checkpoints (a resume must match) and in its record."""

    depth: int = 20
    shortcut: str = "residual"
    epochs: int = 5
    batch_size: int = 128
    max_lr: float = 0.1  # the paper's LR, reached after a warm-up from max_lr / 10
    momentum: float = 0.9
    weight_decay: float = 1e-4  # the paper's
    pct_start: float = 0.25
    pad: int = 4  # shifts of up to 4 pixels (pad and crop), as the paper
    train_subset: int | None = None  # None: all 50,000 training images
    test_subset: int | None = None  # None: all 10,000 test images
    seed: int = 0

    @property
    def name(self) -> str:
        """``plain56``, ``resnet20``, ...: the network's name in records and figures."""
        return f"{'resnet' if self.shortcut == 'residual' else 'plain'}{self.depth}"


def residual_config(network: str = "resnet20", fast: bool = False, **changes) -> ResidualConfig:
    """The lesson's recipe for a network of :data:`NETWORKS`; ``fast``: 250 training and 200 test images, batch 50."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {sorted(NETWORKS)}, not {network!r}")
    depth, shortcut = NETWORKS[network]
    if fast:
        changes = {"epochs": 1, "batch_size": 50, "train_subset": 250, "test_subset": 200, **changes}
    return ResidualConfig(depth=depth, shortcut=shortcut, **changes)


def residual_model(config: ResidualConfig) -> CifarResNet:
    """A freshly initialised network of the config, its weights drawn from ``derive_seed(seed, "model")``."""
    with seeded(derive_seed(config.seed, "model")):
        return CifarResNet(config.depth, config.shortcut)


def residual_data(
    config: ResidualConfig, root: str | Path | None = None, download: bool = False, device: torch.device | None = None
) -> tuple[TensorBatches, TensorBatches]:
    """Training and test batches of the real CIFAR-10, kept as tensors; training with shifts and flips, no cut-out."""
    device = device or get_device()
    train_images, train_labels = load_cifar10("train", root, download)
    test_images, test_labels = load_cifar10("test", root, download)
    train_images, train_labels = class_balanced_subset(
        train_images, train_labels, config.train_subset, derive_seed(config.seed, "train subset")
    )
    test_images, test_labels = class_balanced_subset(
        test_images, test_labels, config.test_subset, derive_seed(config.seed, "test subset")
    )
    common = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD, "device": device}
    augment = BatchAugment(seed=config.seed, pad=config.pad, cutout=0)
    train = TensorBatches(train_images, train_labels, config.batch_size, train=True, augment=augment, **common)
    test = TensorBatches(test_images, test_labels, 1000, train=False, **common)
    return train, test


def train_residual(
    config: ResidualConfig,
    checkpoint_dir: str | Path | None = None,
    root: str | Path | None = None,
    download: bool = False,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None | str = "auto",
    progress: bool = True,
    log=print,
) -> tuple[CifarResNet, FitResult]:
    """Train the config's network from its seed; returns the trained model and its history.

    SGD with momentum and weight decay, one-cycle LR (linear warm-up from ``max_lr / 10`` over
    ``pct_start`` of the steps, then linear decay), cross-entropy; a test after every epoch. With
    ``checkpoint_dir`` the run is saved every epoch and every 5 minutes, and resumes exactly.
    """
    device = device or get_device()
    train, test = residual_data(config, root, download, device)
    model = residual_model(config)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.max_lr / 10, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = one_cycle(optimizer, config.max_lr, config.epochs, len(train), config.pct_start, 10.0, 100.0)
    options = FitOptions(
        device=device,
        amp_dtype=amp_dtype,
        seed=config.seed,
        checkpoint_dir=checkpoint_dir,
        config=asdict(config),
        checkpoint_minutes=5.0,
        progress=progress,
        log=log,
    )
    result = fit(model, train, test, optimizer, schedule, config.epochs, options)
    return model, result


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def layer_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, float]]:
    """The norm of the loss gradient of each weighted layer's weights, from input to output, on one batch.

    The gradient of the cross-entropy of ``model`` (in training mode, as in a training step) on
    ``images``; computed on a copy, so ``model`` and its batch-norm statistics are left as they are. In
    float64: a deep plain network's gradients at initialisation are so sensitive that in float32 the
    order of a machine's sums (its number of threads) moves plain-56's first-layer norm by a quarter.
    """
    model = copy.deepcopy(model).double().train()
    loss = nn.functional.cross_entropy(model(images.double()), labels)
    loss.backward()
    return [(name, layer.weight.grad.norm().item()) for name, layer in _weighted_layers(model)]


def zero_branch(block: nn.Module) -> nn.Module:
    """A copy of a :class:`~cifar.model.CifarBlock` whose branch gives zeros: its last BN's scale and shift at 0."""
    block = copy.deepcopy(block)
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    return block


# ----------------------------------------------------------------------------- records


def residual_record(config: ResidualConfig, model: nn.Module, history: list[dict], command: str, device: str) -> dict:
    """What a finished run keeps beside its weights: the network, the recipe, the command and the per-epoch history."""
    columns = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "eval_seconds")
    return {
        "architecture": f"{'ResNet' if config.shortcut == 'residual' else 'plain'}-{config.depth}",
        "name": config.name,
        "depth": config.depth,
        "shortcut": config.shortcut,
        "parameters": count_parameters(model),
        "epochs": config.epochs,
        "seed": config.seed,
        "config": asdict(config),
        "command": command,
        "device": device,
        "history": [{key: row[key] for key in columns} for row in history],
    }


def record_file(folder: str | Path, name: str, seed: int = 0) -> Path:
    """``residual_<name>.json`` for seed 0, ``residual_<name>_seed<seed>.json`` for the others."""
    return Path(folder) / (f"residual_{name}.json" if seed == 0 else f"residual_{name}_seed{seed}.json")


def load_records(folder: str | Path, seed: int = 0) -> dict[str, dict]:
    """The records of the four networks for ``seed`` in ``folder`` (``weights/records``), by name; all must exist."""
    records = {}
    for name in NETWORKS:
        path = record_file(folder, name, seed)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: train it with python -m cifar.residual --network {name}")
        records[name] = json.loads(path.read_text())
    return records


def load_residual_weights(path: str | Path) -> tuple[CifarResNet, dict]:
    """The network saved at ``path`` (the course's weights format) and its record."""
    return load_model(path, lambda record: CifarResNet(record["depth"], record["shortcut"]))


def results_table(records: dict[str, dict]):
    """One row per network: its size and, after the last epoch, training and test error (%) and the time."""
    import pandas as pd

    rows = []
    for record in records.values():
        last = record["history"][-1]
        minutes = sum(row["seconds"] + row.get("eval_seconds", 0.0) for row in record["history"]) / 60
        rows.append(
            {
                "network": record["architecture"],
                "parameters": f"{record['parameters']:,}",
                "epochs": record["epochs"],
                "train error (%)": round(100 - last["train_acc"], 2),
                "test error (%)": round(100 - last["test_acc"], 2),
                "minutes": round(minutes, 1),
            }
        )
    return pd.DataFrame(rows).set_index("network")


def describe_degradation(records: dict[str, dict]) -> str:
    """For the plain and the residual pair: is the 56-layer network's training error above the 20-layer one's?

    One line per pair, with the training and test errors of both after the last epoch and the
    epochs in which the deeper network's training error was the higher one.
    """
    lines = []
    for shallow, deep in (("plain20", "plain56"), ("resnet20", "resnet56")):
        a, b = records[shallow], records[deep]
        train_a = [100 - row["train_acc"] for row in a["history"]]
        train_b = [100 - row["train_acc"] for row in b["history"]]
        worse = [row["epoch"] for row, x, y in zip(b["history"], train_a, train_b) if y > x]
        test_a, test_b = 100 - a["history"][-1]["test_acc"], 100 - b["history"][-1]["test_acc"]
        verdict = "higher" if train_b[-1] > train_a[-1] else "lower"
        lines.append(
            f"{b['architecture']} vs {a['architecture']}: training error {train_b[-1]:.2f}% vs {train_a[-1]:.2f}% "
            f"({verdict} by {abs(train_b[-1] - train_a[-1]):.2f} points), test error {test_b:.2f}% vs {test_a:.2f}%; "
            f"the deeper one's training error was the higher in epochs {worse or 'none'} of {len(train_b)}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def plot_gradient_norms(norms: dict[str, list[tuple[str, float]]]):
    """One line per network: the gradient norm of each weighted layer, input to output, on a log scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, values in norms.items():
        ax.plot(range(1, len(values) + 1), [value for _, value in values], marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("weighted layer (1 = first conv, last = the linear layer)")
    ax.set_ylabel("gradient norm")
    ax.set_title("Loss gradient per layer at initialisation (one batch)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's result
    return fig


def plot_degradation(records: dict[str, dict]):
    """The paper's Figure 6 for our runs: training error (dashed) and test error (solid) per epoch.

    Left the plain networks, right the residual ones; 20 layers in one colour, 56 in another.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    colours = {20: "tab:orange", 56: "tab:red"}
    for ax, shortcut, title in zip(axes, ("plain", "residual"), ("plain networks", "ResNets")):
        for record in records.values():
            if record["shortcut"] != shortcut:
                continue
            epochs = [row["epoch"] for row in record["history"]]
            colour = colours.get(record["depth"])
            ax.plot(
                epochs,
                [100 - row["train_acc"] for row in record["history"]],
                "--",
                color=colour,
                label=f"{record['architecture']} train",
            )
            ax.plot(
                epochs,
                [100 - row["test_acc"] for row in record["history"]],
                "-",
                color=colour,
                lw=2,
                label=f"{record['architecture']} test",
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(bottom=0)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's result
    return fig


# ----------------------------------------------------------------------------- command line

_OVERRIDES = ("epochs", "batch_size", "max_lr", "weight_decay", "train_subset", "test_subset", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ResidualConfig()
    parser = cli.base_parser(
        "python -m cifar.residual",
        "Train one network of the residual-connections lesson on CIFAR-10.",
        out="runs/residual",
        data_help="CIFAR-10 folder (default: $CIFAR_DATA_DIR/cifar10)",
    )
    parser.add_argument("--network", choices=sorted(NETWORKS), default="resnet20")
    parser.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--max-lr", type=float, help=f"one-cycle peak (default {defaults.max_lr:g})")
    parser.add_argument("--weight-decay", type=float, help=f"default {defaults.weight_decay:g}")
    parser.add_argument("--train-subset", type=int, help="class-balanced training images (default: all 50,000)")
    parser.add_argument("--test-subset", type=int, help="class-balanced test images (default: all 10,000)")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10")
    parser.add_argument("--weights", help="also save the trained weights (fp16) here, with the record beside them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Command line: train one network into ``--out`` (resumable); write its record (and weights)."""
    return cli.run(lambda: _main(parse_args(argv), argv))


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    config = cli.apply_overrides(residual_config(args.network, args.fast), args, _OVERRIDES)
    device = get_device()
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision])
    out = Path(args.out)
    started = time.time()
    model, result = train_residual(config, out, args.data_dir, device, amp_dtype)
    record = residual_record(
        config, model, result.history, cli.command_line("cifar.residual", argv), describe_device(device, amp_dtype)
    )
    record["wall_seconds_this_call"] = round(time.time() - started, 1)
    save_weights(model, out / f"residual_{config.name}.pt", record)
    if args.weights:
        save_weights(model, args.weights, record)
    last = result.history[-1]
    print(
        f"{config.name}: train error {100 - last['train_acc']:.2f}%, test error {100 - last['test_acc']:.2f}% "
        f"after {config.epochs} epochs; {out}"
    )
    return record


if __name__ == "__main__":
    main()
