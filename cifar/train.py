"""Training and evaluation: one epoch, a resumable ``fit``, and the S10 recipe.

``python -m cifar.train`` runs the S10 lesson's recipe end to end (LR range test, one-cycle
Nesterov SGD for 24 epochs, checkpoints after every epoch and every 5 minutes within one,
history, figures, weights + provenance JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from .utils import autocast, get_device, grad_scaler, resolve_amp_dtype, seed_everything

CHECKPOINT_NAME = "checkpoint.pt"


def _to_device(inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool):
    memory_format = torch.channels_last if channels_last and inputs.dim() == 4 else torch.contiguous_format
    inputs = inputs.to(device, non_blocking=True, memory_format=memory_format)
    if inputs.dtype == torch.uint8:
        inputs = inputs.float().div_(255)
    return inputs, targets.to(device, non_blocking=True)


def rng_states(device: torch.device) -> dict:
    """The global random states that training draws from (dropout, say), to continue a run exactly."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"rng_state": torch.get_rng_state(), "cuda_rng_state": cuda}


def set_rng_states(states: dict, device: torch.device) -> None:
    """Set back what :func:`rng_states` recorded."""
    if states.get("rng_state") is not None:
        torch.set_rng_state(states["rng_state"].cpu())  # a checkpoint may be loaded onto the GPU
    if states.get("cuda_rng_state") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda_rng_state"].cpu(), device)


def accuracy_score(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample score of a classifier: 100 where the arg-max is the label, else 0."""
    return (outputs.argmax(1) == targets).float() * 100


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    scheduler=None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    progress: bool = True,
    desc: str = "train",
    max_steps: int | None = None,
    grad_clip: float | None = None,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accuracy_score,
    partial: dict | None = None,
    on_step: Callable[[dict], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """One pass over ``loader``; the scheduler (if any) steps after every batch.

    Returns the mean loss per sample, the mean score (accuracy in % by default), the last LR,
    the LR and the loss of every batch, seconds and images/s. ``grad_clip`` clips each parameter
    gradient's value to [-grad_clip, grad_clip] before the step.

    ``on_step(totals)`` is called after every batch with the epoch's running totals; passing
    such totals back as ``partial`` finishes an interrupted epoch: its first ``partial["steps"]``
    batches are drawn again (so that shuffling and augmentation continue as they were) but not
    trained, and the global RNG is set back to where it was when the epoch was interrupted.

    ``scaler`` scales the loss against fp16 underflow (default: :func:`cifar.utils.grad_scaler`,
    enabled only for fp16; pass one to keep its state across epochs, as :func:`fit` does). A step
    it skips (inf/nan gradients: the scale was too high) leaves the scheduler where it was too,
    so the skipped batch's LR is used again by the next one.
    """
    model.train()
    scaler = scaler if scaler is not None else grad_scaler(device, amp_dtype)
    totals = {"steps": 0, "loss_sum": 0.0, "score_sum": 0.0, "seen": 0, "lrs": [], "losses": [], "seconds": 0.0}
    if partial is not None:
        totals.update({key: partial[key] for key in totals})
        totals["lrs"], totals["losses"] = list(totals["lrs"]), list(totals["losses"])
    last = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not progress, mininterval=2, leave=False, file=sys.stdout)
    for step, (inputs, targets) in enumerate(bar):
        if step < totals["steps"]:  # trained before the interruption
            if step + 1 == totals["steps"]:
                set_rng_states(partial, device)
            last = time.perf_counter()
            continue
        if max_steps is not None and step >= max_steps:
            break
        inputs, targets = _to_device(inputs, targets, device, channels_last)
        with autocast(device, amp_dtype):
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        lr = optimizer.param_groups[0]["lr"]  # the LR this batch is trained with
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_value_(model.parameters(), grad_clip)
        if _scaled_step(scaler, optimizer) and scheduler is not None:
            scheduler.step()
        totals["losses"].append(loss.item())
        totals["loss_sum"] += totals["losses"][-1] * len(targets)
        totals["score_sum"] += score_fn(outputs.detach().float(), targets).sum().item()
        totals["seen"] += len(targets)
        totals["lrs"].append(lr)
        totals["steps"] = step + 1
        now = time.perf_counter()
        totals["seconds"] += now - last  # the wait for this batch and its step; not the re-drawn batches
        last = now
        seen = totals["seen"]
        bar.set_postfix(loss=f"{totals['loss_sum'] / seen:.4f}", score=f"{totals['score_sum'] / seen:.2f}",
                        lr=f"{lr:.2e}")  # fmt: skip
        if on_step is not None:
            on_step(totals)
    seen, seconds, lrs = totals["seen"], totals["seconds"], totals["lrs"]
    return {
        "loss": totals["loss_sum"] / max(seen, 1),
        "score": totals["score_sum"] / max(seen, 1),
        "lr": lrs[-1] if lrs else optimizer.param_groups[0]["lr"],
        "lrs": lrs,
        "losses": totals["losses"],
        "seconds": seconds,
        "images_per_s": seen / seconds if seconds > 0 else 0.0,
    }


def _scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """``scaler.step(optimizer)`` and ``scaler.update()``; False when the scaler skipped the step.

    A skip is seen as the scale going down: ``update`` lowers it (by ``backoff_factor``, 0.5) exactly
    when it found inf/nan gradients. A disabled scaler just steps the optimizer, as training without one.
    """
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


def tta_outputs(model: nn.Module, inputs: torch.Tensor, flip: bool, shift: bool) -> torch.Tensor:
    """The model's outputs averaged over the test-time views that :func:`predict` describes."""

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return (model(images) + model(images.flip(3))) / 2 if flip else model(images)

    outputs = mirrored(inputs)
    if shift:
        height, width = inputs.shape[-2:]
        padded = nn.functional.pad(inputs, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2 : height + 2, 2 : width + 2]]
        outputs = outputs / 2 + sum(mirrored(view.contiguous(memory_format=inputs_format(inputs)))
                                    for view in shifted) / 4  # fmt: skip
    return outputs


