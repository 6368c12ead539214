"""What runs leave on disk: atomic saves, history tables, run summaries, and the weights format.

Every trained model in the course is saved one way: an fp16 ``state_dict`` (loaded with
``weights_only=True``, so opening a weights file runs no code) and, beside it, a JSON record of
how it was made (same name, ``.json``). Every file is written to a temporary name first and
then renamed, so an interrupted save never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save(obj, path)`` through a temporary file, so ``path`` is whole or untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text_atomic(text: str, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_history(history: list[dict], folder: str | Path):
    """Write ``history.csv`` and ``history.json`` in ``folder``; returns the table (a DataFrame)."""
    import pandas as pd

    folder = Path(folder)
    frame = pd.DataFrame(history)
    frame.to_csv(folder / "history.csv", index=False)
    write_text_atomic(json.dumps(history, indent=1), folder / "history.json")
    return frame


def read_summary(run_dir: str | Path | None) -> dict:
    """The run folder's ``summary.json`` (configuration, peak LR, device, command, results), or {}."""
    path = None if run_dir is None else Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def write_summary(run_dir: str | Path | None, **values) -> dict:
    """Merge ``values`` into the run folder's ``summary.json`` (when there is a folder); returns the summary."""
    summary = read_summary(run_dir)
    summary.update(values)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(summary, indent=1), Path(run_dir) / "summary.json")
    return summary


def record_path(path: str | Path) -> Path:
    """Where the JSON record of the weights at ``path`` lives: beside them, same name, ``.json``."""
    return Path(path).with_suffix(".json")


def save_weights(model: nn.Module, path: str | Path, record: dict) -> Path:
    """The course's weights format: ``model``'s state_dict in fp16 at ``path``, ``record`` as JSON beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    save_atomic(state, path)
    write_text_atomic(json.dumps(record, indent=1), record_path(path))
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The float32 state_dict and the record written by :func:`save_weights`; no code is unpickled."""
    path = Path(path)
    if not path.is_file() or not record_path(path).is_file():
        raise FileNotFoundError(f"{path} and {record_path(path).name} beside it are needed (the weights format)")
    record = json.loads(record_path(path).read_text())
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, record


def load_model(
    path: str | Path, build: Callable[[dict], nn.Module], architecture: str | None = None
) -> tuple[nn.Module, dict]:
    """The network saved at ``path`` in the course's weights format, in float32 and eval mode, and its record.

    ``build(record)`` makes the empty network the record describes; ``architecture``, when given, is
    the record's ``architecture`` that the file must hold (anything else raises a ValueError naming both).
    The one loader of every lesson's weights: :func:`load_weights` (``weights_only=True``), then the network.
    """
    state, record = load_weights(path)
    if architecture is not None and record.get("architecture") != architecture:
        raise ValueError(f"{path} holds a {record.get('architecture')!r}, not a {architecture}")
    model = build(record)
    model.load_state_dict(state)
    return model.eval(), record
