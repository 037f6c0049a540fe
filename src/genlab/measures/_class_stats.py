"""The per-class statistics that neural collapse and the Theorem 3.2 bound are built from.

Both measures need, in float64, the class means and each sample's residual to its class
mean; neural collapse also the residuals' projections on Sigma_B's directions and the nearest
class mean, the bound the logits and the largest feature norm. :func:`class_statistics` gets
all of them in two passes over the features, so that the grokking meter can compute both
measures for the price of one.

Why chunks: on a CPU a full-size float64 temporary of 10k x 200 features costs more in memory
traffic and page faults than the arithmetic done on it, so the passes convert ``chunk_size``
rows at a time into one reused buffer and keep every temporary in cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_ROWS = 2048


def float64_rows(
    features: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_ROWS, device=None
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, features[rows] in float64) for consecutive chunks of rows of a 2-D tensor.

    The float64 tensor is a view of one buffer that the next chunk overwrites: callers may
    modify it in place but must not keep it.
    """
    step = max(1, min(int(chunk_size), features.shape[0]))
    device = features.device if device is None else device
    buffer = torch.empty(step, *features.shape[1:], dtype=torch.float64, device=device)
    for start in range(0, features.shape[0], step):
        rows = features[start : start + step].detach()
        yield slice(start, start + rows.shape[0]), buffer[: rows.shape[0]].copy_(rows)


def sigma_b_directions(means: torch.Tensor, pinv_rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Papyan's NC1 = (1/C) tr(Sigma_W Sigma_B^+). With Mb = means - mu_bar = U S V^T,
    Sigma_B = V diag(S^2 / C) V^T, so NC1 = sum_r v_r^T Sigma_W v_r / s_r^2: only Sigma_W's
    quadratic forms along at most C - 1 directions are needed. Returns those unit rows v_r
    (r, d) and s_r (r,) for the present classes' means (C, d): singular values above
    pinv_rtol * s_max, at most C - 1 of them (the rank of Sigma_B); none when all class means
    are equal."""
    mb = means - means.mean(0)
    _, s, vh = torch.linalg.svd(mb, full_matrices=False)
    keep = s > pinv_rtol * s[0]
    keep[means.shape[0] - 1 :] = False
    return vh[keep], s[keep]


@dataclass(frozen=True)
class ClassStatistics:
    """Float64 statistics of features h (N, d) with labels y (N,) over K classes.

    counts:       (K,) samples per class
    means:        (K, d) class means mu_c (zero rows for absent classes)
    residual_sq:  (N,) ||h_i - mu_{y_i}||^2
    norm_sum:     sum_i ||h_i||
    max_norm:     max_i ||h_i||
    directions:   (r, d) Sigma_B's directions v_r and their singular values ``singular`` (r,)
    along:        (r,) sum_i ((h_i - mu_{y_i}) . v_r)^2
    logits:       (N, K) h W^T without the bias, when a weight was given
    nearest:      (N,) the nearest present class mean of each sample, when a weight was given
    """

    counts: torch.Tensor
    means: torch.Tensor
    residual_sq: torch.Tensor
    norm_sum: float
    max_norm: float
    directions: torch.Tensor
    singular: torch.Tensor
    along: torch.Tensor
    logits: torch.Tensor | None
    nearest: torch.Tensor | None


@torch.no_grad()
def class_statistics(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None = None,
    *,
    pinv_rtol: float = 1e-6,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> ClassStatistics:
    """Two exact float64 passes over validated features (N, d) and labels (N,) in [0, K).

    Pass 1: class sums (as onehot^T @ h), norms and logits. Pass 2: the residuals
    r_i = h_i - mu_{y_i} (h - onehot @ mu is exact: one nonzero product per entry), centered
    before squaring so that the collapsed regime keeps full precision, their projections and
    the nearest class mean from

        ||h_i - mu_c||^2 = ||r_i||^2 + 2 r_i . (mu_{y_i} - mu_c) + ||mu_{y_i} - mu_c||^2,

    which has no cancellation when all features share a large offset (r_i is small) and where
    ||r_i||^2 is the same for every c. O(N d K) in all, never a d x d matrix.
    """
    # float64 is missing on MPS: compute on the CPU there.
    device = torch.device("cpu") if features.device.type == "mps" else features.device
    f64 = torch.float64
    num, dim = features.shape
    y = labels.detach().to(device=device, dtype=torch.long)
    counts = torch.bincount(y, minlength=num_classes)
    onehot = F.one_hot(y, num_classes).to(f64)  # (N, K)
    w = None if weight is None else weight.detach().to(device=device, dtype=f64)
    logits = None if w is None else torch.empty(num, num_classes, dtype=f64, device=device)

    sums = torch.zeros(num_classes, dim, dtype=f64, device=device)
    norms = torch.empty(num, dtype=f64, device=device)
    for chunk, h in float64_rows(features, chunk_size, device):
        sums.addmm_(onehot[chunk].T, h)
        torch.linalg.vector_norm(h, dim=1, out=norms[chunk])
        if w is not None:
            torch.mm(h, w.T, out=logits[chunk])
    means = sums / counts.clamp(min=1)[:, None]
    present = counts > 0
    v, s = sigma_b_directions(means[present], pinv_rtol)

    center = (counts.to(f64) @ means) / num
    directions = torch.cat([v, means - center])  # (r + K, d): one product for both uses
    gap = means[:, None, :] - means[None, :, :]
    mean_dist = (gap * gap).sum(-1)  # (K, K): ||mu_a - mu_c||^2
    mean_dist[:, ~present] = math.inf  # only present classes are nearest-mean candidates
    residual_sq = torch.empty(num, dtype=f64, device=device)
    along = torch.zeros(len(s), dtype=f64, device=device)
    nearest = None if w is None else torch.empty(num, dtype=torch.long, device=device)
    for chunk, h in float64_rows(features, chunk_size, device):
        residual = h.addmm_(onehot[chunk], means, alpha=-1.0)
        torch.linalg.vector_norm(residual, dim=1, out=residual_sq[chunk]).square_()
        proj = residual @ directions.T
        along += proj[:, : len(s)].square().sum(0)
        if w is not None:
            proj = proj[:, len(s) :]  # r_i . (mu_c - mu_G)
            yc = y[chunk]
            sq_dist = mean_dist[yc] + 2.0 * (proj.gather(1, yc[:, None]) - proj)
            torch.argmin(sq_dist, dim=1, out=nearest[chunk])
    return ClassStatistics(
        counts=counts,
        means=means,
        residual_sq=residual_sq,
        norm_sum=float(norms.sum()),
        max_norm=float(norms.max()),
        directions=v,
        singular=s,
        along=along,
        logits=logits,
        nearest=nearest,
    )