def inputs_format(inputs: torch.Tensor) -> torch.memory_format:
    channels_last = inputs.dim() == 4 and inputs.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    progress: bool = False,
    flip_tta: bool = False,
    shift_tta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 outputs (logits) and targets for every sample of ``loader``, on the CPU, in eval mode.

    ``flip_tta`` averages the outputs for each image and its mirror image (test-time augmentation);
    ``shift_tta`` also averages (at half the weight) the flip pairs of the image shifted by one
    pixel up-left and down-right (airbench's multi-crop: 6 views, 3x the cost of ``flip_tta``).
    """
    model.eval()
    all_outputs, all_targets = [], []
    for inputs, targets in tqdm(loader, desc="eval", disable=not progress, leave=False, file=sys.stdout):
        inputs, targets = _to_device(inputs, targets, device, channels_last)
        with autocast(device, amp_dtype):
            outputs = tta_outputs(model, inputs, flip_tta or shift_tta, shift_tta)
        all_outputs.append(outputs.float().cpu())
        all_targets.append(targets.cpu())
    return torch.cat(all_outputs), torch.cat(all_targets)


def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    loss_fn: nn.Module | None = None,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accuracy_score,
    flip_tta: bool = False,
    shift_tta: bool = False,
) -> dict[str, float]:
    """Mean loss per sample (cross-entropy by default) and mean score over the whole of ``loader``."""
    outputs, targets = predict(model, loader, device, amp_dtype, channels_last, flip_tta=flip_tta, shift_tta=shift_tta)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    return {"loss": loss_fn(outputs, targets).item(), "score": score_fn(outputs, targets).mean().item()}


def seed_epoch(loader, seed: int) -> None:
    """Re-seed shuffling and augmentation so that epoch ``e`` is the same whether or not resumed."""
    torch.manual_seed(seed)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed)
    transform = getattr(getattr(loader, "dataset", None), "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_history(history: list[dict], folder: Path) -> pd.DataFrame:
    """Write ``history.csv`` and ``history.json`` in ``folder``; returns the table."""
    frame = pd.DataFrame(history)
    frame.to_csv(folder / "history.csv", index=False)
    (folder / "history.json").write_text(json.dumps(history, indent=1))
    return frame


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics.

    ``update(step)`` is called after every optimizer step; every ``every`` steps the average
    moves towards the model by ``1 - decay_t``, where ``decay_t = decay * (step / total_steps)**3``
    ramps up from 0 (airbench), so that the short runs it is for average mostly their last,
    annealed steps. With ``lookahead`` the model is then set to the average (the slow weights
    pull the fast ones back, as Lookahead does). ``model`` is the averaged copy, which
    :func:`fit` evaluates and finally copies into the trained model.
    """

    def __init__(
        self, model: nn.Module, total_steps: int, every: int = 5, decay: float = 0.99, lookahead: bool = False
    ):
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.total_steps, self.every, self.decay, self.lookahead = total_steps, every, decay, lookahead

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """``step``: optimizer steps taken so far in the whole run (1-based)."""
        if step % self.every and step != self.total_steps:
            return
        decay = self.decay * min(step / self.total_steps, 1.0) ** 3
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - decay)
                if self.lookahead:
                    current.copy_(average)
            else:
                average.copy_(current)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


@dataclass
class FitResult:
    """One row per epoch (losses, accuracies, LR, timing) and the LR of every batch."""

    history: list[dict]
    lrs: list[float]


