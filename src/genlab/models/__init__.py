"""Models by name. ``MODELS`` is a plain dict: name -> builder(input_shape, num_classes, width,
depth). Every model exposes ``features(x)`` (the penultimate representation) and ``head``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from genlab.models.cnn import SmallCNN
from genlab.models.mlp import MLP, scale_parameters_

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
