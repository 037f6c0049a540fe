"""Models by name. ``MODELS`` is a plain dict: name -> builder(input_shape, num_classes, width,
depth). Every model exposes ``features(x)`` (the penultimate representation) and ``head``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from genlab.models.cnn import SmallCNN
from genlab.models.mlp import MLP

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda input_shape, num_classes, width, depth: MLP(
        math.prod(input_shape), num_classes, depth=depth, width=width
    ),
    "cnn": lambda input_shape, num_classes, width, depth: SmallCNN(
        input_shape, num_classes, channels=width
    ),
}


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
    model = MODELS[name](input_shape, num_classes, width, depth)
    if init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(init_scale)
    return model


def weight_norm(model: nn.Module) -> float:
    """The L2 norm of all parameters concatenated."""
    with torch.no_grad():
        return math.sqrt(sum(float(p.pow(2).sum()) for p in model.parameters()))
