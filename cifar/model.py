"""Networks of the course.

``CustomResNet`` is the S10 network (ResNet-9 family, 6,573,130 parameters)::

    prep    Conv 3x3 (64)  > BN > ReLU                                   32x32
    layer1  Conv 3x3 (128) > MaxPool 2 > BN > ReLU  + ResidualBlock(128)  16x16
    layer2  Conv 3x3 (256) > MaxPool 2 > BN > ReLU                         8x8
    layer3  Conv 3x3 (512) > MaxPool 2 > BN > ReLU  + ResidualBlock(512)   4x4
    head    MaxPool 4 > flatten > Linear(512, 10)   (logits; softmax lives in the loss)
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """Conv 3x3 (no bias) > optional MaxPool 2 > BatchNorm > ReLU > optional Dropout."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = False, dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two ConvBlocks at constant width, added to the input: ``x + R(x)``."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = ConvBlock(channels, channels, dropout=dropout)
        self.conv2 = ConvBlock(channels, channels, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Stage(nn.Module):
    """A pooling ConvBlock followed, optionally, by a ResidualBlock at the new width."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool, dropout: float = 0.0):
        super().__init__()
        self.conv = ConvBlock(in_channels, out_channels, pool=True, dropout=dropout)
        self.residual = ResidualBlock(out_channels, dropout) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.residual(x) if self.residual is not None else x


class CustomResNet(nn.Module):
    """The S10 custom ResNet for 32x32 images."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.prep = ConvBlock(3, 64, dropout=dropout)
        self.layer1 = Stage(64, 128, residual=True, dropout=dropout)
        self.layer2 = Stage(128, 256, residual=False, dropout=dropout)
        self.layer3 = Stage(256, 512, residual=True, dropout=dropout)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
