"""The stochastic network of the lottery bound."""

import math

import pytest
import torch
from torch import nn

from genlab.bounds import authors_bound, certified_bound, spike_and_slab_kl
from genlab.bounds.posterior import (
    GaussianPosterior,
    bounded_cross_entropy,
    fit_posterior,
    lottery_bound,
    stochastic_error,
)
from genlab.pruning import full_mask, prunable_weights, prune


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    mask = prune(dict(net.named_parameters()), full_mask(net, prunable_weights(net)), 0.5)
    with torch.no_grad():
        net[0].weight.mul_(mask["0.weight"])
    return net, init, mask, x, y


def test_bounded_cross_entropy_is_in_unit_interval_and_matches_by_hand():
    logits = torch.tensor([[10.0, -10.0], [-30.0, 30.0]])
    y = torch.tensor([0, 0])
    got = float(bounded_cross_entropy(logits, y, p_min=1e-4))
    p0 = float(torch.softmax(logits[0], 0)[0])
    assert got == pytest.approx((-math.log(p0) + math.log(1e4)) / 2 / math.log(1e4))
    assert 0 <= got <= 1


def test_samples_keep_pruned_weights_at_zero_and_have_the_stated_spread():
    net, init, mask, *_ = _setup()
    post = GaussianPosterior(net, mask, init, rho_init=-1.0)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([post.sample(g)["0.weight"] for _ in range(400)])
    assert torch.all(draws[:, mask["0.weight"] == 0] == 0)
    sigma = math.log1p(math.exp(-1.0))
    kept = draws[:, mask["0.weight"] == 1] - net[0].weight.detach()[mask["0.weight"] == 1]
    assert float(kept.std()) == pytest.approx(sigma, rel=0.03)


def test_oracle_kl_and_flat_terms_agree():
    net, init, mask, *_ = _setup()
    post = GaussianPosterior(net, mask, init, rho_init=-3.0)
    t = spike_and_slab_kl(**post.flat())
    # the training objective sums in float32 (about 1e-7 relative per term, ~300 terms)
    assert float(post.oracle_gaussian_kl()) == pytest.approx(t.kl_kept + t.kl_other, rel=1e-5)
    # hand count: the first layer's kept weights only (the output layer is not prunable)
    s = math.log1p(math.exp(-3.0))
    d = (net[0].weight.detach() - init["0.weight"])[mask["0.weight"] == 1].double()
    assert t.kl_kept == pytest.approx(float(0.5 * torch.log1p(d**2 / s**2).sum()), rel=1e-6)


def test_fitting_lowers_the_objective_and_the_bound_composes_from_its_parts():
    net, init, mask, x, y = _setup()
    post = GaussianPosterior(net, mask, init)
    history = fit_posterior(post, x, y, steps=150, batch_size=128, lr=0.05)
    assert sum(history[-20:]) / 20 < sum(history[:20]) / 20
    b = lottery_bound(post, x, y, draws=50, batch_size=100, sparsity_grid_size=4,
                      prior_grid=[1e-3, 1e-2, 1e-1])  # fmt: skip
    assert b.authors == pytest.approx(authors_bound(b.r_hat, b.terms.total, 400))
    assert b.certified == pytest.approx(certified_bound(b.r_hat, 50, b.certified_terms.total,
                                                       400, union_size=12))  # fmt: skip
    assert b.certified_terms.total >= b.terms.total  # the oracle prior is the smallest KL
    assert b.r_upper >= b.r_hat


def test_stochastic_error_with_vanishing_noise_is_the_networks_error():
    net, init, mask, x, y = _setup()
    post = GaussianPosterior(net, mask, init, rho_init=-40.0)
    errs = stochastic_error(post, x, y, draws=3, batch_size=400)
    exact = int((net(x).argmax(1) != y).sum()) / 400
    assert all(e == pytest.approx(exact) for e in errs)
