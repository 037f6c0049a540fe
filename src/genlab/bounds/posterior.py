"""The stochastic network of a PAC-Bayes bound: a Gaussian posterior around frozen trained
weights, its standard deviations fitted to minimize the authors' bound.

Posterior: w_i = theta_i + m_i sigma_i eps_i, eps ~ N(0, 1), sigma_i = softplus(rho_i) (one rho
per scalar parameter, initialized to ``rho_init``, the authors' -4: sigma ~ 0.018); m_i = 0 on
pruned weights, which stay exactly 0. Only rho is trained (Adam; the authors use SGD with
momentum 0.95), on the bounded cross-entropy surrogate
    l(x, y) = -log(max(p_y(x), p_min)) / log(1 / p_min)  in [0, 1]
(the authors' code divides by log 10 with p_min = 1e-4, a value in [0, 4]; we divide by
log(1 / p_min) so the surrogate is bounded by 1, as the bound's risk must be), one weight sample
per mini-batch, plugged into ``authors_bound`` with the per-coordinate KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from genlab.bounds.pac_bayes import (
    BoundTerms,
    authors_bound,
    best_shared_prior,
    certified_bound,
    mc_error_upper,
    prior_variance_grid,
    spike_and_slab_kl,
)


def bounded_cross_entropy(logits: torch.Tensor, y: torch.Tensor, p_min: float = 1e-4):
    """mean of -log(max(softmax(logits)_y, p_min)) / log(1 / p_min), each term in [0, 1]."""
    logp = torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
    return (-logp.clamp_min(math.log(p_min))).mean() / math.log(1 / p_min)


class GaussianPosterior(nn.Module):
    """N(theta, diag(m sigma)^2) around ``model``'s current (frozen) weights. ``mask``: name ->
    0/1 tensor of the prunable weights; ``init_state``: the prior means theta_0."""

    def __init__(
        self,
        model: nn.Module,
        mask: dict[str, torch.Tensor],
        init_state: dict[str, torch.Tensor],
        rho_init: float = -4.0,
    ):
        super().__init__()
        self.model = model
        named = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.names = list(named)
        self.means = {k: p.detach().clone() for k, p in named.items()}
        self.mask = {k: mask[k].to(p.dtype) for k, p in named.items() if k in mask}
        for k, m in self.mask.items():  # the spike-and-slab KL assumes pruned means are 0
            if bool((self.means[k][m == 0] != 0).any()):
                raise ValueError(f"{k}: pruned weights must be exactly 0 in the posterior mean")
        self.init = {k: init_state[k].detach().to(p.dtype) for k, p in named.items()}
        self.rho = nn.ParameterDict(
            {
                k.replace(".", "/"): nn.Parameter(torch.full_like(p, rho_init))
                for k, p in named.items()
            }
        )
        self.buffers_ = dict(model.named_buffers())

    def sigma(self, name: str) -> torch.Tensor:
        return nn.functional.softplus(self.rho[name.replace(".", "/")])

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for k in self.names:
            eps = torch.randn(self.means[k].shape, generator=generator, dtype=self.means[k].dtype)
            noise = self.sigma(k) * eps
            if k in self.mask:
                noise = noise * self.mask[k]
            out[k] = self.means[k] + noise
        return out

    def logits(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.model, {**params, **self.buffers_}, (x,))

    def flat(self) -> dict[str, torch.Tensor]:
        """Flat Delta, sigma and kept of the prunable coordinates, and Delta, sigma of the
        others (detached)."""

        def cat(parts):
            return torch.cat([p.reshape(-1) for p in parts]) if parts else torch.zeros(0)

        prunable = [k for k in self.names if k in self.mask]
        other = [k for k in self.names if k not in self.mask]
        with torch.no_grad():
            return {
                "delta_prunable": cat([self.means[k] - self.init[k] for k in prunable]),
                "sigma_prunable": cat([self.sigma(k) for k in prunable]),
                "kept": cat([self.mask[k] for k in prunable]),
                "delta_other": cat([self.means[k] - self.init[k] for k in other]),
                "sigma_other": cat([self.sigma(k) for k in other]),
            }

    def oracle_gaussian_kl(self) -> torch.Tensor:
        """The differentiable part of the authors' KL: the per-coordinate Gaussian terms of the
        kept and the never-pruned weights (pruned ones carry no Gaussian term), summed in the
        parameters' precision (the reported KL is recomputed in float64 by ``flat``)."""
        total = torch.zeros(())
        for k in self.names:
            term = torch.log1p((self.means[k] - self.init[k]).square() / self.sigma(k).square())
            total = total + 0.5 * (term * self.mask[k] if k in self.mask else term).sum()
        return total


