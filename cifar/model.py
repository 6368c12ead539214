"""Networks of the course.

``CustomResNet`` is the S10 network (ResNet-9 family, 6,573,130 parameters)::

    prep    Conv 3x3 (64)  > BN > ReLU                                   32x32
    layer1  Conv 3x3 (128) > MaxPool 2 > BN > ReLU  + ResidualBlock(128)  16x16
    layer2  Conv 3x3 (256) > MaxPool 2 > BN > ReLU                         8x8
    layer3  Conv 3x3 (512) > MaxPool 2 > BN > ReLU  + ResidualBlock(512)   4x4
    head    MaxPool 4 > flatten > Linear(512, 10)   (logits; softmax lives in the loss)
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

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

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, logit_scale: float = 1.0):
        super().__init__()
        self.logit_scale = logit_scale  # a constant; 1/8 steadies fast high-LR training (Page's ResNet-9)
        self.prep = ConvBlock(3, 64, dropout=dropout)
        self.layer1 = Stage(64, 128, residual=True, dropout=dropout)
        self.layer2 = Stage(128, 256, residual=False, dropout=dropout)
        self.layer3 = Stage(256, 512, residual=True, dropout=dropout)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        logits = self.fc(torch.flatten(self.pool(x), 1))
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits


# ---------------------------------------------------------------------------- fast-training tricks
#
# Optional ways to initialise and normalise a network that shorten training (David Page's
# "bag of tricks" for this ResNet-9, Keller Jordan's airbench). They change how the network
# starts and how its batch norm behaves in training, never its parameters or what it computes
# in eval mode, so weights trained with them load into a plain CustomResNet.


def whitening_filters(images: torch.Tensor, kernel_size: int = 3, eps: float = 5e-4) -> torch.Tensor:
    """PCA whitening filters of the ``kernel_size`` x ``kernel_size`` patches of ``images`` (N, C, H, W).

    Returns (2 * C * k * k, C, k, k): each eigenvector of the patch covariance scaled by
    1/sqrt(eigenvalue + eps), then the same filters negated, so that a ReLU after them keeps
    both signs. Largest eigenvalue first.
    """
    channels = images.shape[1]
    patches = nn.functional.unfold(images.float(), kernel_size).transpose(1, 2).reshape(-1, channels * kernel_size**2)
    patches = patches - patches.mean(0)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
    order = eigenvalues.argsort(descending=True)
    filters = (eigenvectors[:, order] / (eigenvalues[order] + eps).sqrt()).T.float()
    filters = filters.reshape(-1, channels, kernel_size, kernel_size)
    return torch.cat([filters, -filters])


@torch.no_grad()
def init_whitening_(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> nn.Conv2d:
    """Start ``conv`` as a whitening layer for ``images`` (normalized, N x C x H x W).

    Its first 2 * C * k * k output channels get :func:`whitening_filters`; the rest keep their
    initialisation. The conv stays trainable.
    """
    filters = whitening_filters(images, conv.kernel_size[0], eps)[: conv.out_channels]
    conv.weight[: len(filters)] = filters.to(conv.weight)
    return conv


@torch.no_grad()
def init_dirac_(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> nn.Module:
    """Start every 3x3 conv of ``model`` (but ``skip``) as an identity on its first in-channels.

    Output channel i < in_channels passes input channel i through unchanged (``nn.init.dirac_``)
    and the other channels keep their initialisation, so each block starts close to an identity
    map and deep signals pass from the first step (airbench's initialisation).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module not in skip and module.kernel_size == (3, 3):
            nn.init.dirac_(module.weight[: module.in_channels])
    return model


def freeze_batch_norm_weights(model: nn.Module) -> list[nn.Parameter]:
    """Fix every batch norm scale at 1 (no gradient); returns those parameters.

    With a ReLU after it, a BN scale only sets the size of the next layer's input, which the
    next BN takes out again; fixing it leaves the biases to learn (Page's trick, with a higher
    LR for the biases).
    """
    frozen = []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            nn.init.ones_(module.weight)
            module.weight.requires_grad_(False)
            frozen.append(module.weight)
    return frozen


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from virtual batches of ``virtual_batch`` images.

    Same parameters and buffers as ``nn.BatchNorm2d`` (the state_dict is interchangeable) and the
    same eval-mode behaviour. In training, the batch is split into ``n // virtual_batch`` groups
    (image i goes to group i mod groups) and each is normalized by its own statistics: more noise,
    which regularises short runs. The running statistics average over the groups.
    """

    virtual_batch: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        groups = n // self.virtual_batch
        if not self.training or groups <= 1 or n % groups:
            return super().forward(x)
        mean = self.running_mean.repeat(groups)
        var = self.running_var.repeat(groups)
        out = nn.functional.batch_norm(
            x.reshape(-1, channels * groups, height, width),
            mean,
            var,
            self.weight.repeat(groups),
            self.bias.repeat(groups),
            True,
            self.momentum,
            self.eps,
        )
        self.running_mean.copy_(mean.view(groups, channels).mean(0))
        self.running_var.copy_(var.view(groups, channels).mean(0))
        self.num_batches_tracked.add_(1)
        return out.view(n, channels, height, width)


def use_ghost_batch_norm(model: nn.Module, virtual_batch: int) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into a :class:`GhostBatchNorm2d` in place."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GhostBatchNorm2d
            module.virtual_batch = virtual_batch
    return model


def set_batch_norm_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """Set the running-statistics momentum of every batch norm (PyTorch's convention: weight of the new batch)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return model


# ============================================================================ ResNet-50
#
# ResNet (He et al., 2015) written from scratch in the style of torchvision's
# ``models/resnet.py``: ``BasicBlock`` (ResNet-18/34), ``Bottleneck`` (ResNet-50/101/152),
# ``ResNet`` with ``_make_layer``. The module and parameter names are torchvision's
# (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0`` ...), so
# ``ResNet50().load_state_dict(torchvision.models.resnet50().state_dict())`` works with
# ``strict=True`` and gives the same outputs; ImageNet weights can therefore initialise it.
# Like torchvision (ResNet "v1.5") a Bottleneck strides on its 3x3 conv, not on the first 1x1.
#
# Where the "50" comes from (see ``count_weighted_layers``): 1 stem conv + 16 Bottlenecks x 3
# convs + 1 fc = 50 weighted layers on the main path. The 4 ``downsample`` 1x1 convs are
# projection shortcuts, which the paper does not count.


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce > 3x3 (carries the stride) > 1x1 expand (x4), each with BN; add the shortcut, ReLU.

    ``downsample`` (a 1x1 conv + BN, the *projection shortcut*) is given when the shape changes:
    in the first block of every stage (channels x4, and stride 2 from layer2 on).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet for 224x224 ImageNet-style input (any size >= 32 works: the pool is adaptive).

    ``block`` is :class:`BasicBlock` or :class:`Bottleneck`; ``layers`` the number of blocks per
    stage ([3, 4, 6, 3] for ResNet-50). ``num_classes`` is the width of the ``fc`` head: 1000
    ImageNet logits by default, 4 for bounding-box regression. ``sigmoid=True`` squashes the
    head's outputs into (0, 1) (box coordinates normalized by the image size); it has no
    parameters, so state dicts stay interchangeable with torchvision's.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        sigmoid: bool = False,
    ):
        super().__init__()
        self.inplanes = 64
        self.sigmoid = sigmoid
        # stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (224 -> 56)
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])  # 56x56
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)  # 28x28
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)  # 14x14
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)  # 7x7
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts as zero: every block starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        """One stage: a first block that may change shape (with a projection shortcut), then identity blocks."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 2048-dimensional (512 for BasicBlock) feature vector."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.features(x))
        return torch.sigmoid(out) if self.sigmoid else out


class ResNet50(ResNet):
    """ResNet-50: Bottleneck blocks [3, 4, 6, 3], 25,557,032 parameters with the 1000-way head.

    ``ResNet50(num_classes=4, sigmoid=True)`` is the bounding-box regressor of the raccoon lesson.
    """

    def __init__(self, num_classes: int = 1000, zero_init_residual: bool = False, sigmoid: bool = False):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes, zero_init_residual, sigmoid)


# ---------------------------------------------------------------------------- the paper's CIFAR-10 networks
#
# He, Zhang, Ren and Sun (2015), "Deep Residual Learning for Image Recognition", section 4.2:
# a 3x3 conv (16 channels), then three stages of n blocks with 16, 32 and 64 channels at 32x32,
# 16x16 and 8x8 (each block two 3x3 convs with batch norm), global average pooling and a 10-way
# linear layer: 6n + 2 weighted layers. The "plain" network is the same stack without shortcuts;
# the "residual" one adds identity shortcuts, option A where the shape changes (stride-2
# subsampling and zero-padded channels: no parameters), so both have the same parameters.

SHORTCUTS = ("plain", "residual")


class ShortcutA(nn.Module):
    """The paper's option A: the identity, subsampled by ``stride`` and zero-padded to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A only adds channels: {in_channels} -> {out_channels}")
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:  # new channels are zeros, half before and half after the old ones
            x = nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


