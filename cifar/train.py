"""The training engine: the training loop, prediction and evaluation, and a resumable ``fit``.

:func:`train_one_epoch` is the textbook loop (:class:`StepOptions`: device, precision, clipping).
Resuming an epoch interrupted part-way lives beside it: :class:`ResumableBatches` skips the batches
already trained and sets the random state back, :class:`EpochTotals` keeps the running totals a
checkpoint saves. :func:`fit` runs the epochs, tests and checkpoints (:class:`FitOptions`,
:class:`Checkpoint`, :class:`WeightAverage`). Nothing here knows about a lesson.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .artifacts import save_atomic, save_history
from .utils import autocast, derive_seed, get_device, grad_scaler, resolve_amp_dtype, seed_loader, shown_command

CHECKPOINT_NAME = "checkpoint.pt"
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def to_device(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device``: uint8 images become floats in [0, 1], 4-d inputs channels-last when asked."""
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


@dataclass
class StepOptions:
    """How each training step runs: on which device, in which precision and memory layout, with what clipping.

    ``amp_dtype``: autocast's dtype (None: fp32). ``scaler`` scales the loss against fp16 underflow;
    None makes :func:`cifar.utils.grad_scaler`'s, enabled for fp16 only (a disabled scaler changes
    nothing). :func:`fit` keeps one for the whole run, so its scale carries over from epoch to epoch.
    ``grad_clip`` clips each gradient value to [-grad_clip, grad_clip] before the optimizer's step.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: torch.dtype | None = None
    channels_last: bool = True
    grad_clip: float | None = None
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.scaler is None:
            self.scaler = grad_scaler(self.device, self.amp_dtype)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    scheduler=None,
    options: StepOptions | None = None,
    totals: EpochTotals | None = None,
) -> dict:
    """One pass over ``batches``, (inputs, targets) pairs: the training loop.

    Every batch is moved to the device, run forward under autocast, scored by the loss, back-propagated
    and stepped; the scheduler (if any) steps after every batch. ``totals`` counts the batches
    (:class:`EpochTotals`); its :meth:`~EpochTotals.result` is returned: mean loss and score, the LR
    and loss of every batch, seconds, images/s. :func:`fit` passes :class:`ResumableBatches`, which
    finishes an interrupted epoch exactly; the loop is the same either way.
    """
    options = options if options is not None else StepOptions()
    totals = totals if totals is not None else EpochTotals()
    model.train()
    for inputs, targets in batches:
        inputs, targets = to_device(inputs, targets, options.device, options.channels_last)
        with autocast(options.device, options.amp_dtype):
            outputs = model(inputs)
            loss = loss_fn(outputs, targets)
        lr = optimizer.param_groups[0]["lr"]  # the LR this batch is trained with
        optimizer.zero_grad(set_to_none=True)
        options.scaler.scale(loss).backward()  # the loss scaled against fp16 underflow; unchanged otherwise
        clip_gradients(model, optimizer, options)
        if optimizer_step(optimizer, options.scaler) and scheduler is not None:
            scheduler.step()
        totals.add(loss, outputs, targets, lr)
    return totals.result(optimizer)


def clip_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, options: StepOptions) -> None:
    """Clip every gradient value to ``options.grad_clip`` (nothing when None), after unscaling them."""
    if options.grad_clip is not None:
        options.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_value_(model.parameters(), options.grad_clip)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """``optimizer.step()`` through the gradient scaler; False when the scaler skipped the step.

    The scaler skips a step whose gradients hold inf/nan (the scale was too high) and lowers the
    scale (by ``backoff_factor``, 0.5): a skip is seen as the scale going down. The caller then
    leaves the scheduler where it was, so the skipped batch's LR is used again by the next one. A
    disabled scaler just steps the optimizer.
    """
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


class EpochTotals:
    """An epoch's running totals: batches trained, loss and score sums, images, the LR and loss of every
    batch, and the seconds spent waiting for the batches and training them.

    ``saved``: the :meth:`state` of an epoch interrupted part-way (from a checkpoint), to go on from.
    ``score_fn(outputs, targets)`` gives a per-sample score (accuracy in % by default).
    """

    FIELDS = ("steps", "loss_sum", "score_sum", "seen", "lrs", "losses", "seconds")

    def __init__(self, score_fn: ScoreFn = accuracy_score, saved: dict | None = None):
        self.score_fn = score_fn
        self.steps, self.seen = 0, 0
        self.loss_sum, self.score_sum, self.seconds = 0.0, 0.0, 0.0
        self.lrs: list[float] = []
        self.losses: list[float] = []
        if saved is not None:
            for key in self.FIELDS:
                setattr(self, key, list(saved[key]) if isinstance(saved[key], list) else saved[key])
        self.restart_clock()

    def restart_clock(self) -> None:
        """Time from now on: what came before (re-drawn batches of a resumed epoch) is not counted."""
        self._last = time.perf_counter()

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor, lr: float) -> None:
        """Count one trained batch: its mean loss, the score of its outputs, the LR it was trained with."""
        self.losses.append(loss.item())
        self.loss_sum += self.losses[-1] * len(targets)
        self.score_sum += self.score_fn(outputs.detach().float(), targets).sum().item()
        self.seen += len(targets)
        self.lrs.append(lr)
        self.steps += 1
        now = time.perf_counter()
        self.seconds += now - self._last  # the wait for this batch and its step
        self._last = now

    def state(self) -> dict:
        """The totals as a checkpoint keeps them (plain numbers and lists)."""
        return {key: getattr(self, key) for key in self.FIELDS}

    def result(self, optimizer: torch.optim.Optimizer) -> dict:
        """What :func:`train_one_epoch` returns: means over the epoch, every batch's LR and loss, time."""
        seen, seconds = max(self.seen, 1), self.seconds
        return {
            "loss": self.loss_sum / seen,
            "score": self.score_sum / seen,
            "lr": self.lrs[-1] if self.lrs else optimizer.param_groups[0]["lr"],
            "lrs": self.lrs,
            "losses": self.losses,
            "seconds": seconds,
            "images_per_s": self.seen / seconds if seconds > 0 else 0.0,
        }


