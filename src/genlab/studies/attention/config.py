"""The attention study's config (task, parts), its checks and the presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from genlab.config import (
    OptimConfig,
    reject_changed,
    require_nonnegative,
    require_positive,
    require_unit,
)
from genlab.data.tokens import num_flips
from genlab.errors import ConfigError
from genlab.executor import ExecutorConfig
from genlab.studies.attention.grid import (
    D_VALUES,
    MU_VALUES,
    REGIMES,
)
from genlab.studies.attention.real import (
    RealDataConfig,
)
from genlab.studies.attention.real import check_config as check_real_config

PARTS = ("fig3", "grid", "longrun", "delayed", "transformer", "real")
TOKEN_NAMES = ("token 0 (relevant)", "token 1 (weak, same)", "token 2 (weak, opposite)")

# --- config --------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """The synthetic token-selection task and its optimiser, shared by the synthetic parts."""

    n: int = 20
    """Training samples."""
    n_test: int = 1000
    """Clean test samples."""
    T: int = 8
    """Tokens per sample (token 0 relevant, 1-2 weakly relevant, the rest irrelevant)."""
    rho: float = 0.1
    """Signal scale of the weakly relevant tokens 1 and 2."""
    eta: float = 0.2
    """Label-noise rate in [0, 1): exactly ceil(n eta) training labels are flipped."""
    sigma: float = 1.0
    """Standard deviation of the Gaussian token noise."""
    w_init: Literal["kaiming", "identity"] = "kaiming"
    """Initial W: PyTorch's default Linear init, or the identity."""
    seed: int = 0
    """Seeds the data draw and W_0."""


@dataclass
class Fig3Config:
    """Attention dynamics of one clean and one noisy training sample (paper Fig. 3)."""

    labels: tuple[str, ...] = ("benign", "large-noise", "large-signal")
    """Setting names (one per entry of d_values / mu_values / expected)."""
    d_values: tuple[int, ...] = (2000, 4500, 500)
    """Token dimension d of each setting."""
    mu_values: tuple[float, ...] = (20.0, 5.0, 100.0)
    """Signal norm ||mu|| of each setting."""
    expected: tuple[str, ...] = ("benign", "harmful", "not_overfitting")
    """The regime the paper's theory expects: not_overfitting | benign | harmful."""
    steps: int = 2000
    """GD steps (seed 0 of the benign setting needs about 1300 to fit every flipped label)."""
    log_every: int = 10
    """Record the attention every N steps."""


@dataclass
class GridConfig:
    """The ||mu|| x d phase diagram (paper Fig. 5)."""

    mu_values: tuple[float, ...] = MU_VALUES
    """Signal norms ||mu|| (rows)."""
    d_values: tuple[int, ...] = D_VALUES
    """Token dimensions d (columns)."""
    n_values: tuple[int, ...] = (5, 10, 20, 40)
    """Training-set sizes n (one diagram each): the n in n SNR^2 is varied, not assumed
    (n = 80 costs 6x n = 40 per cell here: its (nT)^2 state leaves the cache)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every cell (noise, flipped labels, W_0): regimes are mapped as the fraction of
    seeds in each, and the boundary's exponents get intervals over seeds."""
    steps: int = 1000
    """GD steps per cell (the regime boundary moves with this budget)."""


@dataclass
class RegimeConfig:
    """How a trained setting is labelled: one rule for every part (fig3, grid, delayed)."""

    fit_threshold: float = 1.0
    """Overfitting: at least this fraction of the flipped training labels, and of the clean
    ones, is fit. 1.0 (default) is the paper's: every training label fit, training error 0."""
    benign_gap: float = 0.5
    """Overfitting settings are benign when the normalised test loss (0 = attention on the
    relevant token, 1 = uniform attention) is at most this, harmful above."""
    sensitivity: tuple[float, ...] = (0.5, 0.75, 1.0)
    """Other fit thresholds at which the grid's regimes are also counted (the report's
    sensitivity table)."""


