"""The losses, one definition each, by the names configs use (``LOSSES``).

Both take logits (..., N, K) and labels (N,) (shared by every leading index, e.g. the members of
an ensemble) and return the mean over the N examples, shape (...):

* ``mse_sum``: squared error to one-hot targets, summed over the K outputs (the grokking paper's
  loss);
* ``ce``: cross-entropy; ``dtype=torch.float64`` takes the log-softmax in float64 (Nanda et al.
  do this to avoid float32 loss spikes late in grokking). Plain 2-D float logits use PyTorch's
  fused ``F.cross_entropy``.

Local losses of layer-wise training (``genlab.train.LayerwiseStepper``) take a block's
projected output h (B, ...) and labels (B,): :func:`similarity_matching`,
:func:`supervised_contrastive`.
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


def similarity_matrix(h: torch.Tensor) -> torch.Tensor:
    """S(h)_ij = cos(h_i - mean(h_i), h_j - mean(h_j)): cosine similarity of the rows of h
    (B, ...) flattened, each centered over its own features (Nokland & Eidnes 2019)."""
    flat = h.flatten(1)
    centered = flat - flat.mean(dim=1, keepdim=True)
    unit = centered / centered.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (unit @ unit.T).clamp(-1.0, 1.0)


def similarity_matching(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Nokland & Eidnes' "sim" local loss: mean over (i, j) of (S(h)_ij - S(onehot(y))_ij)^2, so a
    layer's similarity structure is pulled towards the labels'."""
    target = similarity_matrix(F.one_hot(y, num_classes).to(h.dtype))
    return (similarity_matrix(h) - target).pow(2).mean()


def supervised_contrastive(h: torch.Tensor, y: torch.Tensor, temperature: float = 0.1):
    """Khosla et al. 2020 (L_out): with z_i = h_i / ||h_i|| and P(i) the other samples of class
    y_i, mean over anchors with |P(i)| > 0 of
    -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )."""
    z = F.normalize(h.flatten(1), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=h.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    count = positives.sum(1)
    has = count > 0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(pos_log_prob[has] / count[has]).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": cross_entropy,
    "mse_sum": squared_error,
}
