"""The one record every dataset returns, and the helpers that reshape it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class Dataset:
    """Train and test tensors of a classification task.

    x_* are float32 of shape (N, *input_shape); y_* are int64 class ids in [0, num_classes).
    ``noisy_idx`` lists the training indices whose label was changed by label noise and
    ``clean_y_train`` keeps the original labels (None when no noise was applied).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    noisy_idx: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    clean_y_train: torch.Tensor | None = None

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])

    def with_train_size(self, n: int | None) -> Dataset:
        """The first ``n`` training examples (deterministic, as the grokking literature does)."""
        if n is None or n >= self.n_train:
            return self
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])