def fit(
    model: nn.Module,
    train_loader,
    test_loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    epochs: int,
    device: torch.device,
    loss_fn: nn.Module | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    config: dict | None = None,
    amp_dtype: torch.dtype | None | str = "auto",
    channels_last: bool = True,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    grad_clip: float | None = None,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accuracy_score,
    score_name: str = "acc",
    flip_tta: bool = False,
    eval_every: int = 1,
    checkpoint_minutes: float | None = None,
    log=print,
    average: WeightAverage | None = None,
    shift_tta: bool = False,
) -> FitResult:
    """Train for ``epochs`` epochs, evaluating after each; returns the history and per-batch LRs.

    The history has ``train_loss``, ``test_loss`` and ``train_<score_name>``,
    ``test_<score_name>`` (accuracy in % by default; e.g. mean IoU for box regression).
    ``eval_every=n`` evaluates only after every n-th epoch and after the last one (to save time
    in a short recipe); the test columns of the other epochs are None.

    ``amp_dtype``: autocast's dtype for training and testing, None for fp32, or "auto" for
    :func:`cifar.utils.autocast_dtype`'s choice for ``device``; fp16 trains with gradient scaling.

    With ``checkpoint_dir`` the model, optimizer, scheduler, gradient scaler and history are saved
    atomically after every epoch, and a later call with the same directory and ``config`` resumes
    after the last finished epoch (an interrupted run loses at most one epoch).
    With ``checkpoint_minutes=m`` it also saves after the first batch that ends m minutes or more
    after the last save, and a resumed run finishes the interrupted epoch from there, exactly as
    it would have gone on (it loses about m minutes at most: a CPU epoch can take 20).

    With ``average`` (a :class:`WeightAverage` of ``model``) the average is updated after every
    step, checkpointed with the run, tested in place of the model, and copied into the model
    after the last epoch's training: the returned model is the averaged one.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    amp_dtype = resolve_amp_dtype(device, amp_dtype)
    scaler = grad_scaler(device, amp_dtype)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    history: list[dict] = []
    lr_record: list[float] = []  # the LR of every batch, for the LR-trend plot
    start_epoch, partial = 0, None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CHECKPOINT_NAME
        if path.is_file():
            state = torch.load(path, map_location=device, weights_only=False)
            if config is not None and state.get("config") != config:
                raise ValueError(
                    f"{path} was written by a different configuration:\n  saved: {state.get('config')}\n"
                    f"  now:   {config}\nUse another checkpoint_dir or delete {path} to start afresh."
                )
            model.load_state_dict(state["model"])
            history, start_epoch, partial = state["history"], state["epoch"], state.get("partial")
            lr_record = state.get("lrs", [])
            if state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
            elif start_epoch < epochs:
                raise ValueError(f"{path} has no optimizer state (restored from weights): it cannot continue training")
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if average is not None and state.get("average") is not None:
                average.load_state_dict(state["average"])
            if scaler.is_enabled() and state.get("scaler"):  # empty or None: saved without fp16 scaling
                scaler.load_state_dict(state["scaler"])
            if state.get("restored_from"):
                log(f"Finished run restored from {state['restored_from']}: {start_epoch} of {epochs} epochs trained "
                    f"by `{state.get('command')}` on {state.get('device')}; nothing left to train.")  # fmt: skip
            elif partial is not None:
                log(f"Resumed from {path.name} in epoch {start_epoch + 1} of {epochs}, after its batch "
                    f"{partial['steps']}.")  # fmt: skip
            else:
                log(f"Resumed from {path.name} after epoch {start_epoch} of {epochs}.")

    last_save = time.perf_counter()

    def save(epoch: int, totals: dict | None = None) -> None:
        """``epoch`` finished epochs, plus the running totals of the next one when interrupted."""
        nonlocal last_save
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": epoch,
            "history": history,
            "lrs": lr_record,
            "config": config,
            "average": average.state_dict() if average is not None else None,
            "scaler": scaler.state_dict(),  # {} when disabled (bf16, fp32)
            "partial": None if totals is None else {**totals, **rng_states(device)},
        }
        save_atomic(state, folder / CHECKPOINT_NAME)
        last_save = time.perf_counter()

    def after_step(epoch: int, totals: dict) -> None:
        if average is not None:
            average.update(model, steps_before + totals["steps"])
        if folder is not None and checkpoint_minutes is not None:
            if time.perf_counter() - last_save >= 60 * checkpoint_minutes:
                save(epoch, totals)

    if average is not None:
        average.model.to(device)
        if channels_last:
            average.model.to(memory_format=torch.channels_last)
    for epoch in range(start_epoch, epochs):
        seed_epoch(train_loader, seed * 1000 + epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        steps_before = len(lr_record)
        train = train_one_epoch(
            model, train_loader, optimizer, loss_fn, device, scheduler, amp_dtype, channels_last,
            progress, desc=f"epoch {epoch + 1}/{epochs}", max_steps=max_steps_per_epoch, grad_clip=grad_clip,
            score_fn=score_fn, partial=partial if epoch == start_epoch else None,
            on_step=lambda totals, done=epoch: after_step(done, totals), scaler=scaler,
        )  # fmt: skip
        started = time.perf_counter()
        if average is not None and epoch + 1 == epochs:
            model.load_state_dict(average.state_dict())
        tested_model = average.model if average is not None else model
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            test = evaluate(tested_model, test_loader, device, amp_dtype, channels_last, loss_fn, score_fn, flip_tta,
                            shift_tta)  # fmt: skip
            tested = f"test loss {test['loss']:.4f} {score_name} {test['score']:.2f}"
        else:
            test, tested = {"loss": None, "score": None}, "(not tested)"
        row = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            f"train_{score_name}": train["score"],
            "test_loss": test["loss"],
            f"test_{score_name}": test["score"],
            "lr": train["lr"],
            "seconds": train["seconds"],
            "eval_seconds": time.perf_counter() - started,
            "images_per_s": train["images_per_s"],
        }
        lr_record.extend(train["lrs"])
        history.append(row)
        log(
            f"epoch {row['epoch']:>2}/{epochs}  train loss {train['loss']:.4f} {score_name} {train['score']:.2f}  "
            f"{tested}  lr {row['lr']:.2e}  "
            f"{row['seconds']:.0f}s ({row['images_per_s']:.0f} img/s)"
        )
        if folder is not None:
            save(epoch + 1)
            save_history(history, folder)
    return FitResult(history, lr_record)


def first_epoch_reaching(history: list[dict], accuracy: float) -> int | None:
    """First tested epoch whose test accuracy is at least ``accuracy`` (%), or None."""
    tested = (row for row in history if row["test_acc"] is not None)
    return next((row["epoch"] for row in tested if row["test_acc"] >= accuracy), None)


# ----------------------------------------------------------------------------- the S10 recipe


@dataclass
class Tricks:
    """Optional fast-training tricks for the S10 network; all off by default (the lesson's recipe).

    They change how the network is initialised, optimised, fed and tested, never the network
    itself (its 6,573,130 parameters; weights trained with them load into a plain CustomResNet).
    """

    whiten_init: bool = False  # first conv starts as PCA whitening of 3x3 training patches (airbench)
    dirac_init: bool = False  # the other 3x3 convs start as identities on their first in-channels (airbench)
    freeze_bn_weight: bool = False  # batch-norm scales fixed at 1 (Page)
    bias_lr_factor: float = 1.0  # biases train with LR x factor and weight decay / factor (Page: 64)
    ghost_batch: int | None = None  # batch-norm statistics over virtual batches of this size in training (Page: 32)
    bn_momentum: float = 0.1  # PyTorch's convention: the weight of each new batch in the running statistics
    average_every: int | None = None  # weight EMA (batch-norm statistics included) every n steps; tests use it
    average_decay: float = 0.99  # its decay per update, ramped up from 0 (WeightAverage)
    lookahead: bool = False  # the weights are set to their average at every update (airbench's lookahead)
    alternating_flip: bool = False  # each image flipped in every other epoch instead of at random (airbench)
    shift_tta: bool = False  # multi-crop test-time augmentation: flips of the image and of 1-pixel shifts (airbench)

    def any(self) -> bool:
        return self != Tricks()


@dataclass
class S10Config:
    """Everything that defines an S10 run; saved with its checkpoints and weights.

    The defaults are the lesson's recipe: Nesterov SGD with weight decay 5e-4, label smoothing
    0.2 and logits scaled by 1/8 (David Page's ResNet-9 recipe for this network), the one-cycle
    peak from the LR range test. :func:`s10_original_recipe` is the original course's Adam recipe.
    """

    epochs: int = 24
    batch_size: int = 512
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    max_lr: float | None = None  # None: take the LR range test's suggestion
    finder_start_lr: float = 1e-5
    finder_end_lr: float = 10.0
    finder_iters: int = 100
    # "steepest" is torch-lr-finder's own suggestion; "min/10" (a tenth of the lowest-loss LR,
    # fastai's rule for Adam) gave SGD a peak 15x below Page's 0.4 on this network
    finder_rule: str = "steepest"
    pct_start: float = 5 / 24  # peak LR after epoch 5 of 24
    div_factor: float = 100.0
    final_div_factor: float = 100.0
    label_smoothing: float = 0.2
    dropout: float = 0.0
    seed: int = 1
    eval_every: int = 1  # test after every n-th epoch and after the last (see fit)
    train_subset: int | None = None
    test_subset: int | None = None
    # {"logit_scale": 0.125} multiplies the logits by 1/8 (CustomResNet(logit_scale=...));
    # options of the fast recipe (issue "training speed"): {"loader": "tensor"} augments whole
    # batches on the device (cifar.dataset.TensorBatches), {"flip_tta": True} evaluates with
    # flip test-time augmentation
    extra: dict = field(default_factory=lambda: {"logit_scale": 0.125})
    tricks: Tricks = field(default_factory=Tricks)


@dataclass
class S10Data:
    """Loaders plus what the lesson shows about the data."""

    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_images: object
    train_labels: object
    test_images: object
    test_labels: object


def _subset(images, labels, n: int | None, seed: int):
    """A class-balanced, seeded subset of ``n`` samples (all of them when n is None)."""
    if n is None or n >= len(labels):
        return images, labels
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    keep.sort()
    return images[keep], labels[keep]


def s10_data(
    config: S10Config, root: str | Path | None = None, download: bool = False, device: torch.device | None = None
) -> S10Data:
    """Real CIFAR-10 through the data layer, mean/std from the training set, S10 transforms.

    ``device`` (default :func:`cifar.utils.get_device`) is the one the model trains on: the tensor
    loader keeps its images there, and the DataLoaders choose workers and pinned memory for it.
    """
    from .dataset import (
        AlbumentationsDataset,
        TensorBatches,
        load_cifar10,
        make_loader,
        mean_std,
        test_transforms,
        train_transforms,
    )

    device = device or get_device()
    train_images, train_labels = load_cifar10("train", root, download)
    test_images, test_labels = load_cifar10("test", root, download)
    mean, std = mean_std(train_images)
    train_images, train_labels = _subset(train_images, train_labels, config.train_subset, config.seed)
    test_images, test_labels = _subset(test_images, test_labels, config.test_subset, config.seed)
    test_set = AlbumentationsDataset(test_images, test_labels, test_transforms(mean, std))
    if config.extra.get("loader", "albumentations") == "tensor":
        train_loader = TensorBatches(train_images, train_labels, config.batch_size, mean, std, train=True,
                                     device=device, seed=config.seed,
                                     alternating_flip=config.tricks.alternating_flip)  # fmt: skip
    else:
        train_set = AlbumentationsDataset(train_images, train_labels, train_transforms(mean, std))
        train_loader = make_loader(train_set, config.batch_size, train=True, seed=config.seed, device=device)
    return S10Data(
        train_loader,
        make_loader(test_set, 1000, train=False, device=device),
        mean, std, train_images, train_labels, test_images, test_labels,
    )  # fmt: skip


def s10_model(config: S10Config, data: S10Data | None = None) -> nn.Module:
    """A freshly initialised CustomResNet, seeded, with the recipe's initialisation tricks.

    ``data`` is needed for ``tricks.whiten_init`` (the whitening comes from its training images).
    """
    from .model import (
        CustomResNet,
        freeze_batch_norm_weights,
        init_dirac_,
        init_whitening_,
        set_batch_norm_momentum,
        use_ghost_batch_norm,
    )

    seed_everything(config.seed)
    model = CustomResNet(dropout=config.dropout, logit_scale=config.extra.get("logit_scale", 1.0))
    tricks = config.tricks
    first_conv = model.prep[0]
    if tricks.whiten_init:
        if data is None:
            raise ValueError("tricks.whiten_init needs the data: s10_model(config, data)")
        init_whitening_(first_conv, whitening_sample(data))
    if tricks.dirac_init:
        init_dirac_(model, skip=(first_conv,))
    if tricks.freeze_bn_weight:
        freeze_batch_norm_weights(model)
    if tricks.ghost_batch is not None:
        use_ghost_batch_norm(model, tricks.ghost_batch)
    set_batch_norm_momentum(model, tricks.bn_momentum)
    return model


def whitening_sample(data: S10Data, images: int = 5000) -> torch.Tensor:
    """The first ``images`` training images, normalized as the network sees them (N, C, H, W)."""
    sample = torch.from_numpy(data.train_images[:images]).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    return (sample - mean) / std


def s10_loss(config: S10Config) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def s10_find_lr(model: nn.Module, data: S10Data, config: S10Config, device: torch.device):
    """The LR range test of the recipe; its suggestion becomes the one-cycle maximum."""
    from .scheduler import find_lr, make_optimizer

    seed_epoch(data.train_loader, config.seed * 1000 - 1)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.finder_start_lr, config.weight_decay)
    return find_lr(
        model, optimizer, s10_loss(config), data.train_loader, device,
        end_lr=config.finder_end_lr, num_iter=config.finder_iters, rule=config.finder_rule,
    )  # fmt: skip


def s10_fit(
    model: nn.Module,
    data: S10Data,
    config: S10Config,
    max_lr: float,
    device: torch.device,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    log=print,
    checkpoint_minutes: float | None = 5.0,
    amp_dtype: torch.dtype | None | str = "auto",
) -> FitResult:
    """One-cycle training of the recipe with ``max_lr`` as the peak; resumable (with ``checkpoint_dir``:
    saved after every epoch and, within an epoch, every ``checkpoint_minutes``). ``amp_dtype``: see :func:`fit`."""
    from .scheduler import make_optimizer, one_cycle, weight_and_bias_groups

    tricks = config.tricks
    groups = weight_and_bias_groups(model, config.weight_decay, tricks.bias_lr_factor)
    max_lrs = [max_lr * group["lr_factor"] for group in groups]
    optimizer = make_optimizer(config.optimizer, groups, max_lr / config.div_factor, config.weight_decay)
    steps = len(data.train_loader) if max_steps_per_epoch is None else min(max_steps_per_epoch, len(data.train_loader))
    schedule = one_cycle(
        optimizer, max_lrs, config.epochs, steps, config.pct_start, config.div_factor, config.final_div_factor
    )
    average = None
    if tricks.average_every is not None:
        average = WeightAverage(model, config.epochs * steps, tricks.average_every, tricks.average_decay,
                                tricks.lookahead)  # fmt: skip
    run_config = {**asdict(config), "max_lr": max_lr}
    return fit(
        model, data.train_loader, data.test_loader, optimizer, schedule, config.epochs, device,
        loss_fn=s10_loss(config), seed=config.seed, checkpoint_dir=checkpoint_dir, config=run_config,
        progress=progress, max_steps_per_epoch=max_steps_per_epoch, flip_tta=config.extra.get("flip_tta", False),
        eval_every=config.eval_every, checkpoint_minutes=checkpoint_minutes, log=log, average=average,
        shift_tta=tricks.shift_tta, amp_dtype=amp_dtype,
    )  # fmt: skip


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


def recipe_record(config: S10Config, max_lr: float) -> dict:
    """The recipe as the weights' provenance JSON records it."""
    return {
        "optimizer": config.optimizer, "weight_decay": config.weight_decay, "batch_size": config.batch_size,
        "max_lr": max_lr,
        "max_lr_from": "given" if config.max_lr is not None else f"LR range test, rule {config.finder_rule}",
        "schedule": f"OneCycleLR two-phase linear, peak at epoch {config.pct_start * config.epochs:g} of "
                    f"{config.epochs}, div_factor {config.div_factor:g}, final_div_factor "
                    f"{config.final_div_factor:g}, stepped per batch",
        "label_smoothing": config.label_smoothing, "extra": config.extra,
        "augmentation": "cifar.dataset.TensorBatches" if config.extra.get("loader") == "tensor"
                        else "cifar.dataset.train_transforms",
        **({"tricks": asdict(config.tricks)} if config.tricks.any() else {}),
    }  # fmt: skip


def save_weights(
    model: nn.Module,
    path: str | Path,
    config: S10Config,
    max_lr: float,
    history: list[dict],
    summary: dict,
    data: S10Data,
    data_dir: str | Path | None,
) -> Path:
    """fp16 state_dict at ``path`` plus a provenance JSON beside it (same name, .json)."""
    from .dataset import CIFAR10_CLASSES, file_sha256, local_cifar10_source
    from .utils import data_dir as env_data_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_atomic(state, path)
    root = data_dir if data_dir is not None else env_data_dir("cifar10")
    source = local_cifar10_source(Path(root), "train") if root is not None else None
    record = {
        "architecture": type(model).__name__,
        "classes": list(CIFAR10_CLASSES),
        "mean": list(data.mean),
        "std": list(data.std),
        "epochs": config.epochs,
        "recipe": recipe_record(config, max_lr),
        "seed": config.seed,
        "command": summary.get("command"),
        "device": summary.get("device"),
        "wall_seconds": round(summary.get("epoch_seconds", 0.0), 1),
        "wall_seconds_means": "sum of the epochs' training and test-evaluation times (LR range test excluded)",
        "train_data": source.name if source is not None else "torchvision CIFAR10 download",
        "train_data_sha256": file_sha256(source) if source is not None and source.is_file() else None,
        "train_images": int(len(data.train_labels)),
        "test_images": int(len(data.test_labels)),
        "test_accuracy": round(history[-1]["test_acc"], 2),
        "first_epoch_90": first_epoch_reaching(history, 90.0),
        "history": history,
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return path


def load_s10_weights(path: str | Path) -> tuple[nn.Module, dict]:
    """The CustomResNet saved by :func:`save_weights` (in float32, eval mode) and its provenance record."""
    from .model import CustomResNet

    path = Path(path)
    record_path = path.with_suffix(".json")
    if not path.is_file() or not record_path.is_file():
        raise FileNotFoundError(f"{path} and {record_path.name} beside it are needed (written by cifar.train)")
    record = json.loads(record_path.read_text())
    if record.get("architecture") != "CustomResNet":
        raise ValueError(f"{record_path} describes a {record.get('architecture')}, not a CustomResNet")
    model = CustomResNet(logit_scale=record["recipe"].get("extra", {}).get("logit_scale", 1.0))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), record


TTA_CHOICES = ("recorded", "none", "flip", "shift")


def evaluate_weights(
    path: str | Path,
    root: str | Path | None = None,
    device: torch.device | None = None,
    batch_size: int = 500,
    amp_dtype: torch.dtype | None | str = "auto",
    tta: str = "recorded",
) -> dict[str, float]:
    """Test loss and accuracy (%) of saved S10 weights on the whole CIFAR-10 test set.

    Uses the normalization and the test-time augmentation recorded beside the weights, or the
    ``tta`` given instead: ``none``, ``flip`` or ``shift`` (flips of the image and of its
    1-pixel shifts), to measure what each adds.
    """
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, not {tta!r}")
    from .dataset import AlbumentationsDataset, load_cifar10, make_loader, test_transforms

    model, record = load_s10_weights(path)
    device = device or get_device()
    images, labels = load_cifar10("test", root)
    loader = make_loader(
        AlbumentationsDataset(images, labels, test_transforms(tuple(record["mean"]), tuple(record["std"]))),
        batch_size, train=False, device=device,
    )  # fmt: skip
    model.to(device).to(memory_format=torch.channels_last)
    flip_tta = bool(record["recipe"].get("extra", {}).get("flip_tta", False))
    shift_tta = bool(record["recipe"].get("tricks", {}).get("shift_tta", False))
    if tta != "recorded":
        flip_tta, shift_tta = tta in ("flip", "shift"), tta == "shift"
    amp_dtype = resolve_amp_dtype(device, amp_dtype)
    result = evaluate(model, loader, device, amp_dtype, flip_tta=flip_tta, shift_tta=shift_tta)
    return {"loss": result["loss"], "accuracy": result["score"], "images": len(labels)}


def restore_run(weights: str | Path, run_dir: str | Path, config: S10Config | None = None) -> Path:
    """Rebuild a finished run folder from saved weights and their record, without training.

    ``run_dir`` gets what a finished ``python -m cifar.train`` leaves there: a checkpoint (the
    weights in float32, the run's history, the LR of every batch recomputed from its schedule),
    ``history.csv``/``.json`` and ``summary.json`` (configuration, peak LR, device, command, time).
    The notebook and :func:`fit` then find a finished run and go straight to its analysis. The
    checkpoint holds no optimizer state: it cannot be trained further. ``config`` (default: the
    lesson's recipe) must be the recipe the record describes. A range test of that recipe already
    run in ``run_dir`` (on another machine, say) is kept for its plot, its suggestion as
    ``rerun_max_lr``; the peak LR becomes the recorded one.
    """
    from .scheduler import lr_trace

    model, record = load_s10_weights(weights)
    config = config or S10Config()
    max_lr = record["recipe"]["max_lr"]
    expected = {"recipe": recipe_record(config, max_lr), "epochs": config.epochs, "seed": config.seed}
    found = {key: record.get(key) for key in expected}
    if found != expected:
        raise ValueError(f"{weights} was trained with another recipe:\n  record: {found}\n  config: {expected}")
    folder = Path(run_dir)
    summary = _read_summary(folder)
    if (folder / CHECKPOINT_NAME).is_file() and "restored_from" not in summary:
        raise ValueError(f"{folder} holds a run's own checkpoint; restore into another run folder")
    if summary and summary.get("config") != asdict(config):
        raise ValueError(f"{folder} holds a run of another configuration; use another run folder")
    rerun = {"rerun_max_lr": summary["max_lr"]} if summary.get("max_lr", max_lr) != max_lr else {}
    history = record["history"]
    steps_per_epoch = -(-record["train_images"] // config.batch_size)
    lrs = lr_trace(max_lr, config.epochs, steps_per_epoch, pct_start=config.pct_start,
                   div_factor=config.div_factor, final_div_factor=config.final_div_factor).tolist()  # fmt: skip
    last_lrs = [lrs[row["epoch"] * steps_per_epoch - 1] for row in history]
    if not all(abs(a - row["lr"]) <= 1e-9 * max_lr for a, row in zip(last_lrs, history)):
        raise ValueError(f"the schedule recomputed for {weights} does not match the LRs of its history")
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": len(history),
        "history": history, "lrs": lrs, "config": {**asdict(config), "max_lr": max_lr},
        "restored_from": Path(weights).name, "command": record["command"], "device": record["device"],
    }  # fmt: skip
    save_atomic(state, folder / CHECKPOINT_NAME)
    save_history(history, folder)
    _write_summary(folder, config=asdict(config), max_lr=max_lr, device=record["device"], command=record["command"],
                   epoch_seconds=record["wall_seconds"], history=history, first_epoch_90=record["first_epoch_90"],
                   restored_from=Path(weights).name, **rerun)  # fmt: skip
    return folder


TRICK_NAMES = tuple(Tricks.__dataclass_fields__)
_SWITCHES = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def parse_trick(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` for one field of :class:`Tricks`, the value read by the field's type."""
    name, sep, value = text.partition("=")
    if not sep or name not in TRICK_NAMES:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(TRICK_NAMES)}: {text!r}")
    default = getattr(Tricks(), name)
    try:
        if isinstance(default, bool):
            return name, _SWITCHES[value.lower()]
        if value.lower() == "none":
            return name, None
        return name, float(value) if isinstance(default, float) else int(value)
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{name} takes {type(default).__name__}, not {value!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = S10Config()
    parser = argparse.ArgumentParser(
        prog="python -m cifar.train", description="Train the S10 CustomResNet on CIFAR-10 (the lesson's recipe)."
    )
    parser.add_argument("--data-dir", help="folder with cifar10_{train,test}.zip or train/ test/ class folders "
                        "(default: $CIFAR_DATA_DIR/cifar10)")  # fmt: skip
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision if no local copy")
    parser.add_argument(
        "--out", default="runs/s10", help="run folder: checkpoint, history, figures (resumes if present)"
    )
    parser.add_argument("--weights", default="weights/s10_custom_resnet.pt", help="where to write the final weights")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="lesson",
                        help="lesson: the lesson's recipe (Nesterov SGD, LR from the range test, 24 epochs); "
                        "original: the original course's Adam recipe; fast: s10_fast_recipe() (11 epochs); "
                        "tricks: s10_tricks_recipe() (6 epochs, the fast-training tricks). "
                        "The options below override single fields of it")  # fmt: skip
    parser.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], help=f"default {defaults.optimizer}")
    parser.add_argument("--weight-decay", type=float, help=f"default {defaults.weight_decay}")
    parser.add_argument("--max-lr", type=float, help="skip the LR range test and use this peak LR")
    parser.add_argument("--finder-end-lr", type=float, help=f"default {defaults.finder_end_lr}")
    parser.add_argument("--finder-iters", type=int, help=f"default {defaults.finder_iters}")
    parser.add_argument("--finder-rule", choices=["min/10", "steepest"],
                        help=f"how the range test picks the peak LR (default {defaults.finder_rule})")  # fmt: skip
    parser.add_argument("--label-smoothing", type=float, help=f"default {defaults.label_smoothing}")
    parser.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    parser.add_argument("--eval-every", type=int, help="test after every n-th epoch and the last "
                        f"(default {defaults.eval_every})")  # fmt: skip
    parser.add_argument("--train-subset", type=int, help="train on a class-balanced subset")
    parser.add_argument("--test-subset", type=int, help="test on a class-balanced subset")
    parser.add_argument("--max-steps", type=int, default=None, help="cap batches per epoch (smoke tests)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="auto",
                        help="arithmetic of training and testing: auto (autocast_dtype: bf16 where the hardware "
                        "has it natively, fp16 on older GPUs, else fp32), or force one; fp16 trains with gradient "
                        "scaling; recorded with the run")  # fmt: skip
    parser.add_argument("--evaluate", metavar="WEIGHTS", default=None,
                        help="no training: evaluate saved weights (e.g. weights/s10_custom_resnet.pt) on the whole "
                        "test set and compare with the accuracy recorded beside them")  # fmt: skip
    parser.add_argument("--tta", choices=TTA_CHOICES, default="recorded",
                        help="with --evaluate: the test-time augmentation (default: the one recorded with the "
                        "weights)")  # fmt: skip
    parser.add_argument("--trick", metavar="NAME=VALUE", action="append", default=[], type=parse_trick,
                        help="set one field of the recipe's Tricks, e.g. whiten_init=off or ghost_batch=32 "
                        "(repeatable; for ablations); fields: " + ", ".join(TRICK_NAMES))  # fmt: skip
    parser.add_argument("--restore", metavar="WEIGHTS", default=None,
                        help="no training: rebuild the run folder (--out) of the finished run that wrote WEIGHTS "
                        "(recipe from --recipe), so that the notebook analyses that run")  # fmt: skip
    return parser.parse_args(argv)


PRECISIONS: dict[str, torch.dtype | None | str] = {
    "auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None,
}  # fmt: skip


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How the provenance records name an arithmetic: bf16 / fp16 autocast, or fp32."""
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(amp_dtype, "fp32")


def _read_summary(run_dir: Path | None) -> dict:
    path = None if run_dir is None else Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def _write_summary(run_dir: Path | None, **values) -> dict:
    summary = _read_summary(run_dir)
    summary.update(values)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def s10_max_lr(model: nn.Module, data: S10Data, config: S10Config, device: torch.device, run_dir=None):
    """The one-cycle peak LR and the range-test figure.

    ``config.max_lr`` when given; otherwise the LR range test's suggestion. The test runs once
    per run folder: its suggestion and plot are saved there and reused when the run resumes,
    so a resumed run keeps exactly the schedule it started with. A folder rebuilt by
    :func:`restore_run` gives the peak LR recorded with the weights, and says where its plot
    (if any) comes from.
    """
    import matplotlib.pyplot as plt

    if config.max_lr is not None:
        return config.max_lr, None
    summary = _read_summary(run_dir)
    plot_path = None if run_dir is None else Path(run_dir) / "lr_finder.png"
    if "max_lr" in summary and (plot_path.is_file() or "restored_from" in summary):
        if summary.get("config") != asdict(config):
            raise ValueError(f"{run_dir} holds a run of another configuration; use another run folder.")
        figure = None
        if plot_path.is_file():
            figure, ax = plt.subplots(figsize=(6, 4))
            ax.imshow(plt.imread(plot_path))
            ax.axis("off")
            plt.close(figure)
        if "restored_from" in summary:
            if figure is None:
                plot = "no range-test plot was kept"
            elif "rerun_max_lr" in summary:
                plot = f"the plot is a range test re-run in this folder, which suggests {summary['rerun_max_lr']:.3e}"
            else:
                plot = "the plot is that run's range test"
            print(f"peak LR {summary['max_lr']:.3e} from the range test of the run that wrote "
                  f"{summary['restored_from']} ({summary.get('device')}); {plot}")  # fmt: skip
        return summary["max_lr"], figure
    result = s10_find_lr(model, data, config, device)
    if plot_path is not None:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        result.figure.savefig(plot_path, dpi=120, bbox_inches="tight")
        _write_summary(run_dir, config=asdict(config), max_lr=result.suggested_lr,
                       finder={"lrs": result.lrs, "losses": result.losses, "steepest_lr": result.steepest_lr,
                               "min_loss_lr": result.min_loss_lr, "rule": result.rule})  # fmt: skip
    return result.suggested_lr, result.figure


def s10_config(fast: bool = False, recipe: str = "lesson") -> S10Config:
    """A named recipe (see :data:`RECIPES`); ``fast`` shrinks it to a smoke test (small subsets, 2 short epochs)."""
    config = RECIPES[recipe]()
    if fast:
        config = replace(config, epochs=2, batch_size=64, finder_iters=20, train_subset=640, test_subset=500)
    return config


def s10_original_recipe() -> S10Config:
    """The original course's recipe: Adam (weight decay 1e-4), range test 1e-7 to 0.1, plain logits."""
    return S10Config(
        optimizer="adam", weight_decay=1e-4, finder_start_lr=1e-7, finder_end_lr=0.1, finder_rule="min/10",
        label_smoothing=0.0, extra={},
    )  # fmt: skip


def s10_fast_recipe() -> S10Config:
    """Fewer epochs to 90%+: David Page's ResNet-9 recipe on the same network.

    Nesterov SGD peaking at 0.4 after a quarter of 11 epochs, weight decay 5e-4, label
    smoothing 0.2, logits scaled by 1/8, whole-batch augmentation on the device (crop, flip,
    cut-out), and flip test-time augmentation, tested after epochs 6 and 11 only. (8 epochs
    reached 89.11%, 10 epochs 89.83%; 11 epochs reached 90.12%, weights/s10_fast_recipe.pt.)
    """
    return S10Config(
        epochs=11, eval_every=6, optimizer="sgd", max_lr=0.4, weight_decay=5e-4, label_smoothing=0.2, pct_start=0.25,
        div_factor=20.0, final_div_factor=200.0, extra={"loader": "tensor", "flip_tta": True, "logit_scale": 0.125},
    )  # fmt: skip


def s10_tricks_recipe() -> S10Config:
    """The fast recipe in 6 epochs plus the published fast-training tricks (:class:`Tricks`).

    Whitening and dirac initialisation, batch-norm scales frozen at 1 with biases at 64x the LR
    (and 1/64 the weight decay), a weight average every 5 steps, alternating flips, and multi-crop
    test-time augmentation; tested after epochs 5 and 6. Ghost batch norm (``ghost_batch``) is
    left out: its reshapes slow a CPU step.
    """
    tricks = Tricks(
        whiten_init=True, dirac_init=True, freeze_bn_weight=True, bias_lr_factor=64.0, average_every=5,
        average_decay=0.99, alternating_flip=True, shift_tta=True,
    )  # fmt: skip
    return replace(s10_fast_recipe(), epochs=6, eval_every=5, tricks=tricks)


RECIPES: dict[str, Callable[[], S10Config]] = {
    "lesson": S10Config,
    "original": s10_original_recipe,
    "fast": s10_fast_recipe,
    "tricks": s10_tricks_recipe,
}

# command-line options that override a field of the chosen recipe when given
_OVERRIDES = (
    "epochs", "batch_size", "optimizer", "weight_decay", "max_lr", "finder_end_lr", "finder_iters", "finder_rule",
    "label_smoothing", "seed", "eval_every", "train_subset", "test_subset",
)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Run an S10 recipe from the command line (or evaluate saved weights); returns the run summary."""
    args = parse_args(argv)
    if args.evaluate:
        return _evaluate_command(args.evaluate, args.data_dir, PRECISIONS[args.precision], args.tta)
    if args.restore:
        try:
            folder = restore_run(args.restore, args.out, config_from_args(args))
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"error: {error}")
        print(f"{folder}: finished run restored from {args.restore} (no training)")
        return _read_summary(folder)
    return _run_s10(config_from_args(args), args, argv)


def config_from_args(args: argparse.Namespace) -> S10Config:
    """The named recipe with the fields given on the command line replaced."""
    overrides = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    config = replace(RECIPES[args.recipe](), **overrides)
    tricks = dict(getattr(args, "trick", []))
    return replace(config, tricks=replace(config.tricks, **tricks)) if tricks else config


def _evaluate_command(
    path: str, data_dir: str | None, amp_dtype: torch.dtype | None | str = "auto", tta: str = "recorded"
) -> dict:
    from .dataset import DataError

    try:
        result = evaluate_weights(path, data_dir, amp_dtype=amp_dtype, tta=tta)
    except (DataError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    claimed = json.loads(Path(path).with_suffix(".json").read_text()).get("test_accuracy")
    views = "" if tta == "recorded" else f" with test-time augmentation '{tta}'"
    print(f"{path}: test accuracy {result['accuracy']:.2f}% on {result['images']:,} images{views} "
          f"(recorded: {claimed}%), mean loss {result['loss']:.4f}")  # fmt: skip
    return result


def _run_s10(config: S10Config, args: argparse.Namespace, argv: list[str] | None) -> dict:
    from .dataset import DataError
    from .utils import plot_history, plot_lrs

    device = get_device()
    out = Path(args.out)
    try:
        data = s10_data(config, args.data_dir, args.download, device)
    except DataError as error:
        sys.exit(f"error: {error}")
    amp_dtype = resolve_amp_dtype(device, PRECISIONS[args.precision])
    print(f"device: {describe_device(device)}; {precision_name(amp_dtype)}; train {len(data.train_labels)} / "
          f"test {len(data.test_labels)} images; mean {data.mean} std {data.std}")  # fmt: skip
    model = s10_model(config, data)
    max_lr, _ = s10_max_lr(model, data, config, device, out)
    print(f"one-cycle peak LR {max_lr:.3e}")
    command = "python -m cifar.train " + " ".join(argv if argv is not None else sys.argv[1:])
    device_name, previous = describe_device(device, amp_dtype), _read_summary(out).get("device")
    if previous and (out / CHECKPOINT_NAME).is_file():  # a resumed run keeps naming where it began
        device_name = previous if previous.endswith(device_name) else f"{previous}, resumed on {device_name}"
    _write_summary(out, config=asdict(config), max_lr=max_lr, device=device_name, command=command.strip())
    result = s10_fit(model, data, config, max_lr, device, out, max_steps_per_epoch=args.max_steps, amp_dtype=amp_dtype)
    history = result.history
    # time of the epochs themselves (training + test evaluation), summed from the history, so that
    # interruptions and resumes do not count; the LR range test is not included
    epoch_seconds = sum(row["seconds"] + row.get("eval_seconds", 0.0) for row in history)
    summary = _write_summary(out, epoch_seconds=epoch_seconds, history=history,
                             first_epoch_90=first_epoch_reaching(history, 90.0))  # fmt: skip
    plot_history(history).savefig(out / "curves.png", dpi=120, bbox_inches="tight")
    plot_lrs(result.lrs, len(result.lrs) // config.epochs).savefig(out / "lr_trace.png", dpi=120, bbox_inches="tight")
    if args.weights:
        save_weights(model, args.weights, config, max_lr, history, summary, data, args.data_dir)
    print(f"final test accuracy {history[-1]['test_acc']:.2f}%; first epoch >= 90%: {summary['first_epoch_90']}")
    return summary


if __name__ == "__main__":
    main()
