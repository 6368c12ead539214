"""The residual-connections lesson: the paper's CIFAR-10 networks, the lesson's runs and their records."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torchinfo import summary

from cifar import residual
from cifar.model import CifarBlock, CifarResNet, ShortcutA
from cifar.train import evaluate
from cifar.utils import count_parameters

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "weights" / "records"
RECORD_FIELDS = ("architecture", "depth", "shortcut", "parameters", "epochs", "seed", "command", "device", "history")
HISTORY_FIELDS = ("train_loss", "train_acc", "test_loss", "test_acc", "seconds")


@pytest.mark.parametrize("depth, parameters", [(20, 269_722), (56, 853_018)])
@pytest.mark.parametrize("shortcut", ["plain", "residual"])
def test_parameters_are_the_papers(depth, parameters, shortcut):
    """Table 6 of the paper: ResNet-20 0.27M, ResNet-56 0.85M; option-A shortcuts add none."""
    model = CifarResNet(depth, shortcut)
    assert count_parameters(model) == parameters
    assert round(parameters / 1e6, 2) == {20: 0.27, 56: 0.85}[depth]
    assert summary(model, input_size=(2, 3, 32, 32), verbose=0, device="cpu").total_params == parameters


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_depth_counts_the_weighted_layers(depth):
    model = CifarResNet(depth)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == depth
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("depth, shortcut", [(21, "residual"), (2, "plain"), (20, "projection")])
def test_bad_networks_are_refused(depth, shortcut):
    with pytest.raises(ValueError):
        CifarResNet(depth, shortcut)


def test_plain_and_residual_differ_only_by_the_shortcuts():
    config = residual.residual_config("plain56")
    plain = residual.residual_model(config).eval()
    resnet = residual.residual_model(residual.residual_config("resnet56")).eval()
    # same layers, same names and shapes, and from one seed the same initial weights
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [
        (k, v.shape) for k, v in resnet.state_dict().items()
    ]
    for (name, a), b in zip(plain.state_dict().items(), resnet.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    blocks = [m for m in resnet.modules() if isinstance(m, CifarBlock)]
    assert len(blocks) == 27 and all(isinstance(block.shortcut, ShortcutA) for block in blocks)
    assert all(block.shortcut is None for block in plain.modules() if isinstance(block, CifarBlock))
    x = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(plain(x), resnet(x))
    for block in blocks:  # removing the shortcuts turns the ResNet into the plain network
        block.shortcut = None
    torch.testing.assert_close(resnet(x), plain(x))


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 32, 32)
    out = ShortcutA(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 16, 16)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    torch.testing.assert_close(ShortcutA(16, 16)(x), x)
    with pytest.raises(ValueError):
        ShortcutA(32, 16)
    block = CifarBlock(16, 32, stride=2)
    assert block(x.relu()).shape == (2, 32, 16, 16)


@pytest.mark.parametrize("shortcut", [True, False])
def test_a_block_with_its_branch_zeroed_falls_back_to_the_identity(shortcut):
    """bn2's scale and shift at 0: F(x) = 0, so a residual block gives relu(x) = x for the ReLU outputs it gets."""
    torch.manual_seed(0)
    block = CifarBlock(32, 32, shortcut=shortcut).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    x = torch.randn(4, 32, 16, 16).relu()  # a block's input is the ReLU output of the block before
    if shortcut:
        torch.testing.assert_close(block(x), x)
    else:  # without the shortcut nothing is left of the input
        assert block(x).abs().sum() == 0


