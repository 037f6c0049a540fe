"""LeNet-5 (LeCun et al. 1998) as four blocks and a classifier, for 28 x 28 images.

x (B, C, 28, 28) -> conv5x5(6, pad 2) ReLU maxpool2 (B, 6, 14, 14)
                 -> conv5x5(16) ReLU maxpool2     (B, 16, 5, 5)
                 -> flatten, Linear 400 -> 120 ReLU (B, 120)
                 -> Linear 120 -> 84 ReLU          (B, 84)
                 -> head Linear 84 -> K            (B, K)
"""

from __future__ import annotations

from torch import nn

from genlab.models.blocks import BlockNet


class LeNet5(BlockNet):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        c, h, w = input_shape
        if (h, w) != (28, 28):
            raise ValueError(f"LeNet5 takes 28 x 28 images, got {h} x {w}")
        super().__init__(
            [
                nn.Sequential(nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
                nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
                nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU()),
                nn.Sequential(nn.Linear(120, 84), nn.ReLU()),
            ],
            nn.Linear(84, num_classes),
        )
