"""The networks of the lottery-ticket literature (Frankle & Carbin 2019), for 28 x 28 or 8 x 8
grey images. Each exposes ``features(x)`` and ``head`` (the output layer, not pruned by
default).

LeNet-300-100:  x (B, C, H, W) -> flatten (B, CHW) -> Linear 300 ReLU -> Linear 100 ReLU
                -> head Linear -> (B, K)
Conv-4 (their CIFAR Conv-4, widths / ``width_div``; for 28 x 28):
                x (B, C, 28, 28) -> conv3x3 64 ReLU -> conv3x3 64 ReLU -> maxpool2 (B, 64, 14, 14)
                -> conv3x3 128 ReLU -> conv3x3 128 ReLU -> maxpool2 (B, 128, 7, 7) -> flatten
                -> Linear 256 ReLU -> Linear 256 ReLU -> head Linear -> (B, K)
ResNet-20 (He et al. 2016's CIFAR ResNet, 3 stages of 3 basic blocks, widths 16 / 32 / 64;
the authors' variant with 1x1 conv + BN shortcuts):
                x -> conv3x3 16 BN ReLU -> 3 x Block(16) -> 3 x Block(32, stride 2)
                -> 3 x Block(64, stride 2) -> global avg pool (B, 64) -> head Linear -> (B, K)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from genlab.models.resnet import BasicBlock


class LeNet300100(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 300),
            nn.ReLU(),
            nn.Linear(300, 100),
            nn.ReLU(),
        )
        self.head = nn.Linear(100, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Conv4(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width_div: int = 1):
        super().__init__()
        c, h, w = input_shape
        c1, c2, fc = 64 // width_div, 128 // width_div, 256 // width_div
        self.body = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), fc), nn.ReLU(),
            nn.Linear(fc, fc), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(fc, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ResNet20(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
