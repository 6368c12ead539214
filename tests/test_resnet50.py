"""ResNet-50 from scratch vs torchvision: strict state-dict load, equal outputs, anatomy counts, offline weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from cifar import model as cm
from cifar.model import (
    RESNET50_PARAMETERS,
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet50,
    bottlenecks,
    count_weighted_layers,
    first_bottleneck,
    load_imagenet_into,
    load_torchvision_resnet50,
    resnet50_summary,
)
from cifar.utils import count_parameters


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    ours = ResNet50().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def test_state_dict_keys_and_shapes_equal_torchvisions():
    reference = torchvision.models.resnet50(weights=None).state_dict()
    ours = ResNet50().state_dict()
    assert list(ours) == list(reference)
    assert all(ours[k].shape == reference[k].shape for k in reference)


def test_strict_load_gives_the_same_outputs(pair):
    reference, ours = pair
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, 1000)
    assert (got - expected).abs().max().item() < 1e-4


def test_parameter_count_and_torchinfo_summary():
    assert count_parameters(ResNet50()) == RESNET50_PARAMETERS == 25_557_032
    stats = resnet50_summary(input_size=(1, 3, 64, 64))  # torchvision's; the count does not depend on size
    assert "Total params: 25,557,032" in str(stats)
    assert resnet50_summary(ResNet50(), input_size=(1, 3, 64, 64)).total_params == RESNET50_PARAMETERS


def test_the_fifty_layers_counted_by_code(pair):
    expected = {"stem_conv": 1, "bottleneck_blocks": 16, "block_convs": 48, "projection_convs": 4, "fc": 1,
                "all_convs": 53, "depth": 50}  # fmt: skip
    for model in pair:
        assert count_weighted_layers(model) == expected
        assert len(bottlenecks(model)) == 16
    names = [name for name, _ in bottlenecks(pair[1])]
    assert names[0] == "layer1.0" and names[-1] == "layer4.2"


def test_first_bottleneck_and_stride_on_the_3x3(pair):
    block = first_bottleneck(pair[1])
    assert isinstance(block, Bottleneck) and block.downsample is not None
    assert (block.conv1.in_channels, block.conv3.out_channels) == (64, 256)
    layer2 = pair[1].layer2[0]
    assert layer2.conv1.stride == (1, 1) and layer2.conv2.stride == (2, 2)  # ResNet v1.5, as torchvision
    assert layer2.downsample[0].stride == (2, 2)
    assert all(b.downsample is None for b in pair[1].layer1[1:])


def test_basicblock_resnet18_also_matches_torchvision():
    reference = torchvision.models.resnet18(weights=None).eval()
    ours = ResNet(BasicBlock, [2, 2, 2, 2]).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() < 1e-4


def test_box_head_and_sigmoid():
    model = ResNet50(num_classes=4, sigmoid=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4) and ((out > 0) & (out < 1)).all()
    assert count_parameters(model) == RESNET50_PARAMETERS - 2048 * 996 - 996


def test_zero_init_residual_zeroes_each_blocks_last_bn():
    model = ResNet50(zero_init_residual=True)
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0 for _, block in bottlenecks(model))


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_pretrained_gives_a_notice_and_random_weights(monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    torch.manual_seed(0)
    model, status = load_torchvision_resnet50(pretrained=True)
    assert isinstance(model, torchvision.models.ResNet)
    assert status.startswith("ImageNet weights IMAGENET1K_V2 not loaded, offline: random weights")
    assert "\n" not in status and "URLError" not in status and "Name or service" not in status
    assert capsys.readouterr().out == ""  # the status is the one line a notebook prints
    assert load_torchvision_resnet50(pretrained=False)[1].startswith("Random initialisation")


def test_imagenet_weights_go_into_the_box_model_except_its_head(monkeypatch):
    donor = torchvision.models.resnet50(weights=None).state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: dict(donor))
    model = ResNet50(num_classes=4)
    head = model.fc.weight.detach().clone()
    status = load_imagenet_into(model)
    assert status.startswith("Pretrained weights loaded") and "head" in status
    torch.testing.assert_close(model.layer3[2].conv2.weight, donor["layer3.2.conv2.weight"])
    torch.testing.assert_close(model.fc.weight, head)


def test_imagenet_weights_refuse_a_non_resnet50(monkeypatch):
    donor = torchvision.models.resnet50(weights=None).state_dict()
    monkeypatch.setattr(cm, "imagenet_state_dict", lambda progress=False, log=print: (dict(donor), "loaded test"))
    with pytest.raises(ValueError, match="not a ResNet-50"):
        load_imagenet_into(ResNet(BasicBlock, [2, 2, 2, 2]))


def test_a_failure_that_is_not_the_network_names_its_error():
    notice = cm.imagenet_notice("IMAGENET1K_V2", RuntimeError("invalid hash value"), "resnet50.pth")
    assert "RuntimeError: invalid hash value" in notice and "offline" not in notice.split("(to use")[0]
    assert ": random weights (to use them offline, put resnet50.pth in" in notice and "\n" not in notice
