"""The grokking study's config, its checks, the sweep's members and the presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from genlab.config import (
    DataConfig,
    OptimConfig,
    reject_changed,
    require_nonnegative,
    require_positive,
    require_unit,
)
from genlab.data import MODULAR, check_data_config
from genlab.errors import ConfigError
from genlab.models.modular_transformer import (
    ModularTransformerConfig,
)
from genlab.report import fmt

# --- config --------------------------------------------------------------------------------


@dataclass
class GrokkingConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(name=MODULAR))
    """mnist / fashion-mnist (the paper's protocol: presets take the first 1000 training
    examples, normalized with the standard constants) or modular: (a op b) mod p."""
    model: Literal["mlp", "transformer"] = "mlp"
    """transformer: Nanda et al.'s one-layer transformer (modular task only)."""
    width: int = 200
    depth: int = 2
    """MLP hidden layers."""
    init_scale: float = 8.0
    """alpha: every parameter is multiplied by it after the default init."""
    control_init_scale: float | None = 1.0
    """Adds one control member per weight decay (first seed) with this alpha; None: none."""
    loss: Literal["mse_sum", "ce"] = "mse_sum"
    """mse_sum: squared error on one-hot targets summed over outputs; ce: cross-entropy."""
    batch_reduction: Literal["mean", "sum"] = "mean"
    """MLP sweep: the training loss is the mean over the batch, or the sum (the authors' code,
    ``F.mse_loss(reduction="sum")``). AdamW's step is invariant to a constant loss scale except
    through eps, so "sum" is run exactly as the mean with eps divided by the batch size;
    logged losses stay per-example means either way."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW: lr, betas (and, for the transformer, Nanda's warm-up); the weight decay is the
    sweep's ``weight_decays``."""
    weight_decays: tuple[float, ...] = (1.0,)
    """lambda values of the sweep (AdamW's decoupled weight decay); one value for the
    transformer."""
    seeds: tuple[int, ...] = (42,)
    batch_size: int = 0
    """Minibatch size; 0 means full batch."""
    steps: int = 3000
    log_points: int = 150
    """Log-spaced measurement points (plus every step below 30 and every 10 below 150)."""
    dense_start: bool = True
    """Measure every step below 30 and every 10th below 150, as the paper does."""
    mi_points: int = 12
    """How many logged steps also get the (slower) mutual-information estimate; 0: none."""
    mi_samples: int = 2000
    """Test samples (a fixed random subset) for the compression mutual information."""
    mi_x_compressor: Literal["pca", "autoencoder"] = "pca"
    """How X is compressed to 4 dimensions before the kNN estimate (Z always by PCA-4):
    autoencoder: the authors' convolutional autoencoder (image tasks), trained once per dataset
    on its whole training split and cached; pca: PCA-4 of the test inputs."""
    mi_autoencoder_epochs: int = 20
    """Training epochs of that autoencoder (the authors: 200)."""
    nhsic_batches: int = 10
    """nHSIC is averaged over this many batches of 100 test samples, drawn without
    replacement from one fixed shuffle of the test split (the authors average over every batch
    of their shuffled test split, 3 passes)."""
    margin_members: int = 6
    """Members whose final margins to the class-0/class-1 boundary are saved."""
    checkpoint_every: int = 1000
    transformer: ModularTransformerConfig = field(default_factory=ModularTransformerConfig)
    """Transformer architecture (d_model, heads, d_head, d_mlp); its modulus is ``p``."""


