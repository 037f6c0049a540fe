"""PAC-Bayes bounds, every formula in nats.

Notation: m training examples, posterior Q, prior P fixed before seeing the data, r the
empirical 0-1 error of the stochastic network (w ~ Q), e its true error, delta the failure
probability.

- Bernoulli kl: kl(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p)).
- ``kl_inverse(q, c)`` = sup {p in [q, 1] : kl(q || p) <= c}, by bisection (kl(q || .) is
  increasing on [q, 1]).
- Maurer / Seeger (the kl form): with probability >= 1 - delta,
  kl(r || e) <= (KL(Q || P) + log(2 sqrt(m) / delta)) / m, so e <= kl_inverse(r, that).
- The authors' closed form (Sakamoto & Sato 2022, their ``pacbayes_bound.py``): with
  B = (KL + log(2 sqrt(m) / delta)) / m, e <= min(r + B + sqrt(B (B + 2 r)), r + sqrt(B / 2))
  (two relaxations of the kl form: the first from kl(r||e) >= (e - r)^2 / (2 e), the second
  Pinsker's).
- Monte-Carlo correction (Langford & Caruana 2002): r is estimated from n i.i.d. [0, 1]-valued
  draws (each the error of one weight sample on a batch); with probability >= 1 - delta',
  r <= kl_inverse(r_hat, log(2 / delta') / n).

The spike-and-slab KL (the authors' definition): for each prunable weight the prior is
s delta_0 + (1 - s) N(theta0_i, sigma_P,i^2) (s the sparsity) and the posterior is
N(theta_i, sigma_i^2) on kept weights, exactly 0 on pruned ones. Then

  KL = sum_kept [KL(N(theta_i, sigma_i^2) || N(theta0_i, sigma_P,i^2)) - log(1 - s)]
       + sum_pruned [-log s]
     = sum_kept KL_gauss,i + d H_b(s)          (when exactly s d of the d weights are pruned),

H_b(s) = -s log s - (1 - s) log(1 - s): the mask's description length. The Gaussian KL is
KL_gauss,i = 0.5 [(sigma_i^2 + Delta_i^2) / sigma_P,i^2 - 1 + log(sigma_P,i^2 / sigma_i^2)],
Delta = theta - theta0. The authors pick sigma_P,i^2 = sigma_i^2 + Delta_i^2 for every
coordinate (the minimizer), giving 0.5 log(1 + Delta_i^2 / sigma_i^2). That choice looks at the
data, so their quantity is not a certificate; ``certified_bound`` instead uses one prior
variance from a fixed grid, paying log(grid size) by a union bound (with the grid of
sparsities the run could have chosen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def kl_bernoulli(q: float, p: float) -> float:
    """kl(q || p) between Bernoulli(q) and Bernoulli(p), with 0 log 0 = 0. Written with
    log1p of (p - q) so that near p = q, where kl ~ (p - q)^2 / (2 q (1 - q)), it keeps its
    relative precision (the plain form loses it to cancellation, which would cap
    ``kl_inverse``'s accuracy at about sqrt(machine epsilon) for small c)."""
    if p <= 0 or p >= 1:
        if (p <= 0 and q > 0) or (p >= 1 and q < 1):
            return math.inf
        return 0.0
    t = p - q
    out = 0.0
    if q > 0:
        out -= q * math.log1p(t / q)
    if q < 1:
        out -= (1 - q) * math.log1p(-t / (1 - q))
    return max(out, 0.0)


def kl_inverse(q: float, c: float, tol: float = 1e-12) -> float:
    """sup {p in [q, 1] : kl(q || p) <= c} by bisection to ``tol`` (1 when c is large)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if c < 0:
        raise ValueError(f"c must be >= 0, got {c}")
    if q >= 1.0 or kl_bernoulli(q, 1.0) <= c:
        return 1.0
    lo, hi = q, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if kl_bernoulli(q, mid) > c:
            hi = mid
        else:
            lo = mid
    return hi  # the upper end: an upper bound stays on the conservative side


def binary_entropy(s: float) -> float:
    """H_b(s) in nats."""
    return -sum(p * math.log(p) for p in (s, 1 - s) if p > 0)


def authors_bound(r: float, kl: float, m: int, delta: float = 0.01) -> float:
    """min(r + B + sqrt(B (B + 2 r)), r + sqrt(B / 2)), B = (KL + log(2 sqrt(m) / delta)) / m."""
    b = (kl + math.log(2 * math.sqrt(m) / delta)) / m
    return min(r + b + math.sqrt(b * (b + 2 * r)), r + math.sqrt(b / 2))


def mc_error_upper(r_hat: float, n: int, delta: float = 0.01) -> float:
    """Langford & Caruana: the error of Q is <= kl_inverse(r_hat, log(2 / delta) / n) with
    probability >= 1 - delta over n i.i.d. draws averaging to r_hat."""
    return kl_inverse(r_hat, math.log(2 / delta) / n)


def certified_bound(
    r_hat: float,
    n_mc: int,
    kl: float,
    m: int,
    union_size: int = 1,
    delta: float = 0.01,
    delta_mc: float = 0.01,
) -> float:
    """A PAC-Bayes certificate, holding with probability >= 1 - delta - delta_mc:
    e <= kl_inverse(r_up, (KL + log(union_size) + log(2 sqrt(m) / delta)) / m), with
    r_up = ``mc_error_upper(r_hat, n_mc, delta_mc)`` and ``union_size`` the number of priors the
    bound was allowed to pick from (each gets delta / union_size)."""
    r_up = mc_error_upper(r_hat, n_mc, delta_mc)
    c = (kl + math.log(union_size) + math.log(2 * math.sqrt(m) / delta)) / m
    return kl_inverse(r_up, c)


def gaussian_kl_oracle(delta: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sum_i 0.5 log(1 + Delta_i^2 / sigma_i^2): KL(N(theta, sigma^2) || N(theta0, sigma_P^2))
    with the per-coordinate prior variance sigma_P,i^2 = sigma_i^2 + Delta_i^2."""
    return 0.5 * torch.log1p(delta.square() / sigma.square()).sum()


def gaussian_kl_shared(delta: torch.Tensor, sigma: torch.Tensor, prior_var: float) -> torch.Tensor:
    """sum_i 0.5 [(sigma_i^2 + Delta_i^2) / lambda - 1 + log(lambda / sigma_i^2)]: the Gaussian
    KL against the prior N(theta0, lambda I)."""
    s2 = sigma.square()
    return 0.5 * ((s2 + delta.square()) / prior_var - 1 + torch.log(prior_var / s2)).sum()


def prior_variance_grid(size: int = 64, low: float = 1e-8, high: float = 1.0) -> list[float]:
    """``size`` prior variances log-spaced over [low, high], fixed before any data."""
    if size == 1:
        return [high]
    return [math.exp(math.log(low) + (math.log(high) - math.log(low)) * j / (size - 1))
            for j in range(size)]  # fmt: skip


@dataclass(frozen=True)
class BoundTerms:
    """The spike-and-slab KL split into its parts (nats)."""

    kl_kept: float
    """The Gaussian KL of the kept prunable weights."""
    kl_mask: float
    """The spike terms: -n_kept log(1 - s) - n_pruned log s (= d H_b(s) when s = pruned / d)."""
    kl_other: float
    """The Gaussian KL of the parameters that are never pruned (biases, output layer, ...)."""
    n_kept: int
    n_pruned: int

    @property
    def total(self) -> float:
        return self.kl_kept + self.kl_mask + self.kl_other


def spike_and_slab_kl(
    delta_prunable: torch.Tensor,
    sigma_prunable: torch.Tensor,
    kept: torch.Tensor,
    delta_other: torch.Tensor,
    sigma_other: torch.Tensor,
    sparsity: float | None = None,
    prior_var: float | None = None,
) -> BoundTerms:
    """The spike-and-slab KL of flat vectors: the prunable coordinates (Delta, sigma, and the
    0/1 ``kept`` mask) and the others. ``sparsity`` defaults to the pruned fraction;
    ``prior_var`` None: the authors' per-coordinate prior variance (``gaussian_kl_oracle``),
    else the shared prior N(theta0, prior_var) (``gaussian_kl_shared``)."""
    keep = kept.bool()
    n_kept, n_pruned = int(keep.sum()), int((~keep).sum())
    s = n_pruned / (n_kept + n_pruned) if sparsity is None else sparsity
    if (n_pruned and s <= 0) or (n_kept and s >= 1):
        raise ValueError(f"sparsity {s} gives a prior without mass on this mask")
    kl = gaussian_kl_oracle if prior_var is None else (
        lambda d, sg: gaussian_kl_shared(d, sg, prior_var))  # fmt: skip
    kl_kept = float(kl(delta_prunable[keep].double(), sigma_prunable[keep].double()))
    kl_other = float(kl(delta_other.double(), sigma_other.double())) if delta_other.numel() else 0.0
    mask_kl = (-n_kept * math.log1p(-s) if n_kept else 0.0) + (
        -n_pruned * math.log(s) if n_pruned else 0.0
    )
    return BoundTerms(kl_kept, mask_kl, kl_other, n_kept, n_pruned)


def best_shared_prior(
    delta_prunable: torch.Tensor,
    sigma_prunable: torch.Tensor,
    kept: torch.Tensor,
    delta_other: torch.Tensor,
    sigma_other: torch.Tensor,
    grid: Sequence[float],
) -> tuple[float, BoundTerms]:
    """The grid's prior variance with the smallest spike-and-slab KL, and that KL."""
    terms = [
        (spike_and_slab_kl(delta_prunable, sigma_prunable, kept, delta_other, sigma_other,
                           prior_var=v), v)
        for v in grid
    ]  # fmt: skip
    t, v = min(terms, key=lambda tv: tv[0].total)
    return v, t
