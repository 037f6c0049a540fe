"""kNN entropy and compressed MI against brute force and Gaussian closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from genlab.measures import MutualInformation, knn_entropy, mutual_information_compressed

EPS64 = np.finfo(np.float64).eps


def gaussian_entropy(cov: np.ndarray) -> float:
    d = cov.shape[0]
    return 0.5 * math.log((2 * math.pi * math.e) ** d * np.linalg.det(cov))


def test_knn_entropy_matches_bruteforce_formula():
    x = np.random.default_rng(0).standard_normal((150, 3)) * [1.0, 2.0, 0.5]
    n, d, k = 150, 3, 4
    total = abs_log_sum = 0.0
    for i in range(n):
        dists = sorted(math.dist(x[i], x[j]) for j in range(n) if j != i)
        total += math.log(dists[k - 1])
        abs_log_sum += abs(math.log(dists[k - 1]))
    unit_ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    terms = [digamma(n), digamma(k), math.log(unit_ball), d * total / n]
    want = terms[0] - terms[1] + terms[2] + terms[3]
    # Distances from two code paths (kd-tree vs math.dist) differ by ~d eps relative, i.e. by
    # ~d eps in each log; summing n of them (in any order) adds n eps |log eps_i|.
    atol = 4 * (n + d) * EPS64 * (sum(abs(t) for t in terms) + d * abs_log_sum / n)
    assert knn_entropy(x, k=k) == pytest.approx(want, rel=0, abs=atol)
    assert knn_entropy(torch.from_numpy(x), k=k) == pytest.approx(want, rel=0, abs=atol)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_knn_entropy_of_gaussian_matches_closed_form(d):
    rng = np.random.default_rng(10 + d)
    a = rng.standard_normal((d, d)) + 2 * np.eye(d)
    x = rng.standard_normal((5000, d)) @ a.T
    assert knn_entropy(x) == pytest.approx(gaussian_entropy(a @ a.T), abs=0.08)


def correlated(n, d, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    z = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, z


@pytest.mark.parametrize("d,rho", [(1, 0.8), (2, 0.5), (2, 0.8), (2, 0.0)])
def test_mi_of_correlated_gaussians_matches_closed_form(d, rho):
    x, z = correlated(5000, d, rho, seed=d + int(10 * rho))
    r = mutual_information_compressed(x, z, x_dim=d, z_dim=d)
    assert r.I_zx == pytest.approx(-0.5 * d * math.log(1 - rho**2), abs=0.08)
    # Two roundings of a sum of three entropies, in whatever order the code adds them.
    scale = abs(r.h_z) + abs(r.h_x) + abs(r.h_zx)
    assert r.I_zx == pytest.approx(r.h_z + r.h_x - r.h_zx, abs=2 * EPS64 * scale)
    # Whitened marginals: the entropies are those of standard normals.
    assert r.h_z == pytest.approx(gaussian_entropy(np.eye(d)), abs=0.08)
    assert r.I_zy is None and r.h_z_given_y is None


def test_pca_compression_keeps_the_informative_subspace():
    # X: a 2-d Gaussian source embedded in 20 dims (plus faint noise); Z: a noisy copy of the
    # source embedded in 10 dims. PCA to 2 dims on both recovers the source planes, so
    # I(Z; X) is that of the sources, -log(1 - rho^2) over two dimensions.
    rng = np.random.default_rng(5)
    rho, n = 0.8, 4000
    s = rng.standard_normal((n, 2))
    t = rho * s + math.sqrt(1 - rho**2) * rng.standard_normal((n, 2))
    x = s @ rng.standard_normal((2, 20)) + 0.01 * rng.standard_normal((n, 20))
    z = torch.from_numpy(t @ rng.standard_normal((2, 10)) + 0.01 * rng.standard_normal((n, 10)))
    r = mutual_information_compressed(x, z, x_dim=2, z_dim=2)
    assert r.I_zx == pytest.approx(-math.log(1 - rho**2), abs=0.1)


def test_mi_with_labels_approaches_label_entropy_for_separated_clusters():
    # Four clusters at the corners of a square, 12 within-class standard deviations apart.
    # Corners of a square keep the marginal covariance isotropic, so whitening leaves each
    # cluster round: the KL estimator is badly biased on strongly anisotropic clusters (see
    # test_anisotropic_clusters_overestimate_label_information).
    rng = np.random.default_rng(6)
    n = 4000
    y = rng.integers(0, 4, n)
    corners = 6.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    z = corners[y] + rng.standard_normal((n, 2))
    x = z + 0.5 * rng.standard_normal((n, 2))
    r = mutual_information_compressed(x, z, y=torch.from_numpy(y))
    assert isinstance(r, MutualInformation)
    p = np.bincount(y) / n
    assert r.I_zy == pytest.approx(float(-(p * np.log(p)).sum()), abs=0.05)
    # One rounding of a difference of two entropies (h(Z | Y) is the weighted sum itself).
    scale = abs(r.h_z) + abs(r.h_z_given_y)
    assert r.I_zy == pytest.approx(r.h_z - r.h_z_given_y, abs=EPS64 * scale)
    # Labels that ignore Z carry no information about it.
    shuffled = mutual_information_compressed(x, z, y=rng.permutation(y))
    assert abs(shuffled.I_zy) < 0.05


def test_anisotropic_clusters_overestimate_label_information():
    # Documents a limitation of the estimator rather than a wish: 4 clusters in 4-d span only
    # 3 between-class directions, so after whitening each cluster is a thin pancake and h(Z)
    # is overestimated. I(Z; Y) then exceeds its ceiling H(Y) = log 4.
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 4000)
    z = 30.0 * rng.standard_normal((4, 4))[y] + rng.standard_normal((4000, 4))
    r = mutual_information_compressed(z + rng.standard_normal((4000, 4)), z, y=y)
    assert r.I_zy > math.log(4) + 0.2


def test_autoencoder_compressor_is_seeded_and_informative():
    rng = np.random.default_rng(7)
    rho, n = 0.8, 2000
    s = rng.standard_normal((n, 1))
    t = rho * s + math.sqrt(1 - rho**2) * rng.standard_normal((n, 1))
    x = np.tanh(s @ rng.standard_normal((1, 12))) + 0.01 * rng.standard_normal((n, 12))
    state = torch.get_rng_state()
    a = mutual_information_compressed(x, t, x_dim=1, z_dim=1, x_compressor="autoencoder")
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    b = mutual_information_compressed(x, t, x_dim=1, z_dim=1, x_compressor="autoencoder")
    assert a == b
    # The 1-d code of x keeps the source up to a monotone map: I = -0.5 log(1 - rho^2).
    assert a.I_zx == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.1)


def test_errors():
    x = np.zeros((20, 2))
    x[:, 0] = np.arange(20.0)
    with pytest.raises(ValueError, match="whiten"):
        mutual_information_compressed(x, x + 1.0)
    with pytest.raises(ValueError, match="identical"):
        knn_entropy(np.repeat(np.arange(10.0), 6))
    with pytest.raises(ValueError, match="more than k"):
        knn_entropy(np.arange(5.0))
    with pytest.raises(ValueError, match="x_compressor"):
        mutual_information_compressed(np.eye(10), np.eye(10), x_compressor="vae")
