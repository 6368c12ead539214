"""The S10 CustomResNet: shape, parameter count, building blocks."""

import torch
from torchinfo import summary

from cifar.model import ConvBlock, CustomResNet, ResidualBlock, Stage
from cifar.utils import count_parameters


def test_parameter_count_is_the_assignments():
    model = CustomResNet()
    assert count_parameters(model) == 6_573_130
    stats = summary(model, input_size=(512, 3, 32, 32), verbose=0, device="cpu")
    assert stats.total_params == 6_573_130
    assert "Total params: 6,573,130" in str(stats)


def test_forward_shape_and_logits():
    model = CustomResNet().eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # logits, not probabilities


def test_conv_layers_have_no_bias():
    convs = [m for m in CustomResNet().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(conv.bias is None for conv in convs)


def test_blocks():
    block = ConvBlock(3, 8, pool=True, dropout=0.1)
    assert [type(m).__name__ for m in block] == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Dropout"]
    assert block(torch.randn(1, 3, 8, 8)).shape == (1, 8, 4, 4)
    residual = ResidualBlock(8).eval()
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(residual(x), x + residual.conv2(residual.conv1(x)))
    assert Stage(8, 16, residual=False).residual is None


def test_feature_map_sizes():
    model = CustomResNet().eval()
    x = torch.randn(1, 3, 32, 32)
    sizes = []
    for name in ("prep", "layer1", "layer2", "layer3"):
        x = getattr(model, name)(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_logit_scale_multiplies_the_logits_only():
    torch.manual_seed(0)
    plain = CustomResNet().eval()
    scaled = CustomResNet(logit_scale=0.125).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(scaled(x), plain(x) * 0.125)
