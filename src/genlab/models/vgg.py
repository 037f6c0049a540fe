"""VGG8b (Nokland & Eidnes 2019, the layer-wise training baseline) with its widths divided by
``narrow`` for a CPU: six conv blocks and one hidden linear block.

Full widths conv 128, 256 | 256, 512 | 512 | 512 then fc 1024 ("|" = max pool 2). For a
28 x 28 input and narrow = 8:

x (B, C, 28, 28) -> conv3x3 BN ReLU (16)            (B, 16, 28, 28)
                 -> conv3x3 BN ReLU (32), pool      (B, 32, 14, 14)
                 -> conv3x3 BN ReLU (32)            (B, 32, 14, 14)
                 -> conv3x3 BN ReLU (64), pool      (B, 64, 7, 7)
                 -> conv3x3 BN ReLU (64), pool      (B, 64, 3, 3)
                 -> conv3x3 BN ReLU (64), pool      (B, 64, 1, 1)
                 -> flatten, Linear BN ReLU (128)   (B, 128)
                 -> head Linear -> K                (B, K)
"""

from __future__ import annotations

from torch import nn

from genlab.models.blocks import BlockNet

LAYOUT = ((128, False), (256, True), (256, False), (512, True), (512, True), (512, True))
"""(channels, max pool after) of VGG8b's conv blocks at full width."""
FC = 1024


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class VGG8b(BlockNet):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, narrow: int = 8):
        c, side = input_shape[0], input_shape[1]
        blocks = []
        for width, pool in LAYOUT:
            blocks.append(conv_block(c, width // narrow, pool))
            c, side = width // narrow, side // 2 if pool else side
        fc = FC // narrow
        blocks.append(
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * side * side, fc, bias=False),
                nn.BatchNorm1d(fc),
                nn.ReLU(),
            )  # fmt: skip
        )
        super().__init__(blocks, nn.Linear(fc, num_classes))