@dataclass
class LongRunConfig:
    """Low-SNR cells trained far past the grid's budget: is a "harmful" label at 1000 steps
    only "not yet benign"? Each cell's regime at each budget (n = task.n)."""

    mu_values: tuple[float, ...] = (5.0, 7.5, 10.0, 15.0)
    d_values: tuple[int, ...] = (2000, 3000, 4500)
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: tuple[int, ...] = (1000, 3000, 10_000, 30_000, 100_000)
    """GD step budgets (increasing); each is a fresh run of that many steps."""


@dataclass
class DelayedConfig:
    """Long-horizon runs near the regime boundary (delayed generalization)."""

    labels: tuple[str, ...] = ("d4500-mu15", "d3000-mu25", "d500-mu50")
    """Setting names (one per entry of d_values / mu_values)."""
    d_values: tuple[int, ...] = (4500, 3000, 500)
    mu_values: tuple[float, ...] = (15.0, 25.0, 50.0)
    steps: int = 20000
    """GD steps."""
    log_points: int = 200
    """Log-spaced logged steps (plus every 10th of the first 100)."""
    min_rise: float = 0.05
    """Delayed generalization's overfitting phase: the test loss rises by at least this
    fraction above its earlier minimum."""
    min_fall: float = 0.05
    """... and later falls by at least this fraction of its peak."""


@dataclass
class TransformerPartConfig:
    """A one-layer Transformer encoder (CLS token, learnable head) on the benign setting."""

    d: int = 128
    """Token dimension (small, for CPU: a step costs O(n T d^2))."""
    mu_norm: float = 10.0
    """Signal norm (d = 128, ||mu|| = 10: n SNR^2 = 15.6, in the benign range of the grid)."""
    n_test: int = 500
    steps: int = 2000
    lr: float = 0.05
    """SGD learning rate (full batch)."""
    skip: bool = True
    """Residual connections."""
    log_every: int = 20


