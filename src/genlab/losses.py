"""The losses, one definition each, by the names configs use (``LOSSES``).

Both take logits (..., N, K) and labels (N,) (shared by every leading index, e.g. the members of
an ensemble) and return the mean over the N examples, shape (...):

* ``mse_sum``: squared error to one-hot targets, summed over the K outputs (the grokking paper's
  loss);
* ``ce``: cross-entropy; ``dtype=torch.float64`` takes the log-softmax in float64 (Nanda et al.
  do this to avoid float32 loss spikes late in grokking). Plain 2-D float logits use PyTorch's
  fused ``F.cross_entropy``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def squared_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return (logits - target).pow(2).sum(-1).mean(-1)


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    if dtype is None and logits.dim() == 2:
        return F.cross_entropy(logits, y)
    logp = logits.to(dtype or logits.dtype).log_softmax(-1)
    index = y.expand(*logits.shape[:-1]).unsqueeze(-1)
    return -logp.gather(-1, index).squeeze(-1).mean(-1)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": cross_entropy,
    "mse_sum": squared_error,
}
