"""Optimizers, the one-cycle schedule and the LR range test (torch-lr-finder)."""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from .utils import autocast_dtype, grad_scaler


def make_optimizer(
    name: str, params, lr: float, weight_decay: float = 1e-4, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """``adam`` or ``sgd`` (Nesterov momentum)."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', not {name!r}")


def weight_and_bias_groups(model: nn.Module, weight_decay: float, bias_lr_factor: float = 1.0) -> list[dict]:
    """Parameter groups for :func:`make_optimizer`: one group, or weights and biases apart.

    With ``bias_lr_factor`` f != 1 the 1-D parameters (biases, batch-norm scales that still
    train) get LR x f and weight decay / f (Page's bag of tricks: f = 64 with the batch-norm
    scales frozen). Each group's ``lr_factor`` says how its peak LR relates to the recipe's.
    Frozen parameters are left out.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if bias_lr_factor == 1.0:
        return [{"params": trainable, "weight_decay": weight_decay, "lr_factor": 1.0}]
    return [
        {"params": [p for p in trainable if p.dim() > 1], "weight_decay": weight_decay, "lr_factor": 1.0},
        {
            "params": [p for p in trainable if p.dim() <= 1],
            "weight_decay": weight_decay / bias_lr_factor,
            "lr_factor": bias_lr_factor,
        },
    ]


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: float | list[float],
    epochs: int,
    steps_per_epoch: int,
    pct_start: float = 5 / 24,
    div_factor: float = 100.0,
    final_div_factor: float = 100.0,
) -> OneCycleLR:
    """Two-phase, linear one-cycle policy stepped per batch; the peak comes after ``pct_start`` of the steps.

    ``max_lr`` may be a list, one peak per parameter group. torch's OneCycleLR divides by zero when the
    warm-up is exactly one step; that is refused here with the numbers that cause it.
    """
    warm_up = float(pct_start * epochs * steps_per_epoch)
    if warm_up == 1:
        raise ValueError(
            f"one-cycle cannot have a warm-up of exactly 1 step (torch's OneCycleLR divides by zero): pct_start "
            f"{pct_start:g} of {epochs} epoch(s) x {steps_per_epoch} batches; change the batch size or the epochs"
        )
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=False,
        anneal_strategy="linear",
    )


