"""Normalized HSIC (nHSIC) between two sets of samples, averaged over mini-batches.

The form used for information-plane studies (e.g. Sakamoto & Sato 2025, following the
layer-wise HSIC literature). On a batch of m samples a_1..a_m, flattened to vectors of
dimension D:

    Gaussian kernel   K_ij = exp(-||a_i - a_j||^2 / (2 sigma^2 D))
    centering         K_c = K H,  H = I - 1 1^T / m   (right multiplication only)
    normalisation     R = K_c (K_c + eps m I)^-1
    nHSIC(x, z)       = tr(R_x R_z)

Labels use a linear kernel on one-hot vectors, K = Y Y^T, which is *not* centered (as in the
reference implementation). The sigma^2 D scaling makes the bandwidth independent of the
input dimension. tr(R_x R_z) grows with m (tr(R_x R_x) is close to the effective rank of K_x),
so values are comparable only at the same batch size.
"""

from __future__ import annotations

import torch

__all__ = [
    "gaussian_kernel",
    "nhsic",
    "nhsic_batch",
    "normalized_gram",
    "normalized_grams",
    "trace_product",
    "trace_products",
]


def gaussian_kernel(a: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Uncentered Gaussian Gram matrix (m, m) in float64 of samples a (m, ...) flattened.

    K_ij = exp(-||a_i - a_j||^2 / (2 sigma^2 D)), D = prod(a.shape[1:]).
    """
    return _gaussian(a.detach().reshape(a.shape[0], -1).to(torch.float64), sigma)


def _gaussian(flat: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Gram matrices (..., m, m) of float64 sample rows (..., m, D)."""
    dim = flat.shape[-1]
    sq = torch.linalg.vector_norm(flat, dim=-1).square()
    # The ||a||^2 + ||b||^2 - 2 a.b expansion can round slightly below zero; exact zero on the
    # diagonal keeps K_ii = 1.
    dist2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * flat @ flat.transpose(-1, -2)).clamp(
        min=0.0
    )
    dist2.diagonal(dim1=-2, dim2=-1).zero_()
    return torch.exp(-dist2 / (2.0 * sigma**2 * dim))


def _label_gram(z: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Linear kernel Y Y^T of one-hot labels; z holds int labels (m,) or vectors (m, C)."""
    if z.ndim == 1 and not torch.is_floating_point(z):
        num = int(z.max()) + 1 if num_classes is None else int(num_classes)
        onehot = torch.nn.functional.one_hot(z.detach().long(), num).to(torch.float64)
    else:
        onehot = z.detach().reshape(z.shape[0], -1).to(torch.float64)
    return onehot @ onehot.T


def _normalized(gram: torch.Tensor, eps: float) -> torch.Tensor:
    """R = G (G + eps m I)^-1 solved as a linear system (X A = G), never as an inverse; G may
    carry leading batch dimensions (..., m, m)."""
    m = gram.shape[-1]
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + eps * m * eye, gram, left=False)


def normalized_gram(
    a: torch.Tensor,
    sigma: float = 5.0,
    eps: float = 1e-5,
    label_kernel: bool = False,
    num_classes: int | None = None,
) -> torch.Tensor:
    """R = K_c (K_c + eps m I)^-1 of one batch a (m, ...): K_c the row-centered Gaussian kernel,
    or with ``label_kernel=True`` the uncentered linear kernel of int labels (m,) / one-hot
    rows (m, C). Computing R once lets a fixed side (inputs X, labels Y) be reused across
    many representations Z: nHSIC(x, z) = trace_product(R_x, R_z)."""
    if label_kernel:
        return _normalized(_label_gram(a, num_classes), eps)
    return normalized_grams(a[None], sigma, eps)[0]


def normalized_grams(a: torch.Tensor, sigma: float = 5.0, eps: float = 1e-5) -> torch.Tensor:
    """:func:`normalized_gram` of each of B batches a (B, m, ...) of a Gaussian-kernel side at
    once: (B, m, m), one batched kernel product and one batched solve."""
    flat = a.detach().reshape(a.shape[0], a.shape[1], -1).to(torch.float64)
    k = _gaussian(flat, sigma)
    # K H subtracts each row's mean.
    return _normalized(k - k.mean(dim=-1, keepdim=True), eps)


def trace_product(r_a: torch.Tensor, r_b: torch.Tensor) -> float:
    """tr(R_a R_b) = sum_ij (R_a)_ij (R_b)_ji, without the matrix product."""
    return float(trace_products(r_a, r_b))


def trace_products(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """tr(R_a[j] R_b[j]) for each of the stacked matrices (B, m, m): a (B,) tensor."""
    return (r_a * r_b.transpose(-1, -2)).sum((-2, -1))


def nhsic_batch(
    x: torch.Tensor,
    z: torch.Tensor,
    sigma: float = 5.0,
    eps: float = 1e-5,
    label_kernel: bool = False,
    num_classes: int | None = None,
) -> float:
    """tr(R_x R_z) on one batch: x (m, ...) with a centered Gaussian kernel; z (m, ...) the same,
    or, with ``label_kernel=True``, int labels (m,) / one-hot rows (m, C) with an uncentered
    linear kernel. ``num_classes`` only sizes the one-hot vectors; it does not change the value.
    """
    m = x.shape[0]
    if z.shape[0] != m:
        raise ValueError(f"x and z need the same number of samples, got {m} and {z.shape[0]}")
    rx = normalized_gram(x, sigma, eps)
    rz = normalized_gram(z, sigma, eps, label_kernel, num_classes).to(rx.device)
    return trace_product(rx, rz)


def nhsic(
    x: torch.Tensor,
    z: torch.Tensor,
    sigma: float = 5.0,
    eps: float = 1e-5,
    label_kernel: bool = False,
    batch_size: int = 100,
    num_classes: int | None = None,
) -> float:
    """nHSIC averaged over consecutive batches of ``batch_size`` samples.

    Batch j holds samples [j m, (j+1) m); the last chunk is dropped when it has fewer than m
    samples, because tr(R_x R_z) depends on the batch size and a short batch would bias the
    average. Shuffle beforehand if the order of the samples is not random. Raises ValueError
    when there are fewer than ``batch_size`` samples.
    """
    n = x.shape[0]
    if z.shape[0] != n:
        raise ValueError(f"x and z need the same number of samples, got {n} and {z.shape[0]}")
    if batch_size < 1 or n < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} samples, got {n}")
    if label_kernel and num_classes is None and z.ndim == 1 and not torch.is_floating_point(z):
        num_classes = int(z.max()) + 1
    values = [
        nhsic_batch(
            x[start : start + batch_size],
            z[start : start + batch_size],
            sigma=sigma,
            eps=eps,
            label_kernel=label_kernel,
            num_classes=num_classes,
        )
        for start in range(0, n - batch_size + 1, batch_size)
    ]
    return sum(values) / len(values)
