"""Kernel dependence measures: nHSIC, HSIC, CKA, and linear-time random-feature estimates.

Notation: a batch of m samples a_1..a_m (and b_1..b_m), each flattened to a row vector; every
Gram matrix is m x m and computed in float64; H = I - 1 1^T / m is the centering matrix.

**nHSIC** (:func:`nhsic_batch`, :func:`nhsic`; the normalized HSIC, NOCCO of Fukumizu et al.,
in the form used for information-plane studies, e.g. Sakamoto & Sato 2025, following the
layer-wise HSIC literature). On samples of dimension D:

    Gaussian kernel   K_ij = exp(-||a_i - a_j||^2 / (2 sigma^2 D))
    centering         K_c = K H,  H = I - 1 1^T / m   (right multiplication only)
    normalisation     R = K_c (K_c + eps m I)^-1
    nHSIC(x, z)       = tr(R_x R_z)

Labels use a linear kernel on one-hot vectors, K = Y Y^T, which is *not* centered (as in the
reference implementation). The sigma^2 D scaling makes the bandwidth independent of the
input dimension. tr(R_x R_z) grows with m: tr(R_x R_x) = sum_i mu_i^2 / (mu_i + eps m)^2 over
the eigenvalues mu_i of K_c (those of H K H), close to the effective rank of K_x, so values
are comparable only at the same batch size.

**HSIC** (:func:`hsic`; Gretton et al. 2005, Song et al. 2012) with the plain Gaussian kernel
k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) (no D scaling) or the linear kernel k(a, b) = a.b:

    biased     HSIC_b = tr(K H L H) / (m - 1)^2
    unbiased   HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((m-1)(m-2)) - 2/(m-2) 1^T K~ L~ 1]
                        / (m (m - 3)),   K~, L~ = K, L with zeroed diagonals (m >= 4)

**CKA** (:func:`cka`; Kornblith et al. 2019) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with one
estimator for all three terms.

**Random features** for large m (:func:`rff_features`, :func:`nystrom_features`): explicit
Phi (m, D) with Phi Phi^T ~ K, from which :func:`hsic_features` and :func:`nhsic_features`
compute HSIC_b and nHSIC in O(m D^2 + D^3) without any m x m matrix; :func:`nhsic_approx`
is nHSIC's drop-in estimate with :func:`nhsic_batch`'s conventions.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "cka",
    "gaussian_kernel",
    "hsic",
    "hsic_features",
    "median_distance",
    "nhsic",
    "nhsic_approx",
    "nhsic_batch",
    "nhsic_features",
    "normalized_gram",
    "normalized_grams",
    "nystrom_features",
    "rff_features",
    "trace_product",
    "trace_products",
]


def gaussian_kernel(a: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Uncentered Gaussian Gram matrix (m, m) in float64 of samples a (m, ...) flattened.

    K_ij = exp(-||a_i - a_j||^2 / (2 sigma^2 D)), D = prod(a.shape[1:]).
    """
    return _gaussian(_rows(a), sigma)


def _rows(a: torch.Tensor) -> torch.Tensor:
    """Samples a (m, ...) as float64 rows (m, D), detached."""
    return a.detach().reshape(a.shape[0], -1).to(torch.float64)


