"""ResNet-18's layout (He et al. 2016, the CIFAR variant: a 3x3 stem, no stem pool) with base
width ``width`` instead of 64, as a stem block and eight residual blocks.

For a 28 x 28 input and width = 16:

x (B, C, 28, 28) -> stem conv3x3 BN ReLU        (B, 16, 28, 28)
                 -> 2 x BasicBlock(16)          (B, 16, 28, 28)
                 -> 2 x BasicBlock(32), stride 2 (B, 32, 14, 14)
                 -> 2 x BasicBlock(64), stride 2 (B, 64, 7, 7)
                 -> 2 x BasicBlock(128), stride 2 (B, 128, 4, 4)
                 -> head: global average pool, Linear -> K
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genlab.models.blocks import BlockNet


class BasicBlock(nn.Module):
    """relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)); the shortcut is a strided 1x1
    conv with BN when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(BlockNet):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16):
        c = input_shape[0]
        stem = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks: list[nn.Module] = [stem]
        c = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c, width * mult, stride))
                c = width * mult
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        super().__init__(blocks, head)
