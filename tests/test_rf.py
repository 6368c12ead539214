"""Receptive fields: the S10 table ends at 88, ResNet-50's at 427, gradients agree, the workbook never drifts."""

import math
import re
from pathlib import Path

import openpyxl
import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from cifar.model import CustomResNet
from cifar.rf import course_tables, empirical_receptive_field, main, receptive_field_table

REPO = Path(__file__).resolve().parents[1]

S10_RF_OUT = {
    "prep.0": 3,
    "layer1.conv.0": 5,
    "layer1.conv.1": 6,  # max-pool
    "layer1.residual.conv1.0": 10,
    "layer1.residual.conv2.0": 14,
    "layer2.conv.0": 18,
    "layer2.conv.1": 20,  # max-pool
    "layer3.conv.0": 28,
    "layer3.conv.1": 32,  # max-pool
    "layer3.residual.conv1.0": 48,
    "layer3.residual.conv2.0": 64,
    "pool": 88,  # MaxPool2d(4), the network's last spatial layer
}


@pytest.fixture(scope="module")
def s10_table():
    return receptive_field_table(CustomResNet(), 32)


@pytest.fixture(scope="module")
def resnet50_table():
    return receptive_field_table(resnet50(), 224)


def test_s10_table_ends_at_88(s10_table):
    assert dict(zip(s10_table["name"], s10_table["rf_out"])) == S10_RF_OUT
    assert list(s10_table["name"]) == list(S10_RF_OUT)  # execution order
    assert list(s10_table["n_out"]) == [32, 32, 16, 16, 16, 16, 8, 8, 4, 4, 4, 1]
    assert list(s10_table["j_out"]) == [1, 1, 2, 2, 2, 2, 4, 4, 8, 8, 8, 32]
    last = s10_table.iloc[-1]
    assert (last["rf_in"], last["rf_out"]) == (64, 88)
    assert last["input"] == "layer3.conv.1 + layer3.residual.conv2.0"
    assert last["note"] == "residual add: rf_in = max of branches"
    assert s10_table.attrs["input_size"] == (32, 32)


def test_resnet50_table(resnet50_table):
    """By hand: conv1 7; max-pool +2*2 = 11; each 3x3 conv adds 2 * jump (1x1 convs add nothing):
    layer1 +3*2*4 = 35, layer2 +2*4 + 3*2*8 = 91, layer3 +2*8 + 5*2*16 = 267, layer4 +2*16 + 2*2*32 = 427."""
    table = resnet50_table
    convs = table[table["type"] == "Conv2d"]
    assert len(convs) == 53 and convs["name"].str.contains("downsample").sum() == 4
    assert list(table["type"]).count("MaxPool2d") == 1
    rf = dict(zip(table["name"], table["rf_out"]))
    assert (rf["conv1"], rf["maxpool"], rf["layer1.2.conv3"], rf["layer2.3.conv3"]) == (7, 11, 35, 91)
    assert (rf["layer3.5.conv3"], rf["layer4.2.conv3"]) == (267, 427)
    assert table["name"].iloc[-1] == "layer4.2.conv3" and table["j_out"].iloc[-1] == 32
    # A downsample branch starts from its block's input, not from the conv3 above it.
    row = table.set_index("name").loc["layer2.0.downsample.0"]
    assert (row["rf_in"], row["n_in"], row["j_in"], row["rf_out"], row["n_out"]) == (35, 56, 4, 35, 28)
    assert row["note"] == "branch from a residual sum: rf_in = max of branches"
    first = table.set_index("name").loc["layer1.0.downsample.0"]
    assert (first["input"], first["note"]) == ("maxpool", "branch: input is not the row above")


@pytest.mark.parametrize("table_name", ["s10_table", "resnet50_table"])
def test_n_out_formula_matches_the_real_feature_maps(table_name, request):
    table = request.getfixturevalue(table_name)
    for row in table.itertuples():
        assert math.floor((row.n_in + 2 * row.p - row.d * (row.k - 1) - 1) / row.s) + 1 == row.n_out


class DeclaredBackwards(nn.Module):
    """Layers declared in the opposite order to the one they run in."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d((3, 3), (2, 2), (1, 1))
        self.average = nn.AvgPool2d(4)
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.first = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.average(self.pool(self.dilated(self.first(x))))


def test_execution_order_dilation_and_pool_parameters():
    table = receptive_field_table(DeclaredBackwards(), 32).set_index("name")
    assert list(table.index) == ["first", "dilated", "pool", "average"]
    assert list(table["rf_out"]) == [3, 3 + 4, 7 + 2, 9 + 3 * 2]  # the dilated 3x3 acts as a 5x5
    assert list(table["s"]) == [1, 1, 2, 4] and list(table["j_out"]) == [1, 1, 2, 8]
    assert list(table["n_out"]) == [32, 32, 16, 4]


class SmallResidual(nn.Module):
    """``x + R(x)`` where R is two 3x3 convs, then a 1x1 conv and a branch from the block's input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Conv2d(4, 4, 1)
        self.side = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = x + self.branch(x)
        return self.head(y) + self.side(x)


