"""Neural-collapse measures of penultimate features, in float64.

Two implementations of the same measures, tested against each other and against a loop
reference: :func:`neural_collapse` for features in memory (two exact passes, O(N d K)) and
:class:`NeuralCollapseAccumulator` for features streamed in batches (one pass over shifted
moments, O(N d^2), plus a second pass for NC4).

Notation: features h_i in R^d (i = 1..N) with labels y_i, class counts n_c, class means
mu_c, class frequencies pi_c = n_c / N, the data-weighted global mean mu_G = sum_c pi_c mu_c,
and the unweighted mean of class means mu_bar = (1/C) sum_c mu_c over the C classes that have
at least one sample.

Measures (Papyan, Han & Donoho 2020, "Prevalence of neural collapse ..."; Sakamoto & Sato 2025,
"Explaining Grokking and Information Bottleneck through Neural Collapse Emergence"):

* ``within_class_variance``  = (1/N) sum_i ||h_i - mu_{y_i}||^2
* ``between_class_variance`` = sum_c pi_c ||mu_c - mu_G||^2
* ``nc1_trace`` = within / between
* ``rnc1``      = within / ((1/N) sum_i ||h_i||)^2  (Sakamoto & Sato's rescaled NC1)
* ``nc1``       = (1/C) tr(Sigma_W Sigma_B^+), with
  Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T and
  Sigma_B = (1/C) sum_c (mu_c - mu_bar)(mu_c - mu_bar)^T
* ``nc2_cond``  = sigma_max(M) / sigma_min(M), M the C x d matrix of uncentered class means
  (1 when the means are orthogonal with equal norms; needs C <= d)
* ``equinorm``  = std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||
* ``equiangularity`` = std over c != c' of cos(mu_c - mu_G, mu_c' - mu_G)
* ``max_angle`` = mean over c != c' of |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|
  (0 for a simplex equiangular tight frame)
* ``nc3`` = || W/||W||_F - M_c/||M_c||_F ||_F^2, W the C x d classifier rows of the present
  classes and M_c the C x d matrix with rows mu_c - mu_G
* ``nc4`` = fraction of samples with argmax_k (W h + b)_k != argmin_c ||h - mu_c||

All standard deviations are population ones (ddof = 0), as in Papyan et al.'s code.
Papyan's NC1 only needs Sigma_W's quadratic forms along the at most C - 1 directions that
span Sigma_B (see ``sigma_b_directions`` in ``_class_stats``), which is what lets the in-memory path skip the
d x d matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genlab.measures._class_stats import (
    DEFAULT_CHUNK_ROWS,
    ClassStatistics,
    class_statistics,
    sigma_b_directions,
)
from genlab.measures.nc_bound import GeneralizationBound, bound_from_statistics

__all__ = [
    "NeuralCollapse",
    "NeuralCollapseAccumulator",
    "collapse_and_bound",
    "neural_collapse",
]


@dataclass(frozen=True)
class NeuralCollapse:
    """Neural-collapse measures; see the module docstring for the formulas.

    ``num_classes`` counts the classes with at least one sample: every class-wise quantity is
    over those. ``nc3`` is None without a classifier weight, ``nc4`` without the second pass.
    """

    num_samples: int
    num_classes: int
    within_class_variance: float
    between_class_variance: float
    nc1_trace: float
    rnc1: float
    mean_feature_norm: float
    nc1: float
    nc2_cond: float
    equinorm: float
    equiangularity: float
    max_angle: float
    nc3: float | None = None
    nc4: float | None = None


def _ratio(num: float, den: float) -> float:
    """num / den that gives inf (or nan for 0/0) instead of raising on a zero denominator."""
    if den > 0:
        return num / den
    return math.nan if num == 0 else math.inf


class NeuralCollapseAccumulator:
    """Accumulate the moments that every measure but NC4 needs, in one pass, in float64.

    State: per-class counts n_c, per-class shifted sums sum_{i in c} (h_i - r_c), one d x d
    matrix A = sum_i (h_i - r_{y_i})(h_i - r_{y_i})^T and sum_i ||h_i||. The shift r_c is the
    mean of class c in the first batch that contains it. The within-class scatter is then

        S_W = sum_c sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T = A - sum_c n_c a_c a_c^T,
        a_c = mu_c - r_c,

    which is exact algebra for any r_c; the shift is there because without it the
    subtraction cancels catastrophically exactly in the collapsed regime we want to measure
    (||mu_c|| large, within-class spread tiny). Memory is O(K d + d^2), whatever N is.

    NC4 compares the classifier with the nearest-class-mean rule, whose means are only known
    after the whole first pass, so it needs a second pass: call :meth:`update_nc4` on every
    batch again (with the classifier's logits) once all :meth:`update` calls are done. The means
    are frozen at the first :meth:`update_nc4` call; a later :meth:`update` raises.

    Example::

        acc = NeuralCollapseAccumulator(num_classes=10, dim=512)
        for h, y in loader_features: acc.update(h, y)
        for h, _ in loader_features: acc.update_nc4(h, head(h))   # optional second pass
        result = acc.compute(weight=head.weight)
    """

    def __init__(self, num_classes: int, dim: int, device: torch.device | str | None = None):
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be positive, got {num_classes}, {dim}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self._device = None if device is None else torch.device(device)
        self._state_ready = False
        self._frozen_means: torch.Tensor | None = None
        self._frozen_ids: torch.Tensor | None = None
        self._frozen_center: torch.Tensor | None = None
        self._nc4_mismatch = 0
        self._nc4_count = 0
        if self._device is not None:
            self._init_state(self._device)

    def _init_state(self, device: torch.device) -> None:
        # float64 is missing on MPS: accumulate on the CPU there.
        if device.type == "mps":
            device = torch.device("cpu")
        self._device = device
        k, d, f64 = self.num_classes, self.dim, torch.float64
        self._counts = torch.zeros(k, dtype=torch.long, device=device)
        self._shift = torch.zeros(k, d, dtype=f64, device=device)
        self._seen = torch.zeros(k, dtype=torch.bool, device=device)
        self._shifted_sums = torch.zeros(k, d, dtype=f64, device=device)
        self._second_moment = torch.zeros(d, d, dtype=f64, device=device)
        self._norm_sum = torch.zeros((), dtype=f64, device=device)
        self._state_ready = True

    def _check_batch(self, features: torch.Tensor, labels: torch.Tensor | None = None):
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"features must have shape (batch, {self.dim}), got {tuple(features.shape)}"
            )
        if not self._state_ready:
            self._init_state(features.device)
        h = features.detach().to(device=self._device, dtype=torch.float64)
        if labels is None:
            return h, None
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}"
            )
        y = labels.detach().to(device=self._device, dtype=torch.long)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return h, y

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of features (B, d) with integer labels (B,) to the first pass."""
        if self._frozen_means is not None:
            raise RuntimeError("update() after update_nc4(): the class means are already frozen")
        h, y = self._check_batch(features, labels)
        if h.shape[0] == 0:
            return
        batch_counts = torch.bincount(y, minlength=self.num_classes)
        new = (batch_counts > 0) & ~self._seen
        if bool(new.any()):
            batch_sums = torch.zeros_like(self._shift).index_add_(0, y, h)
            self._shift[new] = batch_sums[new] / batch_counts[new, None]
            self._seen |= new
        a = h - self._shift[y]
        self._second_moment += a.T @ a
        self._shifted_sums.index_add_(0, y, a)
        self._counts += batch_counts
        self._norm_sum += torch.linalg.vector_norm(h, dim=1).sum()

    def _means(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Present class ids, their counts (float64) and their means (C, d)."""
        ids = torch.nonzero(self._counts > 0).flatten()
        n = self._counts[ids].to(torch.float64)
        offsets = self._shifted_sums[ids] / n[:, None]
        return ids, n, self._shift[ids] + offsets

    @torch.no_grad()
    def update_nc4(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        """Second pass for NC4: features (B, d) and the classifier's logits (B, K) for them.

        Counts the samples whose classifier prediction argmax(logits) differs from the
        nearest class mean, with the means of the completed first pass.
        """
        if not self._state_ready or int(self._counts.sum()) == 0:
            raise RuntimeError("update_nc4() needs a completed first pass of update() calls")
        h, _ = self._check_batch(features)
        if logits.ndim != 2 or logits.shape[0] != h.shape[0]:
            raise ValueError(f"logits must have shape ({h.shape[0]}, K), got {tuple(logits.shape)}")
        if self._frozen_means is None:
            ids, n, means = self._means()
            center = (n[:, None] * means).sum(0) / n.sum()
            # Centering both sides by mu_G keeps the ||h||^2 - 2 h.mu + ||mu||^2 expansion
            # from cancelling when all features share a large offset.
            self._frozen_ids, self._frozen_center = ids, center
            self._frozen_means = means - center
        hc = h - self._frozen_center
        mu = self._frozen_means
        sq_dist = (mu * mu).sum(1)[None, :] - 2.0 * hc @ mu.T
        nearest = self._frozen_ids[sq_dist.argmin(dim=1)]
        predicted = logits.detach().to(self._device).argmax(dim=1)
        self._nc4_mismatch += int((predicted != nearest).sum())
        self._nc4_count += int(h.shape[0])

    @torch.no_grad()
    def compute(
        self, weight: torch.Tensor | None = None, pinv_rtol: float = 1e-6
    ) -> NeuralCollapse:
        """All measures from the accumulated moments.

        ``weight`` (K, d), the last layer's weight, enables NC3. ``pinv_rtol`` is the relative
        cut-off of the pseudo-inverse of Sigma_B on the singular values of the centered mean
        matrix (s_r > pinv_rtol * s_max; i.e. pinv_rtol^2 on Sigma_B's eigenvalues); at most C-1
        of them are kept, the rank of Sigma_B.
        """
        if not self._state_ready or int(self._counts.sum()) == 0:
            raise RuntimeError("compute() before any update()")
        ids, n, means = self._means()
        _check_classes(int(ids.numel()), self.dim)
        total = n.sum()
        # Within-class scatter from the shifted moments (see the class docstring).
        a = self._shifted_sums[ids] / n[:, None]
        scatter = self._second_moment - (a * n[:, None]).T @ a
        sigma_w = 0.5 * (scatter + scatter.T) / total
        within = float(torch.trace(sigma_w))
        v, s = sigma_b_directions(means, pinv_rtol)
        nc1 = float(((v @ sigma_w * v).sum(1) / s**2).sum()) if len(s) else _ratio(within, 0.0)
        nc4 = self._nc4_mismatch / self._nc4_count if self._nc4_count else None
        return _measures(
            ids,
            n,
            means,
            within=within,
            nc1=nc1,
            mean_norm=float(self._norm_sum / total),
            dim=self.dim,
            num_classes=self.num_classes,
            weight=weight,
            nc4=nc4,
        )


def _check_classes(num_present: int, dim: int) -> None:
    if num_present < 2:
        raise ValueError("neural collapse needs samples of at least two classes")
    if num_present > dim:
        raise ValueError(
            f"nc2_cond needs num_classes <= dim (C x d mean matrix of full row rank), "
            f"got {num_present} classes in dimension {dim}"
        )


def _measures(
    ids: torch.Tensor,
    n: torch.Tensor,
    means: torch.Tensor,
    *,
    within: float,
    nc1: float,
    mean_norm: float,
    dim: int,
    num_classes: int,
    weight: torch.Tensor | None,
    nc4: float | None,
) -> NeuralCollapse:
    """Every measure from the present class ids, their counts n (float64) and means (C, d), the
    within-class variance tr(Sigma_W), Papyan's NC1 and the mean feature norm. Shared by the
    one-pass accumulator and the in-memory two-pass :func:`neural_collapse`."""
    num_present = int(ids.numel())
    total = n.sum()
    # Rounding can leave a tiny negative value when features are fully collapsed.
    within = max(within, 0.0)

    global_mean = (n[:, None] * means).sum(0) / total
    centered = means - global_mean
    center_norms = torch.linalg.vector_norm(centered, dim=1)
    between = float(((n / total) * center_norms**2).sum())

    # NC2 condition number of the uncentered means.
    sv = torch.linalg.svdvals(means)
    nc2_cond = _ratio(float(sv[0]), float(sv[-1]))

    equinorm = _ratio(float(center_norms.std(correction=0)), float(center_norms.mean()))
    unit = centered / center_norms[:, None]
    cos = unit @ unit.T
    off = cos[~torch.eye(num_present, dtype=torch.bool, device=cos.device)]
    equiangularity = float(off.std(correction=0))
    max_angle = float((off + 1.0 / (num_present - 1)).abs().mean())

    nc3 = None
    if weight is not None:
        if weight.shape != (num_classes, dim):
            raise ValueError(
                f"weight must have shape ({num_classes}, {dim}), got {tuple(weight.shape)}"
            )
        w = weight.detach().to(device=means.device, dtype=torch.float64)[ids]
        diff = w / torch.linalg.norm(w) - centered / torch.linalg.norm(centered)
        nc3 = float((diff**2).sum())

    return NeuralCollapse(
        num_samples=int(total),
        num_classes=num_present,
        within_class_variance=within,
        between_class_variance=between,
        nc1_trace=_ratio(within, between),
        rnc1=_ratio(within, mean_norm**2),
        mean_feature_norm=mean_norm,
        nc1=nc1,
        nc2_cond=nc2_cond,
        equinorm=equinorm,
        equiangularity=equiangularity,
        max_angle=max_angle,
        nc3=nc3,
        nc4=nc4,
    )


def _check_inputs(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight: torch.Tensor | None
) -> None:
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features.shape)}")
    num, dim = features.shape
    if labels.shape != (num,):
        raise ValueError(f"labels must have shape ({num},), got {tuple(labels.shape)}")
    if weight is not None and weight.shape != (num_classes, dim):
        raise ValueError(
            f"weight must have shape ({num_classes}, {dim}), got {tuple(weight.shape)}"
        )
    if num == 0:
        raise ValueError("neural collapse needs samples of at least two classes")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    present = int((torch.bincount(labels.long(), minlength=num_classes) > 0).sum())
    _check_classes(present, dim)


def _from_statistics(
    stats: ClassStatistics, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> NeuralCollapse:
    f64 = torch.float64
    ids = torch.nonzero(stats.counts).flatten()
    n = stats.counts[ids].to(f64)
    total = float(n.sum())
    within = float(stats.residual_sq.sum()) / total
    s = stats.singular
    nc1 = float((stats.along / total / s**2).sum()) if len(s) else _ratio(within, 0.0)
    nc4 = None
    if stats.logits is not None:
        logits = stats.logits
        if bias is not None:
            logits = logits + bias.detach().to(device=logits.device, dtype=f64)
        nc4 = float((logits.argmax(dim=1) != stats.nearest).to(f64).mean())
    return _measures(
        ids,
        n,
        stats.means[ids],
        within=within,
        nc1=nc1,
        mean_norm=stats.norm_sum / total,
        dim=stats.means.shape[1],
        num_classes=stats.means.shape[0],
        weight=weight,
        nc4=nc4,
    )


def neural_collapse(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    num_classes: int | None = None,
    *,
    pinv_rtol: float = 1e-6,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> NeuralCollapse:
    """Neural-collapse measures of all features (N, d) with labels (N,) at once.

    With the features in memory there is no need for the accumulator's d x d second moment
    (O(N d^2)): two exact passes in float64 do it in O(N d K) (see
    ``_class_stats.class_statistics``). Pass 1 gives the class means (and the logits); pass 2
    the residuals r_i = h_i - mu_{y_i}, whose squared norm is the within-class variance, whose
    projections on the at most C - 1 directions of Sigma_B give Papyan's NC1, and from which
    the nearest class mean follows (NC4). Centering before squaring keeps full precision in
    the collapsed regime. Float32 features are converted ``chunk_size`` rows at a time.

    With the classifier ``weight`` (K, d) (and optional ``bias`` (K,)) it also reports NC3 and
    NC4 (logits = h W^T + b). ``num_classes`` defaults to weight.shape[0], else to
    labels.max() + 1. For features streamed in batches use :class:`NeuralCollapseAccumulator`;
    with the bound on the same features use :func:`genlab.measures.collapse_and_bound`.
    """
    if num_classes is None:
        num_classes = int(weight.shape[0]) if weight is not None else int(labels.max()) + 1
    _check_inputs(features, labels, num_classes, weight)
    stats = class_statistics(
        features, labels, num_classes, weight, pinv_rtol=pinv_rtol, chunk_size=chunk_size
    )
    return _from_statistics(stats, weight, bias)


def collapse_and_bound(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    pinv_rtol: float = 1e-6,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> tuple[NeuralCollapse, GeneralizationBound]:
    """``(neural_collapse(...), generalization_bound(...))`` of the same features, labels and
    classifier, from one pair of passes over the features instead of two (both measures are
    built from the same class statistics)."""
    num_classes = int(weight.shape[0])
    _check_inputs(features, labels, num_classes, weight)
    stats = class_statistics(
        features, labels, num_classes, weight, pinv_rtol=pinv_rtol, chunk_size=chunk_size
    )
    return _from_statistics(stats, weight, bias), bound_from_statistics(stats, labels, weight, bias)