def lr_trace(max_lr: float, epochs: int, steps_per_epoch: int, **one_cycle_kwargs) -> np.ndarray:
    """The learning rate of every batch under :func:`one_cycle` (for plotting)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    schedule = one_cycle(optimizer, max_lr, epochs, steps_per_epoch, **one_cycle_kwargs)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return np.asarray(lrs)


@dataclass
class LRFinderResult:
    """What the range test measured: the LRs tried, the smoothed losses, and the suggestions.

    ``steepest_lr`` is torch-lr-finder's own suggestion (steepest descent of the loss);
    ``min_loss_lr`` is where the loss bottoms out; ``suggested_lr`` is the one the ``rule`` picks.
    """

    lrs: list[float]
    losses: list[float]
    steepest_lr: float
    min_loss_lr: float
    suggested_lr: float
    rule: str
    figure: plt.Figure
    seconds: float = 0.0  # how long the test ran


SUGGESTION_RULES = ("min/10", "steepest")


def range_test_window(num_iter: int, steps: int) -> slice:
    """The points of a range test that are read and plotted: of the ``steps`` it took (fewer than the
    ``num_iter`` asked for when the loss blew up), torch-lr-finder's defaults leave out the first 10 and
    the last 5, shrunk here for the short tests of fast mode."""
    return slice(min(10, num_iter // 5), steps - min(5, num_iter // 10))


def range_test_points(lrs: list[float], losses: list[float], num_iter: int) -> tuple[float, float]:
    """(steepest_lr, min_loss_lr) of a range test: the steepest descent of the smoothed loss (the smallest
    ``np.gradient``, as torch-lr-finder's suggestion) on the way down to its lowest point, and the LR of
    that lowest loss, both within :func:`range_test_window`.

    torch-lr-finder searches the whole window; past the lowest loss a loss that blew up can fall again
    (a label-smoothed loss never reaches its stop at five times the best), and the steepest point of
    that second fall is an LR nobody should train at. Searching up to the lowest loss rules it out.
    """
    window = range_test_window(num_iter, len(lrs))
    lrs_in, losses_in = np.asarray(lrs[window]), np.asarray(losses[window])
    lowest = int(losses_in.argmin())
    descent = losses_in[: lowest + 1]
    steepest = int(np.gradient(descent).argmin()) if len(descent) > 1 else lowest
    return float(lrs_in[steepest]), float(lrs_in[lowest])


def suggest_lr(steepest_lr: float, min_loss_lr: float, rule: str) -> float:
    """The peak LR a rule takes from a range test: ``"steepest"`` or ``"min/10"`` (a tenth of the lowest-loss LR)."""
    if rule not in SUGGESTION_RULES:
        raise ValueError(f"rule must be one of {SUGGESTION_RULES}, not {rule!r}")
    return min_loss_lr / 10 if rule == "min/10" else steepest_lr


def range_test_figure(
    lrs: list[float], losses: list[float], num_iter: int, used_lr: float, title: str | None = None
) -> plt.Figure:
    """The smoothed loss against the LR (log axis), with the steepest-descent point, the lowest loss, a tenth of
    it (the min/10 rule) and ``used_lr``, the peak LR of the run the plot belongs to, which the title states."""
    lrs, losses = list(lrs), list(losses)
    steepest, min_loss = range_test_points(lrs, losses, num_iter)
    window = range_test_window(num_iter, len(lrs))
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs[window], losses[window])
    ax.scatter(
        steepest, losses[lrs.index(steepest)], s=75, color="red", zorder=3, label=f"steepest descent {steepest:.2e}"
    )
    ax.axvline(min_loss, color="grey", linestyle=":", label=f"lowest loss {min_loss:.2e}")
    ax.axvline(min_loss / 10, color="orange", linestyle="-.", label=f"min/10 rule {min_loss / 10:.2e}")
    ax.axvline(used_lr, color="green", linestyle="--", label=f"peak LR used {used_lr:.2e}")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="loss (smoothed)")
    ax.set_title(title or f"LR range test, {len(lrs)} steps: peak LR used {used_lr:.2e}", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure


@contextlib.contextmanager
def quiet_lr_finder() -> Iterator[None]:
    """Silence torch-lr-finder while it runs: its tqdm bar (a hundred fragments in a notebook's saved
    output) and its prints (an unformatted ``{finder_name}`` hint); :func:`find_lr` reports instead."""
    with warnings.catch_warnings():  # it imports tqdm.autonotebook, which warns when ipywidgets is absent
        warnings.simplefilter("ignore")
        from torch_lr_finder import lr_finder

    bar = lr_finder.tqdm
    lr_finder.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        lr_finder.tqdm = bar


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    train_loader,
    device: torch.device,
    end_lr: float = 0.1,
    num_iter: int = 100,
    rule: str = "min/10",
) -> LRFinderResult:
    """Exponential LR range test (torch-lr-finder) and a suggested maximum LR.

    ``rule="min/10"`` suggests a tenth of the LR at the lowest smoothed loss (fastai's rule:
    the highest LR that still descends well, clear of the blow-up); ``rule="steepest"`` takes
    torch-lr-finder's steepest-descent point, which on a long straight descent can land
    anywhere along it. Both are marked on the figure (:func:`range_test_figure`), whose title
    gives the suggestion. The model and optimizer are restored to their initial state afterwards,
    so training starts from the weights the test started from. The library prints nothing
    (:func:`quiet_lr_finder`); the result says how many steps ran and how long they took.
    """
    with warnings.catch_warnings():  # it imports tqdm.autonotebook, which warns when ipywidgets is absent
        warnings.simplefilter("ignore")
        from torch_lr_finder import LRFinder

    if rule not in SUGGESTION_RULES:
        raise ValueError(f"rule must be one of {SUGGESTION_RULES}, not {rule!r}")
    amp = autocast_dtype(device)  # the precision training uses on this device
    kwargs = {}
    if amp is not None:
        kwargs = {
            "amp_backend": "torch",
            "amp_config": {"device_type": device.type, "dtype": amp},
            "grad_scaler": grad_scaler(device, amp),
        }
    finder = LRFinder(model, optimizer, criterion, device=device, **kwargs)
    start = time.perf_counter()
    with quiet_lr_finder():
        finder.range_test(train_loader, end_lr=end_lr, num_iter=num_iter, step_mode="exp")
    seconds = time.perf_counter() - start
    lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    steepest, min_loss_lr = range_test_points(lrs, losses, num_iter)
    suggested = suggest_lr(steepest, min_loss_lr, rule)
    title = f"LR range test, {len(lrs)} steps: peak LR {suggested:.2e} ({rule})"
    figure = range_test_figure(lrs, losses, num_iter, suggested, title)
    finder.reset()
    return LRFinderResult(lrs, losses, steepest, min_loss_lr, suggested, rule, figure, seconds)
