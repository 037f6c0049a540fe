"""Token-selection data of Sakamoto & Sato, "Benign Overfitting in Token Selection of Attention
Mechanism" (ICML 2025, arXiv 2409.17625).

Each example is a sequence of ``T`` tokens in ``R^d`` with a binary label ``Y* in {+1, -1}``:

* token 0 (relevant):                   ``mu_{Y*}        + xi``
* token 1 (weakly relevant, same):      ``rho * mu_{Y*}  + xi``
* token 2 (weakly relevant, opposite):  ``rho * mu_{-Y*} + xi``
* tokens 3..T-1 (irrelevant):           ``xi``

with ``mu_{+1} = ||mu|| e_1``, ``mu_{-1} = ||mu|| e_2`` (coordinates 0 and 1) and
``xi ~ N(0, sigma^2 I_d)`` drawn independently for every token of every sample.
Token positions are fixed. Label noise flips exactly ``ceil(n * eta)`` *training* labels; the
test labels are clean.

Random streams. Everything is drawn from two ``torch.Generator`` s whose seeds are derived from
``(seed, "train")`` and ``(seed, "test")`` with SHA-256, so the test draw never shares a stream
with the training draw. The noise is always drawn in float32 and then cast to ``dtype``, and it
does not depend on ``mu_norm``, ``rho`` or ``eta``: cells of a ``(||mu||, d)`` grid that share a
seed and a ``d`` see the very same noise (common random numbers), which
:func:`draw_token_noise` + :meth:`TokenNoise.with_signal` exposes (the grid executor uses it).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from genlab.errors import ConfigError

#: Token positions of the three structured tokens; tokens ``>= IRRELEVANT_START`` are irrelevant.
RELEVANT, WEAK_SAME, WEAK_OPPOSITE, IRRELEVANT_START = 0, 1, 2, 3


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named random ``stream`` of ``seed`` (stable across processes)."""
    digest = hashlib.sha256(f"genlab.tokens:{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, stream)``."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def snr(mu_norm: float, d: int, sigma: float = 1.0) -> float:
    """Signal-to-noise ratio ``||mu|| / (sigma sqrt(d))`` of the paper."""
    return float(mu_norm) / (float(sigma) * math.sqrt(d))


def num_flips(n: int, eta: float) -> int:
    """``ceil(n * eta)``, robust to float round-off (``10 * 0.3`` gives 3, not 4)."""
    return int(math.ceil(round(n * eta, 9)))


def balanced_labels(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` float32 labels in {+1, -1} in random order: ``ceil(n/2)`` of +1, ``floor(n/2)`` of -1."""
    y = torch.ones(n)
    y[(n + 1) // 2 :] = -1.0
    return y[torch.randperm(n, generator=generator)]


@dataclass
class TokenData:
    """One draw of the token-selection task. Shapes use ``n`` train, ``N`` test samples.

    ``x_train`` (n, T, d) and ``x_test`` (N, T, d) are the token sequences; ``y_train`` (n,) holds
    the observed (possibly flipped) labels in {+1., -1.}, ``clean_y_train`` (n,) the true ones,
    ``noisy_mask`` (n,) bool marks the flipped samples and ``noisy_idx`` (k,) int64 lists them;
    ``y_test`` (N,) is clean. ``mu_pos``/``mu_neg`` (d,) are the class signals.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    clean_y_train: torch.Tensor
    noisy_mask: torch.Tensor
    noisy_idx: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mu_pos: torch.Tensor
    mu_neg: torch.Tensor
    mu_norm: float
    rho: float
    eta: float
    sigma: float
    seed: int

    @property
    def n(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return int(self.x_train.shape[1])

    @property
    def d(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def snr(self) -> float:
        return snr(self.mu_norm, self.d, self.sigma)

    @property
    def nu(self) -> torch.Tensor:
        """The fixed linear head ``(mu_{+1} - mu_{-1}) / (sqrt(2) ||mu||^2)``, shape (d,)."""
        return (self.mu_pos - self.mu_neg) / (math.sqrt(2.0) * self.mu_norm**2)

    def as_dataset(self, name: str = "tokens"):
        """The draw as a :class:`genlab.data.base.Dataset` (class ids: +1 -> 1, -1 -> 0)."""
        from genlab.data.base import Dataset

        def ids(y: torch.Tensor) -> torch.Tensor:
            return (y > 0).long()

        return Dataset(
            name=name,
            x_train=self.x_train.float(),
            y_train=ids(self.y_train),
            x_test=self.x_test.float(),
            y_test=ids(self.y_test),
            num_classes=2,
            input_shape=(self.T, self.d),
            noisy_idx=self.noisy_idx.clone(),
            clean_y_train=ids(self.clean_y_train),
        )


@dataclass
class TokenNoise:
    """Everything of a draw that does not depend on ``mu_norm`` or ``rho``.

    ``xi_train`` (n, T, d) and ``xi_test`` (N, T, d) are the Gaussian noises (already scaled by
    ``sigma``), ``clean_y_train`` (n,), ``noisy_mask`` (n,), ``y_test`` (N,) the labels.
    """

    xi_train: torch.Tensor
    clean_y_train: torch.Tensor
    noisy_mask: torch.Tensor
    xi_test: torch.Tensor
    y_test: torch.Tensor
    eta: float
    sigma: float
    seed: int

    @property
    def y_train(self) -> torch.Tensor:
        """Observed training labels (n,): the clean ones with the noisy ones flipped."""
        return torch.where(self.noisy_mask, -self.clean_y_train, self.clean_y_train)

    def with_signal(self, mu_norm: float, rho: float = 0.1) -> TokenData:
        """Add the class signals of norm ``mu_norm`` (and ``rho`` for tokens 1, 2) to the noise."""
        if mu_norm <= 0:
            raise ConfigError("mu_norm", f"must be > 0, got {mu_norm}")
        dtype = self.xi_train.dtype
        d = int(self.xi_train.shape[2])
        mu_pos = torch.zeros(d, dtype=dtype)
        mu_neg = torch.zeros(d, dtype=dtype)
        mu_pos[0] = mu_norm
        mu_neg[1] = mu_norm
        return TokenData(
            x_train=add_signal(self.xi_train, self.clean_y_train, mu_norm, rho),
            y_train=self.y_train,
            clean_y_train=self.clean_y_train.clone(),
            noisy_mask=self.noisy_mask.clone(),
            noisy_idx=torch.nonzero(self.noisy_mask).flatten(),
            x_test=add_signal(self.xi_test, self.y_test, mu_norm, rho),
            y_test=self.y_test.clone(),
            mu_pos=mu_pos,
            mu_neg=mu_neg,
            mu_norm=float(mu_norm),
            rho=float(rho),
            eta=self.eta,
            sigma=self.sigma,
            seed=self.seed,
        )


def signal_coefficients(clean_y: torch.Tensor, T: int, rho: float) -> torch.Tensor:
    """Signal of every token on coordinates 0 (``e_1``) and 1 (``e_2``), per unit ``||mu||``.

    clean_y (n,) in {+1, -1} -> (n, T, 2): token t of sample i carries
    ``||mu|| * coef[i, t, 0] e_1 + ||mu|| * coef[i, t, 1] e_2``.
    """
    pos = (clean_y > 0).to(torch.float64)  # (n,)
    coef = torch.zeros(clean_y.shape[0], T, 2, dtype=torch.float64)
    coef[:, RELEVANT, 0], coef[:, RELEVANT, 1] = pos, 1 - pos
    coef[:, WEAK_SAME, 0], coef[:, WEAK_SAME, 1] = rho * pos, rho * (1 - pos)
    coef[:, WEAK_OPPOSITE, 0], coef[:, WEAK_OPPOSITE, 1] = rho * (1 - pos), rho * pos
    return coef


def add_signal(xi: torch.Tensor, clean_y: torch.Tensor, mu_norm: float, rho: float) -> torch.Tensor:
    """xi (n, T, d) plus the class signals of the labels ``clean_y`` (n,): a new (n, T, d)."""
    x = xi.clone()
    coef = signal_coefficients(clean_y, xi.shape[1], rho).to(xi.dtype) * mu_norm  # (n, T, 2)
    x[:, :, :2] += coef
    return x


def draw_token_noise(
    n: int = 20,
    n_test: int = 1000,
    T: int = 8,
    d: int = 2000,
    eta: float = 0.2,
    sigma: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TokenNoise:
    """Draw the labels, the label-noise pattern and the Gaussian token noise.

    Training stream ``(seed, "train")``, in this order: the label permutation, ``xi_train``
    (n, T, d), then the flipped samples. Test stream ``(seed, "test")``: the label permutation,
    ``xi_test`` (N, T, d). So the noise depends on ``(seed, n, T, d)`` only.

    Label noise flips exactly ``k = ceil(n * eta)`` samples: ``ceil(k / 2)`` chosen uniformly among
    the ``Y* = +1`` samples and ``floor(k / 2)`` among the ``Y* = -1`` ones (the extra flip of an
    odd ``k`` goes to class +1). Labels are balanced: ``ceil(n/2)`` of +1 and ``floor(n/2)`` of -1.
    """
    if T < 3:
        raise ConfigError("T", f"needs the three structured tokens, T >= 3, got {T}")
    if n < 1 or n_test < 1 or d < 2:
        raise ConfigError("n/n_test/d", f"need n >= 1, n_test >= 1, d >= 2; got {n}, {n_test}, {d}")
    if not 0.0 <= eta <= 1.0:
        raise ConfigError("eta", f"must be in [0, 1], got {eta}")
    if sigma <= 0:
        raise ConfigError("sigma", f"must be > 0, got {sigma}")
    k = num_flips(n, eta)
    k_pos, k_neg = (k + 1) // 2, k // 2
    n_pos, n_neg = (n + 1) // 2, n // 2
    if k_pos > n_pos or k_neg > n_neg:
        raise ConfigError("eta", f"cannot flip {k_pos}+{k_neg} labels of {n_pos}+{n_neg} samples")

    g = make_generator(seed, "train")
    clean_y = balanced_labels(n, g)
    xi_train = torch.randn(n, T, d, generator=g).mul_(sigma)
    noisy = torch.zeros(n, dtype=torch.bool)
    for cls, count in ((1.0, k_pos), (-1.0, k_neg)):
        members = torch.nonzero(clean_y == cls).flatten()
        chosen = members[torch.randperm(members.numel(), generator=g)[:count]]
        noisy[chosen] = True

    g_test = make_generator(seed, "test")
    y_test = balanced_labels(n_test, g_test)
    xi_test = torch.randn(n_test, T, d, generator=g_test).mul_(sigma)
    return TokenNoise(
        xi_train=xi_train.to(dtype),
        clean_y_train=clean_y.to(dtype),
        noisy_mask=noisy,
        xi_test=xi_test.to(dtype),
        y_test=y_test.to(dtype),
        eta=float(eta),
        sigma=float(sigma),
        seed=int(seed),
    )


def make_token_data(
    n: int = 20,
    n_test: int = 1000,
    T: int = 8,
    d: int = 2000,
    mu_norm: float = 20.0,
    rho: float = 0.1,
    eta: float = 0.2,
    sigma: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TokenData:
    """One draw of the token-selection task (pure: same arguments, same tensors).

    Defaults are the paper's synthetic setting: n = 20, T = 8, d = 2000, ||mu|| = 20,
    rho = 0.1, eta = 0.2 (4 flipped labels, 2 per class), sigma = 1, 1000 clean test samples.
    See :func:`draw_token_noise` for the random streams and the label-noise rule.
    """
    noise = draw_token_noise(n, n_test, T, d, eta, sigma, seed, dtype)
    return noise.with_signal(mu_norm, rho)
