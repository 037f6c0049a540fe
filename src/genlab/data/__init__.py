"""Named datasets loaded offline from installed packages, cached as ``.npz``.

``load_dataset(name, train_size=..., normalize=..., label_noise=..., noise_kind=...)`` returns a
:class:`Dataset`. The registry ``DATASETS`` is a plain dict: name -> function returning numpy
arrays (x_train, y_train, x_test, y_test). Add a dataset by adding an entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch

from genlab.config import DataConfig, reject_changed
from genlab.data.base import Dataset
from genlab.data.images import (
    load_digits_arrays,
    load_fashion_arrays,
    load_mnist1d_arrays,
    load_mnist_arrays,
)
from genlab.data.modular import ModularConfigError, make_modular_data
from genlab.data.noise import NOISE_KINDS, apply_label_noise
from genlab.errors import ConfigError

__all__ = [
    "DATASETS",
    "MODULAR",
    "NOISE_KINDS",
    "STANDARD_MEAN_STD",
    "Dataset",
    "cache_dir",
    "check_data_config",
    "check_model_data",
    "load_data",
    "load_dataset",
]

MODULAR = "modular"
"""``DataConfig.name`` of the (a op b) mod p task (genlab.data.modular), not in ``DATASETS``."""

DATASETS: dict[str, Callable[[], tuple[np.ndarray, ...]]] = {
    "digits": load_digits_arrays,
    "mnist": lambda: load_mnist_arrays("train"),
    "mnist-validation": lambda: load_mnist_arrays("validation"),
    "fashion-mnist": load_fashion_arrays,
    "mnist1d": load_mnist1d_arrays,
}

STANDARD_MEAN_STD: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
"""The per-pixel mean and std that torchvision's examples (and most papers' code) normalize
these datasets with, computed over the full 60k training images with pixels in [0, 1]."""


def cache_dir() -> Path:
    """``$GENLAB_CACHE`` or ``~/.cache/genlab``."""
    return Path(os.environ.get("GENLAB_CACHE", Path.home() / ".cache" / "genlab"))


def _cached_arrays(name: str) -> tuple[np.ndarray, ...]:
    path = cache_dir() / "datasets" / f"{name}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache is rebuilt below
    arrays = DATASETS[name]()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
    os.replace(tmp, path)
    return arrays


def check_options(
    name: str, train_size: int | None, label_noise: float, noise_kind: str, field: str = "data"
) -> None:
    """Reject bad dataset options before any work, naming the field."""
    if name not in DATASETS:
        raise ConfigError(
            f"{field}.name", f"unknown dataset {name!r}; choose from {sorted(DATASETS)}"
        )
    if train_size is not None and train_size < 1:
        raise ConfigError(f"{field}.train_size", f"must be a positive integer, got {train_size}")
    if not 0.0 <= label_noise <= 1.0:
        raise ConfigError(f"{field}.label_noise", f"must be in [0, 1], got {label_noise}")
    if noise_kind not in NOISE_KINDS:
        raise ConfigError(f"{field}.noise_kind", f"choose from {sorted(NOISE_KINDS)}")


def load_dataset(
    name: str,
    *,
    train_size: int | None = None,
    normalize: bool = False,
    label_noise: float = 0.0,
    noise_kind: str = "uniform",
    noise_seed: int = 0,
    mean_std: tuple[float, float] | None = None,
) -> Dataset:
    """Load ``name``; take the first ``train_size`` training examples; add label noise.

    ``normalize`` standardizes inputs with the training split's scalar mean and std (computed
    after the ``train_size`` cut, so test data never informs it); ``mean_std`` instead uses
    fixed constants, e.g. ``STANDARD_MEAN_STD[name]``: (x - mean) / std on both splits. Label
    noise touches the training labels only; the changed indices are in ``noisy_idx``.
    """
    if normalize and mean_std is not None:
        raise ConfigError("data.normalize", "give normalize or mean_std, not both")
    check_options(name, train_size, label_noise, noise_kind)
    x_tr, y_tr, x_te, y_te = _cached_arrays(name)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    ds = Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr, dtype=np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te, dtype=np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_te, dtype=np.int64)),
        num_classes=num_classes,
        input_shape=tuple(x_tr.shape[1:]),
    ).with_train_size(train_size)
    if normalize:
        mean_std = float(ds.x_train.mean()), float(ds.x_train.std().clamp_min(1e-8))
    if mean_std is not None:
        mean, std = mean_std
        ds.x_train = (ds.x_train - mean) / std
        ds.x_test = (ds.x_test - mean) / std
    if label_noise > 0:
        noisy, idx = apply_label_noise(ds.y_train, label_noise, num_classes, noise_kind, noise_seed)
        ds.clean_y_train, ds.y_train, ds.noisy_idx = ds.y_train, noisy, idx
    return ds


def check_data_config(
    data: DataConfig, names: Collection[str] | None = None, field: str = "data"
) -> None:
    """Every check of a ``DataConfig`` before any work, naming the field (``data.name``...).
    ``names``: the datasets the study takes (default: every name in ``DATASETS``). Fields that
    do not apply to the chosen dataset must keep their defaults."""
    names = sorted(DATASETS) if names is None else list(names)
    if data.name not in names:
        raise ConfigError(f"{field}.name", f"unknown dataset {data.name!r}; choose from {names}")
    base = DataConfig()
    if data.name == MODULAR:
        try:
            make_modular_data(data.p, data.op, data.train_fraction)
        except ModularConfigError as e:
            raise ConfigError(f"{field}.{e.field}", str(e).split(": ", 1)[1]) from None
        image_only = ("train_size", "normalize", "label_noise", "noise_kind")
        reject_changed(data, base, image_only, "does not apply to modular", f"{field}.")
        return
    reject_changed(
        data, base, ("p", "op", "train_fraction"), "applies to modular only", f"{field}."
    )
    check_options(data.name, data.train_size, data.label_noise, data.noise_kind, field)
    if data.normalize not in ("train", "standard", "none"):
        raise ConfigError(f"{field}.normalize", "choose from train, standard, none")
    if data.normalize == "standard" and data.name not in STANDARD_MEAN_STD:
        raise ConfigError(
            f"{field}.normalize",
            f"no standard constants for {data.name!r} (have {sorted(STANDARD_MEAN_STD)}); "
            "use train or none",
        )


def check_model_data(
    data: DataConfig, model: str, model_data: dict[str, tuple[str, ...]], why_clean: str
) -> None:
    """The checks of a study that trains a named image model on clean labels: ``data`` is
    valid, ``model`` is a key of ``model_data`` and takes ``data.name``, and no label-noise or
    modular-arithmetic field is set (``why_clean`` says why in the message)."""
    check_data_config(data)
    if model not in model_data:
        raise ConfigError("model", f"choose from {sorted(model_data)}, got {model!r}")
    if data.name not in model_data[model]:
        raise ConfigError("data.name", f"{model} takes {model_data[model]}")
    reject_changed(
        data, DataConfig(name=data.name, normalize=data.normalize, train_size=data.train_size),
        ("label_noise", "noise_kind", "p", "op", "train_fraction"), why_clean, "data.",
    )  # fmt: skip


def load_data(data: DataConfig, noise_seed: int = 0) -> Dataset:
    """``load_dataset`` as ``data`` says (any name in ``DATASETS``; modular data come from
    ``genlab.data.modular.make_modular_data``)."""
    return load_dataset(
        data.name,
        train_size=data.train_size,
        normalize=data.normalize == "train",
        mean_std=STANDARD_MEAN_STD[data.name] if data.normalize == "standard" else None,
        label_noise=data.label_noise,
        noise_kind=data.noise_kind,
        noise_seed=noise_seed,
    )
