"""The layerwise study's config, its checks and the presets."""

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

MODES = ("e2e", "layerwise", "layerwise-sim", "layerwise-supcon", "layerwise-sequential")
"""e2e: backpropagation of the final classifier's loss only; layerwise: every block trained by
its own auxiliary classifier (cross-entropy), inputs detached, all blocks at once (the paper's
main mode); layerwise-sim / -supcon: the same with similarity matching / supervised
contrastive local losses; layerwise-sequential: block k trained on top of the frozen blocks
0..k-1, then frozen."""

LOCAL_LOSS = {"layerwise": "ce", "layerwise-sim": "sim", "layerwise-supcon": "supcon",
              "layerwise-sequential": "ce"}  # fmt: skip

MODEL_DATA = {
    "mlp": ("digits", "mnist", "fashion-mnist"),
    "lenet5": ("mnist", "fashion-mnist"),
    "vgg8b": ("mnist", "fashion-mnist"),
    "resnet18": ("mnist", "fashion-mnist"),
}


@dataclass
class LayerwiseConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(name="digits"))
    """digits (mlp only) | mnist | fashion-mnist; inputs standardized (``normalize``). The
    paper's CIFAR-10 is not available offline."""
    model: Literal["mlp", "lenet5", "vgg8b", "resnet18"] = "mlp"
    width: int = 64
    """mlp: units per block; vgg8b: divisor of the paper's widths (8: 16..64 channels, fc 128);
    resnet18: base width (16: 16..128 channels); lenet5: unused."""
    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0,)
    epochs: int = 20
    """Epochs of e2e and simultaneous layer-wise training."""
    sequential_epochs: int = 4
    """layerwise-sequential: epochs per block."""
    batch_size: int = 128
    lr: float = 5e-4
    """Adam learning rate (the paper's)."""
    lr_drops: tuple[float, ...] = (0.5, 0.75)
    """Fractions of the training at which the learning rate is multiplied by ``lr_drop``."""
    lr_drop: float = 0.1
    weight_decay: float = 0.0
    proj_dim: int = 128
    """Output size of the auxiliary projection of the sim / supcon local losses."""
    max_aux_features: int = 2048
    """Conv outputs are average-pooled to at most this many numbers before an auxiliary head
    or a linear probe (the paper's 2048)."""
    temperature: float = 0.1
    """Supervised contrastive temperature."""
    input_info_weight: float = 0.0
    """Layer-wise modes: each block's loss gets -weight x nHSIC(X; Z) on the batch (bandwidth
    ``sigma``), a reward for keeping input information; 0: off (the paper)."""
    measure_points: int = 16
    """Log-spaced measurement steps per training (per block in the sequential mode)."""
    hsic_batches: int = 10
    """nHSIC / CKA are averaged over this many fixed test mini-batches (one seeded shuffle)."""
    hsic_batch_size: int = 100
    """m of each mini-batch (the paper's 100; nHSIC depends on m)."""
    test_eval_size: int = 2000
    """Test accuracy during training on the first N test samples (the full test split at the
    end of each training or block)."""
    sigma: float = 5.0
    """nHSIC's Gaussian bandwidth (times sqrt of the dimension), the authors' 5."""
    probe_train: int = 5000
    """Training examples the end-of-training linear probes are fitted on."""
    probe_steps: int = 300
    """Full-batch Adam steps of each linear probe."""
    probe_lr: float = 1e-2
    checkpoint_every: int = 500
    parallel: ExecutorConfig = field(default_factory=lambda: ExecutorConfig(executor="local"))
    """Where the trainings (modes x seeds) run: local (default), process or ray."""


def validate(cfg: LayerwiseConfig) -> None:
    check_model_data(cfg.data, cfg.model, MODEL_DATA, "the layerwise study trains on clean labels")
    require_distinct_choices("modes", cfg.modes, MODES)
    if not cfg.seeds:
        raise ConfigError("seeds", "need at least one seed")
    require_positive({
        "width": cfg.width, "epochs": cfg.epochs, "sequential_epochs": cfg.sequential_epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "lr_drop": cfg.lr_drop,
        "proj_dim": cfg.proj_dim, "max_aux_features": cfg.max_aux_features,
        "temperature": cfg.temperature, "hsic_batches": cfg.hsic_batches,
        "sigma": cfg.sigma, "probe_train": cfg.probe_train, "probe_lr": cfg.probe_lr,
        "test_eval_size": cfg.test_eval_size,
        "checkpoint_every": cfg.checkpoint_every,
    })  # fmt: skip
    from genlab.data import load_data

    n_test = load_data(cfg.data).n_test
    if cfg.hsic_batches * cfg.hsic_batch_size > n_test:
        raise ConfigError("hsic_batches", f"{cfg.hsic_batches} x {cfg.hsic_batch_size} > "
                          f"{n_test} test samples of {cfg.data.name}")  # fmt: skip
    if cfg.hsic_batch_size < 4:
        raise ConfigError("hsic_batch_size", f"need >= 4 samples, got {cfg.hsic_batch_size}")
    require_nonnegative({"weight_decay": cfg.weight_decay, "measure_points": cfg.measure_points,
                         "input_info_weight": cfg.input_info_weight,
                         "probe_steps": cfg.probe_steps})  # fmt: skip
    if any(not 0.0 < f < 1.0 for f in cfg.lr_drops):
        raise ConfigError("lr_drops", f"fractions must be in (0, 1), got {cfg.lr_drops}")
    cfg.parallel.check()


def _preset(data: str, model: str, width: int, **kw) -> LayerwiseConfig:
    return dataclasses.replace(
        LayerwiseConfig(), data=DataConfig(name=data), model=model, width=width, **kw
    )


PRESETS = {
    # A 4-block MLP on digits, every mode: about 15 s on 2 cores.
    "smoke": lambda: _preset("digits", "mlp", 64, epochs=15, sequential_epochs=8, lr=2e-3,
                             measure_points=6, hsic_batches=3, probe_train=1000,
                             probe_steps=100),
    # LeNet5 on MNIST: every mode, 3 seeds (8 epochs; sequential: 2 per block).
    "lenet-mnist": lambda: _preset("mnist", "lenet5", 64, epochs=8, sequential_epochs=2,
                                   seeds=(0, 1, 2)),
    # VGG8b at 1/16 of the paper's widths (8..32 channels, fc 64) on Fashion-MNIST, 2 seeds.
    "vgg-fashion": lambda: _preset("fashion-mnist", "vgg8b", 16, epochs=6, sequential_epochs=1,
                                   seeds=(0, 1)),
    # ResNet-18 layout at base width 16 on Fashion-MNIST.
    "resnet-fashion": lambda: _preset("fashion-mnist", "resnet18", 16, epochs=8,
                                      sequential_epochs=1, seeds=(0,)),
    # VGG8b at 1/8 of the paper's widths on Fashion-MNIST, 30 epochs, every mode, 3 seeds
    # (one model per run: the other models are the presets above).
    "paper": lambda: _preset("fashion-mnist", "vgg8b", 8, epochs=30, sequential_epochs=6,
                             seeds=(0, 1, 2)),
}  # fmt: skip
