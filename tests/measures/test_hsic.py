"""nHSIC against a dense numpy computation with explicit inverses, plus sanity properties."""

import numpy as np
import pytest
import torch

from genlab.measures import (
    gaussian_kernel,
    nhsic,
    nhsic_batch,
    normalized_gram,
    normalized_grams,
    trace_product,
    trace_products,
)


def np_gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    a = a.reshape(a.shape[0], -1)
    m, dim = a.shape
    k = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            k[i, j] = np.exp(-np.sum((a[i] - a[j]) ** 2) / (2 * sigma**2 * dim))
    return k


def np_normalized(a: np.ndarray, sigma=5.0, eps=1e-5, labels=False) -> tuple[np.ndarray, float]:
    """R = K (K + eps m I)^-1 with an explicit inverse, and the 2-norm condition number of the
    regularized matrix K + eps m I that it inverts."""
    m = a.shape[0]
    if labels:
        onehot = np.zeros((m, int(a.max()) + 1))
        onehot[np.arange(m), a] = 1.0
        k = onehot @ onehot.T
    else:
        k = np_gaussian(a, sigma) @ (np.eye(m) - np.ones((m, m)) / m)
    regularized = k + eps * m * np.eye(m)
    return k @ np.linalg.inv(regularized), float(np.linalg.cond(regularized))


def np_nhsic(x: np.ndarray, z: np.ndarray, sigma=5.0, eps=1e-5, labels=False) -> float:
    rx, _ = np_normalized(x, sigma, eps)
    rz, _ = np_normalized(z, sigma, eps, labels)
    return float(np.trace(rx @ rz))


EPS64 = np.finfo(np.float64).eps  # machine epsilon (not the regularizer eps)


def nhsic_rtol(x: np.ndarray, z: np.ndarray, sigma=5.0, eps=1e-5, labels=False) -> float:
    """Relative round-off between two float64 evaluations of tr(R_x R_z) on m samples (solve vs
    explicit inverse, batched vs single): each R is forward accurate to ~ m eps cond(K + eps m I),
    and the trace of the product inherits the errors of both sides."""
    conds = np_normalized(x, sigma, eps)[1] + np_normalized(z, sigma, eps, labels)[1]
    return 2 * x.shape[0] * EPS64 * conds


def test_gaussian_kernel_matches_loops_on_flattened_inputs():
    a = torch.randn(20, 3, 4, generator=torch.Generator().manual_seed(0))
    k = gaussian_kernel(a, sigma=0.7)
    assert k.dtype == torch.float64
    # ||a||^2 + ||b||^2 - 2 a.b cancels: dist^2 is off by <~ 2 D eps (||a||^2 + ||b||^2), which
    # exp(-dist^2 / (2 sigma^2 D)) turns into a relative error of eps (||a||^2 + ||b||^2) / sigma^2.
    max_sq = float(a.double().flatten(1).square().sum(1).max())
    rtol = 4 * EPS64 * (1 + 2 * max_sq / 0.7**2)
    np.testing.assert_allclose(k.numpy(), np_gaussian(a.double().numpy(), 0.7), rtol=rtol)


@pytest.mark.parametrize("sigma,eps", [(5.0, 1e-5), (0.5, 1e-3)])
def test_batch_matches_dense_numpy(sigma, eps):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 7, generator=g)
    z = x[:, :3] ** 2 + 0.3 * torch.randn(60, 3, generator=g)
    got = nhsic_batch(x, z, sigma=sigma, eps=eps)
    xd, zd = x.double().numpy(), z.double().numpy()
    want = np_nhsic(xd, zd, sigma, eps)
    assert got == pytest.approx(want, rel=nhsic_rtol(xd, zd, sigma, eps), abs=0)


def test_label_kernel_matches_dense_numpy_for_int_and_onehot_labels():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 4, (50,), generator=g)
    x = torch.randn(50, 5, generator=g) + y[:, None].float()
    want = np_nhsic(x.double().numpy(), y.numpy(), labels=True)
    rtol = nhsic_rtol(x.double().numpy(), y.numpy(), labels=True)
    assert nhsic_batch(x, y, label_kernel=True) == pytest.approx(want, rel=rtol, abs=0)
    onehot = torch.nn.functional.one_hot(y, 6).float()  # extra empty classes change nothing
    assert nhsic_batch(x, onehot, label_kernel=True) == pytest.approx(want, rel=rtol, abs=0)
    assert nhsic_batch(x, y, label_kernel=True, num_classes=9) == pytest.approx(
        want, rel=rtol, abs=0
    )


