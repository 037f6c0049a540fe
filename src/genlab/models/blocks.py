"""Networks as a stack of blocks and a classifier, so each block's output Z_l can be measured,
probed, or trained by its own local loss (the ``layerwise`` study, ``genlab.train``).

A :class:`BlockNet` maps x -> Z_1 = blocks[0](x) -> ... -> Z_L -> head(Z_L) = logits. An
:class:`AuxHead` reads a block's output for a local loss or a linear probe: conv maps are
average-pooled to at most ``max_features`` numbers, then one linear layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BlockNet(nn.Module):
    """``blocks`` (an ``nn.ModuleList``) then ``head``; ``block_outputs(x)`` gives every Z_l."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[Z_1, ..., Z_L]: the output of every block."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Z_L, the head's input."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def pooled_size(shape: tuple[int, ...], max_features: int) -> int:
    """Side s of the adaptive average pool that keeps a (C, H, W) map at C s^2 <= max_features
    numbers (s <= H, at least 1); flat outputs are not pooled."""
    if len(shape) == 1:
        return 0
    c, h = shape[0], shape[1]
    return max(1, min(h, math.isqrt(max(1, max_features // c))))


class AuxHead(nn.Module):
    """Z (B, C, H, W) -> adaptive average pool to (s, s) with C s^2 <= max_features -> flatten
    -> Linear -> (B, out); Z (B, D) -> Linear. The paper's auxiliary classifier."""

    def __init__(self, z_shape: tuple[int, ...], out: int, max_features: int = 2048):
        super().__init__()
        s = pooled_size(z_shape, max_features)
        self.pool = nn.AdaptiveAvgPool2d(s) if s else nn.Identity()
        n_in = z_shape[0] * s * s if s else z_shape[0]
        self.linear = nn.Linear(n_in, out)

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(z).flatten(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pooled(z))


@torch.no_grad()
def block_shapes(model: BlockNet, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each block's output shape (without the batch axis) for one input of ``input_shape``."""
    was_training = model.training
    model.eval()
    outs = model.block_outputs(torch.zeros(1, *input_shape))
    model.train(was_training)
    return [tuple(z.shape[1:]) for z in outs]
