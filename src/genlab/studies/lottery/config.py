"""The lottery study's config, its checks and the presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from genlab.config import (
    DataConfig,
    require_distinct_choices,
    require_nonnegative,
    require_positive,
)
from genlab.data import check_model_data
from genlab.errors import ConfigError
from genlab.executor import ExecutorConfig


@dataclass(frozen=True)
class Setting:
    lr: Literal["small", "large"]
    sam: bool = False
    criterion: Literal["magnitude", "reverse", "random"] = "magnitude"
    reinit: bool = False
    """Also train each level's mask from a fresh random initialization (the control that
    tells a winning ticket from a good mask)."""


SETTINGS: dict[str, Setting] = {
    "small-lr": Setting("small", reinit=True),
    "large-lr": Setting("large"),
    "small-lr-sam": Setting("small", sam=True),
    "random": Setting("small", criterion="random"),
    "reverse": Setting("small", criterion="reverse"),
}
"""IMP chains: small / large learning rate, small with SAM, and the pruning-criterion
controls (random pruning, largest magnitude first) at the small learning rate. ``small-lr``
also trains a random re-initialization of each of its tickets."""

FLATNESS_SETTINGS = ("small-lr", "large-lr", "small-lr-sam")
"""The settings trained under label noise (``label_noise``)."""

MODEL_DATA = {
    "lenet300": ("digits", "mnist", "fashion-mnist"),
    "conv4": ("mnist", "fashion-mnist"),
    "resnet20": ("mnist", "fashion-mnist"),
}


@dataclass
class LotteryConfig:
    data: DataConfig = field(
        default_factory=lambda: DataConfig(name="digits", normalize="standard")
    )
    """digits (lenet300 only) | mnist | fashion-mnist; clean labels (noise: ``label_noise``).
    The paper's CIFAR-10 is not available offline."""
    model: Literal["lenet300", "conv4", "resnet20"] = "lenet300"
    width: int = 1
    """conv4: divisor of Conv-4's widths (4: 16 / 32 channels, fc 64); resnet20: base width
    (16 is He et al.'s); lenet300: unused."""
    settings: tuple[str, ...] = tuple(SETTINGS)
    label_noise: tuple[float, ...] = (0.0,)
    """Uniform label-noise rates: 0 runs every setting; each rate > 0 runs the
    ``FLATNESS_SETTINGS`` among ``settings`` on labels redrawn uniformly with that
    probability (the test split stays clean)."""
    seeds: tuple[int, ...] = (0,)
    levels: int = 15
    """IMP levels after the dense level 0: densities 0.8^0 .. 0.8^levels."""
    prune_fraction: float = 0.2
    """Fraction of the remaining prunable weights removed per level (global ranking)."""
    prune_output: bool = False
    """Prune the output layer too (the authors prune LeNet's, not ResNet-20's)."""
    rewind_step: int = 0
    """Rewind each ticket to the weights at this step of the dense training (0: the original
    initialization; k > 0: late rewinding)."""
    epochs: int = 10
    """Training epochs per level."""
    batch_size: int = 128
    lr_small: float = 0.01
    lr_large: float = 0.1
    momentum: float = 0.9
    """SGD momentum (the authors' documented ResNet-20 recipe: lr 0.01, momentum 0.9, weight
    decay 1e-4; their code's bare default is momentum 0)."""
    weight_decay: float = 1e-4
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    """ASAM (Kwon et al. 2021) instead of SAM."""
    eval_every_epochs: int = 1
    """Test accuracy every N epochs (the best of them is the early-stopped accuracy)."""
    measure_train: int = 1000
    """Training examples the Hessian and the worst-case sharpness are measured on."""
    hessian_iters: int = 30
    """Lanczos products for the top eigenvalue (stopped earlier at relative change 1e-3)."""
    trace_probes: int = 20
    sharpness_sigma: float = 0.01
    """Standard deviation of the Gaussian weight noise of the expected sharpness."""
    sharpness_samples: int = 10
    sharpness_train: int = 5000
    """Training examples of the expected sharpness (0-1 error)."""
    worst_case_rho: float = 0.05
    bound_steps: int = 500
    """Adam steps fitting the posterior's standard deviations."""
    bound_lr: float = 0.01
    bound_batch: int = 256
    bound_draws: int = 400
    """Monte-Carlo draws (weight sample x batch) of the stochastic training error."""
    bound_draw_batch: int = 500
    delta: float = 0.01
    measure_noisy: bool = False
    """Measure flatness, distance and the bounds of label-noise chains too (no claim reads
    them: the flatness claims are on clean labels, the noise claims on accuracy)."""
    checkpoint_every: int = 500
    parallel: ExecutorConfig = field(default_factory=lambda: ExecutorConfig(executor="process"))
    """Where the IMP chains (settings x noise rates x seeds) run."""


def chains(cfg: LotteryConfig) -> list[tuple[str, float, int]]:
    """(setting, noise rate, seed) of every IMP chain, in run order."""
    out = []
    for noise in cfg.label_noise:
        for setting in cfg.settings:
            if noise == 0 or setting in FLATNESS_SETTINGS:
                out.extend((setting, noise, seed) for seed in cfg.seeds)
    return out