def validate(cfg: GrokkingConfig) -> None:
    t, o = cfg.transformer, cfg.optim
    require_positive(
        {
            name: getattr(cfg, name)
            for name in (
                "steps",
                "width",
                "checkpoint_every",
                "mi_samples",
                "mi_autoencoder_epochs",
            )  # fmt: skip
        }
        | {"optim.lr": o.lr, "control_init_scale": cfg.control_init_scale}
        | {f"transformer.{n}": getattr(t, n) for n in ("d_model", "n_heads", "d_head", "d_mlp")}
    )
    require_nonnegative(
        {
            name: getattr(cfg, name)
            for name in ("depth", "batch_size", "log_points", "mi_points", "nhsic_batches")
        }
        | {"margin_members": cfg.margin_members, "optim.warmup_steps": o.warmup_steps}
    )
    require_unit({f"optim.betas[{i}]": b for i, b in enumerate(o.betas)})
    if t.n_ctx != 3:
        raise ConfigError(
            "transformer.n_ctx", f"the inputs are (a, b, '='): must be 3, got {t.n_ctx}"
        )
    if cfg.depth < 1:
        raise ConfigError("depth", "must be >= 1 (the penultimate layer is a hidden layer)")
    if not cfg.seeds:
        raise ConfigError("seeds", "need at least one seed")
    if not cfg.weight_decays or any(w < 0 for w in cfg.weight_decays):
        raise ConfigError("weight_decays", "need one or more values >= 0")
    if cfg.init_scale <= 0:
        raise ConfigError("init_scale", f"must be > 0, got {cfg.init_scale}")
    check_data_config(cfg.data, names=("mnist", "fashion-mnist", MODULAR))
    if cfg.data.label_noise > 0:
        raise ConfigError("data.label_noise", "the paper trains on clean labels: must be 0")
    if cfg.model == "transformer" and cfg.data.name != MODULAR:
        raise ConfigError("model", "the transformer runs the modular task only")
    # No field is silently ignored: one that does not apply to this config must stay default.
    base = GrokkingConfig()
    reject_changed(cfg, base, ("transformer.p",), "never read: --data.p sets the modulus")
    reject_changed(
        cfg, base, ("optim.name", "optim.weight_decay", "optim.momentum", "optim.schedule"),
        "the sweep trains with AdamW, constant lr, weight decay from --weight-decays",
    )  # fmt: skip
    if cfg.model == "transformer":
        mlp_only = (
            "batch_size", "width", "depth", "init_scale", "control_init_scale", "loss",
            "batch_reduction",
        )  # fmt: skip
        reject_changed(cfg, base, mlp_only, "applies to the MLP sweep, not the transformer")
        if len(cfg.weight_decays) != 1 or len(cfg.seeds) != 1:
            raise ConfigError("weight_decays", "the transformer trains one model: one value")
    else:
        fields = [f"transformer.{f.name}" for f in dataclasses.fields(base.transformer)]
        reject_changed(cfg, base, fields, "applies to --model transformer only")
        reject_changed(cfg, base, ("optim.warmup_steps",), "the MLP sweep has no warm-up")
    if cfg.data.name != MODULAR:
        if cfg.data.train_size is None:
            raise ConfigError("data.train_size", "the paper's protocol takes a subset: set it")
    else:
        reject_changed(
            cfg, base, ("mi_x_compressor", "mi_autoencoder_epochs"), "applies to the image tasks only"
        )  # fmt: skip
        if cfg.model == "mlp" and cfg.width < cfg.data.p:
            raise ConfigError("width", f"NC2 needs width >= number of classes p = {cfg.data.p}")


# --- members -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    alpha: float
    weight_decay: float
    seed: int

    @property
    def label(self) -> str:
        return f"a{fmt(self.alpha)}-wd{fmt(self.weight_decay)}-s{self.seed}"

    @property
    def group(self) -> str:
        return f"alpha={fmt(self.alpha)} lambda={fmt(self.weight_decay)}"


def members_of(cfg: GrokkingConfig) -> list[Member]:
    if cfg.model == "transformer":
        return [Member(1.0, cfg.weight_decays[0], cfg.seeds[0])]
    out = [Member(cfg.init_scale, w, s) for w in cfg.weight_decays for s in cfg.seeds]
    if cfg.control_init_scale is not None and cfg.control_init_scale != cfg.init_scale:
        out += [Member(cfg.control_init_scale, w, cfg.seeds[0]) for w in cfg.weight_decays]
    return out


# --- presets -------------------------------------------------------------------------------


MNIST_DATA = DataConfig(name="mnist", train_size=1000, normalize="standard")
"""The paper's data: the first 1,000 MNIST training images, (x - 0.1307) / 0.3081."""


def _mnist(**kw) -> GrokkingConfig:
    base = dict(
        data=MNIST_DATA,
        init_scale=8.0,
        loss="mse_sum",
        batch_reduction="sum",  # the authors' F.mse_loss(reduction="sum")
        batch_size=100,
        steps=100_000,
        mi_x_compressor="autoencoder",
        log_points=150,
        mi_points=20,
        checkpoint_every=5000,
    )
    return GrokkingConfig(**{**base, **kw})


PRESETS = {
    # Modular addition MLP that groks in well under a minute on 2 cores: the training set is
    # fit near step 100, test accuracy stays low, then rises past 95% near step 1,300.
    "smoke": lambda: GrokkingConfig(
        data=DataConfig(name=MODULAR, p=59, op="+", train_fraction=0.4),
        width=256,
        depth=1,
        init_scale=1.0,
        control_init_scale=None,
        loss="mse_sum",
        optim=OptimConfig(lr=3e-3),
        weight_decays=(1.0,),
        seeds=(0,),
        steps=2000,
        log_points=50,
        mi_points=3,
        margin_members=1,
    ),
    # The paper's MNIST protocol, 3 lambdas x 1 seed (+ alpha = 1 controls).
    "mnist-fig": lambda: _mnist(weight_decays=(0.3, 0.1, 0.03), seeds=(42,)),
    # The full sweep: 6 lambdas x 5 seeds x 100k steps (+ alpha = 1 controls).
    "paper": lambda: _mnist(
        weight_decays=(0.3, 0.1, 0.03, 0.01, 0.003, 0.001), seeds=(42, 43, 44, 45, 46), mi_points=10
    ),
    # Nanda et al.: p = 113, 30% train, full batch, wd 1.0.
    "modular-transformer": lambda: GrokkingConfig(
        data=DataConfig(name=MODULAR, p=113, train_fraction=0.3),
        model="transformer",
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.98), warmup_steps=10),  # Nanda et al.
        weight_decays=(1.0,),
        steps=20_000,
        log_points=120,
        mi_points=8,
        checkpoint_every=2000,
        margin_members=1,
    ),
}
