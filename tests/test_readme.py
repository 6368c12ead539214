"""The README's and the docs pages' numbers are the runs' numbers (issue 18, "Keep it true"; issue 30).

Every number in a row of the README's *Results* table, of the *All results* table and the ablation
table of ``docs/experiments.md``, and of each row of its *Time to accuracy* table that has a
committed run record, must appear in that row's sources: the committed outputs
of the notebook that measured it (stream text and ``text/plain``; images are not read) or the run
record in ``weights/`` that the notebook reads. ``SOURCES`` below says which row comes from where.

What counts as "appears":

* the same value, thousands separators and ``%`` aside (``6,573,130``, ``90.52%``);
* a more precise value that rounds exactly to the README's digits (``0.5714`` for ``0.571``,
  ``90.5199966`` for ``90.52``, ``81.916`` for ``82``), never the other way;
* a value that ``record_facts`` computes from a record, each conversion named there (minutes from
  seconds, medians of the epochs' seconds), or a notebook output scaled by a stated factor.

Not counted as quoted numbers: code spans (commands, file names), link targets (``](docs/x.md)``),
numbers inside names (S10, bf16, ResNet-50, CIFAR-10), and thresholds written after ``>=`` (``>= 90%``, ``IoU >= 0.5``).
Notebook output lines of tqdm progress bars and per-epoch training logs are skipped: the rows quote
a run's results, and hundreds of per-epoch numbers would match almost any value by chance (the
README's per-epoch accuracies of the S10 runs are checked against the records' histories).
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXPERIMENTS = ROOT / "docs" / "experiments.md"

NB01 = "notebooks/01_residual_connections.ipynb"
RESIDUAL = ("plain20", "plain56", "resnet20", "resnet56")  # the residual lesson's runs, weights/records/residual_*.json
NB02 = "notebooks/02_resnet50_from_scratch.ipynb"
RACCOON_RUN = "weights/records/raccoon_resnet50_224.json"  # the 30-epoch run, as its notebook printed it
NB03 = "notebooks/03_s10_custom_resnet.ipynb"
NB04 = "notebooks/04_fish_transfer_learning.ipynb"
LESSON_RUN = "weights/s10_custom_resnet.json"
ORIGINAL_RUN = "weights/s10_original_recipe.json"
SHORT_RUN = "weights/s10_fast_recipe.json"
TRICKS_RECIPE_RUN = "weights/s10_tricks_recipe.json"
TRICKS_RUN = "weights/records/s10_tricks_lr04.json"  # records of runs whose weights are not kept
TRICKS_LR1_RUN = "weights/records/s10_tricks_lr1.json"
TRICKS_LIGHT_RUN = "weights/records/s10_tricks_light.json"
TRICKS_FROZEN_WHITENING_RUN = "weights/records/s10_tricks_fw_bn04.json"
TRICKS_BATCH256_RUN = "weights/records/s10_tricks_b256.json"
TRICKS_BATCH128_RUN = "weights/records/s10_tricks_b128.json"
GPU_SWEEP = "weights/records/s10_tricks_gpu_sweep.jsonl"  # one run summary per line, each with its "name"
# today's tricks recipe set back to the GPU sweep's (batch 512, peak LR 1.0, EMA every 5 steps, whitening trained)
SWEEP_RECIPE = "--recipe tricks --batch-size 512 --max-lr 1.0 --trick average_every=5 --trick freeze_whitening=off"


@dataclass(frozen=True)
class Outputs:
    """Committed outputs of a notebook's code cells.

    cell: only cells whose source contains this text; line: only output lines containing this
    text; scale: multiply every number by it (an explicit unit conversion, e.g. share -> percent).
    """

    notebook: str
    cell: str | None = None
    line: str | None = None
    scale: int = 1


@dataclass(frozen=True)
class Record:
    """A run record (weights/*.json): its values, and the quantities ``record_facts`` derives from them.

    run: for a file of records, one per line (.jsonl), the one with this "name".
    """

    path: str
    run: str | None = None


def load_record(spec: Record) -> dict:
    text = (ROOT / spec.path).read_text()
    if spec.run is None:
        return json.loads(text)
    return next(record for record in map(json.loads, text.splitlines()) if record["name"] == spec.run)


# table (a heading of the page in PAGES) -> {start of a row's first cell: its sources, or why the row is not checked}.
SOURCES: dict[str, dict[str, list[Outputs | Record] | str]] = {
    # the README's front page: one row per lesson
    "Results": {
        "residual connections": [Outputs(NB01)],
        "ResNet-50 from scratch, box regression": [Outputs(NB02), Outputs(NB02, line="share_iou_50", scale=100)],
        "frozen S10 features and a spatial head, box regression": [
            Outputs(NB02),
            Outputs(NB02, line="share_iou_50", scale=100),
        ],
        "S10 custom ResNet": [Outputs(NB03), Record(LESSON_RUN), Record(TRICKS_RECIPE_RUN)],
        "transfer learning on fish photos": [Outputs(NB04)],
    },
    "All results": {
        "residual connections": [Outputs(NB01)]
        + [Record(f"weights/records/residual_{name}.json") for name in RESIDUAL],
        "S10 custom ResNet, lesson recipe": [Outputs(NB03), Record(LESSON_RUN)],
        "S10 custom ResNet, the Adam recipe": [Record(ORIGINAL_RUN)],
        "S10 custom ResNet, the short recipe": [Record(SHORT_RUN)],
        "S10 custom ResNet, the tricks recipe": [Record(TRICKS_RECIPE_RUN)],
        # Two rows (mean IoU; share of photos at IoU >= 0.5, which the README gives in percent).
        "ResNet-50 from scratch, box regression": [
            Outputs(NB02),
            Outputs(NB02, line="share_iou_50", scale=100),
            Record(RACCOON_RUN),
        ],
        "ResNet-50 from scratch, inference": [Outputs(NB02), Record(RACCOON_RUN)],
        "ResNet-50 from scratch, the diagnosis": [Outputs(NB02), Record("weights/records/raccoon_diagnosis.json")],
        "frozen S10 features and a spatial head, box regression": [
            Outputs(NB02),
            Outputs(NB02, line="share_iou_50", scale=100),
        ],
        "ResNet-34 transfer learning, random init": [Outputs(NB04)],
        "S10 from CIFAR-10 against random weights": [Outputs(NB04)],
        "S10 from CIFAR-10, leaky splits": [Outputs(NB04)],
    },
    "Time to accuracy": {
        "Adam recipe": [Record(ORIGINAL_RUN)],
        "lesson recipe": [Record(LESSON_RUN)],
        "the short recipe as it is now, 11 epochs": [Record(SHORT_RUN)],
        "the tricks recipe as it is now": [Record(TRICKS_RECIPE_RUN)],
        "the first tricks recipe": [Record(TRICKS_RUN)],
        "the tricks recipe at the published peak LR": [Record(TRICKS_LR1_RUN)],
        "the tricks recipe at peak LR 1.0 with airbench's light augmentation": [Record(TRICKS_LIGHT_RUN)],
        "the tricks recipe of the GPU sweep": [Record(GPU_SWEEP, "ema09_lookahead")],
        "the same, seed 2, same GPU": [Record(GPU_SWEEP, "ema09_lookahead_seed2")],
        "12 epochs of the tricks without lookahead": [Record(GPU_SWEEP, "light_ema09_e12")],
        "the tricks recipe plus airbench's fixed whitening layer": [Record(TRICKS_FROZEN_WHITENING_RUN)],
        "the same fixed whitening layer, batch 256": [Record(TRICKS_BATCH256_RUN)],
        "the same at batch 128": [Record(TRICKS_BATCH128_RUN)],
    },
    # every row: the runs it lists, in order (test_gpu_sweep_options_reproduce_the_runs checks their options)
    "What each trick contributes: full-data runs on a GPU": {
        row: [Record(GPU_SWEEP, run) for run in runs]
        for row, runs in {
            "the base:": ["light_ema09", "light_ema09_seed2", "light_ema09_seed3"],
            "the base plus lookahead": ["ema09_lookahead", "ema09_lookahead_seed2"],
            "none of the training tricks": ["plain_tta"],
            "without the whitening": ["light_ema09_no_whiten_init"],
            "without the dirac": ["light_ema09_no_dirac_init"],
            "without alternating flips": ["light_ema09_no_alternating_flip"],
            "without frozen batch-norm": ["light_ema09_no_frozen_bn"],
            "without the weight EMA": ["light_noema"],
            "EMA decay 0.99": ["light"],
            "ghost batch norm": ["ema09_ghost32", "ema09_ghost32_seed2", "ema09_ghost32_seed3"],
            "lookahead and ghost batch norm": ["ema09_lookahead_ghost32"],
            "batch-norm momentum 0.4": ["ema09_bnmom04"],
            "peak LR 0.7": ["ema09_lr07"],
            "lookahead, peak LR 0.7": ["ema09_lookahead_lr07"],
            "peak LR 2.0": ["ema09_lr2"],
            "batch 256": ["ema09_b256"],
            "label smoothing 0.1, EMA decay 0.99": ["light_ls01"],
            "label smoothing 0 (none)": ["ema09_ls0"],
            "label smoothing 0.1, weight decay": ["ema09_ls01_wd25"],
            "weight decay 1e-3": ["ema09_wd1e3"],
            "the base in 5 epochs": ["light_ema09_e5"],
        }.items()
    },
}

# the page of each table (the README unless named here)
PAGES: dict[str, Path] = {
    "All results": EXPERIMENTS,
    "Time to accuracy": EXPERIMENTS,
    "What each trick contributes: full-data runs on a GPU": EXPERIMENTS,
}

NUMBER = re.compile(
    r"(?<![A-Za-wyz0-9_.])"  # not part of a name (S10, bf16, fish_egu2017, v1.2); x as "times" is fine (224x224)
    r"(?<![A-Za-z]x)(?<![A-Za-z]-)"  # nor after a word's x or hyphen (ResNet-50, CIFAR-10)
    r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(e-?\d+)?"  # 6,573,130  90.52  5e-4
)
FRACTION = re.compile(r"(?<=x)(\d+)/(\d+)(?![\w.])")  # README only: "logits x1/8" is 0.125
PROGRESS_BAR = re.compile(r"\d+/\d+ \[\d+:\d+")  # tqdm: " 12/26 [00:18<00:21"
EPOCH_LOG = re.compile(r"^\s*epoch\s+\d+/\d+\s")  # "epoch  3/15  train loss 1.5287 acc 40.39  test loss ..."
CODE_SPAN = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")  # a Markdown link's target: "[details](docs/experiments.md#x)"


def parse_number(match: re.Match) -> Decimal:
    return Decimal(match.group(0).replace(",", ""))


def numbers_in(text: str) -> list[Decimal]:
    """Every number in a piece of notebook output or record text (there "_" separates words: batch_32_ms)."""
    return [parse_number(m) for m in NUMBER.finditer(text.replace("_", " "))]


def quoted_numbers(cell: str) -> list[tuple[str, Decimal]]:
    """The numbers a README cell quotes, as (text as written, value); code spans and thresholds excluded."""
    cell = LINK_TARGET.sub("] ", CODE_SPAN.sub(" ", cell))
    found = []
    fractions = {m.start(): m for m in FRACTION.finditer(cell)}
    skip_until = -1
    for m in NUMBER.finditer(cell):
        if m.start() < skip_until:
            continue
        if re.search(r">=\s*\**$", cell[: m.start()]):
            continue  # a threshold the row defines, not a measurement
        if m.start() in fractions:
            fraction = fractions[m.start()]
            found.append((fraction.group(0), Decimal(fraction.group(1)) / Decimal(fraction.group(2))))
            skip_until = fraction.end()
            continue
        found.append((m.group(0), parse_number(m)))
    return found


def matches(quoted: Decimal, source: Decimal) -> bool:
    """The source value, rounded half-up to the README's decimal places, is the README's value."""
    places = max(0, -quoted.as_tuple().exponent)
    try:
        return source.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) == quoted
    except InvalidOperation:  # a source number too long to round to these places (not the README's)
        return False


@cache
def notebook_numbers(spec: Outputs) -> tuple[Decimal, ...]:
    cells = json.loads((ROOT / spec.notebook).read_text())["cells"]
    values = []
    for cell in cells:
        if cell["cell_type"] != "code" or (spec.cell and spec.cell not in "".join(cell["source"])):
            continue
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                text = "".join(output["text"])
            else:
                text = "".join(output.get("data", {}).get("text/plain", ""))
            for line in re.split(r"[\r\n]", text):
                if PROGRESS_BAR.search(line) or EPOCH_LOG.match(line) or (spec.line and spec.line not in line):
                    continue
                values += [value * spec.scale for value in numbers_in(line)]
    return tuple(values)


def record_facts(record: dict) -> dict[str, float]:
    """The quantities the README computes from a run record, each conversion named."""
    history = record.get("history")
    if history is None:  # a range test's record (weights/records/s10_range_test.json): its time only
        return {"seconds in minutes": record["seconds"] / 60} if "seconds" in record else {}
    if not history or "test_acc" not in history[0]:
        return {}  # a record of another kind (the box lesson's, weights/records/raccoon_*.json): its values only
    tested = [row for row in history if row["test_acc"] is not None]
    wall_seconds = record.get("wall_seconds", record.get("epoch_seconds"))  # a weights record, or a run summary
    if wall_seconds is None:  # a record that keeps only its history (the residual lesson's)
        wall_seconds = sum(row["seconds"] + row["eval_seconds"] for row in history)
    facts = {
        "wall_seconds in minutes (the epochs' training + test time)": wall_seconds / 60,
        "training seconds: sum of the epochs' seconds": sum(row["seconds"] for row in history),
        "test seconds: sum of the epochs' eval_seconds": sum(row["eval_seconds"] for row in history),
        "training minutes: sum of the epochs' seconds / 60": sum(row["seconds"] for row in history) / 60,
        "test minutes: sum of the epochs' eval_seconds / 60": sum(row["eval_seconds"] for row in history) / 60,
        "median seconds of training per epoch": statistics.median(row["seconds"] for row in history),
        "median seconds of a test": statistics.median(row["eval_seconds"] for row in tested),
    }
    if record.get("first_epoch_90"):
        through = [row for row in history if row["epoch"] <= record["first_epoch_90"]]
        facts["minutes until the first epoch >= 90% (training + test)"] = (
            sum(row["seconds"] + row["eval_seconds"] for row in through) / 60
        )
    return facts


@cache
def record_numbers(spec: Record) -> tuple[Decimal, ...]:
    record = load_record(spec)
    values = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                # a range test's hundred points (or a loss curve's) would match numbers by chance
                if key not in ("lrs", "losses") and not key.endswith("_losses"):
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            values.extend(numbers_in(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(Decimal(repr(value)))

    walk(record)
    values += [Decimal(repr(value)) for value in record_facts(record).values()]
    return tuple(values)


def source_numbers(spec: Outputs | Record) -> tuple[Decimal, ...]:
    return notebook_numbers(spec) if isinstance(spec, Outputs) else record_numbers(spec)


def describe(spec: Outputs | Record) -> str:
    if isinstance(spec, Record):
        return spec.path + (f" (run {spec.run!r})" if spec.run else "")
    where = [f"cells containing {spec.cell!r}"] if spec.cell else []
    where += [f"lines containing {spec.line!r}"] if spec.line else []
    where += [f"x{spec.scale}"] if spec.scale != 1 else []
    return spec.notebook + (f" ({', '.join(where)})" if where else "")


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under a heading of its page (``PAGES``), as lists of cells."""
    lines = PAGES.get(heading, README).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading and line.startswith("#"))
    section = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        section.append(line)
    first = next(i for i, line in enumerate(section) if line.startswith("|"))
    table = []
    for line in section[first:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return table[2:]  # past the header and the delimiter row


def row_key(table: str, row: list[str]) -> str | None:
    name = row[0].replace("*", "")
    return next((key for key in SOURCES[table] if name.startswith(key)), None)


@pytest.mark.parametrize("table", SOURCES)
def test_every_row_has_its_sources(table):
    """A new row needs its sources in SOURCES; a row named in SOURCES must still be in the table."""
    rows = table_rows(table)
    unmapped = [row[0] for row in rows if row_key(table, row) is None]
    assert not unmapped, f"README {table!r} rows without an entry in SOURCES: {unmapped}"
    keys = {row_key(table, row) for row in rows}
    missing = [key for key in SOURCES[table] if key not in keys]
    assert not missing, f"SOURCES names rows that the README's {table!r} table no longer has: {missing}"


def test_readme_numbers_appear_in_their_sources():
    nowhere = []
    for table, rows in SOURCES.items():
        for row in table_rows(table):
            sources = rows.get(row_key(table, row))
            if sources is None or isinstance(sources, str):
                continue  # unmapped (test_every_row_has_its_sources) or not checkable (the reason is in SOURCES)
            available = [value for spec in sources for value in source_numbers(spec)]
            missing = [
                text
                for cell in row
                for text, value in quoted_numbers(cell)
                if not any(matches(value, source) for source in available)
            ]
            if missing:
                nowhere.append(
                    f"  {table}, row {row[0][:70]!r} | {row[1][:50]!r}:\n"
                    f"    {', '.join(missing)}  -- in none of: {'; '.join(describe(s) for s in sources)}"
                )
    assert not nowhere, "README numbers that appear in no committed output or run record:\n" + "\n".join(nowhere)


def test_per_epoch_lists_follow_the_history():
    """A checked row's "per epoch: ..." list is its record's test accuracies, in order (the test above is unordered)."""
    checked = 0
    for table, rows in SOURCES.items():
        for row in table_rows(table):
            sources = rows.get(row_key(table, row))
            records = [spec for spec in sources if isinstance(spec, Record)] if isinstance(sources, list) else []
            if len(records) != 1 or "per epoch: " not in " ".join(row):
                continue  # unchecked rows (no committed record, or no per-epoch list)
            history = load_record(records[0])["history"]
            tested = [Decimal(repr(epoch["test_acc"])) for epoch in history if epoch["test_acc"] is not None]
            recorded = [accuracy.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP) for accuracy in tested]
            for listed in (m.group(1) for cell in row for m in re.finditer(r"per epoch: ([\d., ]+)\)", cell)):
                quoted = [Decimal(value) for value in listed.split(", ")]
                assert quoted == recorded, (
                    f"{table}, row {row[0][:70]!r}:\n  README per epoch: {listed}\n"
                    f"  {describe(records[0])}: {', '.join(map(str, recorded))}"
                )
                checked += 1
    assert checked == 1  # the lesson recipe's row in Time to accuracy


def test_gpu_sweep_options_reproduce_the_runs():
    """Each ablation row's options, after the sweep's recipe (:data:`SWEEP_RECIPE`, today's ``--recipe tricks``
    returned to the sweep's), rebuild the configuration its runs recorded, each run with its own seed."""
    from dataclasses import asdict

    from cifar import s10

    table = "What each trick contributes: full-data runs on a GPU"
    page = PAGES[table].read_text()
    assert f"`python -m cifar.s10 {SWEEP_RECIPE} OPTIONS --data-dir ../shared/data/cifar10`" in page
    checked = 0
    for row in table_rows(table):
        spans = re.findall(r"`([^`]*)`", row[-1])
        options = spans[0].split() if spans else []
        for spec in SOURCES[table][row_key(table, row)]:
            record = load_record(spec)
            argv = [*SWEEP_RECIPE.split(), *options, "--seed", str(record["config"]["seed"])]
            config = json.loads(json.dumps(asdict(s10.config_from_args(s10.parse_args(argv)))))
            recorded = copy.deepcopy(record["config"])
            # tricks added after the sweep were off in its runs (the Tricks default)
            recorded["tricks"] = {**asdict(s10.Tricks()), **recorded["tricks"]}
            assert config == recorded, f"row {row[0]!r}, run {spec.run}: {argv}"
            checked += 1
    assert checked == 26  # the 27th run, 12 epochs, is a row of Time to accuracy


def test_number_rules():
    """The reading rules above, on examples."""
    assert [text for text, _ in quoted_numbers("**90.52%** (first >= 90%: epoch 23); train 96.74%")] == [
        "90.52",
        "23",
        "96.74",
    ]
    assert quoted_numbers("ResNet-50, CIFAR-10, S10, bf16, fp32, AVX2, `--epochs 8` fish_egu2017") == []
    assert quoted_numbers("[notebook](notebooks/03_s10_custom_resnet.ipynb)") == []
    assert quoted_numbers("6,573,130 parameters, 224x224, logits x1/8, 5e-4") == [
        ("6,573,130", Decimal(6573130)),
        ("224", Decimal(224)),
        ("224", Decimal(224)),
        ("1/8", Decimal("0.125")),
        ("5e-4", Decimal("0.0005")),
    ]
    assert matches(Decimal("0.571"), Decimal("0.5714")) and matches(Decimal("90.52"), Decimal("90.5199966430664"))
    assert matches(Decimal("53.0"), Decimal("52.95000076293945")) and matches(Decimal("139"), Decimal("139.1"))
    assert not matches(Decimal("90.51"), Decimal("90.52")) and not matches(Decimal("0.5714"), Decimal("0.571"))
    assert not matches(Decimal("130.8"), Decimal("139.1017"))
