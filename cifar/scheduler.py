"""Optimizers, the one-cycle schedule and the LR range test (torch-lr-finder)."""

from __future__ import annotations

import warnings
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
    """``adam`` (the original course's choice) or ``sgd`` (Nesterov momentum)."""
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
        {"params": [p for p in trainable if p.dim() <= 1], "weight_decay": weight_decay / bias_lr_factor,
         "lr_factor": bias_lr_factor},
    ]  # fmt: skip


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

    ``max_lr`` may be a list, one peak per parameter group.
    """
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


SUGGESTION_RULES = ("min/10", "steepest")


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    train_loader,
    device: torch.device,
    end_lr: float = 0.1,
    num_iter: int = 100,
    rule: str = "min/10",
    use_autocast: bool = True,
) -> LRFinderResult:
    """Exponential LR range test (torch-lr-finder) and a suggested maximum LR.

    ``rule="min/10"`` suggests a tenth of the LR at the lowest smoothed loss (fastai's rule:
    the highest LR that still descends well, clear of the blow-up); ``rule="steepest"`` takes
    torch-lr-finder's steepest-descent point, which on a long straight descent can land
    anywhere along it. Both are marked on the figure. The model and optimizer are restored
    to their initial state afterwards, so training starts from the weights the test started from.
    """
    with warnings.catch_warnings():  # it imports tqdm.autonotebook, which warns when ipywidgets is absent
        warnings.simplefilter("ignore")
        from torch_lr_finder import LRFinder

    if rule not in SUGGESTION_RULES:
        raise ValueError(f"rule must be one of {SUGGESTION_RULES}, not {rule!r}")
    amp = autocast_dtype(device) if use_autocast else None
    kwargs = {}
    if amp is not None:
        kwargs = {
            "amp_backend": "torch",
            "amp_config": {"device_type": device.type, "dtype": amp},
            "grad_scaler": grad_scaler(device, amp),
        }
    finder = LRFinder(model, optimizer, criterion, device=device, **kwargs)
    finder.range_test(train_loader, end_lr=end_lr, num_iter=num_iter, step_mode="exp")
    figure, ax = plt.subplots(figsize=(6, 4))
    # torch-lr-finder's defaults (skip 10 first, 5 last points), shrunk for short fast-mode tests
    skip_start, skip_end = min(10, num_iter // 5), min(5, num_iter // 10)
    _, steepest = finder.plot(skip_start=skip_start, skip_end=skip_end, log_lr=True, suggest_lr=True, ax=ax)
    lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    window = slice(skip_start, len(lrs) - skip_end)
    min_loss_lr = float(np.asarray(lrs[window])[np.argmin(losses[window])])
    suggested = min_loss_lr / 10 if rule == "min/10" else float(steepest)
    ax.axvline(min_loss_lr, color="grey", linestyle=":", label=f"lowest loss {min_loss_lr:.2e}")
    ax.axvline(suggested, color="green", linestyle="--", label=f"suggested ({rule}) {suggested:.2e}")
    ax.legend(fontsize=8)
    ax.set_title(f"LR range test, {num_iter} iterations: max LR {suggested:.2e}")
    finder.reset()
    plt.close(figure)
    return LRFinderResult(lrs, losses, float(steepest), min_loss_lr, suggested, rule, figure)