def test_average_over_consecutive_batches_drops_the_short_tail():
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(130, 4, generator=g), torch.randn(130, 2, generator=g)
    batches = [
        (x[i : i + 40].double().numpy(), z[i : i + 40].double().numpy()) for i in (0, 40, 80)
    ]
    want = np.mean([np_nhsic(xb, zb) for xb, zb in batches])
    # A mean of positive values: at most the largest relative error of one batch.
    rtol = max(nhsic_rtol(xb, zb) for xb, zb in batches)
    assert nhsic(x, z, batch_size=40) == pytest.approx(want, rel=rtol, abs=0)
    with pytest.raises(ValueError, match="batch_size"):
        nhsic(x, z, batch_size=200)


def test_dependence_is_larger_than_independence():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 6, generator=g)
    z_indep = torch.randn(200, 6, generator=g)
    z_dep = torch.tanh(x @ torch.randn(6, 6, generator=g))
    self_value = nhsic(x, x)
    # nhsic(x, x) is tr(R_x^2) on each batch.
    kx = gaussian_kernel(x[:100])
    kx = kx - kx.mean(1, keepdim=True)
    rx = kx @ torch.linalg.inv(kx + 1e-5 * 100 * torch.eye(100, dtype=torch.float64))
    rtol = nhsic_rtol(x[:100].double().numpy(), x[:100].double().numpy())
    assert nhsic_batch(x[:100], x[:100]) == pytest.approx(
        float(torch.trace(rx @ rx)), rel=rtol, abs=0
    )
    assert self_value > nhsic(x, z_dep) > 1.3 * nhsic(x, z_indep)
    # Labels that carry x's information score higher than shuffled labels.
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    perm = torch.randperm(200, generator=g)
    assert nhsic(x, y, label_kernel=True) > 1.5 * nhsic(x, y[perm], label_kernel=True)


def test_reused_normalized_grams_give_the_dense_reference():
    # The grokking meter builds R_x and R_y once and only R_z per step.
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=(30, 12)), rng.normal(size=(30, 5))
    y = rng.integers(0, 4, size=30)
    r_x = normalized_gram(torch.from_numpy(x))
    r_y = normalized_gram(torch.from_numpy(y), label_kernel=True, num_classes=4)
    r_z = normalized_gram(torch.from_numpy(z))
    assert np.isclose(trace_product(r_x, r_z), np_nhsic(x, z), rtol=nhsic_rtol(x, z), atol=0)
    want = np_nhsic(z, y, labels=True)
    assert np.isclose(trace_product(r_z, r_y), want, rtol=nhsic_rtol(z, y, labels=True), atol=0)


def test_batched_normalized_grams_give_the_dense_reference_per_batch():
    # Three batches of 25 at once (the meter's Z side) against the dense numpy form of each.
    rng = np.random.default_rng(4)
    x, z = rng.normal(size=(3, 25, 2, 6)), rng.normal(size=(3, 25, 7))
    r_x, r_z = normalized_grams(torch.from_numpy(x)), normalized_grams(torch.from_numpy(z))
    assert r_x.shape == r_z.shape == (3, 25, 25)
    got = trace_products(r_x, r_z)
    for j in range(3):
        xj = x[j].reshape(25, -1)
        assert np.isclose(float(got[j]), np_nhsic(xj, z[j]), rtol=nhsic_rtol(xj, z[j]), atol=0)
        # Batched and single LU solves of the same 25 x 25 system: normwise forward error
        # <~ m eps cond(K + eps m I) ||R||_F (the entries are ~12, cond ~1e5).
        single = normalized_gram(torch.from_numpy(z[j]))
        r_ref, cond = np_normalized(z[j])
        atol = z.shape[1] * EPS64 * cond * float(np.linalg.norm(r_ref))
        assert torch.allclose(r_z[j], single, rtol=0, atol=atol)