def validate(cfg: LotteryConfig) -> None:
    check_model_data(cfg.data, cfg.model, MODEL_DATA,
                     "label noise is the study's own `label_noise` list")  # fmt: skip
    require_distinct_choices("settings", cfg.settings, tuple(SETTINGS))
    if not cfg.label_noise or len(set(cfg.label_noise)) != len(cfg.label_noise):
        raise ConfigError("label_noise", f"need distinct rates, got {cfg.label_noise}")
    if any(not 0.0 <= f < 1.0 for f in cfg.label_noise):
        raise ConfigError("label_noise", f"rates must be in [0, 1), got {cfg.label_noise}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError("seeds", f"need distinct seeds, got {cfg.seeds}")
    if not 0.0 < cfg.prune_fraction < 1.0:
        raise ConfigError("prune_fraction", f"must be in (0, 1), got {cfg.prune_fraction}")
    require_positive({
        "width": cfg.width, "levels": cfg.levels, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr_small": cfg.lr_small, "lr_large": cfg.lr_large,
        "eval_every_epochs": cfg.eval_every_epochs, "measure_train": cfg.measure_train,
        "hessian_iters": cfg.hessian_iters, "trace_probes": cfg.trace_probes,
        "sharpness_samples": cfg.sharpness_samples, "sharpness_train": cfg.sharpness_train,
        "bound_lr": cfg.bound_lr, "bound_batch": cfg.bound_batch,
        "bound_draws": cfg.bound_draws, "bound_draw_batch": cfg.bound_draw_batch,
        "delta": cfg.delta, "checkpoint_every": cfg.checkpoint_every,
    })  # fmt: skip
    require_nonnegative({
        "rewind_step": cfg.rewind_step, "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay, "sam_rho": cfg.sam_rho,
        "sharpness_sigma": cfg.sharpness_sigma, "worst_case_rho": cfg.worst_case_rho,
        "bound_steps": cfg.bound_steps,
    })  # fmt: skip
    if cfg.delta >= 1:
        raise ConfigError("delta", f"must be in (0, 1), got {cfg.delta}")
    if cfg.lr_large <= cfg.lr_small:
        raise ConfigError("lr_large", f"must exceed lr_small ({cfg.lr_small}), got {cfg.lr_large}")
    if cfg.rewind_step > 0:
        from genlab.data import load_data

        n_train = load_data(cfg.data).n_train
        level_steps = cfg.epochs * (n_train // min(cfg.batch_size, n_train))
        if cfg.rewind_step > level_steps:
            raise ConfigError("rewind_step", f"{cfg.rewind_step} is past the {level_steps} "
                              "steps of a level's training")  # fmt: skip
    if cfg.model == "conv4" and 64 % cfg.width:
        raise ConfigError("width", f"conv4's divisor must divide 64, got {cfg.width}")
    cfg.parallel.check()


def _preset(data: str, model: str, train_size: int | None = None, **kw) -> LotteryConfig:
    normalize = "train" if data == "digits" else "standard"
    return dataclasses.replace(
        LotteryConfig(),
        data=DataConfig(name=data, normalize=normalize, train_size=train_size),
        model=model,
        **kw,
    )


PRESETS = {
    # LeNet-300-100 on digits, 3 levels, every setting, noise 0 and 0.4: about 30 s on 2 cores.
    "smoke": lambda: _preset("digits", "lenet300", levels=3, epochs=2, batch_size=64,
                             label_noise=(0.0, 0.4), measure_train=256, hessian_iters=8,
                             trace_probes=4, sharpness_samples=2, sharpness_train=500,
                             bound_steps=20, bound_draws=30, bound_draw_batch=200,
                             parallel=ExecutorConfig(executor="local")),
    # LeNet-300-100 on MNIST, 15 levels (density 3.5%), every setting, noise 0 / 0.2 / 0.4:
    # about 50 min on 2 cores.
    "mnist-lenet": lambda: _preset("mnist", "lenet300", levels=15, epochs=5,
                                   label_noise=(0.0, 0.2, 0.4), hessian_iters=20,
                                   trace_probes=10, bound_steps=200, bound_draws=150,
                                   bound_draw_batch=1000),
    # Conv-4 at 1/8 width (8 / 16 channels, fc 32) on the first 10,000 Fashion-MNIST training
    # images, 10 levels (density 10.7%), noise 0 and 0.4, lighter measures: about an hour on
    # 2 cores (a conv step costs ~40 LeNet-300-100 steps on CPU).
    # Its large learning rate is 0.05: at 0.1 (momentum 0.9) Conv-4 diverges from the start.
    "fashion-conv": lambda: _preset("fashion-mnist", "conv4", width=8, levels=10, epochs=3,
                                    train_size=10000, lr_large=0.05, label_noise=(0.0, 0.4),
                                    measure_train=256, hessian_iters=10, trace_probes=6,
                                    sharpness_samples=5, sharpness_train=1000, bound_steps=80,
                                    bound_draws=60, bound_draw_batch=500,
                                    parallel=ExecutorConfig(executor="process", workers=2)),
    # The full protocol: LeNet-300-100 on MNIST, 15 levels, 20 epochs per level, 3 seeds,
    # every setting and noise rate (ResNet-20: `--model resnet20 --width 16`, slow on CPU).
    "paper": lambda: _preset("mnist", "lenet300", levels=15, epochs=20, seeds=(0, 1, 2),
                             label_noise=(0.0, 0.2, 0.4), bound_steps=2000, bound_draws=2000),
}  # fmt: skip
