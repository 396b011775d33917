"""Architectures of the built-in zoo (plain ``nn.Sequential`` nets with readable layer names)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class AppendBias(nn.Module):
    """Append a constant input feature (the classic explicit bias input: 400 pixels -> 401 inputs)."""

    appends_constant = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_full((x.shape[0], 1), self.appends_constant)], dim=1)


def roman_mlp() -> nn.Sequential:
    """The seed's sigmoid MLP: 20x20 pixels + bias input (401) -> 100 -> 25 -> 6, sigmoid units."""
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), bias=AppendBias(),
        fc1=nn.Linear(401, 100, bias=False), act1=nn.Sigmoid(),
        fc2=nn.Linear(100, 25), act2=nn.Sigmoid(),
        fc3=nn.Linear(25, 6),
    ))


def digits_cnn() -> nn.Sequential:
    """The seed's CNN: 28x28 -> three 5x5 filters (3x24x24) -> ReLU -> 2x2 max pool (3x12x12) -> 432 -> 10."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 3, 5), relu=nn.ReLU(), pool=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(432, 10),
    ))


def digits_mlp() -> nn.Sequential:
    """A small ReLU MLP 784 -> 64 -> 32 -> 10 (the workhorse for exact methods)."""
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(784, 64), act1=nn.ReLU(),
        fc2=nn.Linear(64, 32), act2=nn.ReLU(), fc3=nn.Linear(32, 10),
    ))


def moons_relu() -> nn.Sequential:
    """A 2-D-input ReLU classifier 2 -> 16 -> 16 -> 2, small enough for certified preimage plots."""
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(2, 16), act1=nn.ReLU(), fc2=nn.Linear(16, 16), act2=nn.ReLU(), fc3=nn.Linear(16, 2),
    ))


def verifier_cnn(channels: int, size: int, classes: int) -> nn.Sequential:
    """The independent verifier: a different, deeper CNN with dropout, trained with augmentation."""
    flat = 16 * (size // 4) * (size // 4)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, 16, 3, padding=1), act1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 16, 3, padding=1), act2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), drop=nn.Dropout(0.3), fc1=nn.Linear(flat, 64), act3=nn.ReLU(), fc2=nn.Linear(64, classes),
    ))


class _Block(nn.Module):
    """A residual block: basic (two 3x3 convs) or bottleneck (1x1 -> 3x3 -> 1x1, 4x wider out), BN after each."""

    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        cout = width * (4 if bottleneck else 1)
        if bottleneck:
            convs = [nn.Conv2d(cin, width, 1, bias=False), nn.Conv2d(width, width, 3, stride, 1, bias=False),
                     nn.Conv2d(width, cout, 1, bias=False)]
        else:
            convs = [nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.Conv2d(width, cout, 3, 1, 1, bias=False)]
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c.out_channels) for c in convs)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            h = bn(conv(h))
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return torch.relu(h + self.shortcut(x))


def resnet(blocks: tuple[int, ...] = (3, 4, 6, 3), bottleneck: bool = True, width: int = 64,
           classes: int = 1000) -> nn.Sequential:
    """A ResNet (He et al. 2016) in plain torch: the defaults are ResNet-50 (25.6 M parameters); ``(2, 2, 2, 2)``
    with ``bottleneck=False`` is ResNet-18. Used with random weights to time methods at ImageNet size."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, width, 7, 2, 3, bias=False), bn1=nn.BatchNorm2d(width), relu=nn.ReLU(),
        pool=nn.MaxPool2d(3, 2, 1))
    cin = width
    for stage, count in enumerate(blocks):
        stage_blocks = []
        for i in range(count):
            block = _Block(cin, width * 2**stage, 2 if i == 0 and stage > 0 else 1, bottleneck)
            stage_blocks.append(block)
            cin = block.out_channels
        layers[f"layer{stage + 1}"] = nn.Sequential(*stage_blocks)
    layers.update(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(cin, classes))
    return nn.Sequential(layers)


def resnet50(classes: int = 1000) -> nn.Sequential:
    return resnet((3, 4, 6, 3), True, 64, classes)


def resnet18(classes: int = 1000, width: int = 64) -> nn.Sequential:
    return resnet((2, 2, 2, 2), False, width, classes)
