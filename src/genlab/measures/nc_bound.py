"""The neural-collapse bound on the test error of a linear classifier on features.

Sakamoto & Sato, "Explaining Grokking and Information Bottleneck through Neural Collapse
Emergence" (arXiv 2509.20829), Theorem 3.2. For a classifier argmax_k (w_k . h + b_k) on
features h with class priors p(c):

    P[error] <= sum_c p(c) sum_{k != c} (1 + m_ck^2 / s_ck^2)^-1

with, on features rescaled by their largest norm, h~ = h / S, S = max_i ||h_i||:

    u_ck  = (w_c - w_k) / ||w_c - w_k||                   unit direction separating c from k
    m_ck  = u_ck . E[h~ | c] + (b_c - b_k) / (S ||w_c - w_k||)   margin of class c's mean
    s_ck^2 = Var[u_ck . h~ | c]                            class-c variance along u_ck

and the term taken as 1 when m_ck <= 0 (i.e. m_ck is replaced by max(0, m_ck)).

Why it holds: sample x of class c is sent to k only if (w_c - w_k) . h + b_c - b_k <= 0, i.e.
u_ck . h~ + beta_ck <= 0 with beta_ck the rescaled bias offset. That variable has mean m_ck and
variance s_ck^2, so Cantelli's one-sided inequality gives P <= s^2 / (s^2 + m^2) for m > 0,
and a union over k != c bounds the error of class c.

Units: dividing h by S turns the logits w . h + b into w . (h / S) + b / S, so the bias
offset is divided by S too. Then m_ck and s_ck scale by the same 1/S and the bound does not
depend on S at all; the rescaling only sets the units of the reported margins and variances
(the paper's normalisation, features in the unit ball).

The paper's statement (``bound_stated``) has no bias term and the total within-class
variance; ``bound`` is a tighter variant for a classifier with a bias. Everything is
estimated on the given sample. On the sample whose error it bounds, ``bound >= error`` holds
by construction (Cantelli's inequality holds for the empirical distribution too): computed
on test features it is no prediction. Computed from training features it predicts the test
error from training statistics only, the theorem's use through the training-set RNC1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.measures._class_stats import DEFAULT_CHUNK_ROWS, ClassStatistics, class_statistics

__all__ = ["GeneralizationBound", "generalization_bound"]


@dataclass(frozen=True)
class GeneralizationBound:
    """Theorem 3.2 bound and the measured error of the same classifier.

    bound_stated: Theorem 3.2 as the paper states it: margin <E[h~|c], u_ck> (no bias term)
                  over the total within-class variance E[||h~ - E[h~|c]||^2 | c]. It bounds the
                  error of the bias-free classifier argmax W h; with a bias it is a prediction,
                  not a guarantee, for the classifier actually used
    bound:        the tighter variant: margin with the bias offset m_ck over the variance
                  along u_ck, s_ck^2; sum_c p(c) per_class[c]
    bound_trace:  the variant's margin over the total within-class variance (>= bound)
    test_error:   fraction of samples with argmax(W h + b) != y
    per_class:    (K,) sum_{k != c} of the pairwise terms; nan for classes with no sample
    pairwise:     (K, K) terms (1 + max(0, m_ck)^2 / s_ck^2)^-1, zero diagonal
    margins:      (K, K) signed m_ck in rescaled units (before the max with 0)
    variances:    (K, K) s_ck^2 in rescaled units
    class_priors: (K,) empirical p(c)
    scale:        S = max_i ||h_i||
    """

    bound: float
    bound_trace: float
    bound_stated: float
    test_error: float
    per_class: torch.Tensor
    pairwise: torch.Tensor
    margins: torch.Tensor
    variances: torch.Tensor
    class_priors: torch.Tensor
    scale: float


def _cantelli(margin: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """(1 + max(0, m)^2 / s^2)^-1 written as s^2 / (s^2 + m^2), 1 for m <= 0.

    The second form has no 0/0 when the class is fully collapsed along u (s = 0, m > 0): the
    one-sided bound is then exactly 0.
    """
    m2 = margin.clamp(min=0.0) ** 2
    term = variance / (variance + m2)
    return torch.where(margin > 0, term, torch.ones_like(term))


@torch.no_grad()
def generalization_bound(
    features_test: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> GeneralizationBound:
    """Theorem 3.2 of Sakamoto & Sato on features (N, d), labels (N,), weight (K, d), bias (K,).

    See the module docstring for the formulas. A pair with w_c = w_k has no direction: its
    logit difference is the constant b_c - b_k, so its term is 1 if b_c <= b_k else 0 (margin
    reported as nan). Float32 features are converted to float64 ``chunk_size`` rows at a time.
    """
    if features_test.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features_test.shape)}")
    n, d = features_test.shape
    if weight.ndim != 2 or weight.shape[1] != d:
        raise ValueError(f"weight must have shape (K, {d}), got {tuple(weight.shape)}")
    k = weight.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if n == 0:
        raise ValueError("no samples")
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"labels must lie in [0, {k})")
    stats = class_statistics(features_test, labels, k, weight, chunk_size=chunk_size)
    return bound_from_statistics(stats, labels, weight, bias)


def bound_from_statistics(
    stats: ClassStatistics,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> GeneralizationBound:
    """The bound from the class statistics of validated features (with their logits)."""
    f64 = torch.float64
    logits = stats.logits
    device = logits.device
    n, k = logits.shape
    y = labels.detach().to(device=device, dtype=torch.long)
    w = weight.detach().to(device=device, dtype=f64)
    b = torch.zeros(k, dtype=f64, device=device) if bias is None else bias.detach().to(device, f64)
    counts = stats.counts
    priors = counts.to(f64) / n
    per_count = counts.clamp(min=1).to(f64)[:, None]
    onehot = torch.nn.functional.one_hot(y, k).to(f64)  # class sums as onehot^T @ (...)
    scale = stats.max_norm
    s = scale if scale > 0 else 1.0  # h~ = h / s and b~ = b / s

    # All pairs at once from the logits: for sample i of class c = y_i, the projection on
    # w_c - w_k is G_ic - G_ik with G = h W^T, so the per-class means and (centered) variances
    # along every direction u_ck are class-wise sums over an (N, K) matrix.
    test_error = float((torch.argmax(logits + b, dim=1) != y).to(f64).mean())
    gap = logits.gather(1, y[:, None]) - logits  # (N, K): (w_{y_i} - w_k) . h_i
    gap_mean = (onehot.T @ gap) / per_count  # (K, K): row c the class-c means
    # Centered before squaring: the variance of a projection with a large mean.
    gap_var = (onehot.T @ (gap - onehot @ gap_mean) ** 2) / per_count
    norm = torch.linalg.vector_norm(w[:, None, :] - w[None, :, :], dim=2)  # ||w_c - w_k||
    ok = norm > 0
    unit = s * torch.where(ok, norm, torch.ones_like(norm))  # rescaling and unit direction
    margin = (gap_mean + (b[:, None] - b[None, :])) / unit
    var = gap_var / unit**2
    # E ||h~ - E[h~ | c]||^2 given c, from the residuals to the class means.
    total_var = (onehot.T @ stats.residual_sq) / per_count[:, 0] / s**2
    total_var = total_var[:, None].expand(k, k)

    constant = (b[:, None] - b[None, :] <= 0).to(f64)  # w_c == w_k: decided by the biases alone
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=device)
    present = (counts > 0)[:, None] & off_diagonal
    nan = torch.full((k, k), float("nan"), dtype=f64, device=device)
    pairwise = torch.where(ok, _cantelli(margin, var), constant)
    pairwise_trace = torch.where(ok, _cantelli(margin, total_var), constant)
    # The stated form: no bias, so a pair with w_c = w_k has margin 0 and term 1.
    margin_stated = gap_mean / unit
    pairwise_stated = torch.where(ok, _cantelli(margin_stated, total_var), torch.ones_like(var))
    pairwise_stated = torch.where(present, pairwise_stated, nan)
    pairwise_stated.diagonal()[counts > 0] = 0.0
    pairwise = torch.where(present, pairwise, nan)
    pairwise_trace = torch.where(present, pairwise_trace, nan)
    pairwise.diagonal()[counts > 0] = 0.0
    pairwise_trace.diagonal()[counts > 0] = 0.0
    margins = torch.where(present & ok, margin, nan)
    variances = torch.where(present, var, nan)

    per_class = pairwise.sum(1)
    present = counts > 0
    bound = float((priors[present] * per_class[present]).sum())
    bound_trace = float((priors[present] * pairwise_trace[present].sum(1)).sum())
    bound_stated = float((priors[present] * pairwise_stated[present].sum(1)).sum())
    return GeneralizationBound(
        bound=bound,
        bound_trace=bound_trace,
        bound_stated=bound_stated,
        test_error=test_error,
        per_class=per_class,
        pairwise=pairwise,
        margins=margins,
        variances=variances,
        class_priors=priors,
        scale=scale,
    )
