"""Neural-collapse measures against explicit-loop numpy references and closed-form geometries."""

import math

import numpy as np
import pytest
import torch

from genlab.measures import NeuralCollapse, NeuralCollapseAccumulator, neural_collapse


def reference(h: np.ndarray, y: np.ndarray, w=None, b=None) -> dict:
    """Every measure straight from its definition: python loops and dense numpy formulas."""
    n, d = h.shape
    classes = sorted(set(y.tolist()))
    c_num = len(classes)
    mu = {c: np.mean([h[i] for i in range(n) if y[i] == c], axis=0) for c in classes}
    counts = {c: sum(1 for i in range(n) if y[i] == c) for c in classes}
    mu_g = sum(counts[c] * mu[c] for c in classes) / n
    within = sum(float(np.sum((h[i] - mu[y[i]]) ** 2)) for i in range(n)) / n
    between = sum(counts[c] / n * float(np.sum((mu[c] - mu_g) ** 2)) for c in classes)
    mean_norm = sum(float(np.sqrt(np.sum(h[i] ** 2))) for i in range(n)) / n

    sigma_w = np.zeros((d, d))
    for i in range(n):
        v = (h[i] - mu[y[i]])[:, None]
        sigma_w += v @ v.T
    sigma_w /= n
    mu_bar = sum(mu[c] for c in classes) / c_num
    sigma_b = np.zeros((d, d))
    for c in classes:
        v = (mu[c] - mu_bar)[:, None]
        sigma_b += v @ v.T
    sigma_b /= c_num
    nc1 = float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True))) / c_num

    m = np.stack([mu[c] for c in classes])
    sv = np.linalg.svd(m, compute_uv=False)
    centered = np.stack([mu[c] - mu_g for c in classes])
    norms = np.array([np.sqrt(np.sum(r**2)) for r in centered])
    cosines = []
    for a in range(c_num):
        for bb in range(c_num):
            if a != bb:
                cosines.append(centered[a] @ centered[bb] / (norms[a] * norms[bb]))
    cosines = np.array(cosines)
    out = dict(
        num_samples=n,
        num_classes=c_num,
        within_class_variance=within,
        between_class_variance=between,
        nc1_trace=within / between,
        rnc1=within / mean_norm**2,
        mean_feature_norm=mean_norm,
        nc1=nc1,
        nc2_cond=sv.max() / sv.min(),
        equinorm=norms.std() / norms.mean(),
        equiangularity=cosines.std(),
        max_angle=float(np.mean(np.abs(cosines + 1.0 / (c_num - 1)))),
    )
    if w is not None:
        wp = w[classes]
        diff = wp / np.linalg.norm(wp) - centered / np.linalg.norm(centered)
        out["nc3"] = float(np.sum(diff**2))
        mismatch = 0
        for i in range(n):
            logits = w @ h[i] + (0 if b is None else b)
            dists = [np.linalg.norm(h[i] - mu[c]) for c in classes]
            mismatch += int(np.argmax(logits) != classes[int(np.argmin(dists))])
        out["nc4"] = mismatch / n
    return out


EPS64 = np.finfo(np.float64).eps


def nc_rtol(h, y) -> float:
    """Relative round-off allowed between two float64 evaluations of the measures (loops vs
    passes, streamed vs in memory, chunked or not) on features h (N, d) with labels y. Class
    sums of N terms and dot products of d are off by (N + d) eps relative to max |mu_c|; the
    class-mean geometry sits at the scale of the smallest singular value of the centered
    (s_min) or uncentered means, which loses max |mu_c| / that, and NC1 divides by s^2:
    (s_max / s_min)^2 more."""
    h, y = np.asarray(h, dtype=np.float64), np.asarray(y)
    means = np.stack([h[y == c].mean(0) for c in np.unique(y)])
    s = np.linalg.svd(means - means.mean(0), compute_uv=False)[: len(means) - 1]
    smallest = min(s[-1], np.linalg.svd(means, compute_uv=False)[-1])
    cancel = np.linalg.norm(means, axis=1).max() / smallest
    return 4 * sum(h.shape) * EPS64 * cancel * (s[0] / s[-1]) ** 2


