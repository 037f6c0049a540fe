"""Multilayer perceptrons: one layer builder for the classify model (:class:`MLP`) and the
grokking sweep's members (:func:`build_mlp`, stacked by :mod:`genlab.ensemble`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models.blocks import BlockNet


@dataclass
class MLPConfig:
    depth: int = 2
    """Number of hidden layers."""
    width: int = 200
    """Units per hidden layer."""
    activation: str = "relu"
    """relu | tanh | gelu"""


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def check_sizes(sizes: Sequence[int]) -> None:
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ConfigError("sizes", f"need >= 2 positive layer sizes, got {list(sizes)}")


def mlp_layers(sizes: Sequence[int], activation: str = "relu") -> list[nn.Module]:
    """[Linear(sizes[0], sizes[1]), act, ..., Linear(sizes[-2], sizes[-1])], created in this
    order with ``nn.Linear``'s default init: under one seed, every MLP built from these layers
    draws the same weights."""
    check_sizes(sizes)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return layers


def scale_parameters_(model: nn.Module, init_scale: float) -> nn.Module:
    """Multiply every parameter by ``init_scale`` in place (the grokking literature's alpha)."""
    if init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(init_scale)
    return model


class MLP(nn.Module):
    """x (B, *input_shape) -> flatten (B, D) -> [Linear, act] x depth -> Linear -> logits (B, K).

    ``features(x)`` returns the penultimate representation (B, width), the input to ``head``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int = 200,
        activation: str = "relu",
    ):
        super().__init__()
        *body, head = mlp_layers([in_features] + [width] * depth + [num_classes], activation)
        self.body = nn.Sequential(nn.Flatten(), *body)
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_mlp(
    sizes: Sequence[int], *, seed: int, init_scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """``nn.Sequential(*mlp_layers(sizes))`` (ReLU) drawn in float32 under
    ``torch.manual_seed(seed)`` (the global RNG state is restored afterwards), every parameter
    multiplied by ``init_scale``, then cast to ``dtype``. Keys "0.weight", "0.bias", "2.weight"...
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(*mlp_layers(sizes))
    return scale_parameters_(model, init_scale).to(dtype)


class BlockMLP(BlockNet):
    """x (B, *input_shape) -> [flatten,] Linear -> ReLU, ``depth`` blocks of ``width`` units
    -> head Linear -> logits (B, K): an MLP whose hidden layers are separate blocks."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 4,
                 width: int = 128):  # fmt: skip
        d_in = math.prod(input_shape)
        blocks = [
            nn.Sequential(
                *([nn.Flatten()] if i == 0 else []),
                nn.Linear(d_in if i == 0 else width, width),
                nn.ReLU(),
            )
            for i in range(depth)
        ]
        super().__init__(blocks, nn.Linear(width, num_classes))