def test_residual_sum_takes_the_larger_branch():
    table = receptive_field_table(SmallResidual(), 16).set_index("name")
    assert dict(table["rf_out"]) == {"stem": 3, "branch.0": 5, "branch.2": 7, "head": 7, "side": 3}
    assert table.loc["head", "input"] == "stem + branch.2"
    assert table.loc["side", "note"] == "branch: input is not the row above"
    assert table.loc["side", "rf_in"] == 3


def test_unfollowable_operation_is_reported():
    class Upsampling(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(nn.functional.interpolate(x, scale_factor=2))

    with pytest.raises(ValueError, match="cannot follow the input of conv"):
        receptive_field_table(Upsampling(), 8)


def test_empirical_extent_equals_the_s10_table():
    """At 96x96 no window of interest is clipped by the border, so gradients fill every computed field exactly."""
    torch.manual_seed(0)
    model = CustomResNet()
    for name, rf in S10_RF_OUT.items():
        assert empirical_receptive_field(model, name, 96, trials=2) == (rf, rf), name
    assert model.training  # the mode is restored


def test_empirical_extent_is_clipped_by_a_small_image():
    torch.manual_seed(0)
    model = CustomResNet()
    assert empirical_receptive_field(model, "layer3.conv.0", 32, trials=2) == (28, 28)
    assert empirical_receptive_field(model, "pool", 32, trials=2) == (32, 32)  # 88 > 32: the whole image


def test_empirical_extent_resnet50_branch():
    torch.manual_seed(0)
    model = resnet50()
    for name, rf in [("maxpool", 11), ("layer1.1.conv2", 27), ("layer2.0.downsample.0", 35), ("layer2.0.conv3", 43)]:
        assert empirical_receptive_field(model, name, 96, trials=2) == (rf, rf), name


def _cells(path: Path, data_only: bool) -> dict[str, list[tuple]]:
    workbook = openpyxl.load_workbook(path, data_only=data_only)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets}


def _evaluate(formula: str, values: dict[str, float]) -> float:
    """The value of one of the workbook's formulas (cell references, + - * /, INT, MAX), from cached values."""
    expression = re.sub(r"\b[A-Z]+[0-9]+\b", lambda match: repr(values[match.group()]), formula.lstrip("="))
    return eval(expression, {"INT": math.floor, "MAX": max})


def test_workbook_is_regenerated_identically(tmp_path, capsys):
    committed = REPO / "RF_Calculation.xlsx"
    fresh = tmp_path / "RF_Calculation.xlsx"
    png = tmp_path / "images" / "rf_s10.png"  # the README's command, run in tmp_path: images/ is created
    results = main(["--xlsx", str(fresh), "--png", str(png)])
    assert png.stat().st_size > 10_000 and results["wrote"] == [fresh, png]
    assert results["receptive_fields"] == {
        "S10 CustomResNet": {"layer": "pool", "rf": 88},
        "ResNet-50": {"layer": "layer4.2.conv3", "rf": 427},
    }
    assert "S10 CustomResNet: receptive field 88 at pool" in capsys.readouterr().out
    for data_only in (False, True):  # formulas, then the values cached beside them
        assert _cells(fresh, data_only) == _cells(committed, data_only)

    tables = course_tables()
    formulas, values = openpyxl.load_workbook(committed), openpyxl.load_workbook(committed, data_only=True)
    assert formulas.sheetnames == list(tables)
    for sheet_name, table in tables.items():
        sheet, cached = formulas[sheet_name], values[sheet_name]
        top = [cell.value for cell in sheet["A"]].index("name") + 1  # the header row, then the input row
        assert [cell.value for cell in sheet[top]] == list(table.columns)
        assert [row[0] for row in sheet.iter_rows(min_row=top + 2, values_only=True)] == list(table["name"])
        known = {cell.coordinate: cell.value for row in cached.iter_rows() for cell in row if cell.value is not None}
        for row, record in zip(sheet.iter_rows(min_row=top + 2), table.to_dict("records")):
            for cell, name in zip(row, table.columns):
                expected = None if record[name] == "" else record[name]  # empty notes are blank cells
                assert cached[cell.coordinate].value == expected, (sheet_name, cell.coordinate)
                if name in {"n_in", "j_in", "rf_in", "n_out", "j_out", "rf_out"}:
                    assert cell.value.startswith("="), (sheet_name, cell.coordinate)
                    assert _evaluate(cell.value, known) == record[name], (sheet_name, cell.coordinate)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    """`python -m cifar.rf` follows the commands' convention (cifar.cli): a user's mistake is one line, exit 1."""
    with pytest.raises(SystemExit) as stopped:
        main(["--png", str(tmp_path / "rf_s10.unknown")])
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "unknown" in message and "\n" not in message
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m cifar.rf ")
