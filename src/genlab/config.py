"""Config pieces and checks shared by every study.

``DataConfig`` and ``OptimConfig`` are the one shape of "which data" and "how to optimize"
inside each study's config (``--data.name``, ``--optim.lr`` in every study). The generic checks
run by ``Study.check`` on any config (finite numbers, integers that fit int64, non-negative
seeds), range helpers that a study's ``validate`` calls with dotted field names so every message
names its field, and ``reject_changed`` for fields that do not apply."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from genlab.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "digits"
    """Dataset: digits | mnist | mnist-validation | fashion-mnist | mnist1d (genlab.data), or
    modular: all pairs of (a op b) mod p (genlab.data.modular). A study may take fewer."""
    train_size: int | None = None
    """Use the first N training examples (None: all). Not for modular (see train_fraction)."""
    normalize: Literal["train", "standard", "none"] = "train"
    """train: standardize inputs with the training split's scalar mean and std; standard: with
    the dataset's customary constants (data.STANDARD_MEAN_STD, e.g. MNIST 0.1307 / 0.3081, as
    most papers' code); none: raw inputs. Not for modular (one-hot inputs)."""
    label_noise: float = 0.0
    """Fraction of training labels corrupted, in [0, 1]."""
    noise_kind: Literal["uniform", "bernoulli", "flip"] = "uniform"
    """uniform: each label with probability f redrawn over all K classes; bernoulli: each label
    with probability f moved to another class; flip: exactly ceil(n f) labels to another
    class."""
    p: int = 59
    """modular: the modulus."""
    op: Literal["+", "-", "*", "/"] = "+"
    """modular: the operation."""
    train_fraction: float = 0.4
    """modular: fraction of all pairs used for training, in (0, 1)."""


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw", "gd"] = "adamw"
    """adamw; sgd (with momentum); gd: plain full-batch gradient descent."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    """SGD momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decay rates."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    warmup_steps: int = 0
    """Linear warm-up of the learning rate over this many steps."""


INT64 = 2**63
SEED_FIELD = re.compile(r"(^|[._])seeds?(\[\d+\])?$")


def config_values(config: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field name, value) for every leaf of a nested dataclass config; items of a
    list or tuple are named ``field[i]``."""
    if dataclasses.is_dataclass(config):
        for f in dataclasses.fields(config):
            yield from config_values(getattr(config, f.name), f"{name}.{f.name}".lstrip("."))
    elif isinstance(config, list | tuple):
        for i, item in enumerate(config):
            yield from config_values(item, f"{name}[{i}]")
    else:
        yield name, config


def check_common(config: Any) -> None:
    """What holds for every field of every study: numbers are finite (no study has a use for
    NaN or infinity), integers fit int64 (torch and numpy take nothing larger), seeds are >= 0
    (numpy's generators reject negative ones)."""
    for name, value in config_values(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(name, f"must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64 <= value < INT64:
                raise ConfigError(name, f"must fit a 64-bit integer, got {value}")
            if SEED_FIELD.search(name) and value < 0:
                raise ConfigError(name, f"a seed must be >= 0, got {value}")


def require_positive(values: Mapping[str, float | None]) -> None:
    """Each value > 0 (None: not set, allowed)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(name, f"must be > 0, got {value}")


def require_nonnegative(values: Mapping[str, float | None]) -> None:
    """Each value >= 0 (None: not set, allowed)."""
    for name, value in values.items():
        if value is not None and not value >= 0:
            raise ConfigError(name, f"must be >= 0, got {value}")


def require_unit(values: Mapping[str, float], closed_high: bool = False) -> None:
    """Each value in [0, 1) (or [0, 1] with ``closed_high``)."""
    for name, value in values.items():
        if not (0.0 <= value <= 1.0 if closed_high else 0.0 <= value < 1.0):
            raise ConfigError(name, f"must be in [0, 1{']' if closed_high else ')'}, got {value}")


def reject_changed(
    config: Any, default: Any, names: Sequence[str], why: str, prefix: str = ""
) -> None:
    """A field that does not apply must keep its default: ConfigError naming the first of
    ``names`` (dotted) whose value in ``config`` differs from ``default``'s, saying ``why``;
    ``prefix`` is put before the name (``config`` being a sub-config such as ``data``)."""
    for name in names:
        value, base = config, default
        for part in name.split("."):
            value, base = getattr(value, part), getattr(base, part)
        if value != base:
            raise ConfigError(prefix + name, f"{why} (got {value!r}; leave it at {base!r})")


def require_distinct_choices(field: str, values: Sequence[Any], choices: Sequence[Any]) -> None:
    """ConfigError naming ``field`` unless ``values`` is a non-empty list of distinct members
    of ``choices``."""
    if not values or len(set(values)) != len(values):
        raise ConfigError(field, f"need distinct values from {tuple(choices)}, got {values}")
    for v in values:
        if v not in choices:
            raise ConfigError(field, f"unknown value {v!r}; choose from {tuple(choices)}")