class CifarBlock(nn.Module):
    """Two 3x3 convs with batch norm: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    With ``shortcut=False`` (the plain network) the ``+ shortcut(x)`` is left out and nothing else changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class CifarResNet(nn.Module):
    """The paper's CIFAR-10 network with ``depth = 6n + 2`` layers, ``shortcut`` "residual" or "plain".

    ResNet-20 (n = 3) has 269,722 parameters and ResNet-56 (n = 9) 853,018, the paper's 0.27M and
    0.85M; the plain networks have the same. Convs start with He initialisation (fan-in), as in the paper.
    """

    def __init__(self, depth: int = 20, shortcut: str = "residual", num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        blocks = (depth - 2) // 6
        self.depth, self.shortcut = depth, shortcut
        self.in_channels = 16
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, blocks, stride=1)  # 32x32
        self.layer2 = self._make_layer(32, blocks, stride=2)  # 16x16
        self.layer3 = self._make_layer(64, blocks, stride=2)  # 8x8
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def _make_layer(self, channels: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage: a first block that may halve the size and widen, then ``blocks - 1`` at constant shape."""
        residual = self.shortcut == "residual"
        layers = [CifarBlock(self.in_channels, channels, stride, residual)]
        layers += [CifarBlock(channels, channels, 1, residual) for _ in range(1, blocks)]
        self.in_channels = channels
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------- anatomy helpers

