"""Mutual information of representations through lossy compression and kNN entropies.

Butakov et al. 2024, "Information Bottleneck Analysis of Deep Neural Networks via Lossy
Compression" (ICLR): I(Z; X) and I(Z; Y) of a deterministic network are infinite or
degenerate in the raw high-dimensional spaces, so both X and Z are first compressed to a
few dimensions (PCA, or a small autoencoder for X) and then whitened; the mutual information
of the compressed variables is estimated from Kozachenko-Leonenko kNN entropies:

    I(Z; X) = h(Z) + h(X) - h(Z, X)
    I(Z; Y) = h(Z) - sum_y p(y) h(Z | Y = y)

Kozachenko-Leonenko with the Euclidean norm (Kraskov et al. 2004, eq. 20), for N samples in
R^d, eps_i the distance from sample i to its k-th nearest neighbour (itself excluded):

    h = psi(N) - psi(k) + log V_d + (d / N) sum_i log eps_i,  V_d = pi^(d/2) / Gamma(d/2 + 1)

V_d is the volume of the Euclidean unit ball. (The max-norm variant uses 2 eps_i and V_d = 1.)

The estimator is most accurate on isotropic data, so every entropy is computed on whitened
samples and shifted back with the exact identity h(A v) = h(v) + log|det A|: for a joint or a
class-conditional sample with covariance S, h = h_KL(whitened) + 0.5 log det S. The marginals
Z and X are whitened once (zero mean, identity covariance) before anything else; MI does not
change under that per-variable affine map, but the reported entropies are those of the
whitened compressed variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

__all__ = ["MutualInformation", "knn_entropy", "mutual_information_compressed"]


@dataclass(frozen=True)
class MutualInformation:
    """MI estimates (nats) and the entropies they come from (of compressed, whitened variables).

    I_zy and h_z_given_y are None when no labels were given.
    """

    I_zx: float
    I_zy: float | None
    h_z: float
    h_x: float
    h_zx: float
    h_z_given_y: float | None


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(a, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1) if arr.ndim != 1 else arr[:, None]


def knn_entropy(samples, k: int = 5) -> float:
    """Kozachenko-Leonenko differential entropy (nats), Euclidean norm; see the module docstring.

    ``samples``: (N,) or (N, d) tensor or array, N > k. Raises ValueError when a sample has
    k exact duplicates (a zero distance makes the estimate -inf).
    """
    x = _as_numpy(samples)
    n, d = x.shape
    if k < 1 or n <= k:
        raise ValueError(f"knn_entropy needs more than k={k} samples, got {n}")
    # k + 1 because the nearest point of every sample is itself (distance 0).
    dist, _ = cKDTree(x).query(x, k=k + 1)
    eps = dist[:, k]
    if np.any(eps <= 0):
        raise ValueError(
            "knn_entropy: some samples have k identical copies (zero kNN distance); "
            "deduplicate or add noise"
        )
    log_unit_ball = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1.0)
    return float(digamma(n) - digamma(k) + log_unit_ball + d * np.mean(np.log(eps)))


def _whiten(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(x - mean) S^-1/2 and 0.5 log det S, S the (ddof = 0) covariance."""
    centered = x - x.mean(0)
    cov = centered.T @ centered / x.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    if evals[-1] <= 0 or evals[0] <= 1e-12 * evals[-1]:
        raise ValueError(
            "cannot whiten: the samples are (numerically) confined to a lower-dimensional "
            "subspace; compress to fewer dimensions"
        )
    inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
    return centered @ inv_sqrt, 0.5 * float(np.sum(np.log(evals)))


def _entropy(x: np.ndarray, k: int) -> float:
    white, half_logdet = _whiten(x)
    return knn_entropy(white, k) + half_logdet