def test_gradient_norms_per_layer_leave_the_model_as_it_was():
    model = CifarResNet(20, "plain")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    norms = residual.layer_gradient_norms(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert [name for name, _ in norms][:2] == ["conv1", "layer1.0.conv1"] and norms[-1][0] == "fc"
    assert len(norms) == 20 and all(value > 0 for _, value in norms)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert all(p.grad is None for p in model.parameters())


def test_gradient_norms_do_not_depend_on_the_thread_count(cifar10_root):
    """Plain-56 at initialisation on the lesson's first batch: in float32, one thread or two moved its first
    conv's gradient norm from 146 to 193 on a 2-core AMD EPYC; notebook 01 prints these norms."""
    batches, _ = residual.residual_data(residual.residual_config("resnet56"), cifar10_root, device=torch.device("cpu"))
    images, labels = next(iter(batches))
    model = residual.residual_model(residual.residual_config("plain56"))
    threads = torch.get_num_threads()
    try:
        norms = []
        for count in (1, 2):
            torch.set_num_threads(count)
            norms.append([value for _, value in residual.layer_gradient_norms(model, images, labels)])
    finally:
        torch.set_num_threads(threads)
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)


def test_config_names_and_fast_mode():
    assert residual.residual_config("plain56").name == "plain56"
    assert residual.residual_config("resnet20").name == "resnet20"
    fast = residual.residual_config("resnet56", fast=True)
    assert (fast.depth, fast.shortcut, fast.epochs, fast.train_subset) == (56, "residual", 1, 250)
    with pytest.raises(ValueError):
        residual.residual_config("resnet110")


def test_command_trains_and_writes_a_record_that_resumes(cifar10_root, tmp_path):
    out, weights = tmp_path / "run", tmp_path / "residual_plain20.pt"
    argv = ["--fast", "--network", "plain20", "--precision", "fp32", "--data-dir", str(cifar10_root),
            "--out", str(out), "--weights", str(weights)]  # fmt: skip
    record = residual.main(argv)
    for field in RECORD_FIELDS:
        assert field in record, field
    assert (record["depth"], record["shortcut"], record["parameters"]) == (20, "plain", 269_722)
    assert set(HISTORY_FIELDS) <= set(record["history"][0])
    model, saved = residual.load_residual_weights(weights)
    assert saved["history"] == record["history"] and isinstance(model, CifarResNet)
    again = residual.main(argv)  # the finished run's checkpoint: nothing is trained again
    assert again["history"] == record["history"]


# ----------------------------------------------------------------------------- the committed runs


def _committed() -> dict[str, dict]:
    return residual.load_records(RECORDS)


def test_committed_records_have_the_fields_and_rebuild_their_config():
    records = _committed()
    assert sorted(records) == sorted(residual.NETWORKS)
    for name, record in records.items():
        for field in RECORD_FIELDS:
            assert field in record, (name, field)
        depth, shortcut = residual.NETWORKS[name]
        assert (record["depth"], record["shortcut"]) == (depth, shortcut)
        assert record["parameters"] == count_parameters(CifarResNet(depth, shortcut))
        assert record["epochs"] == len(record["history"]) == record["config"]["epochs"]
        for row in record["history"]:
            assert set(HISTORY_FIELDS) <= set(row), (name, row)
        config = residual.residual_config(name, epochs=record["epochs"], seed=record["seed"])
        assert asdict(config) == record["config"], name
        assert record["command"].startswith(f"python -m cifar.residual --network {name} ")
    shared = [{k: v for k, v in r["config"].items() if k not in ("depth", "shortcut")} for r in records.values()]
    assert all(recipe == shared[0] for recipe in shared), "the four networks are trained with one recipe"


@pytest.mark.parametrize("name", ["plain20", "resnet20"])
def test_committed_weights_give_the_recorded_test_accuracy(name, cifar10_root):
    """The fp16 weights, evaluated on all 10,000 test images in fp32, within 0.15 points of the run's own test."""
    model, record = residual.load_residual_weights(RECORDS / f"residual_{name}.pt")
    _, test = residual.residual_data(residual.residual_config(name), cifar10_root, device=torch.device("cpu"))
    result = evaluate(model, test, torch.device("cpu"), amp_dtype=None, channels_last=False)
    assert abs(result["score"] - record["history"][-1]["test_acc"]) <= 0.15
