"""Small helpers every lesson uses: data location and its errors, fast mode, seeding, device, precision."""

from __future__ import annotations

import hashlib
import inspect
import os
import platform
import random
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "CIFAR_DATA_DIR"
FAST_ENV = "CIFAR_FAST"
CACHE_ENV = "CIFAR_CACHE_DIR"
RUNS_ENV = "CIFAR_RUNS_DIR"


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
    """Where decoded arrays and downloads are cached: ``$CIFAR_CACHE_DIR`` or ``~/.cache/cifar-course``.

    Only the path: whoever writes a file there creates the folder first.
    """
    return Path(os.environ.get(CACHE_ENV, "~/.cache/cifar-course")).expanduser()


def runs_dir(default: str | Path = "runs") -> Path:
    """Where run folders (checkpoints, histories, figures) go: ``$CIFAR_RUNS_DIR``, else ``default``.

    In Colab, mount Google Drive and set ``CIFAR_RUNS_DIR`` to a folder on it: a long run then
    resumes from its last checkpoint after a disconnect instead of starting again.
    """
    return Path(os.environ.get(RUNS_ENV) or default).expanduser()


class DataError(ValueError):
    """Raised for data that is missing or not in the expected layout; names path and fix."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fast_mode() -> bool:
    """True when ``$CIFAR_FAST`` is set to 1/true/yes: notebooks then run small subsets."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def derive_seed(seed: int, *keys: int | str) -> int:
    """The seed of one use of a run's ``seed``, named by ``keys``: ``derive_seed(seed, "epoch", 3)``.

    The keys are hashed together with the seed (SHA-256), so every use draws from its own
    stream: arithmetic such as ``seed * 1000 + epoch`` would give seed 1's epoch 1000 the stream
    of seed 2's epoch 0. The result is below 2**32, which every seeding API takes.
    """
    words = (int(seed), *(key if isinstance(key, str) else int(key) for key in keys))  # NumPy ints print otherwise
    digest = hashlib.sha256(repr(words).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextmanager
def seeded(seed: int):
    """Run the block with torch's global (CPU) RNG seeded with ``seed``, then give it back as it was.

    For building a model from a seed without reseeding the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seed_transform(dataset, seed: int) -> None:
    """Seed the augmentation of ``dataset`` (an albumentations pipeline as its ``transform``), if it has one."""
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def seed_loader(loader, seed: int) -> None:
    """Make the next pass over ``loader``, and the training steps it feeds, a function of ``seed`` alone.

    Seeds torch's global RNG (dropout, and anything else a step draws), the loader's shuffling
    ``generator`` (which also seeds its worker processes) and its dataset's augmentation. The
    training engine calls it before every epoch with ``derive_seed(seed, "epoch", epoch)``, so
    that an epoch is drawn the same whether the run was resumed before it or not.
    """
    torch.manual_seed(seed)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    seed_transform(getattr(loader, "dataset", None), seed)


class SourceListing:
    """An object's source as the package holds it; renders as a code block in a notebook."""

    def __init__(self, path: str, first: int, last: int, code: str):
        self.path, self.first, self.last, self.code = path, first, last, code

    def _repr_markdown_(self) -> str:
        return f"`{self.path}`, lines {self.first}-{self.last}:\n\n```python\n{self.code}\n```"

    def __repr__(self) -> str:
        return f"# {self.path}, lines {self.first}-{self.last}\n{self.code}"


def show_source(obj) -> SourceListing:
    """The source of a class or function, read from its module, with where it lives.

    Notebooks show the package code they teach with this, so the page cannot drift from the code.
    """
    module = inspect.getmodule(obj)
    if module is None:
        raise TypeError(f"{obj!r} has no module to read its source from")
    lines, first = inspect.getsourcelines(obj)
    path = module.__name__.replace(".", "/") + ".py"
    return SourceListing(path, first, first + len(lines) - 1, "".join(lines).rstrip("\n"))


def get_device() -> torch.device:
    """CUDA if present, then Apple MPS, else CPU.

    The one place the device is chosen: everything else takes it as an argument (defaulting to this).
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that is fast and safe on ``device``, or None for fp32: the project's one policy.

    * CUDA: bf16 where the card has it natively (compute capability 8.0 or more: A100, RTX 30xx, H100),
      fp16 otherwise (T4, V100: with gradient scaling, see :func:`grad_scaler`).
      ``torch.cuda.is_bf16_supported()`` is not asked: it also counts bf16 emulated in fp32, which is slow.
    * CPU: bf16 with native bf16 instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower.
    * MPS and anything else: fp32. MPS autocast lacks many ops (they fall back to fp32 or to the CPU)
      and fp16 there would need gradient scaling too, so fp32 is the safe choice.
    """
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            check = getattr(cpu, probe, None)
            if check is not None and check():
                return torch.bfloat16
    return None


def resolve_amp_dtype(device: torch.device, amp_dtype: torch.dtype | None | str = "auto") -> torch.dtype | None:
    """``amp_dtype`` itself, or the policy's choice for ``device`` (:func:`autocast_dtype`) when it is "auto"."""
    return autocast_dtype(device) if amp_dtype == "auto" else amp_dtype


def needs_grad_scaler(amp_dtype: torch.dtype | None) -> bool:
    """Whether training in ``amp_dtype`` needs gradient scaling: fp16 does (small gradients underflow
    to zero in it), bf16 and fp32 do not (they have fp32's exponent range)."""
    return amp_dtype == torch.float16


def grad_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` for training on ``device`` in ``amp_dtype``, enabled only where
    :func:`needs_grad_scaler` says so; disabled, its ``scale``/``unscale_``/``step``/``update``
    do nothing but call the optimizer, so the bf16 and fp32 steps are unchanged."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(amp_dtype))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` in ``dtype``, or a no-op context when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


PRECISIONS: dict[str, torch.dtype | None | str] = {
    "auto": "auto",
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How the provenance records name an arithmetic: bf16 / fp16 autocast, or fp32."""
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(amp_dtype, "fp32")


def shown_command(command: str | None) -> str | None:
    """A recorded command as a page shows it: the local data folder of ``--data-dir`` (a path of the machine
    that ran it, such as ``../shared/data/cifar10``) named by its last part, ``<data>/cifar10``."""
    if command is None:
        return None
    return re.sub(r"--data-dir(=|\s+)(\S+)", lambda m: f"--data-dir{m.group(1)}<data>/{Path(m.group(2)).name}", command)


def describe_device(device: torch.device, amp_dtype: torch.dtype | None | str = "auto") -> str:
    """A human name for the hardware (and, when ``amp_dtype`` is given, the arithmetic), for provenance records."""
    if amp_dtype != "auto":
        return f"{describe_device(device)}, {precision_name(amp_dtype)}"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"MPS: Apple GPU ({platform.machine()})"
    if device.type != "cpu":
        return f"{device.type.upper()}: {device}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name}, {torch.get_num_threads()} threads"


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
        for ax, column in ((ax_loss, f"{split}_loss"), (ax_acc, f"{split}_{score_name}")):
            values = [row[column] for row in history]  # None: an epoch without a test (fit's eval_every)
            ax.plot(epochs, [float("nan") if v is None else v for v in values], marker=".", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss (mean per image)", title="Loss")
    title = score_label.split(" (")[0]
    ax_acc.set(xlabel="epoch", ylabel=score_label, title=title[:1].upper() + title[1:])  # "mean IoU" -> "Mean IoU"
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


def denormalize(image: torch.Tensor, mean, std) -> np.ndarray:
    """A normalized CHW tensor back to an HWC float image in [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image.detach().cpu() * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()


def show_images(images, titles: list[str] | None = None, ncols: int = 8, size: float = 1.6, title: str | None = None):
    """A grid of HWC images (uint8 or float in [0, 1]; None leaves a panel empty) with optional titles; returns
    the Figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, -(-n // ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.5)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        if image is None:
            continue
        ax.imshow(image, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def misclassified_indices(outputs: torch.Tensor, targets: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Indices of the ``n`` wrong predictions made with the highest confidence."""
    probabilities = outputs.softmax(1)
    confidence, predicted = probabilities.max(1)
    wrong = torch.nonzero(predicted != targets).flatten()
    order = confidence[wrong].argsort(descending=True)
    return wrong[order[:n]]


def gradcam_maps(
    model: torch.nn.Module, inputs: torch.Tensor, classes: list[int], target_layer: torch.nn.Module
) -> np.ndarray:
    """Grad-CAM heat maps (pytorch-grad-cam) of ``target_layer`` for ``classes``, one per input: (N, H, W) in [0, 1].

    The map has the layer's resolution (4x4 for the S10 network's last stage, 8x8 for ``layer2``),
    scaled up to the input's size. Runs in fp32 on contiguous memory, and leaves ``model`` so, in eval mode.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval().float().to(memory_format=torch.contiguous_format)
    parameter = next(model.parameters())
    inputs = inputs.to(parameter.device, parameter.dtype)
    with GradCAM(model=model, target_layers=[target_layer]) as cam:
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def gradcam_overlays(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    classes: list[int],
    target_layer: torch.nn.Module,
    mean,
    std,
) -> list[np.ndarray]:
    """Grad-CAM heat maps (:func:`gradcam_maps`) for ``classes``, laid over the de-normalized inputs."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    heatmaps = gradcam_maps(model, inputs, classes, target_layer)
    return [
        show_cam_on_image(denormalize(image, mean, std).astype(np.float32), heatmap, use_rgb=True, image_weight=0.6)
        for image, heatmap in zip(inputs.cpu(), heatmaps)
    ]


def map_similarity(maps: np.ndarray) -> np.ndarray:
    """For each of N heat maps (N, H, W), its correlation with the mean of all of them.

    Near 1 for every map: the maps are one shape whatever the image (they say little about any one
    image); lower: each map depends on its image. A constant map (no spread) gives NaN.
    """
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    flat = flat - flat.mean(1, keepdims=True)
    average = flat.mean(0)
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(average)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, flat @ average / norms, np.nan)


def gradcam_by_layer(
    model: torch.nn.Module, inputs: torch.Tensor, classes: list[int], layers: dict, mean, std, titles=None, size=1.6
):
    """The inputs in the first row, then one row of Grad-CAM overlays per layer of ``layers`` (name: module),
    the row's first panel titled with the layer's name (and ``titles`` over the inputs); returns the Figure."""
    panels = [denormalize(x, mean, std) for x in inputs]
    labels = list(titles) if titles is not None else [""] * len(inputs)
    for name, layer in layers.items():
        panels += gradcam_overlays(model, inputs, classes, layer, mean, std)
        labels += [name] + [""] * (len(inputs) - 1)
    return show_images(panels, labels, ncols=len(inputs), size=size, title="Grad-CAM for the predicted class, by layer")


GALLERY_TITLES = {
    "images": "Misclassified (true → predicted)",
    "gradcam": "Grad-CAM for the predicted class",
    "both": "Misclassified (true → predicted), then Grad-CAM",
}


@dataclass
class Gallery:
    """What :func:`misclassified_gallery` shows: ``n`` mistakes, ``ncols`` panels per row (None: all in one),
    ``size`` inches per panel, ``show`` (``"both"``, ``"images"`` or ``"gradcam"``), the Grad-CAM of
    ``layer`` (e.g. the last residual block), and the figure's ``title`` (None: one for ``show``)."""

    layer: torch.nn.Module | None = None
    n: int = 8
    ncols: int | None = None
    size: float = 1.6
    show: str = "both"
    title: str | None = None


def misclassified_gallery(
    model: torch.nn.Module,
    dataset,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    classes,
    mean,
    std,
    gallery: Gallery | None = None,
):
    """The ``n`` mistakes made with the highest confidence, titled "true → predicted", and their Grad-CAM.

    ``dataset[i]`` is ``(input, label)`` of the sample that ``outputs[i]`` scores, the input
    normalized with ``mean``/``std``. Grad-CAM (:func:`gradcam_overlays`) shows, for the predicted
    class, where ``gallery.layer`` looked; it runs in fp32 on contiguous memory, and ``model`` is
    left so, in eval mode. ``gallery`` (:class:`Gallery`): how many, which panels (``"both"``: each
    row of images followed by the row of their Grad-CAM), how laid out. Returns the matplotlib Figure.
    """
    gallery = gallery if gallery is not None else Gallery()
    layer, n, ncols, size, show = gallery.layer, gallery.n, gallery.ncols, gallery.size, gallery.show
    if show not in GALLERY_TITLES:
        raise ValueError(f"show must be one of {sorted(GALLERY_TITLES)}, not {show!r}")
    if show != "images" and layer is None:
        raise ValueError("Grad-CAM needs the layer to look at")
    wrong = misclassified_indices(outputs, targets, n)
    if not len(wrong):
        raise ValueError("no sample is misclassified: there is nothing to show")
    predicted = outputs.argmax(1)
    inputs = torch.stack([dataset[int(i)][0] for i in wrong])
    titles = [f"{classes[targets[i]]} → {classes[predicted[i]]}" for i in wrong]
    ncols = ncols or len(wrong)
    images = [denormalize(x, mean, std) for x in inputs] if show != "gradcam" else []
    overlays = []
    if show != "images":
        overlays = gradcam_overlays(model, inputs, predicted[wrong].tolist(), layer, mean, std)
    if show != "both":
        panels, labels = (images if show == "images" else overlays), titles
    else:  # each row of images, then the row of their Grad-CAM below it
        panels, labels = [], []
        for start in range(0, len(wrong), ncols):
            rows = slice(start, start + ncols)
            empty = ncols - len(titles[rows])
            for row in (images[rows], overlays[rows]):
                panels += row + [None] * empty
                labels += titles[rows] + [""] * empty
    return show_images(panels, labels, ncols=ncols, size=size, title=gallery.title or GALLERY_TITLES[show])


def confusion_matrix(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    flat = targets.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def confused_pairs(matrix: np.ndarray, classes, n: int = 6):
    """The ``n`` pairs of classes most often taken for each other (a DataFrame): the errors of each direction
    (``a → b``: true a, predicted b), both together, and their share of all errors, most first."""
    import pandas as pd

    errors = matrix.sum() - np.trace(matrix)
    rows = []
    for a in range(len(classes)):
        for b in range(a + 1, len(classes)):
            both = int(matrix[a, b] + matrix[b, a])
            rows.append(
                {
                    "pair": f"{classes[a]} / {classes[b]}",
                    "a → b": int(matrix[a, b]),
                    "b → a": int(matrix[b, a]),
                    "errors": both,
                    "% of all errors": round(100 * both / errors, 1) if errors else 0.0,
                }
            )
    table = pd.DataFrame(rows).sort_values("errors", ascending=False, kind="stable").head(n)
    return table.set_index("pair")


def per_class_accuracy(matrix: np.ndarray, classes):
    """Per-class test accuracy (%) from a confusion matrix, with counts."""
    import pandas as pd

    correct = np.diag(matrix)
    total = matrix.sum(1)
    return pd.DataFrame(
        {"class": list(classes), "correct": correct, "images": total, "accuracy %": np.round(100 * correct / total, 2)}
    ).set_index("class")


def plot_confusion(matrix: np.ndarray, classes, title: str = "Confusion matrix (test set)"):
    """Heat map of a confusion matrix with counts in the cells."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                matrix[i, j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i, j] > threshold else "black",
            )
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    plt.close(figure)
    return figure
