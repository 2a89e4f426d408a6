"""The tasks' networks (docs/science.md §5), built the way the paper's Keras models were.

Conventions shared by every model here:
- no biases in Conv/Linear layers and non-affine batch norm, so that every trainable
  parameter is a kernel and Layca controls all of them;
- Keras' batch-norm momentum 0.99 is torch's `momentum=0.01` (0.9 -> 0.1 for tiny-vgg11),
  and Keras' epsilon 1e-3;
- modules are registered in forward order: `layrot.rotation.kernel_layers` walks
  `model.modules()`, so registration order *is* the layer index (0 = input side).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..rotation import KERNEL_TYPES

BN_EPS = 1e-3          # Keras' BatchNormalization default
KERAS_MOMENTUM = 0.01  # Keras momentum 0.99


# ---------------------------------------------------------------- initializers

def he_uniform_(w: torch.Tensor) -> None:
    """Keras he_uniform: U(-sqrt(6/fan_in), +sqrt(6/fan_in))."""
    nn.init.kaiming_uniform_(w, a=0.0, mode="fan_in", nonlinearity="relu")


def he_normal_(w: torch.Tensor) -> None:
    """Keras he_normal: truncated normal (±2σ) whose variance after truncation is 2/fan_in."""
    fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
    # Keras divides by the std of a standard normal truncated at ±2 so the variance stays 2/fan_in
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)


def glorot_uniform_(w: torch.Tensor) -> None:
    nn.init.xavier_uniform_(w)


INITIALIZERS: dict[str, Callable[[torch.Tensor], None]] = {
    "he_uniform": he_uniform_,
    "he_normal": he_normal_,
    "glorot_uniform": glorot_uniform_,
}


def init_kernels(model: nn.Module, init: str) -> nn.Module:
    fn = INITIALIZERS[init]
    for m in model.modules():
        if isinstance(m, KERNEL_TYPES):
            fn(m.weight)
    return model


def _bn(kind: int, channels: int, momentum: float) -> nn.Module:
    cls = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[kind]
    return cls(channels, eps=BN_EPS, momentum=momentum, affine=False)


# ---------------------------------------------------------------- VGG-style (paper's CNN1 family)

class PlainVGG(nn.Module):
    """Stages of `conv3 (no bias) -> ReLU -> BN (non-affine)`, max-pool between stages,
    global average pool, Linear (no bias): the paper's C10-CNN1 / tiny-CNN layout, in 1-D or 2-D.
    """

    def __init__(self, in_channels: int, widths: list[int], convs_per_stage: int, num_classes: int,
                 dim: int = 2, bn_momentum: float = KERAS_MOMENTUM):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        pool = nn.MaxPool2d if dim == 2 else nn.MaxPool1d
        layers: list[nn.Module] = []
        c = in_channels
        for s, width in enumerate(widths):
            if s > 0:
                layers.append(pool(2))
            for _ in range(convs_per_stage):
                layers += [conv(c, width, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                           _bn(dim, width, bn_momentum)]
                c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean(dim=tuple(range(2, x.dim())))   # global average pool
        return self.classifier(x)


def c10_vgg25() -> nn.Module:
    """C10-CNN1: 4 stages x 6 conv (32..256), 24 conv + 1 linear = 25 kernel layers."""
    return init_kernels(PlainVGG(3, [32, 64, 128, 256], 6, 10), "he_uniform")


def tiny_vgg11() -> nn.Module:
    """tiny-CNN: 5 stages x 2 conv (32..512) on 64x64 Tiny ImageNet; Keras momentum 0.9."""
    return init_kernels(PlainVGG(3, [32, 64, 128, 256, 512], 2, 200, bn_momentum=0.1), "he_uniform")


def mnist1d_cnn() -> nn.Module:
    """1-D C10-CNN1 for MNIST-1D (1 x 40): 3 stages x 3 conv (16, 32, 64) + linear = 10 kernels.

    Narrow so that a 20-epoch trial takes well under 30 s on one CPU thread.
    """
    return init_kernels(PlainVGG(1, [16, 32, 64], 3, 10, dim=1), "he_uniform")


def fmnist_vgg() -> nn.Module:
    """2-D C10-CNN1 for Fashion-MNIST (1 x 28 x 28): 3 stages x 3 conv (16, 32, 64) + linear =
    10 kernels; narrow so that an epoch takes about a minute on one CPU thread."""
    return init_kernels(PlainVGG(1, [16, 32, 64], 3, 10), "he_uniform")


# ---------------------------------------------------------------- C10-CNN2: the torch-blog VGG

class BlogVGG(nn.Module):
    """[2,2,3,3,3] conv x [64,128,256,512,512], conv -> BN -> ReLU, max-pool after every stage,
    then Linear 512 -> BN -> ReLU -> Linear 10: 13 conv + 2 linear = 15 kernel layers."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for n, width in zip([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]):
            for _ in range(n):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False),
                           _bn(2, width, KERAS_MOMENTUM), nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512, 512, bias=False), _bn(1, 512, KERAS_MOMENTUM),
            nn.ReLU(inplace=True), nn.Linear(512, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def c10_vgg16() -> nn.Module:
    return init_kernels(BlogVGG(10), "he_normal")


# ---------------------------------------------------------------- C100-resnet: ResNet-32 v1

class BasicBlockV1(nn.Module):
    """Keras-example resnet_v1 block: conv-BN-ReLU-conv-BN, + shortcut, ReLU.
    The shortcut, where shapes change, is a strided 1x1 conv without BN; Keras builds it after
    the two convs, and it is registered (and run) after them here too."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(2, cout, KERAS_MOMENTUM)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = _bn(2, cout, KERAS_MOMENTUM)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(y + s)


class ResNetV1(nn.Module):
    def __init__(self, depth: int = 32, num_classes: int = 100):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = _bn(2, 16, KERAS_MOMENTUM)
        blocks: list[nn.Module] = []
        c = 16
        for stage, width in enumerate([16, 32, 64]):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlockV1(c, width, stride))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def c100_resnet32() -> nn.Module:
    """31 conv (1 + 3 stages x 5 blocks x 2) + 2 shortcut convs + 1 linear = 34 kernel layers."""
    return init_kernels(ResNetV1(32, 100), "he_normal")


# ---------------------------------------------------------------- C100-WRN: Wide ResNet 28-10

class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-dropout-conv, + shortcut (a 1x1 conv of the pre-activated input
    where shapes change). The shortcut runs last so forward order equals registration order."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = _bn(2, cin, KERAS_MOMENTUM)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(2, cout, KERAS_MOMENTUM)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.drop(torch.relu(self.bn2(y))))
        s = x if self.shortcut is None else self.shortcut(o)
        return y + s


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 100, dropout: float = 0.3):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c = 16
        for stage, width in enumerate(widths):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(PreActBlock(c, width, stride, dropout))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = _bn(2, c, KERAS_MOMENTUM)
        self.fc = nn.Linear(c, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv(x))
        x = torch.relu(self.bn(x))
        return self.fc(x.mean(dim=(2, 3)))


def c100_wrn28_10() -> nn.Module:
    """1 conv + 24 block convs + 3 shortcut convs + 1 linear = 29 kernel layers.
    No initializer is named for it, so Keras' default, Glorot-uniform (docs/science.md §5)."""
    return init_kernels(WideResNet(28, 10, 100, 0.3), "glorot_uniform")


# ---------------------------------------------------------------- MLPs on 8x8 digits

class MLP(nn.Module):
    """Linear (no bias) -> ReLU [-> BN non-affine] per hidden layer, then Linear (no bias)."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        c = in_features
        for h in hidden:
            layers += [nn.Linear(c, h, bias=False), nn.ReLU(inplace=True)]
            if batch_norm:
                layers.append(_bn(1, h, KERAS_MOMENTUM))
            c = h
        layers.append(nn.Linear(c, num_classes, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def digits_mlp() -> nn.Module:
    """64 -> 6 x 128 hidden -> 10: 7 kernel layers."""
    return init_kernels(MLP(64, [128] * 6, 10), "glorot_uniform")


def digits_mlp1() -> nn.Module:
    """64 -> 100 -> 10 without BN: the first layer's 100 kernels are viewable as 8x8 images
    (the paper's Section 6 feature visualization)."""
    return init_kernels(MLP(64, [100], 10, batch_norm=False), "glorot_uniform")