@dataclass
class AttentionConfig:
    parts: tuple[str, ...] = ("fig3", "grid", "delayed")
    """Which parts to run: fig3 | grid | longrun | delayed | transformer | real."""
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="gd", lr=5e-3))
    """The token model's optimizer: full-batch gradient descent (the paper's), its lr."""
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    parallel: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the grid's and the long runs' cells run (local / process pool / Ray)."""
    fig3: Fig3Config = field(default_factory=Fig3Config)
    grid: GridConfig = field(default_factory=GridConfig)
    delayed: DelayedConfig = field(default_factory=DelayedConfig)
    longrun: LongRunConfig = field(default_factory=LongRunConfig)
    transformer: TransformerPartConfig = field(default_factory=TransformerPartConfig)
    real: RealDataConfig = field(default_factory=RealDataConfig)
    """Real-data two-phase experiments (genlab.studies.attention.real)."""


def validate(cfg: AttentionConfig) -> None:
    if not cfg.parts:
        raise ConfigError("parts", f"choose one or more of {', '.join(PARTS)}")
    for p in cfg.parts:
        if p not in PARTS:
            raise ConfigError("parts", f"unknown part {p!r}; choose from {', '.join(PARTS)}")
    t = cfg.task
    positive = {
        "optim.lr": cfg.optim.lr,
        "task.n": t.n,
        "task.n_test": t.n_test,
        "task.sigma": t.sigma,
        "fig3.steps": cfg.fig3.steps,
        "fig3.log_every": cfg.fig3.log_every,
        "grid.steps": cfg.grid.steps,
        "delayed.steps": cfg.delayed.steps,
        "delayed.log_points": cfg.delayed.log_points,
        "transformer.d": cfg.transformer.d,
        "transformer.mu_norm": cfg.transformer.mu_norm,
        "transformer.n_test": cfg.transformer.n_test,
        "transformer.steps": cfg.transformer.steps,
        "transformer.lr": cfg.transformer.lr,
        "transformer.log_every": cfg.transformer.log_every,
    }
    require_positive(positive)
    require_unit({"task.eta": t.eta})
    require_nonnegative({"regime.benign_gap": cfg.regime.benign_gap})
    if t.rho < 0:
        raise ConfigError("task.rho", f"must be >= 0, got {t.rho}")
    if t.T < 3:
        raise ConfigError("task.T", f"needs the three structured tokens, T >= 3, got {t.T}")
    k = num_flips(t.n, t.eta)
    if (k + 1) // 2 > (t.n + 1) // 2 or k // 2 > t.n // 2:
        raise ConfigError("task.eta", f"cannot flip {k} of {t.n} labels class-balanced")
    if t.w_init not in ("kaiming", "identity"):
        raise ConfigError("task.w_init", f"must be 'kaiming' or 'identity', got {t.w_init!r}")
    _check_settings("fig3", cfg.fig3.labels, cfg.fig3.d_values, cfg.fig3.mu_values)
    if len(cfg.fig3.expected) != len(cfg.fig3.labels):
        raise ConfigError("fig3.expected", "needs one entry per setting (fig3.labels)")
    for e in cfg.fig3.expected:
        if e not in REGIMES:
            raise ConfigError("fig3.expected", f"unknown regime {e!r}; use {', '.join(REGIMES)}")
    _check_settings("delayed", cfg.delayed.labels, cfg.delayed.d_values, cfg.delayed.mu_values)
    g = cfg.grid
    cfg.parallel.check("parallel")
    lr_ = cfg.longrun
    for name in ("mu_values", "d_values", "seeds", "budgets"):
        values = getattr(lr_, name)
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"longrun.{name}", "needs one or more distinct values")
    if list(lr_.budgets) != sorted(lr_.budgets) or lr_.budgets[0] < 1:
        raise ConfigError("longrun.budgets", "must be increasing and >= 1")
    if any(m <= 0 for m in lr_.mu_values) or any(d < 2 for d in lr_.d_values):
        raise ConfigError("longrun.mu_values", "every ||mu|| must be > 0 and every d >= 2")
    for name in ("mu_values", "d_values", "n_values", "seeds"):
        values = getattr(g, name)
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"grid.{name}", "needs one or more distinct values")
    for n in g.n_values:
        k = num_flips(n, t.eta)
        if n < 2 or (k + 1) // 2 > (n + 1) // 2 or k // 2 > n // 2:
            raise ConfigError("grid.n_values", f"cannot flip {k} of n = {n} labels class-balanced")
    if any(m <= 0 for m in g.mu_values):
        raise ConfigError("grid.mu_values", "every ||mu|| must be > 0")
    if any(d < 2 for d in g.d_values):
        raise ConfigError("grid.d_values", "every d must be >= 2")
    thresholds = [("regime.fit_threshold", cfg.regime.fit_threshold)] + [
        (f"regime.sensitivity[{i}]", v) for i, v in enumerate(cfg.regime.sensitivity)
    ]
    for name, value in thresholds:
        if not 0.0 < value <= 1.0:
            raise ConfigError(name, f"must be in (0, 1], got {value}")
    require_nonnegative({"delayed.min_rise": cfg.delayed.min_rise})
    require_unit({"delayed.min_fall": cfg.delayed.min_fall})
    if cfg.transformer.d < 2:
        raise ConfigError("transformer.d", f"must be >= 2, got {cfg.transformer.d}")
    check_real_config(cfg.real)  # also when the part is off: a bad value is never silent
    # No field is silently ignored: the settings of a part that does not run stay default.
    base = AttentionConfig()
    reject_changed(
        cfg, base, [f"optim.{f.name}" for f in dataclasses.fields(base.optim) if f.name != "lr"],
        "the token model trains by plain full-batch gradient descent (only --optim.lr applies)",
    )  # fmt: skip
    if not set(cfg.parts) & {"fig3", "longrun", "delayed", "transformer"}:
        reject_changed(
            cfg, base, ("task.n", "task.seed"), "no part in --parts reads it (the grid's axes "
            "are --grid.n-values and --grid.seeds)",
        )  # fmt: skip
    if not set(cfg.parts) & {"grid", "longrun"}:
        fields = [f"parallel.{f.name}" for f in dataclasses.fields(base.parallel)]
        reject_changed(cfg, base, fields, "no part in --parts runs cells in parallel")
    if not set(cfg.parts) & {"fig3", "grid", "longrun", "delayed"}:
        fields = [f"regime.{f.name}" for f in dataclasses.fields(base.regime)]
        reject_changed(cfg, base, fields, "no part in --parts labels regimes")
    for part in PARTS:
        if part not in cfg.parts:
            fields = [f"{part}.{f.name}" for f in dataclasses.fields(getattr(base, part))]
            reject_changed(cfg, base, fields, f"applies to part {part!r}, which is not in --parts")


def _check_settings(part: str, labels, d_values, mu_values) -> None:
    if not labels:
        raise ConfigError(f"{part}.labels", "needs one or more settings")
    if len(set(labels)) != len(labels) or any(not s or "/" in s for s in labels):
        raise ConfigError(f"{part}.labels", "must be distinct, non-empty and without '/'")
    if len(d_values) != len(labels):
        raise ConfigError(f"{part}.d_values", f"needs {len(labels)} entries, one per label")
    if len(mu_values) != len(labels):
        raise ConfigError(f"{part}.mu_values", f"needs {len(labels)} entries, one per label")
    if any(d < 2 for d in d_values):
        raise ConfigError(f"{part}.d_values", "every d must be >= 2")
    if any(m <= 0 for m in mu_values):
        raise ConfigError(f"{part}.mu_values", "every ||mu|| must be > 0")


# --- presets -------------------------------------------------------------------------------


def _smoke() -> AttentionConfig:
    return AttentionConfig(
        parts=("fig3", "grid", "longrun", "delayed", "transformer"),
        task=TaskConfig(n_test=300),
        fig3=Fig3Config(
            d_values=(500, 500, 250), mu_values=(15.0, 3.0, 60.0), steps=2000, log_every=20
        ),
        grid=GridConfig(
            mu_values=(3.0, 10.0, 20.0, 60.0),
            d_values=(250, 300, 400, 500),
            n_values=(10, 20),
            seeds=(0, 1),
            steps=1000,
        ),
        longrun=LongRunConfig(
            mu_values=(3.0, 10.0), d_values=(400, 500), seeds=(0, 1), budgets=(300, 1000, 3000)
        ),
        parallel=ExecutorConfig(executor="local"),
        delayed=DelayedConfig(
            labels=("d500-mu20", "d400-mu10"),
            d_values=(500, 400),
            mu_values=(20.0, 10.0),
            steps=5000,
            log_points=80,
        ),
        transformer=TransformerPartConfig(d=64, mu_norm=8.0, n_test=300, steps=500, log_every=20),
    )


PRESETS = {
    # Everything synthetic at small d and short horizons: about a minute on 2 cores.
    "smoke": _smoke,
    # Paper Fig. 3: the three settings at d = 2000 / 4500 / 500.
    "fig3": lambda: AttentionConfig(parts=("fig3",)),
    # Paper Fig. 5: the full 39 x 39 grid, 1000 steps per cell, in a process pool.
    "grid": lambda: AttentionConfig(parts=("grid",)),
    # Low-SNR cells at budgets up to 1e5 steps: do harmful cells turn benign?
    "longrun": lambda: AttentionConfig(parts=("longrun",)),
    # Delayed generalization near the boundary, 20k steps.
    "delayed": lambda: AttentionConfig(parts=("delayed",)),
    "transformer": lambda: AttentionConfig(parts=("transformer",)),
    "real-vision": lambda: AttentionConfig(parts=("real",), real=_real_config("vision")),
    "real-text": lambda: AttentionConfig(parts=("real",), real=_real_config("text")),
    # Every part at paper scale.
    "paper": lambda: AttentionConfig(parts=PARTS),
}


def _real_config(modality: str):
    dataset = "mnist" if modality == "vision" else "rotten-tomatoes"
    data = dataclasses.replace(RealDataConfig().data, name=dataset)
    if modality == "vision":
        return dataclasses.replace(RealDataConfig(), data=data)
    # Text: 12,808 snippets: 1,500 held out for test, 8,000 for phase 1, the pool from the rest;
    # n = 1000 would take 126k phase-2 steps through a 384-wide layer, so n stops at 200.
    return dataclasses.replace(
        RealDataConfig(), modality="text", data=data, test_size=1500, phase1_train=8000,
        ns=(20, 200),
    )  # fmt: skip
