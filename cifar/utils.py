"""Small helpers every lesson uses: data location, fast mode, seeding, device, precision."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "CIFAR_DATA_DIR"
FAST_ENV = "CIFAR_FAST"
CACHE_ENV = "CIFAR_CACHE_DIR"


def data_dir(name: str | None = None) -> Path | None:
    """Folder named by ``$CIFAR_DATA_DIR`` (or its sub-folder ``name``), or None if unset.

    ``CIFAR_DATA_DIR`` points at a folder holding ``cifar10/``, ``raccoon/`` and
    ``fish_egu2017/``; it is the one way the course is told where local data lives.
    """
    root = os.environ.get(DATA_ENV)
    if not root:
        return None
    path = Path(root).expanduser()
    return path / name if name else path


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$CIFAR_CACHE_DIR`` or ``~/.cache/cifar-course``."""
    path = Path(os.environ.get(CACHE_ENV, "~/.cache/cifar-course")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def fast_mode() -> bool:
    """True when ``$CIFAR_FAST`` is set to 1/true/yes: notebooks then run small subsets."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_device() -> torch.device:
    """CUDA if present, then Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that is fast and safe on ``device``, or None for fp32.

    bf16 on CUDA cards that support it (fp16 otherwise), bf16 on CPUs with native
    bf16 instructions (AVX512-BF16 or AMX); on other CPUs bf16 is emulated and slower.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            check = getattr(cpu, probe, None)
            if check is not None and check():
                return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` in ``dtype``, or a no-op context when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with requires_grad if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def environment_summary() -> dict[str, str]:
    """Versions and hardware, for the top of a notebook."""
    device = get_device()
    info = {
        "python": ".".join(map(str, __import__("sys").version_info[:3])),
        "torch": torch.__version__,
        "device": str(device),
        "cpu threads": str(torch.get_num_threads()),
        "autocast": str(autocast_dtype(device)).replace("torch.", ""),
        "fast mode": str(fast_mode()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def plot_history(history: list[dict], score_name: str = "acc", score_label: str = "accuracy (%)", target=90):
    """Train/test loss and score (accuracy by default) per epoch ("model statistics")."""
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "test"):
        ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker=".", label=split)
        ax_acc.plot(epochs, [row[f"{split}_{score_name}"] for row in history], marker=".", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss (mean per image)", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel=score_label, title=score_label.split(" (")[0].capitalize())
    if target is not None:
        ax_acc.axhline(target, color="grey", linestyle=":", linewidth=1)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def plot_lrs(lrs: list[float], steps_per_epoch: int, title: str = "Learning rate of every batch"):
    """The LR trend of a run, batch by batch, on an epoch axis."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([i / steps_per_epoch for i in range(len(lrs))], lrs)
    peak = int(max(range(len(lrs)), key=lrs.__getitem__)) if lrs else 0
    ax.axvline(peak / steps_per_epoch, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="epoch", ylabel="learning rate", title=f"{title} (peak {max(lrs, default=0):.2e})")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure
