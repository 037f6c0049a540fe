"""A small CNN: two conv blocks and a linear head, for 28x28 or 8x8 images (or 1-D signals)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """x (B, C, H, W) -> conv3x3(c) -> ReLU -> pool2 -> conv3x3(2c) -> ReLU -> global avg pool
    -> features (B, 2c) -> Linear -> logits (B, K). 1-D inputs (B, C, L) use Conv1d."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 32):
        super().__init__()
        conv, pool = (
            (nn.Conv2d, nn.MaxPool2d) if len(input_shape) == 3 else (nn.Conv1d, nn.MaxPool1d)
        )
        c_in = input_shape[0]
        self.body = nn.Sequential(
            conv(c_in, channels, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1) if len(input_shape) == 3 else nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
