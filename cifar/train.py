"""The training engine: one epoch, prediction and evaluation, and a resumable ``fit``.

Nothing here knows about a lesson: the S10 recipe is in :mod:`cifar.s10`, the raccoon boxes in
:mod:`cifar.raccoon`, the fish in :mod:`cifar.fish`; each lesson's command is its own module's
(``python -m cifar.s10``).
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .artifacts import save_atomic, save_history
from .utils import autocast, derive_seed, grad_scaler, resolve_amp_dtype, seed_loader

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
    totals = _epoch_totals(partial)
    last = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not progress, mininterval=2, leave=False, file=sys.stdout)
    for step, (inputs, targets) in enumerate(bar):
        if step < totals["steps"]:  # trained before the interruption: drawn again, not trained
            if step + 1 == totals["steps"]:
                set_rng_states(partial, device)
            last = time.perf_counter()
            continue
        if max_steps is not None and step >= max_steps:
            break
        inputs, targets = _to_device(inputs, targets, device, channels_last)
        outputs, loss, lr = _train_step(model, inputs, targets, optimizer, loss_fn, scaler, scheduler, grad_clip,
                                        device, amp_dtype)  # fmt: skip
        _add_batch(totals, step, loss, outputs, targets, lr, score_fn)
        now = time.perf_counter()
        totals["seconds"] += now - last  # the wait for this batch and its step; not the re-drawn batches
        last = now
        bar.set_postfix(loss=f"{totals['loss_sum'] / totals['seen']:.4f}",
                        score=f"{totals['score_sum'] / totals['seen']:.2f}", lr=f"{lr:.2e}")  # fmt: skip
        if on_step is not None:
            on_step(totals)
    return _epoch_result(totals, optimizer)


def _epoch_totals(partial: dict | None) -> dict:
    """An epoch's running totals: zero, or copied from the ``partial`` totals of an interrupted epoch."""
    totals = {"steps": 0, "loss_sum": 0.0, "score_sum": 0.0, "seen": 0, "lrs": [], "losses": [], "seconds": 0.0}
    if partial is not None:
        totals.update({key: partial[key] for key in totals})
        totals["lrs"], totals["losses"] = list(totals["lrs"]), list(totals["losses"])
    return totals


