"""Theorem 3.2 bound against a brute-force loop, a hand-computed case and Cantelli's inequality."""

import math

import numpy as np
import pytest
import torch

from genlab.measures import collapse_and_bound, generalization_bound, neural_collapse


def reference(h: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict:
    """The bound from its definition with python loops over classes, pairs and samples."""
    n, _ = h.shape
    k = w.shape[0]
    scale = max(math.sqrt(sum(v * v for v in h[i])) for i in range(n))
    bound = bound_trace = bound_stated = 0.0
    per_class = [math.nan] * k
    for c in range(k):
        members = [h[i] / scale for i in range(n) if y[i] == c]
        if not members:
            continue
        p_c = len(members) / n
        mean = sum(members) / len(members)
        total_var = sum(float(np.dot(v - mean, v - mean)) for v in members) / len(members)
        row = row_trace = row_stated = 0.0
        for j in range(k):
            if j == c:
                continue
            diff = w[c] - w[j]
            u = diff / math.sqrt(float(np.dot(diff, diff)))
            proj = [float(np.dot(u, v)) for v in members]
            m = sum(proj) / len(proj) + (b[c] - b[j]) / (
                scale * math.sqrt(float(np.dot(diff, diff)))
            )
            s2 = sum((p - sum(proj) / len(proj)) ** 2 for p in proj) / len(proj)
            m0 = sum(proj) / len(proj)  # the stated form's margin: no bias
            row_stated += 1.0 / (1.0 + m0 * m0 / total_var) if m0 > 0 else 1.0
            m = max(0.0, m)
            row += 1.0 / (1.0 + m * m / s2) if m > 0 else 1.0
            row_trace += 1.0 / (1.0 + m * m / total_var) if m > 0 else 1.0
        per_class[c] = row
        bound += p_c * row
        bound_trace += p_c * row_trace
        bound_stated += p_c * row_stated
    errors = sum(int(np.argmax(w @ h[i] + b) != y[i]) for i in range(n))
    return dict(
        bound=bound,
        bound_trace=bound_trace,
        bound_stated=bound_stated,
        per_class=per_class,
        test_error=errors / n,
        scale=scale,
    )


EPS64 = torch.finfo(torch.float64).eps


def margin_atol(r, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Round-off allowed in a margin m_ck between two float64 evaluations. In units of the largest
    feature norm S, m_ck is a mean over <= N samples of a logit difference of two length-d dot
    products, plus a bias offset: off by ~ eps (d (|w_c| + |w_k|) / |w_c - w_k| + N
    + |b_c - b_k| / (S |w_c - w_k|))."""
    n, d = h.shape
    norms = torch.linalg.vector_norm(w, dim=1)
    gap = torch.linalg.vector_norm(w[:, None] - w[None], dim=2)
    pair = ~torch.eye(w.shape[0], dtype=torch.bool) & (gap > 0)
    bias_gap = torch.zeros_like(gap) if b is None else (b[:, None] - b[None]).abs()
    cancel = float(((norms[:, None] + norms[None]) / gap)[pair].max())
    offset = float((bias_gap / (r.scale * gap))[pair].max())
    return 4 * EPS64 * (d * cancel + n + offset)


def term_atol(r, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Round-off allowed in one pairwise term s^2 / (s^2 + m^2): it turns an error dm into
    <= dm / s, and the N eps relative error of s^2 (a mean of N squares) into less than that.
    per_class and bound are sums of <= K - 1 such terms (weighted by priors)."""
    v = r.variances[~r.variances.isnan() & (r.variances > 0)]
    return margin_atol(r, h, w, b) / float(v.min().sqrt()) + 4 * h.shape[0] * EPS64


def nc_rtol(h: torch.Tensor, y: torch.Tensor) -> float:
    """Relative round-off of the neural-collapse measures, as in test_neural_collapse.py: class
    sums of N terms and dot products of d, off by (N + d) eps relative to max |mu_c|, read at the
    scale of the smallest singular value of the centered or uncentered class means; NC1 divides
    by the centered ones squared."""
    means = torch.stack([h[y == c].mean(0) for c in y.unique()])
    s = torch.linalg.svdvals(means - means.mean(0))[: len(means) - 1]
    smallest = min(float(s[-1]), float(torch.linalg.svdvals(means)[-1]))
    cancel = float(torch.linalg.vector_norm(means, dim=1).max()) / smallest
    return 4 * sum(h.shape) * EPS64 * cancel * float(s[0] / s[-1]) ** 2


def gaussian_problem(n=800, d=10, k=4, noise=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64) + 1.0
    y = torch.randint(0, k, (n,), generator=g)
    h = means[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    # A reasonable but imperfect classifier: nearest-mean weights, perturbed.
    w = means + 0.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    b = -0.5 * (means**2).sum(1) + torch.randn(k, generator=g, dtype=torch.float64)
    return h, y, w, b


def test_matches_bruteforce_loop():
    h, y, w, b = gaussian_problem()
    r = generalization_bound(h, y, w, b)
    ref = reference(h.numpy(), y.numpy(), w.numpy(), b.numpy())
    atol = (4 - 1) * term_atol(r, h, w, b)  # K - 1 = 3 terms per class
    assert r.bound == pytest.approx(ref["bound"], rel=0, abs=atol)
    # bound_trace's variances are >= the projected ones: the same atol covers it.
    assert r.bound_trace == pytest.approx(ref["bound_trace"], rel=0, abs=atol)
    assert r.bound_stated == pytest.approx(ref["bound_stated"], rel=0, abs=atol)
    assert r.bound_stated != pytest.approx(r.bound_trace, abs=1e-3)  # the bias matters here
    assert r.test_error == pytest.approx(ref["test_error"], abs=0)
    # Two ways of summing d = 10 squares ((d - 1) eps each), halved by the square root.
    assert r.scale == pytest.approx(ref["scale"], rel=(h.shape[1] + 2) * EPS64, abs=0)
    np.testing.assert_allclose(r.per_class.numpy(), ref["per_class"], rtol=0, atol=atol)
    # A non-trivial case: some pairs clamp to 1, others are informative.
    terms = r.pairwise.numpy()[~np.eye(4, dtype=bool)]
    assert (terms < 0.5).any() and 0 < r.test_error < r.bound
    assert r.bound <= r.bound_trace


def test_hand_computed_two_class_case():
    # 1-D, w = (+1, -1), no bias. Class 0 at {1, 3}, class 1 at {-2, -2}; S = 3.
    # Class 0: u = +1, rescaled points {1/3, 1}: m = 2/3, s^2 = 1/9 -> 1 / (1 + 4) = 1/5.
    # Class 1: u = -1, points {2/3, 2/3}: m = 2/3, s^2 = 0 -> 0.  bound = (1/5 + 0) / 2.
    h = torch.tensor([[1.0], [3.0], [-2.0], [-2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    r = generalization_bound(h, y, w)
    assert r.bound == pytest.approx(0.1)
    assert r.margins[0, 1] == pytest.approx(2 / 3)
    assert r.variances[0, 1] == pytest.approx(1 / 9)
    assert r.per_class.tolist() == pytest.approx([0.2, 0.0])
    assert r.test_error == 0.0
    # A bias that moves the boundary past class 0's mean: b_0 - b_1 = -3 -> rescaled offset
    # -3 / (3 * 2) = -1/2, m = 2/3 - 1/2 = 1/6, term 1 / (1 + (1/36) / (1/9)) = 4/5.
    r = generalization_bound(h, y, w, torch.tensor([-1.5, 1.5], dtype=torch.float64))
    assert r.margins[0, 1] == pytest.approx(1 / 6)
    assert r.pairwise[0, 1] == pytest.approx(0.8)
    # Class 1: m = 2/3 + 1/2 > 0 with s = 0 -> 0; class 0's sample at 1 is now misclassified.
    assert r.bound == pytest.approx(0.4)
    assert r.test_error == pytest.approx(0.25)


def test_cantelli_holds_pairwise_on_the_empirical_distribution():
    # Cantelli holds for any distribution, so for the sample itself: the fraction of class-c
    # samples on the wrong side of the (c, k) boundary never exceeds the pairwise term, and
    # the misclassification rate never exceeds the bound.
    for seed in range(5):
        h, y, w, b = gaussian_problem(n=500, noise=2.5, seed=seed)
        r = generalization_bound(h, y, w, b)
        logits = h @ w.T + b
        for c in range(4):
            rows = logits[y == c]
            for k in range(4):
                if k != c:
                    frac = float((rows[:, c] - rows[:, k] <= 0).double().mean())
                    assert frac <= float(r.pairwise[c, k]) + term_atol(r, h, w, b)
        assert r.test_error <= r.bound
        assert r.test_error > 0.05  # the check is not vacuous


def test_invariant_to_feature_scale_with_bias_rescaled_consistently():
    h, y, w, b = gaussian_problem(seed=7)
    r1 = generalization_bound(h, y, w, b)
    r2 = generalization_bound(1000.0 * h, y, w, 1000.0 * b)
    # 1000 x is not exact in binary: inputs perturbed by eps relative, the rest is round-off.
    assert r2.bound == pytest.approx(r1.bound, rel=0, abs=(4 - 1) * term_atol(r1, h, w, b))
    assert r2.test_error == r1.test_error
    assert r2.scale == pytest.approx(1000.0 * r1.scale)
    # Rescaled units: margins are those of features in the unit ball, whatever the input scale.
    atol = margin_atol(r1, h, w, b)
    np.testing.assert_allclose(r2.margins.numpy(), r1.margins.numpy(), rtol=0, atol=atol)


def test_absent_class_and_equal_weights():
    h = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)
    r = generalization_bound(h, y, w, b)
    assert math.isnan(float(r.per_class[2]))  # class 2 has no test sample
    assert r.class_priors.tolist() == [0.5, 0.5, 0.0]
    # w_1 == w_2 and b_1 > b_2: class 1 is never sent to 2 -> term 0.
    assert float(r.pairwise[1, 2]) == 0.0
    ref = reference(h.numpy(), y.numpy(), w[:2].numpy(), b[:2].numpy())
    assert r.bound == pytest.approx(ref["bound"] + 0.5 * float(r.pairwise[0, 2]))


def test_collapse_and_bound_equals_the_separate_measures_for_any_chunking():
    # The meter's one-pass-pair version, and row chunks (float32 input converted per chunk)
    # that split classes unevenly: the same numbers as the separate, unchunked calls.
    h, y, w, b = gaussian_problem(n=500, seed=3)
    nc_alone, bound_alone = neural_collapse(h, y, w, b), generalization_bound(h, y, w, b)
    # Chunks only reorder the class sums: round-off, as between any two evaluations.
    atol, rtol = (4 - 1) * term_atol(bound_alone, h, w, b), nc_rtol(h, y)
    for chunk in (7, 128, 10_000):
        nc, bound = collapse_and_bound(h, y, w, b, chunk_size=chunk)
        assert bound.bound == pytest.approx(bound_alone.bound, rel=0, abs=atol)
        assert bound.bound_trace == pytest.approx(bound_alone.bound_trace, rel=0, abs=atol)
        assert bound.test_error == bound_alone.test_error
        for name in nc.__dataclass_fields__:
            # abs: the cosine-based measures are built from values <= 1 (absolute round-off).
            got, want = getattr(nc, name), getattr(nc_alone, name)
            assert got == pytest.approx(want, rel=rtol, abs=rtol), name
    h32 = h.float()
    ref = reference(h32.double().numpy(), y.numpy(), w.numpy(), b.numpy())
    r = generalization_bound(h32, y, w, b, chunk_size=33)
    assert r.bound == pytest.approx(
        ref["bound"], rel=0, abs=(4 - 1) * term_atol(r, h32.double(), w, b)
    )
    assert r.test_error == ref["test_error"]
