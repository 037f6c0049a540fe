"""PAC-Bayes bounds against independent computations (scipy root finding, closed forms,
explicit sums over coordinates)."""

import math

import pytest
import torch
from scipy.optimize import brentq

from genlab.bounds import (
    authors_bound,
    binary_entropy,
    certified_bound,
    gaussian_kl_oracle,
    gaussian_kl_shared,
    kl_bernoulli,
    kl_inverse,
    mc_error_upper,
    spike_and_slab_kl,
)


@pytest.mark.parametrize("q,c", [(0.0, 0.1), (0.05, 0.01), (0.3, 0.2), (0.5, 1e-6),
                                 (0.9, 0.05), (0.01, 3.0), (1e-4, 1e-3)])  # fmt: skip
def test_kl_inverse_against_brentq(q, c):
    def f(p):
        return kl_bernoulli(q, p) - c

    ref = 1.0 if f(1 - 1e-15) <= 0 else brentq(f, q + 1e-300 if q == 0 else q, 1 - 1e-15,
                                                   xtol=1e-15, rtol=1e-15)  # fmt: skip
    assert kl_inverse(q, c) == pytest.approx(ref, abs=1e-9)
    if ref < 1:
        assert kl_bernoulli(q, kl_inverse(q, c)) == pytest.approx(c, abs=1e-8)


def test_kl_inverse_edge_cases_and_closed_form_at_zero():
    assert kl_inverse(0.2, 0.0) == pytest.approx(0.2, abs=1e-9)
    assert kl_inverse(1.0, 0.5) == 1.0
    # q = 0: kl(0||p) = -log(1 - p), so the inverse is 1 - exp(-c)
    assert kl_inverse(0.0, 0.7) == pytest.approx(1 - math.exp(-0.7), abs=1e-9)
    with pytest.raises(ValueError):
        kl_inverse(-0.1, 1.0)


def test_kl_bernoulli_by_hand():
    assert kl_bernoulli(0.25, 0.5) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))


def test_authors_bound_is_the_min_of_its_two_forms_and_never_below_the_kl_form():
    for r, kl, m in [(0.02, 5000.0, 60000), (0.3, 10.0, 1000), (0.0, 1e5, 50000)]:
        b = (kl + math.log(2 * math.sqrt(m) / 0.01)) / m
        quad, pinsker = r + b + math.sqrt(b * (b + 2 * r)), r + math.sqrt(b / 2)
        assert authors_bound(r, kl, m) == pytest.approx(min(quad, pinsker))
        # both are relaxations of the kl form: never tighter than kl_inverse(r, B)
        assert authors_bound(r, kl, m) >= kl_inverse(r, b) - 1e-9


def test_mc_correction_and_certified_bound_compose():
    r_up = mc_error_upper(0.05, 1000, 0.01)
    assert kl_bernoulli(0.05, r_up) == pytest.approx(math.log(200) / 1000, rel=1e-6)
    m, kl = 50000, 2000.0
    c = (kl + math.log(64 * 16) + math.log(2 * math.sqrt(m) / 0.01)) / m
    assert certified_bound(0.05, 1000, kl, m, union_size=64 * 16) == pytest.approx(
        kl_inverse(r_up, c), abs=1e-9
    )
    # each correction only loosens it
    assert certified_bound(0.05, 1000, kl, m, 1) < certified_bound(0.05, 1000, kl, m, 1024)
    assert certified_bound(0.05, 10**6, kl, m) < certified_bound(0.05, 100, kl, m)


def _gauss_kl(mu_q, s_q, mu_p, s_p):
    return math.log(s_p / s_q) + (s_q**2 + (mu_q - mu_p) ** 2) / (2 * s_p**2) - 0.5


def test_gaussian_kls_against_the_univariate_formula():
    g = torch.Generator().manual_seed(0)
    delta, sigma = (
        torch.randn(50, generator=g, dtype=torch.float64),
        torch.rand(50, generator=g, dtype=torch.float64) + 0.1,
    )
    oracle = sum(_gauss_kl(float(d), float(s), 0.0, math.sqrt(float(s**2 + d**2)))
                 for d, s in zip(delta, sigma))  # fmt: skip
    assert float(gaussian_kl_oracle(delta, sigma)) == pytest.approx(oracle, rel=1e-12)
    shared = sum(_gauss_kl(float(d), float(s), 0.0, math.sqrt(0.3)) for d, s in zip(delta, sigma))
    assert float(gaussian_kl_shared(delta, sigma, 0.3)) == pytest.approx(shared, rel=1e-12)
    # the per-coordinate variance minimizes each term: the oracle is never above a shared one
    for v in (1e-3, 0.1, 1.0, 10.0):
        assert float(gaussian_kl_oracle(delta, sigma)) <= float(gaussian_kl_shared(delta, sigma, v))


def test_spike_and_slab_kl_by_explicit_sum_over_coordinates():
    g = torch.Generator().manual_seed(0)
    d = 40
    delta, sigma = (
        torch.randn(d, generator=g, dtype=torch.float64),
        torch.rand(d, generator=g, dtype=torch.float64) + 0.05,
    )
    kept = (torch.arange(d) % 4 != 0).double()  # 10 pruned
    do, so = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.rand(5, generator=g, dtype=torch.float64) + 0.05,
    )
    t = spike_and_slab_kl(delta, sigma, kept, do, so)
    s = 10 / 40
    ref_kept = sum(0.5 * math.log(1 + float(delta[i]) ** 2 / float(sigma[i]) ** 2)
                   for i in range(d) if kept[i])  # fmt: skip
    ref_mask = sum(-math.log(1 - s) if kept[i] else -math.log(s) for i in range(d))
    ref_other = sum(0.5 * math.log(1 + float(a) ** 2 / float(b) ** 2) for a, b in zip(do, so))
    assert t.kl_kept == pytest.approx(ref_kept, rel=1e-12)
    assert t.kl_mask == pytest.approx(ref_mask, rel=1e-12)
    assert t.kl_mask == pytest.approx(d * binary_entropy(s), rel=1e-12)  # the description length
    assert t.kl_other == pytest.approx(ref_other, rel=1e-12)
    assert (t.n_kept, t.n_pruned) == (30, 10)
    assert t.total == pytest.approx(ref_kept + ref_mask + ref_other)
    # a dense network (s = 0) has no mask term: the spike-and-slab KL is the Gaussian KL
    dense = spike_and_slab_kl(delta, sigma, torch.ones(d), do, so)
    assert dense.kl_mask == 0.0
    with pytest.raises(ValueError):
        spike_and_slab_kl(delta, sigma, kept, do, so, sparsity=0.0)