RESNET50_PARAMETERS = 25_557_032


def load_torchvision_resnet50(pretrained: bool = True, progress: bool = False) -> tuple[nn.Module, str]:
    """torchvision's ``resnet50`` and a one-line status saying which weights it holds.

    With ``pretrained`` the IMAGENET1K_V2 weights are loaded (downloaded once into the torch
    hub cache). Without internet (and no cached copy) the model keeps its random
    initialisation and the status says so; this function never raises for a failed download.
    """
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    if not pretrained:
        return model, "Random initialisation (pretrained=False)."
    return model, load_imagenet_into(model, progress)


def torchvision_state_dict(weights, progress: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict of torchvision ``weights`` (a member such as ``ResNet50_Weights.IMAGENET1K_V2``).

    From torch hub's cache, else downloaded into it, its hash checked: what
    ``weights.get_state_dict(check_hash=True)`` does, with the URL through
    :func:`cifar.download.mirror_url` (``$CIFAR_DOWNLOAD_MIRROR``; the cached file keeps
    upstream's name). torch.hub's "Downloading: ..." line is silenced (callers report the outcome
    in one line of their own); a failure (no network, proxy, corrupt file) raises.
    """
    from .download import mirror_url  # here, not at the top: it imports the data stack (albumentations, cv2)

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return torch.hub.load_state_dict_from_url(mirror_url(weights.url), progress=progress, check_hash=True)


def imagenet_notice(name: str, error: Exception, file_name: str) -> str:
    """The one-line notice of ImageNet weights that could not be loaded: the run goes on from random weights.

    No network (the usual case offline) reads ``offline: random weights``; any other failure (a
    corrupt cache, a hash mismatch) names its error in a few words.
    """
    cause = "offline" if isinstance(error, OSError) else " ".join(f"{type(error).__name__}: {error}".split())[:120]
    return (
        f"ImageNet weights {name} not loaded, {cause}: random weights "
        f"(to use them offline, put {file_name} in $TORCH_HOME/hub/checkpoints)"
    )


def imagenet_weights(weights, log: Callable[[str], object] = print, progress: bool = False) -> dict | None:
    """The state_dict of torchvision's ImageNet ``weights`` (``ResNet50_Weights.IMAGENET1K_V2``,
    ``ResNet34_Weights.IMAGENET1K_V1``...), or None where they cannot be had (offline, proxy, hash
    mismatch): ``log`` then gets a one-line notice (:func:`imagenet_notice`) and the caller goes on
    from random weights. The one offline behaviour of every ImageNet start, ResNet-50's and ResNet-34's.
    """
    try:
        return torchvision_state_dict(weights, progress)
    except Exception as error:  # no network, proxy, corrupt cache...
        log(imagenet_notice(weights.name, error, weights.url.rsplit("/", 1)[-1]))
        return None


def imagenet_state_dict(progress: bool = False, log: Callable[[str], object] = print) -> tuple[dict | None, str]:
    """torchvision's ResNet-50 IMAGENET1K_V2 state dict (:func:`imagenet_weights`) and what it holds."""
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    notices = []
    state = imagenet_weights(weights, notices.append, progress)
    for notice in notices:
        log(notice)
    return state, f"loaded {weights}" if state is not None else notices[0]


def load_imagenet_into(model: nn.Module, progress: bool = False) -> str:
    """Copy torchvision's ImageNet ResNet-50 weights into ``model``; return a one-line status.

    Works for torchvision's ``resnet50`` and for :class:`ResNet50` (same parameter names). A
    head of another width (e.g. 4 box outputs) keeps its own initialisation; every other
    tensor is copied. Offline, the model is left as it was (random initialisation) and the status is
    the one-line notice of :func:`imagenet_weights`: nothing is raised.
    """
    state, status = imagenet_state_dict(progress, log=lambda _: None)
    if state is None:
        return status
    own = model.state_dict()
    head = [k for k in ("fc.weight", "fc.bias") if k in own and own[k].shape != state[k].shape]
    resized = [k for k in own.keys() & state.keys() if k not in head and own[k].shape != state[k].shape]
    wrong = sorted(set(own) ^ set(state)) + sorted(resized)
    if wrong:
        raise ValueError(f"{type(model).__name__} is not a ResNet-50 (tensors {', '.join(wrong[:4])}... differ).")
    for key in head:
        del state[key]
    model.load_state_dict(state, strict=False)
    kept = f" (head {tuple(own['fc.weight'].shape)} kept its random initialisation)" if head else ""
    return f"Pretrained weights loaded: {status.removeprefix('loaded ')}{kept}."


def resnet50_summary(model: nn.Module | None = None, input_size: tuple[int, ...] = (1, 3, 224, 224), depth: int = 2):
    """torchinfo's summary of ``model`` (torchvision's resnet50 by default); ``str()`` it to print.

    The parameter count does not depend on ``input_size``; a small input is faster on a CPU.
    """
    from torchinfo import summary

    if model is None:
        from torchvision.models import resnet50

        model = resnet50(weights=None)
    return summary(
        model,
        input_size=input_size,
        depth=depth,
        device="cpu",
        verbose=0,
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
    )


def first_bottleneck(model: nn.Module) -> nn.Module:
    """The first Bottleneck of a ResNet-50 (``layer1[0]``, the one with a projection shortcut)."""
    return model.layer1[0]


def bottlenecks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Bottleneck block, torchvision's or ours (matched by class name)."""
    return [(name, m) for name, m in model.named_modules() if type(m).__name__ == "Bottleneck"]


def count_weighted_layers(model: nn.Module) -> dict[str, int]:
    """Count the layers that make ResNet-50 a "50", by walking the modules.

    Returns ``stem_conv`` (the 7x7 ``conv1``), ``bottleneck_blocks``, ``block_convs`` (3 per
    Bottleneck), ``fc``, ``projection_convs`` (the 1x1 convs of ``downsample`` shortcuts) and
    ``depth`` = stem + block convs + fc: the longest chain of weighted layers an input passes
    through. Projection shortcuts run beside the main path, so they do not add to the depth
    (the paper's convention: ResNet-50 has 53 convs + 1 fc, but is "50 layers deep").
    """
    counts = {
        "stem_conv": 0,
        "bottleneck_blocks": len(bottlenecks(model)),
        "block_convs": 0,
        "projection_convs": 0,
        "fc": 0,
    }
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if ".downsample." in f".{name}.":
                counts["projection_convs"] += 1
            elif name.startswith("layer"):
                counts["block_convs"] += 1
            else:
                counts["stem_conv"] += 1
        elif isinstance(module, nn.Linear):
            counts["fc"] += 1
    counts["all_convs"] = counts["stem_conv"] + counts["block_convs"] + counts["projection_convs"]
    counts["depth"] = counts["stem_conv"] + counts["block_convs"] + counts["fc"]
    return counts