def _train_step(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    scaler: torch.amp.GradScaler,
    scheduler,
    grad_clip: float | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Forward, backward and one optimizer (and scheduler) step on a batch; returns outputs, loss and the LR used."""
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
    return outputs, loss, lr


def _add_batch(
    totals: dict,
    step: int,
    loss: torch.Tensor,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    lr: float,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Count the trained batch ``step`` (0-based) into the epoch's running totals."""
    totals["losses"].append(loss.item())
    totals["loss_sum"] += totals["losses"][-1] * len(targets)
    totals["score_sum"] += score_fn(outputs.detach().float(), targets).sum().item()
    totals["seen"] += len(targets)
    totals["lrs"].append(lr)
    totals["steps"] = step + 1


def _epoch_result(totals: dict, optimizer: torch.optim.Optimizer) -> dict:
    """What :func:`train_one_epoch` returns, from the epoch's running totals."""
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
        outputs = outputs / 2 + sum(mirrored(view.contiguous(memory_format=_memory_format(inputs)))
                                    for view in shifted) / 4  # fmt: skip
    return outputs


def _memory_format(inputs: torch.Tensor) -> torch.memory_format:
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


class Checkpoint:
    """The resumable state of a :func:`fit` run: ``folder/checkpoint.pt``, saved atomically.

    ``parts`` names the objects whose ``state_dict`` make up the run (model, optimizer, scheduler,
    weight average, gradient scaler; None for those a run does not have). ``config`` identifies
    the run: a checkpoint written by another configuration is refused instead of resumed.
    """

    def __init__(self, folder: str | Path, parts: dict, config: dict | None = None, log=print):
        self.folder, self.parts, self.config, self.log = Path(folder), parts, config, log
        self.path = self.folder / CHECKPOINT_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        self.last_save = time.perf_counter()

    def load(self, epochs: int, device: torch.device) -> dict | None:
        """Load a saved run into the parts; returns its progress (epoch, history, lrs, partial) or None."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location=device, weights_only=False)
        if self.config is not None and state.get("config") != self.config:
            raise ValueError(
                f"{self.path} was written by a different configuration:\n  saved: {state.get('config')}\n"
                f"  now:   {self.config}\nUse another checkpoint_dir or delete {self.path} to start afresh."
            )
        if state.get("optimizer") is None and state["epoch"] < epochs:
            raise ValueError(f"{self.path} has no optimizer state (restored from weights): it cannot continue training")
        for name, part in self.parts.items():
            if part is not None and state.get(name):  # None or {}: not saved (e.g. a disabled scaler's state)
                part.load_state_dict(state[name])
        progress = {"epoch": state["epoch"], "history": state["history"], "lrs": state.get("lrs", []),
                    "partial": state.get("partial")}  # fmt: skip
        if state.get("restored_from"):
            trained_by = f"`{state.get('command')}` on {state.get('device')}"
            self.log(f"Finished run restored from {state['restored_from']}: {state['epoch']} of {epochs} epochs "
                     f"trained by {trained_by}; nothing left to train.")  # fmt: skip
        elif progress["partial"] is not None:
            self.log(f"Resumed from {self.path.name} in epoch {state['epoch'] + 1} of {epochs}, after its batch "
                     f"{progress['partial']['steps']}.")  # fmt: skip
        else:
            self.log(f"Resumed from {self.path.name} after epoch {state['epoch']} of {epochs}.")
        return progress

    def save(self, epoch: int, history: list[dict], lrs: list[float], partial: dict | None = None) -> None:
        """``epoch`` finished epochs, plus the running totals and RNG states of the next one when interrupted."""
        state = {name: part.state_dict() if part is not None else None for name, part in self.parts.items()}
        state.update(epoch=epoch, history=history, lrs=lrs, config=self.config, partial=partial)
        save_atomic(state, self.path)
        self.last_save = time.perf_counter()

    def due(self, minutes: float | None) -> bool:
        """Whether ``minutes`` or more have passed since the last save (never, when None)."""
        return minutes is not None and time.perf_counter() - self.last_save >= 60 * minutes


def _on_device(model: nn.Module, device: torch.device, channels_last: bool) -> None:
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)


def fit(
    model: nn.Module, train_loader, test_loader, optimizer: torch.optim.Optimizer, scheduler, epochs: int,
    device: torch.device, loss_fn: nn.Module | None = None, seed: int = 0, checkpoint_dir: str | Path | None = None,
    config: dict | None = None, amp_dtype: torch.dtype | None | str = "auto", channels_last: bool = True,
    progress: bool = True, max_steps_per_epoch: int | None = None, grad_clip: float | None = None,
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = accuracy_score, score_name: str = "acc",
    flip_tta: bool = False, eval_every: int = 1, checkpoint_minutes: float | None = None, log=print,
    average: WeightAverage | None = None, shift_tta: bool = False,
) -> FitResult:  # fmt: skip
    """Train for ``epochs`` epochs, testing after each; returns the history and per-batch LRs.

    History columns: ``train_loss``, ``test_loss``, ``train_<score_name>``, ``test_<score_name>``
    (accuracy in % by default; mean IoU for boxes). ``eval_every=n`` tests only after every n-th
    epoch and the last (the other epochs' test columns are None). ``amp_dtype``: autocast's dtype,
    None for fp32, "auto" for :func:`cifar.utils.autocast_dtype`'s choice (fp16 adds gradient scaling).
    Each epoch's shuffling, augmentation and random draws come from ``derive_seed(seed, "epoch", epoch)``.

    With ``checkpoint_dir`` the run is saved (:class:`Checkpoint`) after every epoch (and, with
    ``checkpoint_minutes=m``, after the first batch m minutes past the last save); a later call with
    the same directory and ``config`` resumes exactly where it stopped. With ``average`` (a
    :class:`WeightAverage` of ``model``) the average is updated every step, checkpointed, tested in
    place of the model, and copied into the model after the last epoch: the returned model is the average.
    """
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    amp_dtype = resolve_amp_dtype(device, amp_dtype)
    scaler = grad_scaler(device, amp_dtype)
    _on_device(model, device, channels_last)
    if average is not None:
        _on_device(average.model, device, channels_last)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "average": average, "scaler": scaler}
    checkpoint = Checkpoint(checkpoint_dir, parts, config, log) if checkpoint_dir is not None else None
    start_epoch, history, lrs, interrupted = _resume(checkpoint, epochs, device)
    for epoch in range(start_epoch, epochs):
        _seed_epoch(train_loader, seed, epoch)
        after_step = functools.partial(
            _after_step, model=model, average=average, checkpoint=checkpoint, minutes=checkpoint_minutes,
            epoch=epoch, history=history, lrs=lrs, device=device,
        )  # fmt: skip
        train = train_one_epoch(
            model, train_loader, optimizer, loss_fn, device, scheduler, amp_dtype, channels_last,
            progress, desc=f"epoch {epoch + 1}/{epochs}", max_steps=max_steps_per_epoch, grad_clip=grad_clip,
            score_fn=score_fn, partial=interrupted if epoch == start_epoch else None, on_step=after_step, scaler=scaler,
        )  # fmt: skip
        started = time.perf_counter()
        test = _end_of_epoch(
            model, average, test_loader, epoch, epochs, eval_every, device, amp_dtype, channels_last, loss_fn,
            score_fn, flip_tta, shift_tta,
        )  # fmt: skip
        history.append(_history_row(epoch, train, test, score_name, eval_seconds=time.perf_counter() - started))
        lrs.extend(train["lrs"])
        log(_epoch_line(history[-1], epochs, score_name))
        if checkpoint is not None:
            checkpoint.save(epoch + 1, history, lrs)
            save_history(history, checkpoint.folder)
    return FitResult(history, lrs)


def _resume(checkpoint: Checkpoint | None, epochs: int, device: torch.device) -> tuple[int, list, list, dict | None]:
    """Where a run starts: its first epoch, history, per-batch LRs, and the totals of an interrupted epoch."""
    saved = checkpoint.load(epochs, device) if checkpoint is not None else None
    if saved is None:
        return 0, [], [], None
    return saved["epoch"], saved["history"], saved["lrs"], saved["partial"]


def _seed_epoch(loader, seed: int, epoch: int) -> None:
    """Draw the epoch's shuffling, augmentation and global random numbers from the run's seed and the epoch alone."""
    seed_loader(loader, derive_seed(seed, "epoch", epoch))
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)


def _after_step(
    totals: dict,
    *,
    model: nn.Module,
    average: WeightAverage | None,
    checkpoint: Checkpoint | None,
    minutes: float | None,
    epoch: int,
    history: list[dict],
    lrs: list[float],
    device: torch.device,
) -> None:
    """After every training step of ``epoch``: update the weight average; save the run when a save is due.

    ``lrs`` holds the LRs of the epochs before this one, so the run's step count is ``len(lrs)`` plus
    the epoch's steps so far.
    """
    if average is not None:
        average.update(model, len(lrs) + totals["steps"])
    if checkpoint is not None and checkpoint.due(minutes):
        checkpoint.save(epoch, history, lrs, partial={**totals, **rng_states(device)})


def _end_of_epoch(
    model, average, test_loader, epoch, epochs, eval_every, device, amp_dtype, channels_last, loss_fn, score_fn,
    flip_tta, shift_tta,
) -> dict:  # fmt: skip
    """After the last epoch's training the average becomes the model; the test (where due) of the weights in use."""
    last = epoch + 1 == epochs
    if average is not None and last:
        model.load_state_dict(average.state_dict())
    if (epoch + 1) % eval_every and not last:
        return {"loss": None, "score": None}
    return evaluate(average.model if average is not None else model, test_loader, device, amp_dtype,
                    channels_last, loss_fn, score_fn, flip_tta, shift_tta)  # fmt: skip


def _history_row(epoch: int, train: dict, test: dict, score_name: str, eval_seconds: float) -> dict:
    """The history's row for the 0-based ``epoch``: its training and test results (None when not tested)."""
    return {
        "epoch": epoch + 1, "train_loss": train["loss"], f"train_{score_name}": train["score"],
        "test_loss": test["loss"], f"test_{score_name}": test["score"], "lr": train["lr"],
        "seconds": train["seconds"], "eval_seconds": eval_seconds, "images_per_s": train["images_per_s"],
    }  # fmt: skip


def _epoch_line(row: dict, epochs: int, score_name: str) -> str:
    tested = "(not tested)"
    if row["test_loss"] is not None:
        tested = f"test loss {row['test_loss']:.4f} {score_name} {row[f'test_{score_name}']:.2f}"
    return (f"epoch {row['epoch']:>2}/{epochs}  train loss {row['train_loss']:.4f} {score_name} "
            f"{row[f'train_{score_name}']:.2f}  {tested}  lr {row['lr']:.2e}  "
            f"{row['seconds']:.0f}s ({row['images_per_s']:.0f} img/s)")  # fmt: skip


def first_epoch_reaching(history: list[dict], accuracy: float) -> int | None:
    """First tested epoch whose test accuracy is at least ``accuracy`` (%), or None."""
    tested = (row for row in history if row["test_acc"] is not None)
    return next((row["epoch"] for row in tested if row["test_acc"] >= accuracy), None)


def run_seconds(history: list[dict]) -> dict[str, float]:
    """Where a run's time went, from its history: ``training`` (the epochs' ``seconds``: batches loaded and
    trained), ``testing`` (their ``eval_seconds``) and ``total``, the two together.

    The one definition of a run's time: the weights' records call ``total`` their ``wall_seconds``. Time
    outside the epochs (the LR range test, pauses between an interruption and its resume) is not counted.
    """
    training = sum(row["seconds"] for row in history)
    testing = sum(row.get("eval_seconds", 0.0) for row in history)
    return {"training": training, "testing": testing, "total": training + testing}


def label_smoothing_floor(num_classes: int, smoothing: float) -> float:
    """The lowest mean loss that cross-entropy with ``label_smoothing=smoothing`` can reach over ``num_classes``.

    PyTorch's smoothed target gives the true class ``1 - smoothing + smoothing / num_classes`` and every
    other class ``smoothing / num_classes``; the loss is the cross-entropy of the prediction against that
    target, smallest (its entropy) when the prediction equals it. So even a perfect classifier scores this
    much, and a smoothed test loss is read against it, not against 0.
    """
    if not 0 <= smoothing <= 1 or num_classes < 2:
        raise ValueError(f"need 0 <= smoothing <= 1 and at least 2 classes, got {smoothing}, {num_classes}")
    target = [1 - smoothing + smoothing / num_classes] + [smoothing / num_classes] * (num_classes - 1)
    return -sum(p * math.log(p) for p in target if p > 0)

