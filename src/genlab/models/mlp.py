"""A multilayer perceptron with configurable depth and width, and an initialization scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MLPConfig:
    depth: int = 2
    """Number of hidden layers."""
    width: int = 200
    """Units per hidden layer."""
    activation: str = "relu"
    """relu | tanh | gelu"""


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


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
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), ACTIVATIONS[activation]()]
            d = width
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(d, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
