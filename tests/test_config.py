from dataclasses import dataclass, field

import pytest

from genlab.config import (
    DataConfig,
    check_common,
    config_values,
    reject_changed,
    require_nonnegative,
    require_positive,
    require_unit,
)
from genlab.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.1
    seeds: tuple[int, ...] = (0, 1)


@dataclass
class Outer:
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    data: DataConfig = field(default_factory=DataConfig)


def test_config_values_names_every_leaf_dotted_with_indices():
    names = dict(config_values(Outer()))
    assert names["steps"] == 10 and names["inner.lr"] == 0.1
    assert names["inner.seeds[1]"] == 1 and names["data.name"] == "digits"


@pytest.mark.parametrize(
    ("config", "field_name"),
    [
        (Outer(inner=Inner(lr=float("nan"))), "inner.lr"),
        (Outer(inner=Inner(lr=float("inf"))), "inner.lr"),
        (Outer(steps=2**63), "steps"),
        (Outer(inner=Inner(seeds=(0, -1))), "inner.seeds[1]"),
    ],
)
def test_check_common_names_the_field(config, field_name):
    with pytest.raises(ConfigError) as err:
        check_common(config)
    assert err.value.field == field_name


def test_check_common_accepts_ordinary_values():
    check_common(Outer(steps=-3))  # a negative non-seed integer is the study's to judge


def test_range_helpers_name_the_field():
    with pytest.raises(ConfigError, match=r"^optim\.lr: must be > 0"):
        require_positive({"optim.lr": 0.0, "other": None})
    with pytest.raises(ConfigError, match=r"^depth: must be >= 0"):
        require_nonnegative({"depth": -1})
    with pytest.raises(ConfigError, match=r"^eta: must be in \[0, 1\)"):
        require_unit({"eta": 1.0})
    require_unit({"eta": 1.0}, closed_high=True)
    require_positive({"x": None})  # None: not set


def test_reject_changed_names_the_first_changed_field_with_its_prefix():
    base = Outer()
    reject_changed(Outer(), base, ("steps", "inner.lr"), "never read")  # unchanged: fine
    with pytest.raises(ConfigError, match=r"^inner\.lr: never read \(got 0.2; leave it at 0.1\)"):
        reject_changed(Outer(inner=Inner(lr=0.2)), base, ("steps", "inner.lr"), "never read")
    with pytest.raises(ConfigError, match=r"^real\.data\.p: "):
        reject_changed(DataConfig(p=97), DataConfig(), ("p",), "modular only", "real.data.")