class ResumableBatches:
    """The batches of one epoch of ``loader``, resumable part-way: what :func:`fit` trains on.

    When ``totals`` already counts trained batches (an epoch interrupted part-way, resumed from its
    checkpoint), their batches are drawn again, so that shuffling and augmentation go on as they
    were, but not yielded; after the last of them the global RNG is set back to ``rng``
    (:func:`rng_states` at the interruption). After each yielded batch has been trained (when the
    loop asks for the next one) ``on_step(totals)`` is called: :func:`fit` updates its weight
    average and saves a checkpoint there when one is due. ``max_steps`` ends the epoch after that
    many batches; ``desc`` shows a progress bar so titled (None: no bar).
    """

    def __init__(
        self,
        loader: Iterable,
        totals: EpochTotals,
        rng: dict | None = None,
        device: torch.device | None = None,
        max_steps: int | None = None,
        on_step: Callable[[EpochTotals], None] | None = None,
        desc: str | None = None,
    ):
        self.loader, self.totals, self.rng, self.on_step = loader, totals, rng, on_step
        self.device, self.max_steps, self.desc = device or torch.device("cpu"), max_steps, desc

    def __len__(self) -> int:
        return len(self.loader) if self.max_steps is None else min(self.max_steps, len(self.loader))

    def __iter__(self) -> Iterator:
        trained = self.totals.steps
        bar = tqdm(self.loader, desc=self.desc, disable=self.desc is None, mininterval=2, leave=False, file=sys.stdout)
        for step, batch in enumerate(bar):
            if step < trained:  # trained before the interruption: drawn again, not trained
                if step + 1 == trained and self.rng is not None:
                    set_rng_states(self.rng, self.device)
                self.totals.restart_clock()
                continue
            if self.max_steps is not None and step >= self.max_steps:
                break
            yield batch
            self._after_step(bar)

    def _after_step(self, bar) -> None:
        totals = self.totals
        seen = max(totals.seen, 1)
        bar.set_postfix(
            loss=f"{totals.loss_sum / seen:.4f}", score=f"{totals.score_sum / seen:.2f}", lr=f"{totals.lrs[-1]:.2e}"
        )
        if self.on_step is not None:
            self.on_step(totals)


def tta_outputs(model: nn.Module, inputs: torch.Tensor, flip: bool, shift: bool) -> torch.Tensor:
    """The model's outputs averaged over the test-time views that :func:`predict` describes."""

    def mirrored(images: torch.Tensor) -> torch.Tensor:
        return (model(images) + model(images.flip(3))) / 2 if flip else model(images)

    outputs = mirrored(inputs)
    if shift:
        height, width = inputs.shape[-2:]
        padded = nn.functional.pad(inputs, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2 : height + 2, 2 : width + 2]]
        outputs = (
            outputs / 2 + sum(mirrored(view.contiguous(memory_format=_memory_format(inputs))) for view in shifted) / 4
        )
    return outputs


def _memory_format(inputs: torch.Tensor) -> torch.memory_format:
    channels_last = inputs.dim() == 4 and inputs.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


