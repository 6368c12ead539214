"""Training-speed benchmark of the S10 network: a plain fp32 baseline against the project's paths.

``python -m cifar.bench`` (``--fast`` for a short run) measures, on one device and in one run,
images per second of a whole training step (data preparation, forward, backward, optimizer) for

* ``baseline``: fp32, NCHW, per-sample albumentations through a DataLoader with workers (the textbook way);
* ``default``: the project's default training path (autocast where it is fast, channels-last,
  per-sample albumentations as in the lesson);
* ``tensor``: the default precision and layout fed by :class:`cifar.dataset.TensorBatches`
  (whole batches augmented on the device);
* ``compile`` (with ``--compile``): the default path through ``torch.compile``;

then inference images/s, the FLOP/s reached against a measured matmul bound, and a last line of JSON.
``--equivalence STEPS`` instead trains the network twice from the same weights on the same batches,
in fp32/NCHW and on the default path (autocast, channels-last), and compares the loss curves and test accuracy.
Same batch size and model everywhere; warm-up steps excluded; the median of repeated steps.
``--precision`` forces the default path's arithmetic; ``--record FILE`` keeps the results with the command
(``docs/records/`` holds the ones docs/performance.md quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from . import cli
from .dataset import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    AlbumentationsDataset,
    TensorBatches,
    load_cifar10,
    make_loader,
    test_transforms,
    train_transforms,
)
from .model import CustomResNet
from .scheduler import one_cycle
from .train import EpochTotals, ResumableBatches, StepOptions, accuracy_score, evaluate, train_one_epoch
from .utils import (
    PRECISIONS,
    autocast,
    describe_device,
    get_device,
    grad_scaler,
    resolve_amp_dtype,
    seed_everything,
    seed_loader,
)

MEAN, STD = CIFAR10_MEAN, CIFAR10_STD
EQUIVALENCE_MAX_LR = 1e-3  # the one-cycle Adam peak of --equivalence


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_macs(model: nn.Module) -> float:
    """Multiply-accumulates of one 32x32 image's forward pass (torchinfo)."""
    from torchinfo import summary

    return summary(model, input_size=(1, 3, 32, 32), verbose=0, device="cpu").total_mult_adds


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul in ``dtype``: a rough practical bound for the device."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def time_training(
    batches: Callable[[], Iterator],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    warmup: int,
    repeats: int,
    compile_model: bool = False,
) -> dict[str, float]:
    """Median images/s of whole training steps (the wait for the batch included), and the median
    milliseconds per step spent waiting for the batch on the device (``data_ms``: loading,
    augmentation, copy) and computing (``step_ms``: forward, backward, optimizer; with fp16, the
    gradient scaling that training does too).

    ``data_ms`` near zero means the data pipeline keeps the device busy.
    """
    seed_everything(0)
    model = CustomResNet().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    scaler = grad_scaler(device, amp_dtype)
    model.train()
    iterator = batches()
    rates, data_ms, step_ms = [], [], []
    for step in range(warmup + repeats):
        _synchronize(device)
        start = time.perf_counter()
        images, labels = next(iterator)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        _synchronize(device)
        loaded = time.perf_counter()
        with autocast(device, amp_dtype):
            loss = loss_fn(step_model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _synchronize(device)
        if step >= warmup:
            end = time.perf_counter()
            rates.append(len(labels) / (end - start))
            data_ms.append(1000 * (loaded - start))
            step_ms.append(1000 * (end - loaded))
    return {
        "img_s": statistics.median(rates),
        "data_ms": statistics.median(data_ms),
        "step_ms": statistics.median(step_ms),
    }


@torch.no_grad()
def time_inference(
    device: torch.device, amp_dtype: torch.dtype | None, batch_size: int, warmup: int, repeats: int
) -> float:
    """Median images/s of eval-mode forward passes on the default path."""
    model = CustomResNet().to(device).to(memory_format=torch.channels_last).eval()
    images = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    rates = []
    for step in range(warmup + repeats):
        _synchronize(device)
        start = time.perf_counter()
        with autocast(device, amp_dtype):
            model(images)
        _synchronize(device)
        if step >= warmup:
            rates.append(batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def time_loader(batch_size: int = 512, batches: int = 20, num_workers: int = 2) -> dict[str, float]:
    """Images/s of the lesson's albumentations DataLoader alone (no model): the data rate a GPU
    run gets with ``num_workers`` CPU workers (2 on CUDA, as in Colab, whose runtimes have 2 vCPUs).

    One warm-up batch (worker start-up) is left out of the rate.
    """
    images, labels, source = _images(batch_size * (batches + 1))
    dataset = AlbumentationsDataset(images, labels, train_transforms(MEAN, STD))
    rate, count = loader_rate(dataset, batch_size, num_workers)
    return {"loader_img_s": rate, "images": count, "workers": num_workers, "data": source}


def loader_rate(dataset, batch_size: int, num_workers: int, batches: int | None = None) -> tuple[float, int]:
    """(images/s, images timed) over one pass of a shuffled training loader of ``dataset``, the first batch
    (worker start-up) left out; ``batches``: time at most this many. The photo lessons time their own loaders
    with it (``python -m cifar.raccoon --time-loader``, ``python -m cifar.fish --time-loader``)."""
    loader = make_loader(dataset, batch_size, train=True, num_workers=num_workers, device="cpu")
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for number, (inputs, _) in enumerate(iterator):
        if batches is not None and number >= batches:
            break
        count += len(inputs)
    return count / (time.perf_counter() - start), count


def _images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` real CIFAR-10 training images (a seeded random draw: the archive is sorted by class)
    when a local copy is configured, else random ones."""
    try:
        images, labels = load_cifar10("train")
        keep = np.random.default_rng(0).permutation(len(labels))[:n]
        return images[keep], labels[keep], "real CIFAR-10"
    except Exception:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n), "random uint8 images"


def run(
    batch_size: int, warmup: int, repeats: int, compile_model: bool = False, device=None, precision: str = "auto"
) -> dict:
    """Measure every path (the default path in ``precision``: the policy's unless forced); returns the
    results as a dict (what the JSON line prints)."""
    device = torch.device(device) if device is not None else get_device()
    amp = resolve_amp_dtype(device, PRECISIONS[precision])
    n = batch_size * (warmup + repeats + 1)
    images, labels, source = _images(n)
    albumentations_set = AlbumentationsDataset(images, labels, train_transforms(MEAN, STD))
    workers = min(2, os.cpu_count() or 1)

    def loader(num_workers: int | None) -> Callable[[], Iterator]:
        return lambda: iter(
            make_loader(albumentations_set, batch_size, train=True, num_workers=num_workers, device=device)
        )

    def tensor_batches() -> Iterator:
        return iter(TensorBatches(images, labels, batch_size, MEAN, STD, train=True, device=device))

    results = {
        "device": describe_device(device),
        "autocast": str(amp or "none (fp32)").replace("torch.", ""),
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "data": source,
    }
    paths = {
        "baseline": lambda: time_training(loader(workers), device, None, False, warmup, repeats),
        "default": lambda: time_training(loader(None), device, amp, True, warmup, repeats),
        "tensor": lambda: time_training(tensor_batches, device, amp, True, warmup, repeats),
    }
    if compile_model:
        paths["compile"] = lambda: time_training(loader(None), device, amp, True, warmup + 1, repeats, True)
    for name, measure in paths.items():
        results.update({f"{name}_{key}": value for key, value in measure().items()})
    for name in paths:
        results[f"{name}_vs_baseline"] = results[f"{name}_img_s"] / results["baseline_img_s"]
    results["speedup"] = results["default_vs_baseline"]
    results["eval_img_s"] = time_inference(device, amp, batch_size, warmup, repeats)
    macs = forward_macs(CustomResNet())
    step_flops = 3 * 2 * macs  # forward + backward (about twice the forward)
    best = max(v for k, v in results.items() if k.endswith("_img_s") and k != "eval_img_s")
    results["gmac_per_image"] = macs / 1e9
    results["reached_tflops"] = best * step_flops / 1e12
    results["bound_tflops"] = matmul_flops(device, amp or torch.float32) / 1e12
    results["fraction_of_bound"] = results["reached_tflops"] / results["bound_tflops"]
    results["percent_of_bound"] = 100 * results["fraction_of_bound"]
    return results


def precision_equivalence(
    steps: int,
    batch_size: int = 64,
    device=None,
    test_images: int = 2000,
    progress: bool = True,
    precision: str = "auto",
) -> dict:
    """Train twice from the same weights on the same batches: fp32/NCHW, then the default path
    (autocast in ``precision``, the policy's unless forced, and channels-last).

    Both runs see identical augmented batches in the same order (one seeded albumentations
    pipeline, no workers) under a one-cycle Adam schedule over ``steps`` steps; returns the loss
    of every step for both, and both models' accuracy on ``test_images`` real test images.
    """

    device = torch.device(device) if device is not None else get_device()
    images, labels, source = _images(steps * batch_size)
    train_set = AlbumentationsDataset(images, labels, train_transforms(MEAN, STD))
    try:
        test_x, test_y = load_cifar10("test")
    except Exception:
        test_x, test_y = images, labels  # no real data: a smoke test only
    keep = np.random.default_rng(1).permutation(len(test_y))[:test_images]  # all classes, not the first few
    test_set = AlbumentationsDataset(test_x[keep], test_y[keep], test_transforms(MEAN, STD))
    results = {"device": describe_device(device), "steps": steps, "batch_size": batch_size, "data": source}
    default_amp = resolve_amp_dtype(device, PRECISIONS[precision])
    for name, amp, channels_last in (("fp32", None, False), ("default", default_amp, True)):
        seed_everything(0)
        model = CustomResNet().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=EQUIVALENCE_MAX_LR / 100, weight_decay=1e-4)
        schedule = one_cycle(optimizer, EQUIVALENCE_MAX_LR, 1, steps)
        loader = make_loader(train_set, batch_size, train=True, seed=0, num_workers=0, device=device)
        seed_loader(loader, 0)
        loss_fn = nn.CrossEntropyLoss()
        totals = EpochTotals()
        batches = ResumableBatches(loader, totals, device=device, max_steps=steps, desc=name if progress else None)
        options = StepOptions(device, amp, channels_last)
        train = train_one_epoch(model, batches, optimizer, loss_fn, schedule, options, totals)
        losses = train["losses"]
        test = evaluate(
            model,
            make_loader(test_set, 500, train=False, device=device),
            device,
            amp,
            channels_last,
            score_fn=accuracy_score,
        )
        results[f"{name}_losses"] = losses
        results[f"{name}_test_acc"] = test["score"]
        results["autocast" if name == "default" else "reference"] = str(amp or torch.float32).replace("torch.", "")
    fp32, default = np.array(results["fp32_losses"]), np.array(results["default_losses"])
    tail = max(1, steps // 5)
    results["fp32_final_loss"] = float(fp32[-tail:].mean())
    results["default_final_loss"] = float(default[-tail:].mean())
    results["test_images"] = len(test_set)
    results["mean_abs_loss_gap"] = float(np.abs(fp32 - default).mean())
    return results


def plot_equivalence(results: dict, window: int = 10):
    """Both loss curves (moving average over ``window`` steps)."""

    window = max(1, min(window, results["steps"]))
    figure, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("fp32", "fp32, NCHW"), ("default", f"{results['autocast']} autocast, channels-last")):
        losses = np.array(results[f"{name}_losses"])
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(
            np.arange(window, len(losses) + 1), smooth, label=f"{label}: test acc {results[f'{name}_test_acc']:.1f}%"
        )
    ax.set(
        xlabel="step",
        ylabel=f"training loss ({window}-step mean)",
        title=f"Same weights, same batches: {results['steps']} steps of batch {results['batch_size']}",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def format_table(results: dict) -> str:
    """The measurements as a plain-text table."""
    fp32 = results["autocast"].startswith("none")  # a CPU without native bf16 trains in fp32
    precision = "fp32 (no autocast)" if fp32 else f"{results['autocast']} autocast"
    rows = [
        ("baseline", "baseline: fp32, NCHW, albumentations DataLoader (workers)"),
        ("default", f"default: {precision}, channels-last, albumentations"),
        ("tensor", "tensor: default + whole-batch augmentation on the device"),
    ]
    if "compile_img_s" in results:
        rows.append(("compile", "compile: default + torch.compile"))
    rows.append(("eval", "inference (eval, default path)"))
    lines = [
        f"S10 CustomResNet training step, batch {results['batch_size']}, {results['device']}",
        f"{'path':<62}{'images/s':>10}{'vs baseline':>13}{'data ms':>9}{'step ms':>9}",
    ]
    for key, name in rows:
        value = results[f"{key}_img_s"]
        times = f"{results[f'{key}_data_ms']:>9.0f}{results[f'{key}_step_ms']:>9.0f}" if key != "eval" else ""
        lines.append(f"{name:<62}{value:>10.0f}{value / results['baseline_img_s']:>12.2f}x{times}")
    lines.append(
        "data ms: median wait per step for the batch on the device (0: the data pipeline keeps up); "
        "step ms: forward, backward, optimizer"
    )
    lines.append(
        f"best training path reaches {results['reached_tflops']:.2f} TFLOP/s "
        f"({results['gmac_per_image']:.2f} GMAC/image forward, x6 per trained image) of a "
        f"{results['bound_tflops']:.2f} TFLOP/s {'float32' if fp32 else results['autocast']} matmul bound: "
        f"{100 * results['fraction_of_bound']:.0f}%"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cifar.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="batch 128, 1 warm-up and 3 timed steps (~2 min on CPU)")
    parser.add_argument("--quick", dest="fast", action="store_true", help=argparse.SUPPRESS)  # the earlier name
    parser.add_argument("--batch-size", type=int, default=None, help="default 512 (128 with --fast)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per path (default 5, 3 with --fast)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    parser.add_argument(
        "--equivalence",
        type=int,
        metavar="STEPS",
        default=None,
        help="instead of timing: train STEPS steps in fp32/NCHW and on the default path from the same "
        "weights and batches, and compare loss curves and test accuracy",
    )
    parser.add_argument(
        "--loader", action="store_true", help="instead: the albumentations DataLoader's images/s alone (2 workers)"
    )
    parser.add_argument("--plot", default=None, help="with --equivalence: save the loss curves to this PNG")
    parser.add_argument("--test-images", type=int, default=2000, help="with --equivalence: test images to score")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="auto",
        help="arithmetic of the default path: auto (the precision policy's choice for this device) or force one",
    )
    parser.add_argument("--record", default=None, help="also write the results (with the command) to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Command line: the benchmark (or, with ``--equivalence``, the precision comparison); returns its results,
    also written to ``--record`` with the command."""
    args = parse_args(argv)
    results = cli.run(lambda: _main(args))
    if args.record:
        cli.save_record(results, args.record, cli.command_line("cifar.bench", argv))
    return results


def _main(args: argparse.Namespace) -> dict:
    if args.loader:
        results = time_loader(args.batch_size or 512, 4 if args.fast else 20)
        print(
            f"albumentations DataLoader, {results['workers']} workers, {results['data']}: "
            f"{results['loader_img_s']:.0f} images/s over {results['images']} images"
        )
        return results
    if args.equivalence:
        steps, batch_size = args.equivalence, args.batch_size or 64
        results = precision_equivalence(steps, batch_size, args.device, args.test_images, precision=args.precision)
        if args.plot:
            plot_equivalence(results).savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"{results['steps']} steps of batch {results['batch_size']} on {results['device']}, {results['data']}")
        for name in ("fp32", "default"):
            print(
                f"{name:>5}: mean loss of the last fifth {results[f'{name}_final_loss']:.4f}, "
                f"test accuracy {results[f'{name}_test_acc']:.2f}% ({results['test_images']} images)"
            )
        print(f"mean |loss gap| per step {results['mean_abs_loss_gap']:.4f}")
        print(
            json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in results.items() if not k.endswith("_losses")}
            )
        )
        return results
    batch_size = args.batch_size or (128 if args.fast else 512)
    repeats = args.repeats or (3 if args.fast else 5)
    results = run(batch_size, 1 if args.fast else 2, repeats, args.compile, args.device, args.precision)
    print(format_table(results))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
    return results


if __name__ == "__main__":
    main()