def make_data(n=600, d=12, k=5, spread=1.0, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(k, d, generator=g, dtype=torch.float64) + offset
    y = torch.randint(0, k, (n,), generator=g)
    h = means[y] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    return h, y, w, b


def assert_matches(result: NeuralCollapse, ref: dict, rtol: float) -> None:
    for name, expected in ref.items():
        got = getattr(result, name)
        # abs: the cosine-based measures are built from values <= 1 with absolute round-off.
        assert got == pytest.approx(expected, rel=rtol, abs=rtol), name


def test_matches_explicit_reference_with_classifier():
    h, y, w, b = make_data()
    ref = reference(h.numpy(), y.numpy(), w.numpy(), b.numpy())
    assert set(ref) == {f for f in NeuralCollapse.__dataclass_fields__}
    # One chunk, and row chunks of 37 that split every class across chunks.
    for chunk_size in (2048, 37):
        result = neural_collapse(h, y, w, b, chunk_size=chunk_size)
        assert_matches(result, ref, rtol=nc_rtol(h, y))
    # The data is noisy enough that NC4 is neither trivially 0 nor 1.
    assert 0.05 < result.nc4 < 0.95


def test_matches_reference_with_imbalanced_classes_and_missing_class():
    # Class 3 of 6 never appears; classes are far from balanced, so the weighted global mean
    # (between, equinorm, nc3) and the unweighted mean of means (Sigma_B) really differ.
    h, y, w, b = make_data(n=400, k=6, seed=1)
    y = torch.where(y == 3, torch.zeros_like(y), y)
    y[:150] = 1
    result = neural_collapse(h, y, w, b, num_classes=6)
    assert result.num_classes == 5
    ref = reference(h.numpy(), y.numpy(), w.numpy(), b.numpy())
    assert_matches(result, ref, rtol=nc_rtol(h, y))


def test_batched_equals_all_at_once():
    h, y, w, b = make_data(n=1000, d=16, k=7, seed=2)
    h = h.to(torch.float32)  # as a network would give them
    whole = neural_collapse(h, y, w, b)

    acc = NeuralCollapseAccumulator(num_classes=7, dim=16)
    # Uneven batches, the first without several classes, so the per-class shifts differ
    # from the all-at-once run.
    bounds = [0, 3, 50, 51, 400, 777, 1000]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc.update(h[lo:hi], y[lo:hi])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc.update_nc4(h[lo:hi], h[lo:hi].double() @ w.T + b)
    batched = acc.compute(weight=w)
    rtol = nc_rtol(h, y)
    for name in NeuralCollapse.__dataclass_fields__:
        a, c = getattr(batched, name), getattr(whole, name)
        assert a == pytest.approx(c, rel=rtol, abs=rtol), name


def test_simplex_etf_is_fully_collapsed():
    k, d = 4, 6
    etf = torch.eye(k, dtype=torch.float64) - 1.0 / k  # rows: simplex ETF in span(e_1..e_4)
    etf = torch.cat([etf, torch.zeros(k, d - k, dtype=torch.float64)], dim=1)
    y = torch.arange(k).repeat(5)
    h = 2.0 * etf[y]
    r = neural_collapse(h, y, weight=0.3 * etf)
    # Zero up to the round-off of sums of N = 20 features and dot products of d = 6: relative
    # to the feature scale ||h||^2 = 3 for the within variance, absolute for the scale-free
    # ratios (NC1 and RNC1 divide it by squared sizes of the same scale).
    tol = 4 * (20 + d) * EPS64
    assert r.within_class_variance == pytest.approx(0.0, abs=tol * float(h.square().sum(1).max()))
    assert r.nc1 == pytest.approx(0.0, abs=tol)
    assert r.rnc1 == pytest.approx(0.0, abs=tol)
    assert r.equinorm == pytest.approx(0.0, abs=tol)
    assert r.equiangularity == pytest.approx(0.0, abs=tol)
    assert r.max_angle == pytest.approx(0.0, abs=tol)
    assert r.nc3 == pytest.approx(0.0, abs=tol)
    assert r.nc4 == 0.0
    # Between variance of the ETF: ||e_c - 1/k||^2 = 1 - 1/k, times 2^2.
    assert r.between_class_variance == pytest.approx(4.0 * (1 - 1 / k))


def test_nc2_cond_is_one_for_orthogonal_equal_norm_means_and_grows_otherwise():
    y = torch.arange(3).repeat(4)
    means = 5.0 * torch.eye(3, 8, dtype=torch.float64)
    assert neural_collapse(means[y], y).nc2_cond == pytest.approx(1.0)
    means[2, 2] = 1.0  # one short mean: singular values 5, 5, 1
    assert neural_collapse(means[y], y).nc2_cond == pytest.approx(5.0)


def test_more_classes_than_dims_is_a_clear_error():
    y = torch.arange(5).repeat(3)
    h = torch.randn(15, 3)
    with pytest.raises(ValueError, match="num_classes <= dim"):
        neural_collapse(h, y)


def test_large_common_offset_keeps_precision():
    # Collapsed regime: ||mu|| ~ 1e4, within spread ~ 1e-3 (variance ratio ~1e-14). The shifted
    # moments keep the within-class variance exact to ~1e-8 where h h^T sums would lose it.
    h, y, _, _ = make_data(n=300, d=8, k=3, spread=1e-3, offset=1e4, seed=3)
    acc = NeuralCollapseAccumulator(3, 8)
    for chunk in range(0, 300, 64):
        acc.update(h[chunk : chunk + 64], y[chunk : chunk + 64])
    ref = reference(h.numpy(), y.numpy())
    # nc_rtol carries the |mu| / s_min ~ 1e4 lost by centering the class means; h h^T sums
    # would lose (|mu| / spread)^2 ~ 1e14 eps ~ 0.1 of the within-class variance instead.
    rtol = nc_rtol(h, y)
    # The one-pass accumulator and the in-memory two-pass function, both against the loops.
    for r in (acc.compute(), neural_collapse(h, y)):
        assert r.within_class_variance == pytest.approx(
            ref["within_class_variance"], rel=rtol, abs=0
        )
        assert r.nc1 == pytest.approx(ref["nc1"], rel=rtol, abs=0)


def test_nc4_needs_second_pass_and_freezes_means():
    h, y, w, b = make_data(n=200, seed=4)
    acc = NeuralCollapseAccumulator(5, 12)
    with pytest.raises(RuntimeError):
        acc.update_nc4(h, h @ w.T)
    acc.update(h, y)
    assert acc.compute(weight=w).nc4 is None
    assert acc.compute().nc3 is None
    acc.update_nc4(h, h @ w.T + b)
    assert acc.compute().nc4 == pytest.approx(
        reference(h.numpy(), y.numpy(), w.numpy(), b.numpy())["nc4"]
    )
    with pytest.raises(RuntimeError, match="frozen"):
        acc.update(h, y)


def test_input_validation():
    acc = NeuralCollapseAccumulator(3, 4)
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        acc.update(torch.randn(5, 4), torch.full((5,), 3))
    acc.update(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="two classes"):
        acc.compute()
    acc.update(torch.randn(5, 4), torch.ones(5, dtype=torch.long))
    assert math.isfinite(acc.compute().nc1)


def test_in_memory_input_validation():
    h, y, w, _ = make_data(n=50, d=12, k=5, seed=5)
    with pytest.raises(ValueError, match="labels must have shape"):
        neural_collapse(h, y[:-1])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        neural_collapse(h, y, num_classes=3)
    with pytest.raises(ValueError, match="weight must have shape"):
        neural_collapse(h, y, weight=w[:, :5])
    with pytest.raises(ValueError, match="two classes"):
        neural_collapse(h, torch.zeros_like(y), num_classes=5)
