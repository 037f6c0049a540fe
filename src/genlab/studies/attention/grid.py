"""Phase diagram of token-selection attention over (||mu||, d): executor, regimes, boundary fit.

:func:`run_grid` trains the model of :mod:`genlab.models.token_attention` on every cell of an
``n x seed x ||mu|| x d`` grid (default 39 x 39 cells per (n, seed): ||mu|| in {5, 7.5, ...,
100}, d in {250, 375, ..., 5000}; T = 8, rho = 0.1, eta = 0.2, lr 5e-3, 1000 steps) and returns
the final metrics of each cell as a :class:`GridResult` (arrays indexed
``[i_n, i_seed, i_mu, j_d]``). Regimes follow :func:`classify_regimes`; the boundary between
benign and not-overfitting cells is fitted as ``n SNR^2 = C`` (:func:`fit_snr_boundary`) and as
a general power law ``||mu||* = c n^a d^b`` per seed with intervals over seeds
(:func:`fit_power_boundary`, :func:`power_law_over_seeds`).

How a cell is computed. Cells are grouped by ``d``; a group (or a chunk of it) is one task.
Within a task all cells share the seed, hence (see :mod:`genlab.data.tokens`) the same
Gaussian noise ``Xi`` (d, m), m = n T, the same labels and the same ``W_0`` (d, d); only the
signal differs, and it lives on coordinates 0 and 1: ``U = Xi + E S``, with ``E = [e_1 e_2]``
and ``S = ||mu|| C`` (2, m). So the operators of the exact m-dimensional GD
(:func:`~genlab.models.token_attention.gram_descent`) follow from group-level products:

* ``G = U^T U = Xi^T Xi + Xi_2^T S + S^T Xi_2 + S^T S`` (``Xi_2`` = rows 0, 1 of ``Xi``),
* ``A = W_0^T U = W_0^T Xi + R S`` with ``R = W_0^T E`` (d, 2), and ``P = A^T A`` expanded the
  same way, ``K = W_0 A = W_0 W_0^T Xi + (W_0 R) S``.

A task therefore costs one ``W_0`` draw and two (d x d)(d x m) products, ``O(d^2 m)``, plus
``O(m)`` per cell for its operators (P and G are a shared base plus a ``mu``-scaled rank-2
part, :class:`~genlab.models.token_attention.LowRankGram`); then ``steps`` batched GD steps of
``O(m^2)`` per cell (independent of d); then the test evaluation, ``O(N T d)`` per cell via ``q = W p``. ``W`` is
never materialised. Per-cell results equal those of
``train_token_attention(make_token_data(...))`` up to float rounding.

Tasks run through :func:`genlab.executor.map_tasks` (``"local"``, ``"process"`` or
``"ray"``), each with ``threads`` (default 1) intra-op threads, so results do not depend on the
executor (bit for bit on one machine, for one split into tasks; another split,
``max_cells_per_task`` or ``memory_budget_bytes``, batches BLAS calls differently and changes
only float rounding, ~1e-7 relative in float32).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genlab.data.tokens import draw_token_noise, signal_coefficients
from genlab.errors import ConfigError
from genlab.executor import Executor, map_tasks, num_threads
from genlab.models.token_attention import (
    LowRankGram,
    class_attention,
    gram_descent,
    init_w0,
    readout,
)

#: The paper's grid: ||mu|| in {5, 7.5, ..., 100} and d in {250, 375, ..., 5000} (39 each).
MU_VALUES: tuple[float, ...] = tuple(5.0 + 2.5 * k for k in range(39))
D_VALUES: tuple[int, ...] = tuple(250 + 125 * k for k in range(39))

#: Regime codes returned by :func:`classify_regimes`.
REGIMES = ("not_overfitting", "benign", "harmful")
NOT_OVERFITTING, BENIGN, HARMFUL = 0, 1, 2

#: Per-cell metrics of a grid run, in the order of :attr:`GridResult.metrics`.
METRICS = (
    "train_loss",
    "test_loss",
    "train_acc",
    "clean_train_acc",
    "noisy_train_acc",
    "test_acc",
    "attn_relevant_test",
    "attn_relevant_clean",
    "attn_relevant_noisy",
)

# --------------------------------------------------------------------------------------------
# One task: a chunk of cells sharing d
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridTask:
    """Cells ``(mu, d)`` for ``mu in mus`` sharing ``d`` and every other setting (picklable)."""

    d: int
    mus: tuple[float, ...]
    n: int = 20
    n_test: int = 1000
    T: int = 8
    rho: float = 0.1
    eta: float = 0.2
    sigma: float = 1.0
    seed: int = 0
    steps: int = 1000
    lr: float = 5e-3
    w_init: str = "kaiming"
    train_w: bool = True
    dtype: str = "float32"
    threads: int | None = 1


def run_task(task: GridTask) -> dict[str, np.ndarray]:
    """Train the cells of ``task`` and return their final metrics, each (len(task.mus),)."""
    with num_threads(task.threads):
        return _run_task(task)


def _run_task(task: GridTask) -> dict[str, np.ndarray]:
    dtype = getattr(torch, task.dtype)
    n, T, d, N = task.n, task.T, task.d, task.n_test
    m = n * T
    noise = draw_token_noise(n, N, T, d, task.eta, task.sigma, task.seed, dtype)
    mu = torch.tensor(task.mus, dtype=dtype)  # (B,)
    B = mu.shape[0]

    Xi = noise.xi_train.reshape(m, d).T  # (d, m), column i T + t = token t of sample i
    Xi2 = Xi[:2]  # (2, m)
    coef = signal_coefficients(noise.clean_y_train, T, task.rho).reshape(m, 2).T.to(dtype)
    coef = coef.contiguous()  # (2, m) = C
    S = mu.view(B, 1, 1) * coef  # (B, 2, m): signal of every training token on e_1, e_2

    # G_b = U^T U = Xi^T Xi + mu_b (Xi_2^T C + C^T Xi_2) + mu_b^2 C^T C   (S = mu_b C)
    G = LowRankGram(Xi.T @ Xi, Xi2.T.contiguous(), coef, torch.eye(2, dtype=dtype), mu)
    if task.w_init == "kaiming":
        w0 = init_w0(d, task.seed, dtype)  # (d, d)
        AXi = w0.T @ Xi  # (d, m) = W0^T Xi
        KXi = w0 @ AXi  # (d, m) = W0 W0^T Xi
        R = w0[:2].T.contiguous()  # (d, 2) = W0^T E
        H = w0 @ R  # (d, 2) = W0 W0^T E
        del w0
        # P_b = A^T A, A = AXi + R S: AXi^T AXi + mu_b (F C + C^T F^T) + mu_b^2 C^T R^T R C
        P = LowRankGram(AXi.T @ AXi, AXi.T @ R, coef, R.T @ R, mu)
    elif task.w_init == "identity":
        KXi, H = Xi, torch.eye(d, 2, dtype=dtype)
        P = G
    else:
        raise ConfigError("w_init", f"must be 'kaiming' or 'identity', got {task.w_init!r}")

    U2 = Xi2.unsqueeze(0) + S  # (B, 2, m): coordinates 0, 1 of the training tokens
    v = ((U2[:, 0] - U2[:, 1]) / (math.sqrt(2.0) * mu.view(B, 1))).view(B, n, T)  # X nu
    y = noise.y_train.to(dtype).expand(B, n)
    final = gram_descent(P, G, v, y, steps=task.steps, lr=task.lr, train_w=task.train_w)

    # q = K c - U r = KXi c + H S c - Xi r - E S r                                   (B, d)
    c, r = final.c, final.r
    Sc = torch.einsum("bkm,bm->bk", S, c)
    Sr = torch.einsum("bkm,bm->bk", S, r)
    q = c @ KXi.T + Sc @ H.T - r @ Xi.T
    q[:, :2] -= Sr

    # Test set: X_test = Xi_test + signal on coordinates 0, 1 (the same draw as make_token_data).
    xit = noise.xi_test.reshape(N * T, d)
    coef_t = signal_coefficients(noise.y_test, T, task.rho).to(dtype)  # (N, T, 2)
    s_t = (xit @ q.T).T.reshape(B, N, T) + mu.view(B, 1, 1) * (coef_t @ q[:, :2].T).permute(2, 0, 1)
    dv = (xit[:, 0] - xit[:, 1]).reshape(N, T)
    v_t = (dv + mu.view(B, 1, 1) * (coef_t[..., 0] - coef_t[..., 1])) / (
        math.sqrt(2.0) * mu.view(B, 1, 1)
    )
    y_t = noise.y_test.to(dtype).expand(B, N)
    a_t, f_t, loss_t = readout(s_t, v_t, y_t)

    clean = ~noise.noisy_mask.expand(B, n)
    correct = (y * final.f > 0).to(dtype)

    def masked(x, mask):
        w = mask.to(dtype)
        return (x * w).sum(-1) / w.sum(-1)

    out = {
        "train_loss": final.loss.mean(-1),
        "test_loss": loss_t.mean(-1),
        "train_acc": correct.mean(-1),
        "clean_train_acc": masked(correct, clean),
        "noisy_train_acc": masked(correct, ~clean),
        "test_acc": (y_t * f_t > 0).to(dtype).mean(-1),
        "attn_relevant_test": class_attention(a_t)[:, 0],
        "attn_relevant_clean": class_attention(final.a, clean)[:, 0],
        "attn_relevant_noisy": class_attention(final.a, ~clean)[:, 0],
    }
    return {k: val.detach().to(torch.float64).numpy() for k, val in out.items()}


# --------------------------------------------------------------------------------------------
# Grid executor
# --------------------------------------------------------------------------------------------


@dataclass
class GridResult:
    """Final per-cell metrics of a grid run: ``metrics[name]`` is
    (len(n_values), len(seeds), len(mu_values), len(d_values)), indexed
    ``[i_n, i_seed, i_mu, j_d]`` (names in :data:`METRICS`). ``config`` records the settings."""

    n_values: np.ndarray
    seeds: np.ndarray
    mu_values: np.ndarray
    d_values: np.ndarray
    metrics: dict[str, np.ndarray]
    config: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def __getattr__(self, name: str) -> np.ndarray:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(name)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.n_values), len(self.seeds), len(self.mu_values), len(self.d_values))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, ||mu||, d) of every cell, each broadcast to :attr:`shape`."""
        n = np.asarray(self.n_values, dtype=float)[:, None, None, None]
        mu = np.asarray(self.mu_values, dtype=float)[None, None, :, None]
        d = np.asarray(self.d_values, dtype=float)[None, None, None, :]
        return tuple(np.broadcast_to(a, self.shape) for a in (n, mu, d))

    @property
    def n_snr2(self) -> np.ndarray:
        """``n SNR^2 = n ||mu||^2 / (sigma^2 d)`` of every cell (:attr:`shape`)."""
        n, mu, d = self.axes()
        return n * mu**2 / (self.config["sigma"] ** 2 * d)

    def regimes(self, **kwargs) -> np.ndarray:
        """Regime codes (:data:`REGIMES`) of every cell; keywords as :func:`classify_regimes`."""
        return classify_regimes(
            self.noisy_train_acc,
            self.test_loss,
            self.axes()[1],
            clean_train_acc=self.clean_train_acc,
            T=self.config["T"],
            sigma=self.config["sigma"],
            **kwargs,
        )

    def boundary(self, **kwargs) -> BoundaryFit:
        """Fit ``n SNR^2 = C`` between benign and not-overfitting cells (:func:`fit_snr_boundary`)."""
        return fit_snr_boundary(self.n_snr2, self.regimes(**kwargs))

    def power_law(self, **kwargs) -> PowerLawSummary:
        """Fit ``||mu||* = c n^a d^b`` per seed (:func:`fit_power_boundary`), with intervals."""
        return power_law_over_seeds(self, self.regimes(**kwargs))

    def to_dict(self) -> dict:
        """JSON-ready nested lists."""
        return {
            "n_values": np.asarray(self.n_values).tolist(),
            "seeds": np.asarray(self.seeds).tolist(),
            "mu_values": self.mu_values.tolist(),
            "d_values": self.d_values.tolist(),
            "metrics": {k: v.tolist() for k, v in self.metrics.items()},
            "config": dict(self.config),
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> GridResult:
        return cls(
            np.array(raw["n_values"], dtype=int),
            np.array(raw["seeds"], dtype=int),
            np.array(raw["mu_values"], dtype=float),
            np.array(raw["d_values"], dtype=int),
            {k: np.array(v, dtype=float) for k, v in raw["metrics"].items()},
            raw["config"],
            float(raw.get("wall_s", 0.0)),
        )


def make_tasks(
    mu_values: Sequence[float],
    d_values: Sequence[int],
    *,
    max_cells_per_task: int | None = None,
    memory_budget_bytes: float = 1e9,
    **settings,
) -> list[GridTask]:
    """Split the grid into :class:`GridTask` s: one per d (largest d first, for load balance),
    each cut into chunks of at most ``max_cells_per_task`` cells and so that the per-task state
    (M and a temporary, two (m, m) matrices per cell; P and G are shared per task as
    :class:`~genlab.models.token_attention.LowRankGram`, plus the d x d ``W_0`` and the test
    noise) stays under ``memory_budget_bytes``."""
    n, T = settings.get("n", 20), settings.get("T", 8)
    itemsize = torch.empty(0, dtype=getattr(torch, settings.get("dtype", "float32"))).element_size()
    per_cell = 2 * (n * T) ** 2 * itemsize
    tasks = []
    for d in sorted({int(x) for x in d_values}, reverse=True):
        m = n * T
        fixed = (d * d + settings.get("n_test", 1000) * T * d + 4 * d * m + 2 * m * m) * itemsize
        cap = max(1, int((memory_budget_bytes - fixed) // per_cell))
        if max_cells_per_task:
            cap = min(cap, int(max_cells_per_task))
        mus = [float(x) for x in mu_values]
        for k in range(0, len(mus), cap):
            tasks.append(GridTask(d=d, mus=tuple(mus[k : k + cap]), **settings))
    return tasks


def run_grid(
    mu_values: Sequence[float] = MU_VALUES,
    d_values: Sequence[int] = D_VALUES,
    *,
    n_values: Sequence[int] = (20,),
    seeds: Sequence[int] = (0,),
    steps: int = 1000,
    lr: float = 5e-3,
    eta: float = 0.2,
    n_test: int = 1000,
    T: int = 8,
    rho: float = 0.1,
    sigma: float = 1.0,
    w_init: str = "kaiming",
    train_w: bool = True,
    dtype: torch.dtype = torch.float32,
    executor: Executor = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    threads: int | None = 1,
    max_cells_per_task: int | None = None,
    memory_budget_bytes: float = 1e9,
    mp_context: str = "spawn",
    progress: Callable[[int, int], None] | None = None,
) -> GridResult:
    """Train every ``(n, seed, ||mu||, d)`` cell and collect its final metrics (:data:`METRICS`).

    ``executor``: ``"local"`` (this process, tasks one after another), ``"process"``
    (``ProcessPoolExecutor`` with ``workers`` processes, default ``os.cpu_count()``, start
    method ``mp_context``) or
    ``"ray"`` (``ray.init(address=ray_address)`` when given, else a local ``ray.init()``; Ray
    must be installed). Each task runs with ``threads`` intra-op threads (default 1 - the
    parallelism is across tasks). Tasks: one per (n, seed, d), split so that each stays under
    ``memory_budget_bytes`` and ``max_cells_per_task`` (:func:`make_tasks`); all go to the
    executor at once, most expensive first. ``progress(done_cells, total_cells)`` is called
    after each task. Within one (n, seed) all cells share the data noise and ``W_0`` of each d
    (they depend on ``(n, seed, d)`` only), so a row of the diagram compares signal strengths
    on the very same noise; seeds redraw noise, labels to flip and ``W_0``.
    """
    if executor not in ("local", "process", "ray"):
        raise ConfigError("executor", f"must be 'local', 'process' or 'ray', got {executor!r}")
    mu_arr = np.asarray([float(x) for x in mu_values])
    d_arr = np.asarray([int(x) for x in d_values])
    n_arr = np.asarray([int(x) for x in n_values])
    seed_arr = np.asarray([int(x) for x in seeds])
    for name, arr in (("mu_values", mu_arr), ("d_values", d_arr), ("n_values", n_arr),
                      ("seeds", seed_arr)):  # fmt: skip
        if arr.size == 0 or len(set(arr.tolist())) != len(arr):
            raise ConfigError(name, "grid values must be distinct and non-empty")
    settings = dict(
        n_test=n_test, T=T, rho=rho, eta=eta, sigma=sigma, steps=steps, lr=lr,
        w_init=w_init, train_w=train_w, dtype=str(dtype).removeprefix("torch."), threads=threads,
    )  # fmt: skip
    tasks = [
        task
        for n in n_arr
        for seed in seed_arr
        for task in make_tasks(
            mu_arr,
            d_arr,
            max_cells_per_task=max_cells_per_task,
            memory_budget_bytes=memory_budget_bytes,
            n=int(n),
            seed=int(seed),
            **settings,
        )  # fmt: skip
    ]
    # Most expensive first (O(m^2) per cell and step, m = n T; then d), for load balance.
    tasks.sort(key=lambda t: (t.n, t.d), reverse=True)
    shape = (len(n_arr), len(seed_arr), len(mu_arr), len(d_arr))
    metrics = {k: np.full(shape, np.nan) for k in METRICS}
    mu_index = {float(mu): i for i, mu in enumerate(mu_arr)}
    total = int(np.prod(shape))
    done = 0

    def on_done(task: GridTask, out: dict[str, np.ndarray]) -> None:
        nonlocal done
        i_n = int(np.flatnonzero(n_arr == task.n)[0])
        i_s = int(np.flatnonzero(seed_arr == task.seed)[0])
        j = int(np.flatnonzero(d_arr == task.d)[0])
        rows = [mu_index[mu] for mu in task.mus]
        for k in METRICS:
            metrics[k][i_n, i_s, rows, j] = out[k]
        done += len(rows)
        if progress is not None:
            progress(done, total)

    start = time.perf_counter()
    map_tasks(
        run_task, tasks, executor=executor, workers=workers, threads=threads,
        ray_address=ray_address, on_done=on_done, mp_context=mp_context,
    )  # fmt: skip
    config = dict(settings, executor=executor, n_tasks=len(tasks))
    return GridResult(n_arr, seed_arr, mu_arr, d_arr, metrics, config, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# Regimes and the n SNR^2 = C boundary
# --------------------------------------------------------------------------------------------


def _expect_softplus_neg(mean: np.ndarray, std: np.ndarray, points: int = 64) -> np.ndarray:
    """``E softplus(-(mean + std Z))``, Z ~ N(0, 1), by Gauss-Hermite quadrature."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    w = w / w.sum()
    vals = np.logaddexp(0.0, -(np.asarray(mean)[..., None] + np.asarray(std)[..., None] * z))
    return (vals * w).sum(-1)


def reference_losses(
    mu_norm: float | np.ndarray, T: int = 8, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Expected clean test loss with all attention on the relevant token (``L_opt``, the
    clean-signal optimum: ``y f = 1/sqrt(2) + (sigma/||mu||) Z``) and with uniform attention
    (``L_unif``: ``y f = 1/(sqrt(2) T) + sigma Z / (||mu|| sqrt(T))``; the rho tokens cancel)."""
    mu = np.asarray(mu_norm, dtype=np.float64)
    s = sigma / mu
    opt = _expect_softplus_neg(np.full_like(mu, 1 / math.sqrt(2)), s)
    unif = _expect_softplus_neg(np.full_like(mu, 1 / (math.sqrt(2) * T)), s / math.sqrt(T))
    return opt, unif


def classify_regimes(
    noisy_train_acc: np.ndarray,
    test_loss: np.ndarray,
    mu_norm: np.ndarray,
    *,
    clean_train_acc: np.ndarray | float = 1.0,
    T: int = 8,
    sigma: float = 1.0,
    fit_threshold: float = 1.0,
    benign_gap: float = 0.5,
) -> np.ndarray:
    """Regime code (:data:`REGIMES`) per cell; arrays of one shape.

    * overfitting: at least ``fit_threshold`` of the flipped training labels and of the clean
      ones are fit (classified as their observed label). The default 1.0 is the paper's
      overfitting: every training label fit, training error 0;
    * not overfitting otherwise;
    * an overfitting cell is benign or harmful by the normalised test loss
      ``g = (test_loss - L_opt) / (L_unif - L_opt)`` (:func:`reference_losses`; 0 = the
      clean-signal optimum, 1 = uniform attention): benign if ``g <= benign_gap``, harmful if
      above.
    """
    opt, unif = reference_losses(mu_norm, T, sigma)
    gap = (np.asarray(test_loss) - opt) / (unif - opt)
    fit = np.minimum(np.asarray(noisy_train_acc), np.asarray(clean_train_acc))
    out = np.where(gap <= benign_gap, BENIGN, HARMFUL)
    return np.where(fit >= fit_threshold, out, NOT_OVERFITTING).astype(np.int8)


@dataclass
class BoundaryFit:
    """``n SNR^2 = C`` separating benign (below) from not-overfitting (above) cells."""

    C: float
    errors: int
    n_cells: int

    @property
    def accuracy(self) -> float:
        return 1.0 - self.errors / self.n_cells if self.n_cells else float("nan")

    def snr_at(self, n: int) -> float:
        """The SNR on the boundary for ``n`` samples: ``sqrt(C / n)``."""
        return math.sqrt(self.C / n)


def fit_snr_boundary(n_snr2: np.ndarray, regimes: np.ndarray) -> BoundaryFit:
    """1-D search for ``C`` minimising the misclassified cells of the rule "benign iff
    ``n SNR^2 < C``, not overfitting iff ``>= C``" over the benign and not-overfitting cells
    (harmful ones are ignored). Candidates are the geometric midpoints between consecutive
    distinct values (and beyond both ends); among the optimal ones the median is returned."""
    x = np.asarray(n_snr2, dtype=np.float64).ravel()
    lab = np.asarray(regimes).ravel()
    keep = (lab == BENIGN) | (lab == NOT_OVERFITTING)
    x, benign = x[keep], lab[keep] == BENIGN
    if x.size == 0:
        return BoundaryFit(float("nan"), 0, 0)
    u = np.unique(x)
    cands = np.concatenate([[u[0] / 2], np.sqrt(u[:-1] * u[1:]), [u[-1] * 2]])
    # errors(C) = benign cells with x >= C + not-overfitting cells with x < C
    errs = np.array([int(np.sum(benign & (x >= c)) + np.sum(~benign & (x < c))) for c in cands])
    best = np.flatnonzero(errs == errs.min())
    c = float(cands[best[len(best) // 2]])
    return BoundaryFit(C=c, errors=int(errs.min()), n_cells=int(x.size))


@dataclass
class PowerLawFit:
    """``||mu||* = c n^a d^b`` separating benign (``||mu|| < ||mu||*``) from not-overfitting
    cells, the candidate with the fewest misclassified cells; ``a_range`` / ``b_range``: the
    span of the exponents of every candidate with that many errors (how well the data pin
    them down)."""

    c: float
    a: float
    b: float
    errors: int
    n_cells: int
    a_range: tuple[float, float]
    b_range: tuple[float, float]


EXPONENTS_A = tuple(float(v) for v in np.round(np.arange(-3.0, 3.0001, 0.05), 2))
EXPONENTS_B = tuple(float(v) for v in np.round(np.arange(-1.0, 4.0001, 0.05), 2))


def fit_power_boundary(
    n: np.ndarray,
    mu: np.ndarray,
    d: np.ndarray,
    regimes: np.ndarray,
    a_values: Sequence[float] = EXPONENTS_A,
    b_values: Sequence[float] = EXPONENTS_B,
) -> PowerLawFit:
    """Exhaustive search over exponents ``(a, b)`` on a grid (and, for each, the best ``c`` by
    the 1-D threshold search of :func:`fit_snr_boundary`) of the rule "benign iff
    ``log ||mu|| < log c + a log n + b log d``, not overfitting otherwise", scored by the number
    of misclassified benign and not-overfitting cells (harmful cells are ignored). With one
    value of n, ``a`` is not identified and is fixed at 0 (``c`` absorbs ``n^a``). Among the
    optimal candidates the one nearest their centroid is returned. ``n SNR^2 = C`` is the
    special case ``a = -1/2, b = 1/2``."""
    lab = np.asarray(regimes).ravel()
    keep = (lab == BENIGN) | (lab == NOT_OVERFITTING)
    ln, lm, ld = (np.log(np.asarray(v, dtype=float).ravel()[keep]) for v in (n, mu, d))
    benign = lab[keep] == BENIGN
    if benign.size == 0:
        nan = (float("nan"),) * 2
        return PowerLawFit(float("nan"), float("nan"), float("nan"), 0, 0, nan, nan)
    if np.unique(ln).size < 2:
        a_values = (0.0,)
    cand = np.array([(a, b) for a in a_values for b in b_values], dtype=float)  # (K, 2)
    errors = np.empty(len(cand), dtype=np.int64)
    thresholds = np.empty(len(cand))
    for k0 in range(0, len(cand), 256):
        block = cand[k0 : k0 + 256]
        # rounded: cells tied in exact arithmetic (n and d on doubling grids) must tie in
        # floating point too, or a cut could split a tied group
        x = np.round(lm[None] - block[:, :1] * ln[None] - block[:, 1:] * ld[None], 9)  # (k, N)
        order = np.argsort(x, axis=1, kind="stable")
        xs = np.take_along_axis(x, order, axis=1)
        bs = np.take_along_axis(np.broadcast_to(benign, x.shape), order, axis=1)
        # a threshold after the first j sorted cells: errors = not-overfitting among them +
        # benign after them; j = 0..N. Only cuts between distinct values are allowed.
        not_before = np.concatenate([np.zeros((len(block), 1)), np.cumsum(~bs, 1)], 1)
        ben_after = bs.sum(1, keepdims=True) - np.concatenate(
            [np.zeros((len(block), 1)), np.cumsum(bs, 1)], 1
        )
        err = not_before + ben_after  # (k, N + 1)
        tied = np.concatenate(
            [
                np.zeros((len(block), 1), bool),
                xs[:, 1:] == xs[:, :-1],
                np.zeros((len(block), 1), bool),
            ],
            1,
        )
        err = np.where(tied, np.inf, err)
        j = np.argmin(err, axis=1)
        errors[k0 : k0 + 256] = err[np.arange(len(block)), j]
        lo = np.where(j > 0, xs[np.arange(len(block)), np.maximum(j - 1, 0)], xs[:, 0] - 1.0)
        hi = np.where(j < xs.shape[1], xs[np.arange(len(block)), np.minimum(j, xs.shape[1] - 1)],
                      xs[:, -1] + 1.0)  # fmt: skip
        thresholds[k0 : k0 + 256] = (lo + hi) / 2
    best = np.flatnonzero(errors == errors.min())
    centre = cand[best].mean(0)
    pick = best[np.argmin(((cand[best] - centre) ** 2).sum(1))]
    a, b = cand[pick]
    return PowerLawFit(
        c=float(np.exp(thresholds[pick])), a=float(a), b=float(b), errors=int(errors.min()),
        n_cells=int(benign.size),
        a_range=(float(cand[best, 0].min()), float(cand[best, 0].max())),
        b_range=(float(cand[best, 1].min()), float(cand[best, 1].max())),
    )  # fmt: skip


@dataclass
class PowerLawSummary:
    """Per-seed :class:`PowerLawFit` s and, over seeds, the mean exponents with their
    intervals (:func:`exponent_interval`; nan with fewer than two seeds, ``a`` with one n)."""

    per_seed: list[PowerLawFit]
    a_mean: float
    a_interval: tuple[float, float]
    b_mean: float
    b_interval: tuple[float, float]

    @property
    def identified(self) -> bool:
        """Every seed pins its exponents down: the optimal ranges stay off the search grid's
        edges (an exponent at an edge could lie beyond it: the interval would mislead)."""
        edges_a, edges_b = (EXPONENTS_A[0], EXPONENTS_A[-1]), (EXPONENTS_B[0], EXPONENTS_B[-1])
        return bool(self.per_seed) and all(
            f.n_cells > 0
            and not any(v in edges_a for v in f.a_range)
            and not any(v in edges_b for v in f.b_range)
            for f in self.per_seed
        )

    def holds(self, a: float, b: float) -> bool | None:
        """Whether exponents ``(a, b)`` lie inside both intervals; None: not identified (fewer
        than two seeds or one n: no interval; or an exponent at the search grid's edge)."""
        lo_a, hi_a = self.a_interval
        lo_b, hi_b = self.b_interval
        if not self.identified or not all(math.isfinite(v) for v in (lo_a, hi_a, lo_b, hi_b)):
            return None
        return bool(lo_a <= a <= hi_a and lo_b <= b <= hi_b)


def mean_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Mean and two-sided t-interval of the mean (nan interval for fewer than two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    if x.size < 2:
        return float(x.mean()), (float("nan"), float("nan"))
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), (float(x.mean() - half), float(x.mean() + half))


def power_law_over_seeds(result: GridResult, regimes: np.ndarray) -> PowerLawSummary:
    """:func:`fit_power_boundary` on each seed's cells (all n, ||mu||, d), then the mean and
    95% t-interval of each exponent over seeds: the seeds are independent draws of the data,
    so their spread is the fit's sampling error."""
    n, mu, d = result.axes()
    fits = [
        fit_power_boundary(n[:, s], mu[:, s], d[:, s], regimes[:, s])
        for s in range(len(result.seeds))
    ]
    nan = float("nan")
    if len(result.n_values) < 2:  # a is not identified with one n
        a_mean, a_iv = nan, (nan, nan)
    else:
        a_mean, a_iv = exponent_interval([f.a for f in fits], [f.a_range for f in fits])
    b_mean, b_iv = exponent_interval([f.b for f in fits], [f.b_range for f in fits])
    return PowerLawSummary(fits, a_mean, a_iv, b_mean, b_iv)


EXPONENT_STEP = 0.05
"""Spacing of the exponent grids EXPONENTS_A / EXPONENTS_B."""


def exponent_interval(
    values: Sequence[float], ranges: Sequence[tuple[float, float]]
) -> tuple[float, tuple[float, float]]:
    """Mean of the seeds' exponents and an interval that is conservative on every count: the
    95% t-interval over seeds, widened to cover every seed's optimal range (exponents that fit
    that seed equally well) and by half the grid step (the search's resolution). nan without
    two seeds."""
    mean, (lo, hi) = mean_interval(values)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return mean, (lo, hi)
    lo = min([lo, *(r[0] for r in ranges)]) - EXPONENT_STEP / 2
    hi = max([hi, *(r[1] for r in ranges)]) + EXPONENT_STEP / 2
    return mean, (lo, hi)
