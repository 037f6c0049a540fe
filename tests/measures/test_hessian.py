"""Hessian measures against the dense Hessian built by autograd (torch.func.hessian) in
float64 on a small MLP, with and without a pruning mask."""

import math

import pytest
import torch
from torch import nn
from torch.func import hessian

from genlab.measures.hessian import (
    HessianOperator,
    hessian_eigenvalues,
    hessian_trace,
    lanczos,
    spectral_density,
)

LOSS = nn.functional.cross_entropy


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]  # unequal batches: weighted mean
    op = HessianOperator(model, LOSS, batches)
    dense = hessian(op.loss)(op.theta)
    mask = {
        "0.weight": (torch.rand(8, 5, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    }
    keep = HessianOperator(model, LOSS, batches, mask).mask.bool()
    return model, batches, dense, mask, keep


def test_operator_loss_is_the_mean_loss_over_all_samples(problem):
    model, batches, *_ = problem
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    op = HessianOperator(model, LOSS, batches)
    assert torch.allclose(op.loss(op.theta), LOSS(model(x), y), rtol=1e-12)


def test_products_match_the_dense_hessian_single_and_batched(problem):
    model, batches, dense, *_ = problem
    op = HessianOperator(model, LOSS, batches)
    v = torch.randn(3, dense.shape[0], dtype=torch.float64)
    # a float64 product of n terms of size max|H| |v|: round-off ~ n eps max|H| |v|_inf
    n = dense.shape[0]
    tol = 16 * n * torch.finfo(torch.float64).eps * float(dense.abs().max() * v.abs().max())
    assert torch.allclose(op(v), v @ dense, rtol=0, atol=tol)
    assert torch.allclose(op(v[0]), dense @ v[0], rtol=0, atol=tol)


@pytest.mark.parametrize("masked", [False, True])
def test_top_eigenvalues_match_the_dense_spectrum(problem, masked):
    model, batches, dense, mask, keep = problem
    ref = torch.linalg.eigvalsh(dense[keep][:, keep] if masked else dense).flip(0)[:3]
    got = hessian_eigenvalues(model, LOSS, batches, k=3, tol=1e-10, max_iter=200,
                              mask=mask if masked else None)  # fmt: skip
    assert torch.allclose(got, ref, rtol=1e-4), (got, ref)


def test_eigenvalues_in_float32_agree_with_float64_to_float32_round_off(problem):
    model, batches, dense, *_ = problem
    ref = torch.linalg.eigvalsh(dense).flip(0)[:2]
    m32 = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    got = hessian_eigenvalues(m32, LOSS, [(x.float(), y) for x, y in batches], k=2, tol=1e-6)
    # float32 products carry ~1e-7 relative error per entry, amplified by the gaps (~0.04 / 0.6)
    assert torch.allclose(got, ref, rtol=1e-4), (got, ref)


@pytest.mark.parametrize("masked", [False, True])
def test_trace_matches_the_dense_trace_within_its_standard_error(problem, masked):
    model, batches, dense, mask, keep = problem
    ref = float((dense[keep][:, keep] if masked else dense).trace())
    est = hessian_trace(model, LOSS, batches, probes=400, batch=50,
                        mask=mask if masked else None)  # fmt: skip
    assert abs(est.value - ref) < 4 * est.stderr, (est, ref)
    # the stated error is honest: the Rademacher variance is 2 sum_{i != j} H_ij^2
    H = dense[keep][:, keep] if masked else dense
    exact_se = math.sqrt(2 * float(H.square().sum() - H.diag().square().sum()) / 400)
    assert 0.7 < est.stderr / exact_se < 1.3


def test_lanczos_with_full_steps_gives_the_exact_spectrum():
    torch.manual_seed(0)
    a = torch.randn(12, 12, dtype=torch.float64)
    sym = a + a.T
    alpha, beta = lanczos(lambda v: sym @ v, torch.randn(12, dtype=torch.float64), 12)
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    assert torch.allclose(torch.linalg.eigvalsh(T), torch.linalg.eigvalsh(sym), atol=1e-10)


def test_slq_quadrature_is_exact_for_polynomials_of_low_degree(problem):
    """With m Lanczos steps, Gauss quadrature is exact for polynomials of degree <= 2m - 1:
    sum_j tau_j theta_j^p = v^T H^p v / ||v||^2 for the probe's Rademacher v."""
    model, batches, dense, *_ = problem
    sd = spectral_density(model, LOSS, batches, steps=10, probes=1, seed=3)
    g = torch.Generator().manual_seed(3)
    v = (torch.randint(0, 2, (dense.shape[0],), generator=g) * 2 - 1).double()
    for p in (1, 2, 5):
        ref = float(v @ torch.linalg.matrix_power(dense, p) @ v / (v @ v))
        assert sd.moment(lambda t, p=p: t**p) == pytest.approx(ref, rel=1e-8, abs=1e-14)
    grid = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    mass = float(sd.density(grid, 0.05).sum() * (grid[1] - grid[0]))
    assert mass == pytest.approx(1.0, abs=1e-3)  # a density: integrates to one


def test_mask_with_unknown_name_is_refused(problem):
    model, batches, *_ = problem
    with pytest.raises(KeyError, match="no.such"):
        HessianOperator(model, LOSS, batches, {"no.such": torch.ones(1)})


@pytest.mark.parametrize("masked", [False, True])
def test_hutch_plus_plus_is_unbiased_and_exact_once_its_sketch_spans_the_space(problem, masked):
    model, batches, dense, mask, keep = problem
    H = dense[keep][:, keep] if masked else dense
    ref = float(H.trace())
    m = mask if masked else None
    est = hessian_trace(model, LOSS, batches, probes=60, mask=m, method="hutch++")
    assert est.probes == 60 and abs(est.value - ref) < 4 * est.stderr + 1e-12 * abs(ref)
    # a sketch of >= dim vectors captures all of H: the residual part vanishes
    full = hessian_trace(model, LOSS, batches, probes=3 * H.shape[0], mask=m, method="hutch++")
    assert full.value == pytest.approx(ref, rel=1e-9) and full.stderr < 1e-9 * abs(ref)
