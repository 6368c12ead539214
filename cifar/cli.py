"""One convention for the course's commands: each lesson's own (``python -m cifar.s10``, ``.raccoon``,
``.fish``, ``.residual``), ``python -m cifar.bench`` and ``python -m cifar.rf``.

The commands that train into a run folder start from :func:`base_parser`, which gives the same
names to the same things: ``--fast`` (the smoke run: the lesson's fast mode, small subsets and
few steps, as ``CIFAR_FAST=1`` gives the notebooks), ``--data-dir``, ``--out`` and
``--precision``. Fields of a lesson's config are set with ``--<field-name>`` flags and applied
by :func:`apply_overrides` after the recipe, so an explicit flag always wins over ``--fast``.
``python -m cifar.bench`` and ``python -m cifar.rf`` write no run folder and have only their own
options (the benchmark's smoke run is ``--fast`` too). Every command ends through :func:`run`,
which turns the errors a user can fix (missing data, missing files, a record that does not
match) into one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch

from .dataset import DataError
from .utils import PRECISIONS

T = TypeVar("T")
USER_ERRORS = (DataError, FileNotFoundError, ValueError)


def base_parser(prog: str, description: str, out: str, data_help: str) -> argparse.ArgumentParser:
    """A parser with the options every command shares; ``out`` is the default run folder."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--fast",
        action="store_true",
        help="smoke run: the lesson's fast mode (small subsets, few steps); explicit options still override it",
    )
    parser.add_argument("--data-dir", help=data_help)
    parser.add_argument("--out", default=out, help="run folder: checkpoint, history, figures (resumes if present)")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="auto",
        help="arithmetic of training and testing: auto (bf16 where the hardware has it natively, "
        "fp16 with gradient scaling on older GPUs, else fp32), or force one; recorded with the "
        "run",
    )
    return parser


def apply_overrides(config: T, args: argparse.Namespace, names: Iterable[str]) -> T:
    """``config`` with the fields in ``names`` replaced by the options given on the command line."""
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return replace(config, **given) if given else config


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as a user would type it, for provenance records."""
    return " ".join(["python -m", module, *(argv if argv is not None else sys.argv[1:])])


def run(main: Callable[[], T]) -> T:
    """Call ``main()``; an error the user can fix ends the command with a one-line message on stderr (exit status 1)."""
    try:
        return main()
    except USER_ERRORS as error:
        raise SystemExit(f"error: {error}") from None


def save_record(results: dict, path: str | Path, command: str) -> Path:
    """Write a measurement's ``results`` as a JSON record with its command, date, Python and torch versions."""
    record = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **results,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"record: {path}")
    return path