def pca(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """The first ``dim`` principal components of rows x (N, D); x itself when D <= dim."""
    if x.shape[1] <= dim:
        return x
    # Imported here: scikit-learn adds seconds to `import genlab.measures` for this one use.
    from sklearn.decomposition import PCA

    return PCA(n_components=dim, random_state=seed).fit_transform(x)


def _autoencoder(x: np.ndarray, dim: int, seed: int, steps: int = 300) -> np.ndarray:
    """Latent codes of a small MLP autoencoder (D -> 128 -> dim -> 128 -> D) trained with Adam.

    Inputs are standardized per feature first. The training draws from a forked RNG seeded
    with ``seed``, so the global torch RNG is left as it was and results are reproducible.
    """
    mean, std = x.mean(0), x.std(0)
    data = torch.from_numpy((x - mean) / np.where(std > 0, std, 1.0)).to(torch.float32)
    # A model this small gains nothing from intra-op threads, and on a busy machine their
    # synchronisation makes training tens of times slower: one thread, restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_autoencoder(data, dim, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _train_autoencoder(data: torch.Tensor, dim: int, seed: int, steps: int) -> np.ndarray:
    n, width = data.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = torch.nn.Sequential(
            torch.nn.Linear(width, 128), torch.nn.LeakyReLU(), torch.nn.Linear(128, dim)
        )
        dec = torch.nn.Sequential(
            torch.nn.Linear(dim, 128), torch.nn.LeakyReLU(), torch.nn.Linear(128, width)
        )
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
        batch = min(256, n)
        for _ in range(steps):
            idx = torch.randint(0, n, (batch,))
            loss = torch.nn.functional.mse_loss(dec(enc(data[idx])), data[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return enc(data).to(torch.float64).numpy()


def mutual_information_compressed(
    x,
    z,
    y=None,
    x_dim: int = 4,
    z_dim: int = 4,
    k: int = 5,
    x_compressor: str = "pca",
    seed: int = 0,
) -> MutualInformation:
    """I(Z; X) and I(Z; Y) of compressed variables (Butakov et al. 2024).

    x: inputs (N, ...), z: representations (N, ...), y: optional int labels (N,). X is
    compressed to ``x_dim`` dimensions with PCA (``x_compressor="pca"``) or a small MLP
    autoencoder (``"autoencoder"``, trained 300 Adam steps from ``seed``), Z with PCA to
    ``z_dim``; a variable already of at most that dimension is kept as is. Both are whitened,
    then entropies come from :func:`knn_entropy` with ``k`` neighbours. Every class needs more
    than k samples.
    """
    xs, zs = _as_numpy(x), _as_numpy(z)
    n = xs.shape[0]
    if zs.shape[0] != n:
        raise ValueError(f"x and z need the same number of samples, got {n} and {zs.shape[0]}")
    if x_compressor == "pca":
        xc = pca(xs, x_dim, seed)
    elif x_compressor == "autoencoder":
        xc = _autoencoder(xs, x_dim, seed)
    else:
        raise ValueError(f"x_compressor must be 'pca' or 'autoencoder', got {x_compressor!r}")
    zc = pca(zs, z_dim, seed)
    xw, _ = _whiten(xc)
    zw, _ = _whiten(zc)

    h_z = _entropy(zw, k)
    h_x = _entropy(xw, k)
    h_zx = _entropy(np.concatenate([zw, xw], axis=1), k)

    i_zy = h_z_given_y = None
    if y is not None:
        labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"y needs {n} labels, got {labels.shape[0]}")
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() <= k:
            raise ValueError(f"every class needs more than k={k} samples for I(Z; Y)")
        h_z_given_y = float(
            sum(cnt / n * _entropy(zw[labels == c], k) for c, cnt in zip(classes, counts))
        )
        i_zy = h_z - h_z_given_y

    return MutualInformation(
        I_zx=h_z + h_x - h_zx, I_zy=i_zy, h_z=h_z, h_x=h_x, h_zx=h_zx, h_z_given_y=h_z_given_y
    )
