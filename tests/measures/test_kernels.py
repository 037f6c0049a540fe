"""Kernel measures against references written here: nHSIC against a dense numpy computation
with explicit inverses; HSIC against its V- and U-statistic definitions (loops); CKA against
centered numpy Grams; random-feature estimates against the exact values."""

import itertools

import numpy as np
import pytest
import torch

from genlab.measures import (
    cka,
    gaussian_kernel,
    hsic,
    hsic_features,
    median_distance,
    nhsic,
    nhsic_approx,
    nhsic_batch,
    nhsic_features,
    normalized_gram,
    normalized_grams,
    nystrom_features,
    rff_features,
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


# ---------------------------------------------------------------------------------------------
# HSIC and CKA against loop references


def np_median_distance(a: np.ndarray) -> float:
    a = a.reshape(a.shape[0], -1)
    m = a.shape[0]
    dists = [np.linalg.norm(a[i] - a[j]) for i in range(m) for j in range(i + 1, m)]
    median = float(np.median(dists))
    return median if median > 0 else 1.0


def np_gram(a: np.ndarray, kernel: str, sigma: float | None = None) -> np.ndarray:
    """Loops: a_i.a_j, or exp(-||a_i - a_j||^2 / (2 sigma^2)) (median heuristic if None)."""
    a = a.reshape(a.shape[0], -1)
    m = a.shape[0]
    if kernel == "gaussian" and sigma is None:
        sigma = np_median_distance(a)
    k = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            if kernel == "linear":
                k[i, j] = a[i] @ a[j]
            else:
                k[i, j] = np.exp(-np.sum((a[i] - a[j]) ** 2) / (2 * sigma**2))
    return k


def np_hsic_v(k: np.ndarray, l: np.ndarray) -> float:
    """Biased HSIC from the V-statistic (Gretton et al. 2005): the means over all index tuples
    E_ij[k_ij l_ij] + E_ij[k_ij] E_qr[l_qr] - 2 E_iqr[k_iq l_ir] (= tr(K H L H) / m^2), rescaled
    to the (m - 1)^2 normalisation."""
    m = k.shape[0]
    v = (k * l).sum() / m**2 + k.sum() * l.sum() / m**4 - 2 * (k.sum(1) @ l.sum(1)) / m**3
    return float(v * m**2 / (m - 1) ** 2)


def np_hsic_u(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC as the U-statistic (Song et al. 2012, Theorem 3): the mean over distinct
    (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (averaging over all ordered tuples makes
    the 1/4! symmetrisation of their kernel h redundant)."""
    m = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(m), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def kernel_rel_err(a: np.ndarray, kernel: str, sigma: float | None) -> float:
    """Relative round-off of one Gram entry computed two ways (expansion vs loops).

    Linear: a dot product of length d, <~ d eps max|K|. Gaussian: ||a||^2 + ||b||^2 - 2 a.b is
    off by <~ 2 eps (||a||^2 + ||b||^2), i.e. the exponent by 2 eps max_sq / sigma^2; with the
    median bandwidth, each distance is off by <~ 2 eps max_sq / med relatively, and the exponent
    <= 2 max_sq / sigma^2 moves by twice that relative error."""
    a = a.reshape(a.shape[0], -1)
    max_sq = float(np.square(a).sum(1).max())
    if kernel == "linear":
        return 4 * a.shape[1] * EPS64
    if sigma is not None:
        return 4 * EPS64 * (1 + 2 * max_sq / sigma**2)
    med = np_median_distance(a)
    return 4 * EPS64 * (1 + 2 * max_sq / med**2) + 8 * EPS64 * max_sq**2 / med**4


def hsic_atol(x: np.ndarray, z: np.ndarray, kernel: str, sigma: float | None) -> float:
    """Absolute round-off of either estimator: every term is <= ~4 max|K| max|L|, the loop
    reference sums up to m^4 of them one by one (<= m^4 eps relative, worst case), and each
    Gram entry carries :func:`kernel_rel_err`."""
    k, l = np_gram(x, kernel, sigma), np_gram(z, kernel, sigma)
    m = x.shape[0]
    rel = m**4 * EPS64 + kernel_rel_err(x, kernel, sigma) + kernel_rel_err(z, kernel, sigma)
    return 4 * np.abs(k).max() * np.abs(l).max() * rel


KERNEL_CASES = [("linear", None), ("gaussian", 1.5), ("gaussian", None)]


def dependent_pair(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, 2, 2))
    z = np.stack([x[:, 0, 0] ** 2, np.sin(x[:, 1, 1]), x[:, 0, 1]], 1) + 0.3 * rng.normal(
        size=(m, 3)
    )
    return x, z


def test_median_distance_is_the_median_over_pairs_i_below_j():
    rng = np.random.default_rng(5)
    for m in (7, 8):  # 21 pairs (odd: the middle one), 28 pairs (even: mean of the middle two)
        a = rng.normal(size=(m, 2, 3))
        flat = a.reshape(m, -1)
        dists = np.sort([np.linalg.norm(flat[i] - flat[j]) for i in range(m) for j in range(i)])
        if m == 8:
            # The lower median (torch.median's convention) would be a different number.
            assert dists[13] < dists[14] * (1 - 1e-6)
        want = np_median_distance(a)
        max_sq = float(np.square(flat).sum(1).max())
        # dist = sqrt(dist^2): relative error of dist^2 (2 eps max_sq / dist^2), halved.
        assert median_distance(torch.from_numpy(a)) == pytest.approx(
            want, rel=4 * EPS64 * (1 + max_sq / want**2), abs=0
        )
    # 10 of the 15 pairs of 6 samples are duplicates: median 0, so the fallback 1.0.
    dup = np.vstack([np.zeros((5, 2)), np.ones((1, 2))])
    assert median_distance(torch.from_numpy(dup)) == 1.0


@pytest.mark.parametrize("kernel,sigma", KERNEL_CASES)
def test_biased_hsic_is_the_v_statistic(kernel, sigma):
    x, z = dependent_pair(30, 6)
    want = np_hsic_v(np_gram(x, kernel, sigma), np_gram(z, kernel, sigma))
    got = hsic(torch.from_numpy(x), torch.from_numpy(z), kernel=kernel, sigma=sigma)
    assert got == pytest.approx(want, rel=0, abs=hsic_atol(x, z, kernel, sigma))
    assert got > 0  # tr(K H L H) = <HKH, HLH> of PSD matrices


@pytest.mark.parametrize("kernel,sigma", KERNEL_CASES)
def test_unbiased_hsic_is_the_u_statistic(kernel, sigma):
    x, z = dependent_pair(8, 7)
    want = np_hsic_u(np_gram(x, kernel, sigma), np_gram(z, kernel, sigma))
    got = hsic(
        torch.from_numpy(x), torch.from_numpy(z), kernel=kernel, estimator="unbiased", sigma=sigma
    )
    assert got == pytest.approx(want, rel=0, abs=hsic_atol(x, z, kernel, sigma))


def np_song_closed_form(k: np.ndarray, l: np.ndarray, zero_diagonal) -> float:
    m = k.shape[0]
    k0, l0, one = zero_diagonal(k), zero_diagonal(l), np.ones(m)
    return float(
        np.trace(k0 @ l0)
        + (one @ k0 @ one) * (one @ l0 @ one) / ((m - 1) * (m - 2))
        - 2 / (m - 2) * (one @ k0 @ l0 @ one)
    ) / (m * (m - 3))


def test_unbiased_hsic_zeroes_the_diagonal_not_a_broadcast_row():
    # Linear kernels of rows with very different norms: unequal diagonal entries K_ii.
    x, z = dependent_pair(8, 8)
    x = x * np.linspace(0.2, 5.0, 8)[:, None, None]
    k, l = np_gram(x, "linear"), np_gram(z, "linear")
    want = np_hsic_u(k, l)
    atol = hsic_atol(x, z, "linear", None)
    right = np_song_closed_form(k, l, lambda g: g - np.diag(np.diag(g)))
    buggy = np_song_closed_form(k, l, lambda g: g - np.diag(g))  # subtracts K_jj from column j
    assert right == pytest.approx(want, rel=0, abs=atol)
    assert abs(buggy - want) > 1e6 * atol
    got = hsic(torch.from_numpy(x), torch.from_numpy(z), kernel="linear", estimator="unbiased")
    assert got == pytest.approx(want, rel=0, abs=atol)


def test_hsic_and_cka_reject_bad_arguments():
    x3 = torch.randn(3, 2, generator=torch.Generator().manual_seed(9))
    for fn in (hsic, cka):
        with pytest.raises(ValueError, match="m >= 4"):
            fn(x3, x3, estimator="unbiased")
        with pytest.raises(ValueError, match="same number of samples"):
            fn(x3, torch.randn(4, 2))
        with pytest.raises(ValueError, match="kernel="):
            fn(x3, x3, kernel="rbf")
        with pytest.raises(ValueError, match="estimator="):
            fn(x3, x3, estimator="debiased")
    x4 = torch.cat([x3, x3[:1] + 1.0])
    assert np.isfinite(hsic(x4, x4, estimator="unbiased"))  # m = 4 is enough


@pytest.mark.parametrize("m,dx,dz", [(50, 5, 7), (10, 40, 30)])  # feature space, then Grams
def test_linear_cka_matches_centered_grams(m, dx, dz):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(m, dx))
    z = x[:, :1] * rng.normal(size=(1, dz)) + rng.normal(size=(m, dz))
    h = np.eye(m) - np.ones((m, m)) / m
    kc, lc = h @ x @ x.T @ h, h @ z @ z.T @ h
    want = (kc * lc).sum() / (np.linalg.norm(kc) * np.linalg.norm(lc))
    # Three sums of squares (no cancellation) of products of length m or d.
    rtol = 8 * (m + dx + dz) * EPS64
    assert cka(torch.from_numpy(x), torch.from_numpy(z)) == pytest.approx(want, rel=rtol, abs=0)
    # Invariant to a rotation, an isotropic scaling and a translation of either side; the
    # translation by 5 (the data has unit scale) costs ~5 eps relative in centering.
    q, _ = np.linalg.qr(rng.normal(size=(dz, dz)))
    moved = torch.from_numpy(3.0 * z @ q + 5.0)
    assert cka(torch.from_numpy(z), moved) == pytest.approx(1.0, rel=10 * rtol, abs=0)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_gaussian_cka_matches_the_hsic_references(estimator):
    x, z = dependent_pair(8, 11)
    k, l = np_gram(x, "gaussian"), np_gram(z, "gaussian")
    ref = np_hsic_v if estimator == "biased" else np_hsic_u
    hxz, hxx, hzz = ref(k, l), ref(k, k), ref(l, l)
    want = hxz / np.sqrt(hxx * hzz)
    ax, az, axz = (hsic_atol(a, b, "gaussian", None) for a, b in ((x, x), (z, z), (x, z)))
    rtol = axz / abs(hxz) + 0.5 * (ax / hxx + az / hzz)
    got = cka(torch.from_numpy(x), torch.from_numpy(z), kernel="gaussian", estimator=estimator)
    assert got == pytest.approx(want, rel=rtol, abs=0)


def test_biased_cka_is_inflated_between_independent_samples_and_unbiased_is_not():
    # m = 32, d = 10 on both sides, 20 seeds. Biased linear CKA of independent N(0, I) data is
    # about sqrt(dx dz) / (m - 1 + d) ~ 0.24 (per seed sd ~0.035, so ~0.008 for the mean);
    # the unbiased one averages ~-0.01 (sd ~0.045 per seed, ~0.01 for the mean).
    biased, unbiased = [], []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(32, 10, generator=g, dtype=torch.float64)
        z = torch.randn(32, 10, generator=g, dtype=torch.float64)
        biased.append(cka(x, z))
        unbiased.append(cka(x, z, estimator="unbiased"))
    assert 0.2 < np.mean(biased) < 0.28
    assert abs(np.mean(unbiased)) < 0.05
    assert min(unbiased) < 0 < max(unbiased)


# ---------------------------------------------------------------------------------------------
# nHSIC and its random-feature estimates


def test_nhsic_of_z_with_itself_is_its_regularized_rank():
    # tr(R^2) = sum_i (mu_i / (mu_i + lam))^2 over the eigenvalues mu_i of K H (those of the
    # symmetric H K H), lam = eps m: a soft count of the eigenvalues above lam, at most the
    # effective degrees of freedom tr(R) = sum_i mu_i / (mu_i + lam).
    rng = np.random.default_rng(12)
    m, eps = 60, 1e-3
    z = rng.normal(size=(m, 4))
    h = np.eye(m) - np.ones((m, m)) / m
    mu = np.linalg.eigvalsh(h @ np_gaussian(z, 1.0) @ h)
    lam = eps * m
    want = float(np.sum((mu / (mu + lam)) ** 2))
    # eigvalsh moves each mu by <~ m eps max|K| = m eps; d/dmu (mu / (mu + lam))^2 <= 1 / lam.
    atol = m * (m * EPS64) / lam + nhsic_rtol(z, z, 1.0, eps) * want
    got = nhsic_batch(torch.from_numpy(z), torch.from_numpy(z), sigma=1.0, eps=eps)
    assert got == pytest.approx(want, rel=0, abs=atol)
    assert 1.0 < got < float(np.sum(mu / (mu + lam))) < m - 1
    # Five distinct points, each repeated 8 times: K has rank 5 and H K H rank 4, so nHSIC(Z; Z)
    # tends to 4 as eps -> 0, from below by sum_i [1 - (mu_i / (mu_i + lam))^2] <= 2 lam / mu_i.
    low = np.repeat(rng.normal(size=(5, 3)), 8, axis=0)
    h40 = np.eye(40) - np.ones((40, 40)) / 40
    mu_low = np.linalg.eigvalsh(h40 @ np_gaussian(low, 1.0) @ h40)[-4:]
    gaps = []
    for eps in (1e-2, 1e-4, 1e-6):
        gap = 4.0 - nhsic_batch(torch.from_numpy(low), torch.from_numpy(low), sigma=1.0, eps=eps)
        assert 0 < gap <= np.sum(2 * eps * 40 / mu_low)
        gaps.append(gap)
    # First order in lam once lam << mu_i: 100 times smaller eps, ~100 times smaller gap.
    assert gaps[0] > gaps[1] > 50 * gaps[2] and gaps[2] < 0.01


def np_nhsic_from_grams(kx: np.ndarray, kz: np.ndarray, eps: float, center_z: bool) -> tuple:
    """tr(R_x R_z) with explicit inverses; also the summed condition numbers it inverts."""
    m = kx.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    out, conds = [], 0.0
    for k, center in ((kx, True), (kz, center_z)):
        kc = k @ h if center else k
        reg = kc + eps * m * np.eye(m)
        out.append(kc @ np.linalg.inv(reg))
        conds += float(np.linalg.cond(reg))
    return float(np.trace(out[0] @ out[1])), conds


def test_feature_formulas_are_exact_for_exact_features():
    # The linear kernel's features are the rows themselves: hsic_features and the push-through
    # form of nhsic_features must give the dense m x m values up to round-off.
    rng = np.random.default_rng(13)
    m = 50
    x = rng.normal(size=(m, 6))
    z = np.tanh(x[:, :3]) + 0.3 * rng.normal(size=(m, 3))
    y = np.eye(4)[rng.integers(0, 4, size=m)]  # one-hot labels, an uncentered side
    tx, tz, ty = (torch.from_numpy(a) for a in (x, z, y))
    for other, t_other, center in ((z, tz, True), (y, ty, False)):
        want, conds = np_nhsic_from_grams(x @ x.T, other @ other.T, 1e-3, center)
        got = nhsic_features(tx, t_other, eps=1e-3, center_z=center)
        assert got == pytest.approx(want, rel=2 * m * EPS64 * conds, abs=0)
    want = np_hsic_v(x @ x.T, z @ z.T)
    assert hsic_features(tx, tz) == pytest.approx(want, abs=hsic_atol(x, z, "linear", None))


def test_nystrom_with_every_sample_as_landmark_is_exact():
    rng = np.random.default_rng(14)
    m, sigma, eps = 80, 5.0, 1e-5
    x = rng.normal(size=(m, 5))
    z = x[:, :2] ** 2 + 0.5 * rng.normal(size=(m, 2))
    # Nystrom drops the eigenvalues of K_LL below tau = L eps max(s) <= m^2 eps (entries <= 1);
    # each moves one direction of R by <= tau / lam, at most m of them on each side.
    tau = m * m * EPS64
    phi = nystrom_features(torch.from_numpy(x), m, sigma * np.sqrt(5))
    k = np_gaussian(x, sigma)
    assert np.abs(phi.numpy() @ phi.numpy().T - k).max() <= 2 * tau
    want = np_nhsic(x, z, sigma, eps)
    atol = 2 * m * tau / (eps * m) + nhsic_rtol(x, z, sigma, eps) * want
    tx, tz = torch.from_numpy(x), torch.from_numpy(z)
    got = nhsic_approx(tx, tz, "nystrom", num_features=m, sigma=sigma, eps=eps)
    assert got == pytest.approx(want, rel=0, abs=atol)
    y = rng.integers(0, 3, size=m)
    want_y = np_nhsic(x, y, sigma, eps, labels=True)
    atol_y = 2 * m * tau / (eps * m) + nhsic_rtol(x, y, sigma, eps, labels=True) * want_y
    got_y = nhsic_approx(tx, torch.from_numpy(y), "nystrom", m, sigma, eps, label_kernel=True)
    assert got_y == pytest.approx(want_y, rel=0, abs=atol_y)


def test_random_feature_errors_shrink_as_features_grow():
    # Relative errors vs the exact values, averaged over 4 feature seeds at m = 200. Measured
    # over several data seeds: nHSIC by RFF ~0.25 at D = 32, ~0.01-0.02 at D = 512 (ratio
    # 0.04-0.1); Nystrom ~0.2 at 16 landmarks, ~1e-4 at 128; biased HSIC by RFF ~0.2 at D = 32,
    # ~0.045 at 1024 (ratio ~0.2 = sqrt(32 / 1024), the Monte Carlo rate).
    g = torch.Generator().manual_seed(100)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    z = torch.tanh(x[:, :3] @ w) + 0.2 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    exact = nhsic_batch(x, z)

    def nhsic_error(method: str, d: int) -> float:
        values = [nhsic_approx(x, z, method, d, seed=s) for s in range(4)]
        return float(np.mean(np.abs(np.array(values) - exact))) / exact

    rff_small, rff_large = nhsic_error("rff", 32), nhsic_error("rff", 512)
    assert rff_large < 0.06 and rff_large < 0.3 * rff_small
    assert nhsic_error("nystrom", 128) < 0.05 * nhsic_error("nystrom", 16)

    exact_hsic = hsic(x, z, sigma=2.0)

    def hsic_error(d: int) -> float:
        errors = []
        for seed in range(4):
            gen = torch.Generator().manual_seed(seed)
            phi_x, phi_z = rff_features(x, d, 2.0, gen), rff_features(z, d, 2.0, gen)
            # cos^2 + sin^2 = 1: the diagonal of Phi Phi^T is exact, up to D/2 rounded terms.
            diag = (phi_x * phi_x).sum(1)
            assert torch.allclose(diag, torch.ones_like(diag), rtol=0, atol=d * EPS64)
            errors.append(abs(hsic_features(phi_x, phi_z) - exact_hsic))
        return float(np.mean(errors)) / exact_hsic

    assert hsic_error(1024) < 0.4 * hsic_error(32)


def test_undetached_normalized_grams_give_nhsic_and_its_exact_gradient():
    """detach=False: the same value as nhsic_batch, and the gradient of tr(R_x R_z) with
    respect to z agrees with central finite differences in float64 (torch.autograd.gradcheck).
    eps = 1e-3: at the default 1e-5, (K_c + eps m I)^-1 has norm ~1 / (eps m) and the finite
    differences' own truncation error (~ step x second derivative) swamps the comparison."""
    from genlab.measures import nhsic_batch, normalized_grams, trace_products

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    z = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    r_x = normalized_grams(x[None], sigma=1.0, eps=1e-3)

    def value(zz):
        return trace_products(r_x, normalized_grams(zz[None], 1.0, 1e-3, detach=False))[0]

    want = nhsic_batch(x, z.detach(), sigma=1.0, eps=1e-3)
    assert float(value(z).detach()) == pytest.approx(want, rel=1e-12)
    assert torch.autograd.gradcheck(value, (z,), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert normalized_grams(z[None], sigma=1.0).grad_fn is None  # detached by default