def fit_posterior(
    posterior: GaussianPosterior,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-2,
    delta: float = 0.01,
    seed: int = 0,
) -> list[float]:
    """Adam on rho minimizing authors_bound(surrogate, KL, m) (the mask's constant KL
    included); returns the objective per step. m = len(y)."""
    m = len(y)
    mask_kl = float(spike_and_slab_kl(**posterior.flat()).kl_mask)
    opt = torch.optim.Adam(posterior.rho.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    log_term = math.log(2 * math.sqrt(m) / delta)
    history = []
    was_training = posterior.model.training
    posterior.model.eval()
    for _ in range(steps):
        idx = torch.randint(0, m, (min(batch_size, m),), generator=g)
        risk = bounded_cross_entropy(posterior.logits(x[idx], posterior.sample(g)), y[idx])
        b = (posterior.oracle_gaussian_kl() + mask_kl + log_term) / m
        r = risk
        objective = torch.minimum(r + b + torch.sqrt(b * (b + 2 * r)), r + torch.sqrt(b / 2))
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        history.append(float(objective.detach()))
    posterior.model.train(was_training)
    return history


@torch.no_grad()
def stochastic_error(
    posterior: GaussianPosterior,
    x: torch.Tensor,
    y: torch.Tensor,
    draws: int,
    batch_size: int,
    seed: int = 0,
) -> list[float]:
    """``draws`` i.i.d. [0, 1]-valued estimates of the stochastic network's training error:
    each a fresh weight sample on a batch drawn uniformly without replacement (so their mean is unbiased and the
    Langford-Caruana correction applies with n = draws)."""
    g = torch.Generator().manual_seed(seed)
    was_training = posterior.model.training
    posterior.model.eval()
    errors = []
    for _ in range(draws):
        idx = torch.randperm(len(y), generator=g)[:batch_size]  # a uniform batch
        pred = posterior.logits(x[idx], posterior.sample(g)).argmax(-1)
        errors.append(float((pred != y[idx]).double().mean()))
    posterior.model.train(was_training)
    return errors


@dataclass(frozen=True)
class LotteryBound:
    """The authors' spike-and-slab bound beside a certificate for the same posterior."""

    r_hat: float
    """Mean 0-1 training error of the stochastic network over the Monte-Carlo draws."""
    r_upper: float
    """Its Langford-Caruana upper confidence limit (delta_mc)."""
    terms: BoundTerms
    """The authors' KL (per-coordinate prior variance) in its parts."""
    authors: float
    """authors_bound(r_hat, KL, m, delta): their quantity, not a certificate."""
    certified_terms: BoundTerms
    """The KL against the best shared prior variance of the grid."""
    prior_var: float
    certified: float
    """certified_bound(...): kl-inverse form, union bound over the prior-variance grid and
    the sparsity grid, Monte-Carlo correction; holds with probability >= 1 - delta - delta_mc."""
    m: int
    draws: int


def lottery_bound(
    posterior: GaussianPosterior,
    x: torch.Tensor,
    y: torch.Tensor,
    draws: int,
    batch_size: int,
    sparsity_grid_size: int,
    prior_grid: list[float] | None = None,
    delta: float = 0.01,
    delta_mc: float = 0.01,
    seed: int = 0,
) -> LotteryBound:
    """Both bounds for a fitted posterior on the training set (x, y). ``sparsity_grid_size``:
    how many sparsities the run could have picked the ticket from (its IMP levels)."""
    grid = prior_grid if prior_grid is not None else prior_variance_grid()
    # draws from their own stream, independent of the one the posterior was fitted with
    errors = stochastic_error(posterior, x, y, draws, batch_size, seed + 1)
    r_hat = sum(errors) / draws
    flat = posterior.flat()
    terms = spike_and_slab_kl(**flat)
    prior_var, cert_terms = best_shared_prior(**flat, grid=grid)
    m = len(y)
    return LotteryBound(
        r_hat=r_hat,
        r_upper=mc_error_upper(r_hat, draws, delta_mc),
        terms=terms,
        authors=authors_bound(r_hat, terms.total, m, delta),
        certified_terms=cert_terms,
        prior_var=prior_var,
        certified=certified_bound(
            r_hat,
            draws,
            cert_terms.total,
            m,
            union_size=len(grid) * sparsity_grid_size,
            delta=delta,
            delta_mc=delta_mc,
        ),  # fmt: skip
        m=m,
        draws=draws,
    )
