"""Models by name. ``MODELS`` is a plain dict: name -> builder(input_shape, num_classes, width,
depth). Every model exposes ``features(x)`` (the penultimate representation) and ``head``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from genlab.models.blocks import AuxHead, BlockNet, block_shapes
from genlab.models.cnn import SmallCNN
from genlab.models.lenet import LeNet5
from genlab.models.mlp import MLP, BlockMLP, scale_parameters_
from genlab.models.resnet import ResNet18
from genlab.models.tickets import Conv4, LeNet300100, ResNet20
from genlab.models.vgg import VGG8b

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda input_shape, num_classes, width, depth: MLP(
        math.prod(input_shape), num_classes, depth=depth, width=width
    ),
    "cnn": lambda input_shape, num_classes, width, depth: SmallCNN(
        input_shape, num_classes, channels=width
    ),
    # The lottery-ticket networks (genlab.models.tickets); width: Conv-4's divisor of its
    # widths, ResNet-20's base width; depth unused.
    "lenet300": lambda input_shape, num_classes, width, depth: LeNet300100(
        input_shape, num_classes
    ),
    "conv4": lambda input_shape, num_classes, width, depth: Conv4(input_shape, num_classes, width),
    "resnet20": lambda input_shape, num_classes, width, depth: ResNet20(
        input_shape, num_classes, width
    ),
}

BLOCK_MODELS: dict[str, Callable[..., BlockNet]] = {
    "mlp": lambda input_shape, num_classes, width: BlockMLP(input_shape, num_classes, 4, width),
    "lenet5": lambda input_shape, num_classes, width: LeNet5(input_shape, num_classes),
    "vgg8b": lambda input_shape, num_classes, width: VGG8b(input_shape, num_classes, width),
    "resnet18": lambda input_shape, num_classes, width: ResNet18(input_shape, num_classes, width),
}
"""Block networks (``genlab.models.blocks``) by name: builder(input_shape, num_classes, width),
``width`` meaning the MLP's units, VGG8b's divisor of the paper's widths (``narrow``) or
ResNet-18's base width (LeNet5 has fixed widths)."""

__all__ = [
    "BLOCK_MODELS",
    "MODELS",
    "AuxHead",
    "BlockNet",
    "block_shapes",
    "build_model",
    "weight_norm",
]


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int,
    depth: int,
    init_scale: float = 1.0,
    seed: int = 0,
) -> nn.Module:
    """Build ``name`` under ``torch.manual_seed(seed)``; multiply every parameter by
    ``init_scale`` after the default init (the grokking literature's alpha)."""
    torch.manual_seed(seed)
    return scale_parameters_(MODELS[name](input_shape, num_classes, width, depth), init_scale)


def weight_norm(tensors: Iterable[torch.Tensor], stacked: bool = False) -> torch.Tensor:
    """sqrt(sum_p ||p||^2): the L2 norm of all ``tensors`` concatenated, accumulated in float64
    (without a float64 copy of the weights). ``stacked``: every tensor carries a leading member
    axis M (``genlab.ensemble``'s layout) and the result is each member's norm, (M,)."""
    with torch.no_grad():
        squares = [
            torch.linalg.vector_norm(
                p.detach().flatten(1 if stacked else 0), dim=-1, dtype=torch.float64
            ).square()
            for p in tensors
        ]
        return torch.stack(squares).sum(0).sqrt()