TTA_VIEWS = ("none", "flip", "shift")  # test-time augmentation: see predict


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    progress: bool = False,
    tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 outputs (logits) and targets for every sample of ``loader``, on the CPU, in eval mode.

    ``tta`` (:data:`TTA_VIEWS`): ``"flip"`` averages the outputs for each image and its mirror image
    (test-time augmentation); ``"shift"`` also averages (at half the weight) the flip pairs of the
    image shifted by one pixel up-left and down-right (airbench's multi-crop: 6 views, 3x the cost).
    """
    if tta not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {TTA_VIEWS}, not {tta!r}")
    model.eval()
    all_outputs, all_targets = [], []
    for inputs, targets in tqdm(loader, desc="eval", disable=not progress, leave=False, file=sys.stdout):
        inputs, targets = to_device(inputs, targets, device, channels_last)
        with autocast(device, amp_dtype):
            outputs = tta_outputs(model, inputs, tta != "none", tta == "shift")
        all_outputs.append(outputs.float().cpu())
        all_targets.append(targets.cpu())
    return torch.cat(all_outputs), torch.cat(all_targets)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    loss_fn: nn.Module | None = None,
    score_fn: ScoreFn = accuracy_score,
    tta: str = "none",
) -> dict[str, float]:
    """Mean loss per sample (cross-entropy by default) and mean score over the whole of ``loader``."""
    outputs, targets = predict(model, loader, device, amp_dtype, channels_last, tta=tta)
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
        progress = {
            "epoch": state["epoch"],
            "history": state["history"],
            "lrs": state.get("lrs", []),
            "partial": state.get("partial"),
        }
        if state.get("restored_from"):
            trained_by = f"`{shown_command(state.get('command'))}` on {state.get('device')}"
            self.log(
                f"Finished run restored from {state['restored_from']}: {state['epoch']} of {epochs} epochs "
                f"trained by {trained_by}; nothing left to train."
            )
        elif progress["partial"] is not None:
            self.log(
                f"Resumed from {self.path.name} in epoch {state['epoch'] + 1} of {epochs}, after its batch "
                f"{progress['partial']['steps']}."
            )
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


@dataclass
class FitOptions:
    """How :func:`fit` trains, tests and saves a run; every field has a default.

    ``device``: None for :func:`cifar.utils.get_device`'s. ``amp_dtype``: autocast's dtype, None for
    fp32, "auto" for :func:`cifar.utils.autocast_dtype`'s choice (fp16 adds gradient scaling).
    ``loss_fn``: None for cross-entropy. ``score_fn`` gives a per-sample score, reported as
    ``train_<score_name>`` and ``test_<score_name>`` (accuracy in % by default; mean IoU for boxes).
    ``seed``: each epoch's shuffling, augmentation and random draws come from
    ``derive_seed(seed, "epoch", epoch)``. ``eval_every=n`` tests only after every n-th epoch and the
    last (the other epochs' test columns are None), with test-time augmentation ``tta``
    (:data:`TTA_VIEWS`). ``average``: a :class:`WeightAverage` of the model, updated every step,
    checkpointed, tested in place of the model and copied into it after the last epoch.
    ``checkpoint_dir``: the run is saved there (:class:`Checkpoint`) after every epoch and, with
    ``checkpoint_minutes=m``, after the first batch m minutes past the last save; ``config``
    identifies the run, so that a checkpoint of another configuration is refused.
    """

    device: torch.device | None = None
    amp_dtype: torch.dtype | None | str = "auto"
    channels_last: bool = True
    loss_fn: nn.Module | None = None
    score_fn: ScoreFn = accuracy_score
    score_name: str = "acc"
    grad_clip: float | None = None
    seed: int = 0
    max_steps_per_epoch: int | None = None
    eval_every: int = 1
    tta: str = "none"
    average: WeightAverage | None = None
    checkpoint_dir: str | Path | None = None
    checkpoint_minutes: float | None = None
    config: dict | None = None
    progress: bool = True
    log: Callable[[str], object] = print

    def __post_init__(self):
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        if self.tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {TTA_VIEWS}, not {self.tta!r}")


def fit(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    epochs: int,
    options: FitOptions | None = None,
) -> FitResult:
    """Train for ``epochs`` epochs with :func:`train_one_epoch`, testing after each; returns the history and
    the LR of every batch.

    History columns: ``epoch``, ``train_loss``, ``test_loss``, ``train_<score_name>``,
    ``test_<score_name>``, ``lr``, ``seconds``, ``eval_seconds``, ``images_per_s``. With
    ``options.checkpoint_dir`` a later call with the same directory and ``config`` resumes exactly
    where the run stopped, part-way through an epoch included (:class:`ResumableBatches`). With
    ``options.average`` the returned model is the average. :class:`FitOptions` has the rest.
    """
    options = options if options is not None else FitOptions()
    device = torch.device(options.device) if options.device is not None else get_device()
    amp_dtype = resolve_amp_dtype(device, options.amp_dtype)
    step = StepOptions(device, amp_dtype, options.channels_last, options.grad_clip)
    loss_fn = options.loss_fn or nn.CrossEntropyLoss()
    for network in (model, options.average.model if options.average is not None else None):
        if network is not None:
            _on_device(network, device, options.channels_last)
    parts = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "average": options.average,
        "scaler": step.scaler,
    }
    checkpoint = None
    if options.checkpoint_dir is not None:
        checkpoint = Checkpoint(options.checkpoint_dir, parts, options.config, options.log)
    start_epoch, history, lrs, interrupted = _resume(checkpoint, epochs, device)
    for epoch in range(start_epoch, epochs):
        _seed_epoch(train_loader, options.seed, epoch)
        totals = EpochTotals(options.score_fn, interrupted if epoch == start_epoch else None)
        after_step = functools.partial(
            _after_step,
            model=model,
            options=options,
            checkpoint=checkpoint,
            epoch=epoch,
            history=history,
            lrs=lrs,
            device=device,
        )
        batches = ResumableBatches(
            train_loader,
            totals,
            interrupted,
            device,
            options.max_steps_per_epoch,
            after_step,
            desc=f"epoch {epoch + 1}/{epochs}" if options.progress else None,
        )
        train = train_one_epoch(model, batches, optimizer, loss_fn, scheduler, step, totals)
        started = time.perf_counter()
        test = _end_of_epoch(model, test_loader, epoch + 1 == epochs, epoch, options, step, loss_fn)
        row = _history_row(epoch, train, test, options.score_name, eval_seconds=time.perf_counter() - started)
        history.append(row)
        lrs.extend(train["lrs"])
        options.log(_epoch_line(history[-1], epochs, options.score_name))
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
    totals: EpochTotals,
    *,
    model: nn.Module,
    options: FitOptions,
    checkpoint: Checkpoint | None,
    epoch: int,
    history: list[dict],
    lrs: list[float],
    device: torch.device,
) -> None:
    """After every training step of ``epoch``: update the weight average; save the run when a save is due.

    ``lrs`` holds the LRs of the epochs before this one, so the run's step count is ``len(lrs)`` plus
    the epoch's steps so far.
    """
    if options.average is not None:
        options.average.update(model, len(lrs) + totals.steps)
    if checkpoint is not None and checkpoint.due(options.checkpoint_minutes):
        checkpoint.save(epoch, history, lrs, partial={**totals.state(), **rng_states(device)})


def _end_of_epoch(
    model: nn.Module,
    test_loader: Iterable,
    last: bool,
    epoch: int,
    options: FitOptions,
    step: StepOptions,
    loss_fn: nn.Module,
) -> dict:
    """After the last epoch's training the average becomes the model; the test (where due) of the weights in use."""
    average = options.average
    if average is not None and last:
        model.load_state_dict(average.state_dict())
    if (epoch + 1) % options.eval_every and not last:
        return {"loss": None, "score": None}
    tested = average.model if average is not None else model
    return evaluate(
        tested, test_loader, step.device, step.amp_dtype, step.channels_last, loss_fn, options.score_fn, options.tta
    )


def _history_row(epoch: int, train: dict, test: dict, score_name: str, eval_seconds: float) -> dict:
    """The history's row for the 0-based ``epoch``: its training and test results (None when not tested)."""
    return {
        "epoch": epoch + 1,
        "train_loss": train["loss"],
        f"train_{score_name}": train["score"],
        "test_loss": test["loss"],
        f"test_{score_name}": test["score"],
        "lr": train["lr"],
        "seconds": train["seconds"],
        "eval_seconds": eval_seconds,
        "images_per_s": train["images_per_s"],
    }


def _epoch_line(row: dict, epochs: int, score_name: str) -> str:
    tested = "(not tested)"
    if row["test_loss"] is not None:
        tested = f"test loss {row['test_loss']:.4f} {score_name} {row[f'test_{score_name}']:.2f}"
    return (
        f"epoch {row['epoch']:>2}/{epochs}  train loss {row['train_loss']:.4f} {score_name} "
        f"{row[f'train_{score_name}']:.2f}  {tested}  lr {row['lr']:.2e}  "
        f"{row['seconds']:.0f}s ({row['images_per_s']:.0f} img/s)"
    )


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