def _sq_distances(flat: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (..., m, m) between the rows of flat (..., m, D)."""
    sq = torch.linalg.vector_norm(flat, dim=-1).square()
    # The ||a||^2 + ||b||^2 - 2 a.b expansion can round slightly below zero; exact zero on the
    # diagonal keeps K_ii = 1.
    dist2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * flat @ flat.transpose(-1, -2)).clamp(
        min=0.0
    )
    dist2.diagonal(dim1=-2, dim2=-1).zero_()
    return dist2


def _gaussian(flat: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Gram matrices (..., m, m) of float64 sample rows (..., m, D)."""
    return torch.exp(-_sq_distances(flat) / (2.0 * sigma**2 * flat.shape[-1]))


def _onehot(z: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Float64 one-hot rows (m, C) of int labels z (m,); any other z is flattened to rows."""
    if z.ndim == 1 and not torch.is_floating_point(z):
        num = int(z.max()) + 1 if num_classes is None else int(num_classes)
        return torch.nn.functional.one_hot(z.detach().long(), num).to(torch.float64)
    return _rows(z)


def _label_gram(z: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Linear kernel Y Y^T of one-hot labels; z holds int labels (m,) or vectors (m, C)."""
    onehot = _onehot(z, num_classes)
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


def normalized_grams(
    a: torch.Tensor, sigma: float = 5.0, eps: float = 1e-5, detach: bool = True
) -> torch.Tensor:
    """:func:`normalized_gram` of each of B batches a (B, m, ...) of a Gaussian-kernel side at
    once: (B, m, m), one batched kernel product and one batched solve. ``detach=False`` keeps
    the graph, so tr(R_x R_z) can be a training term (layer-wise training's input-information
    reward)."""
    if detach:
        a = a.detach()
    flat = a.reshape(a.shape[0], a.shape[1], -1).to(torch.float64)
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


# ---------------------------------------------------------------------------------------------
# HSIC and CKA


_KERNELS = ("gaussian", "linear")
_ESTIMATORS = ("biased", "unbiased")


def median_distance(a: torch.Tensor) -> float:
    """Median heuristic bandwidth of samples a (m, ...) flattened: the median of the
    m (m - 1) / 2 pairwise Euclidean distances ||a_i - a_j|| over i < j (for an even count, the
    mean of the two middle values, as numpy.median); 1.0 when that median is 0 (e.g. more
    than half of the pairs are duplicates), so the kernel stays defined."""
    return _median_of_pairs(_sq_distances(_rows(a)).sqrt())


def _median_of_pairs(dist: torch.Tensor) -> float:
    """:func:`median_distance` from the (m, m) distance matrix."""
    m = dist.shape[0]
    if m < 2:
        raise ValueError(f"the median heuristic needs m >= 2 samples, got m={m}")
    upper = torch.ones(m, m, dtype=torch.bool, device=dist.device).triu(diagonal=1)
    pairs = dist[upper].sort().values
    n = pairs.numel()
    median = float(pairs[(n - 1) // 2] + pairs[n // 2]) / 2.0
    return median if median > 0.0 else 1.0


def _gram(a: torch.Tensor, kernel: str, sigma: float | None) -> torch.Tensor:
    """Gram matrix (m, m) in float64: linear a_i.a_j, or Gaussian
    exp(-||a_i - a_j||^2 / (2 sigma^2)) with the median heuristic when sigma is None."""
    flat = _rows(a)
    if kernel == "linear":
        return flat @ flat.T
    dist2 = _sq_distances(flat)
    bandwidth = _median_of_pairs(dist2.sqrt()) if sigma is None else float(sigma)
    return torch.exp(-dist2 / (2.0 * bandwidth**2))


def gram(a: torch.Tensor, kernel: str = "linear", sigma: float | None = None) -> torch.Tensor:
    """The (m, m) float64 Gram matrix of samples a (m, ...) flattened that :func:`hsic` and
    :func:`cka` use: linear a_i.a_j, or Gaussian exp(-||a_i - a_j||^2 / (2 sigma^2)) with
    :func:`median_distance` when sigma is None. Compute a fixed side once and pass it to
    :func:`cka_from_grams` for many representations."""
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got kernel={kernel!r}")
    return _gram(a, kernel, sigma)


def cka_from_grams(k: torch.Tensor, l: torch.Tensor, estimator: str = "biased") -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) of two (m, m) Gram matrices (as
    :func:`gram` returns), with the ``biased`` or ``unbiased`` estimator of :func:`hsic`."""
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got estimator={estimator!r}")
    if estimator == "unbiased" and k.shape[0] < 4:
        raise ValueError(f"the unbiased estimator needs m >= 4 samples, got m={k.shape[0]}")
    estimate = _hsic_biased if estimator == "biased" else _hsic_unbiased
    return float(estimate(k, l) / (estimate(k, k) * estimate(l, l)).sqrt())


def _double_centered(gram: torch.Tensor) -> torch.Tensor:
    """H G H: subtract row and column means, add back the grand mean."""
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def _hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / (m - 1)^2 = <H K H, H L H>_F / (m - 1)^2 (H is idempotent)."""
    m = k.shape[0]
    return (_double_centered(k) * _double_centered(l)).sum() / (m - 1) ** 2


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Song et al. 2012's HSIC_1 (see the module docstring) of symmetric Grams, O(m^2)."""
    m = k.shape[0]
    # Zero the diagonals: diag(diag(K)) is the matrix; K - diag(K) would broadcast the vector
    # of diagonal entries over every row.
    k0 = k - torch.diag(torch.diag(k))
    l0 = l - torch.diag(torch.diag(l))
    row_k, row_l = k0.sum(1), l0.sum(1)
    trace_kl = (k0 * l0).sum()  # tr(K~ L~) of symmetric matrices
    total = row_k.sum() * row_l.sum() / ((m - 1) * (m - 2))
    cross = 2.0 / (m - 2) * (row_k @ row_l)  # 1^T K~ L~ 1 = (K~ 1).(L~ 1)
    return (trace_kl + total - cross) / (m * (m - 3))


def _check_pair(x: torch.Tensor, z: torch.Tensor, kernel: str, estimator: str) -> int:
    m = x.shape[0]
    if z.shape[0] != m:
        raise ValueError(f"x and z need the same number of samples, got {m} and {z.shape[0]}")
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got kernel={kernel!r}")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got estimator={estimator!r}")
    if estimator == "unbiased" and m < 4:
        raise ValueError(f"the unbiased estimator needs m >= 4 samples, got m={m}")
    if m < 2:
        raise ValueError(f"HSIC needs m >= 2 samples, got m={m}")
    return m


def hsic(
    x: torch.Tensor,
    z: torch.Tensor,
    kernel: str = "gaussian",
    estimator: str = "biased",
    sigma: float | None = None,
) -> float:
    """HSIC between samples x (m, ...) and z (m, ...), each flattened to rows, in float64.

    Kernels (the same kind on both sides): ``"linear"`` k(a, b) = a.b, or ``"gaussian"``
    k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) with one ``sigma`` for both sides, or, when
    sigma is None, each side's own :func:`median_distance` (the median of ||a_i - a_j|| over
    i < j; 1.0 if that median is 0). Unlike :func:`gaussian_kernel`, sigma is not scaled by D.

    Estimators:

    * ``"biased"``: HSIC_b = tr(K H L H) / (m - 1)^2, H = I - 1 1^T / m (m >= 2; >= 0).
    * ``"unbiased"``: Song et al. 2012 (JMLR, "Feature selection via dependence
      maximization"), with K~, L~ the Grams with zeroed diagonals,
      HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((m-1)(m-2)) - 2/(m-2) 1^T K~ L~ 1] / (m (m-3)),
      the U-statistic of the population HSIC: needs m >= 4 and can be negative.

    Raises ValueError for different sample counts, unknown kernel or estimator names, and
    too few samples. O(m^2 (D_x + D_z)) time and O(m^2) memory.
    """
    _check_pair(x, z, kernel, estimator)
    k, l = _gram(x, kernel, sigma), _gram(z, kernel, sigma).to(x.device)
    value = _hsic_biased(k, l) if estimator == "biased" else _hsic_unbiased(k, l)
    return float(value)


def cka(
    x: torch.Tensor,
    z: torch.Tensor,
    kernel: str = "linear",
    estimator: str = "biased",
    sigma: float | None = None,
) -> float:
    """Centered kernel alignment of samples x (m, ...) and z (m, ...) (Kornblith et al. 2019):

        CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),

    the three terms from one :func:`hsic` estimator, kernels and bandwidth as in :func:`hsic`.
    Biased CKA lies in [0, 1] but is inflated at small m (about 0.2 between independent
    N(0, I_10) samples at m = 32); unbiased ("debiased") CKA is near 0 there and can be
    negative. NaN when a side has no variation (a zero denominator).

    The biased linear case never forms an m x m matrix: with column-centered Xc, Zc,
    CKA = ||Xc^T Zc||_F^2 / (||Xc^T Xc||_F ||Zc^T Zc||_F), O(m D_x D_z); when
    m (D_x + D_z) is smaller than D_x D_z + D_x^2 + D_z^2 (wide features, few samples) the
    same value comes from the m x m centered Grams instead. Other cases use Grams, O(m^2).
    """
    m = _check_pair(x, z, kernel, estimator)
    if kernel == "linear" and estimator == "biased":
        xc, zc = _rows(x), _rows(z).to(x.device)
        xc, zc = xc - xc.mean(0), zc - zc.mean(0)
        dx, dz = xc.shape[1], zc.shape[1]
        if dx * dz + dx * dx + dz * dz <= m * (dx + dz):
            cross = (xc.T @ zc).square().sum()
            norm_x = torch.linalg.matrix_norm(xc.T @ xc)
            norm_z = torch.linalg.matrix_norm(zc.T @ zc)
        else:
            # ||Xc^T Zc||_F^2 = tr(Xc Xc^T Zc Zc^T) and ||Xc^T Xc||_F = ||Xc Xc^T||_F.
            k, l = xc @ xc.T, zc @ zc.T
            cross = (k * l).sum()
            norm_x, norm_z = torch.linalg.matrix_norm(k), torch.linalg.matrix_norm(l)
        return float(cross / (norm_x * norm_z))
    return cka_from_grams(_gram(x, kernel, sigma), _gram(z, kernel, sigma).to(x.device), estimator)


# ---------------------------------------------------------------------------------------------
# Random-feature estimates for large m


def rff_features(
    a: torch.Tensor,
    num_features: int,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random Fourier features (Rahimi & Recht 2007) of the Gaussian kernel
    k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) (plain sigma, as :func:`hsic`): samples a (m, ...)
    flattened to rows (m, d) map to Phi (m, num_features) in float64,

        Phi = sqrt(2 / D) [cos(A W), sin(A W)],   W (d, D/2) with N(0, 1 / sigma^2) entries,

    so (Phi Phi^T)_ij = (2 / D) sum_k cos(w_k.(a_i - a_j)), an unbiased estimate of K_ij with
    variance O(1 / D); the diagonal is exactly 1, the off-diagonal entries are approximate.
    ``num_features`` (D) must be even. W is drawn on the CPU from ``generator``.
    """
    if num_features < 2 or num_features % 2:
        raise ValueError(f"num_features must be even and >= 2, got {num_features}")
    flat = _rows(a)
    freqs = torch.randn(
        flat.shape[1], num_features // 2, generator=generator, dtype=torch.float64
    ).to(flat.device)
    proj = flat @ (freqs / sigma)
    return math.sqrt(2.0 / num_features) * torch.cat([proj.cos(), proj.sin()], dim=1)


def nystrom_features(
    a: torch.Tensor,
    num_landmarks: int,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Nystrom features (Williams & Seeger 2001) of the Gaussian kernel
    k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) from ``num_landmarks`` (L) samples drawn without
    replacement: with K_mL the kernel between all samples and the landmarks and
    K_LL = U diag(s) U^T,

        Phi = K_mL U_r diag(s_r)^(-1/2),   Phi Phi^T = K_mL K_LL^+ K_Lm ~ K,

    keeping the r <= L eigenvalues above L eps_64 max(s) (the rest are round-off), so Phi is
    (m, r) in float64. Exact on the landmarks' rows and columns; with L = m, Phi Phi^T = K up
    to the dropped round-off-sized eigenvalues. O(m L d + m L^2 + L^3).
    """
    flat = _rows(a)
    m = flat.shape[0]
    if not 1 <= num_landmarks <= m:
        raise ValueError(f"num_landmarks must be in [1, m={m}], got {num_landmarks}")
    idx = torch.randperm(m, generator=generator)[:num_landmarks].to(flat.device)
    landmarks = flat[idx]
    sq_a = torch.linalg.vector_norm(flat, dim=1).square()
    sq_l = sq_a[idx]
    dist2 = (sq_a[:, None] + sq_l[None, :] - 2.0 * flat @ landmarks.T).clamp(min=0.0)
    # A landmark's distance to itself is exactly 0, as on the diagonal of gaussian_kernel.
    dist2[idx, torch.arange(num_landmarks, device=flat.device)] = 0.0
    k_ml = torch.exp(-dist2 / (2.0 * sigma**2))
    k_ll = k_ml[idx]
    s, u = torch.linalg.eigh((k_ll + k_ll.T) / 2.0)
    keep = s > num_landmarks * torch.finfo(torch.float64).eps * s.max()
    return k_ml @ (u[:, keep] / s[keep].sqrt())


def hsic_features(phi_x: torch.Tensor, phi_z: torch.Tensor) -> float:
    """Biased HSIC tr(K H L H) / (m - 1)^2 of the kernels K = Phi_x Phi_x^T and
    L = Phi_z Phi_z^T given by features Phi_x (m, D_x) and Phi_z (m, D_z):

        tr(Phi_x Phi_x^T H Phi_z Phi_z^T H) = ||Psi_x^T Psi_z||_F^2,   Psi = H Phi,

    (the column-centered features), O(m D_x D_z) with no m x m matrix. With exact features
    (e.g. the rows themselves for the linear kernel) it equals :func:`hsic`'s biased value.
    """
    m = phi_x.shape[0]
    if phi_z.shape[0] != m:
        raise ValueError(
            f"phi_x and phi_z need the same number of rows, got {m} and {phi_z.shape[0]}"
        )
    psi_x = phi_x.to(torch.float64) - phi_x.to(torch.float64).mean(0)
    psi_z = phi_z.to(torch.float64) - phi_z.to(torch.float64).mean(0)
    return float((psi_x.T @ psi_z).square().sum() / (m - 1) ** 2)


def nhsic_features(
    phi_x: torch.Tensor,
    phi_z: torch.Tensor,
    eps: float = 1e-5,
    center_x: bool = True,
    center_z: bool = True,
) -> float:
    """nHSIC tr(R_x R_z) of the kernels K = Phi Phi^T given by features Phi (m, D) in
    O(m D^2 + D^3) time and O(m D + D^2) memory, with no m x m matrix.

    With Psi = H Phi (column-centered features; Psi = Phi when the side is not centered, as
    :func:`nhsic_batch`'s labels), K_c = K H = Phi Psi^T, and with lam = eps m the push-through
    identity Psi^T (Phi Psi^T + lam I_m)^-1 = (Psi^T Phi + lam I_D)^-1 Psi^T gives

        R = K_c (K_c + lam I_m)^-1 = Phi A Psi^T,   A = (Psi^T Phi + lam I_D)^-1,

    where Psi^T Phi = Phi^T H Phi (or Phi^T Phi) is symmetric positive semi-definite, so A is
    symmetric. By the cyclic property of the trace,

        tr(R_x R_z) = tr(A_x C_xz A_z C_zx),   C_xz = Psi_x^T Phi_z,  C_zx = Psi_z^T Phi_x,

    two Cholesky factorizations of D x D systems and three or four (m, D)^T (m, D) products
    (C_zx = C_xz^T when both sides are centered). Exact for exact features; the D^3 term makes
    it worth it only for D well below m.
    """
    m = phi_x.shape[0]
    if phi_z.shape[0] != m:
        raise ValueError(
            f"phi_x and phi_z need the same number of rows, got {m} and {phi_z.shape[0]}"
        )
    lam = eps * m
    phi_x, phi_z = phi_x.to(torch.float64), phi_z.to(torch.float64)
    psi_x = phi_x - phi_x.mean(0) if center_x else phi_x
    psi_z = phi_z - phi_z.mean(0) if center_z else phi_z
    # Psi^T Phi = Psi^T Psi when centered (H is idempotent): the symmetric form.
    chol_x = torch.linalg.cholesky(_shifted(psi_x.T @ psi_x, lam))
    chol_z = torch.linalg.cholesky(_shifted(psi_z.T @ psi_z, lam))
    c_xz = psi_x.T @ phi_z
    # Both sides centered: Psi^T 1 = 0 makes C_xz = Psi_x^T Psi_z and C_zx = its transpose.
    c_zx = c_xz.T if center_x and center_z else psi_z.T @ phi_x
    a_c_xz = torch.cholesky_solve(c_xz, chol_x)  # A_x C_xz
    a_c_zx = torch.cholesky_solve(c_zx, chol_z)  # A_z C_zx
    # tr(P Q) = sum_ij P_ij Q_ji for P = A_x C_xz (D_x, D_z), Q = A_z C_zx (D_z, D_x).
    return float((a_c_xz * a_c_zx.T).sum())


def _shifted(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """gram + lam I."""
    return gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def nhsic_approx(
    x: torch.Tensor,
    z: torch.Tensor,
    method: str = "nystrom",
    num_features: int = 512,
    sigma: float = 5.0,
    eps: float = 1e-5,
    label_kernel: bool = False,
    num_classes: int | None = None,
    seed: int = 0,
) -> float:
    """Linear-time estimate of :func:`nhsic_batch` (x, z) on one large batch of m samples.

    Same conventions as :func:`nhsic_batch`: x (m, ...) of dimension D_x has the Gaussian
    kernel exp(-||a_i - a_j||^2 / (2 sigma^2 D_x)), i.e. bandwidth sigma sqrt(D_x) for
    :func:`rff_features` / :func:`nystrom_features`, right-centered; z the same, or, with
    ``label_kernel=True``, int labels (m,) / one-hot rows (m, C) as exact, uncentered linear
    features. ``method`` is ``"nystrom"`` (``num_features`` landmarks; exact with m landmarks)
    or ``"rff"`` (``num_features`` random Fourier features). The features are drawn from a
    CPU generator seeded with ``seed``, x's before z's; the value is then
    :func:`nhsic_features`, O(m D^2 + D^3) for D = ``num_features``.
    """
    m = x.shape[0]
    if z.shape[0] != m:
        raise ValueError(f"x and z need the same number of samples, got {m} and {z.shape[0]}")
    if method not in ("nystrom", "rff"):
        raise ValueError(f"method must be 'nystrom' or 'rff', got method={method!r}")
    features = nystrom_features if method == "nystrom" else rff_features
    generator = torch.Generator().manual_seed(seed)

    def gaussian_side(a: torch.Tensor) -> torch.Tensor:
        flat = _rows(a)
        return features(flat, num_features, sigma * math.sqrt(flat.shape[1]), generator)

    phi_x = gaussian_side(x)
    phi_z = _onehot(z, num_classes) if label_kernel else gaussian_side(z)
    return nhsic_features(phi_x, phi_z.to(phi_x.device), eps, center_z=not label_kernel)
