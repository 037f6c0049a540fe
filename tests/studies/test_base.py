from dataclasses import dataclass

import pytest

from genlab.errors import ConfigError
from genlab.studies.base import Study


@dataclass
class Cfg:
    lr: float = 0.1
    seed: int = 0


def test_check_runs_the_common_checks_before_the_studys_own():
    seen = []
    study = Study("t", "test", Cfg, {}, run=None, report=None, validate=seen.append)
    study.check(Cfg())
    assert seen == [Cfg()]
    with pytest.raises(ConfigError, match=r"^lr: must be a finite number"):
        study.check(Cfg(lr=float("nan")))
    with pytest.raises(ConfigError, match=r"^seed: a seed must be >= 0"):
        study.check(Cfg(seed=-1))
    assert seen == [Cfg()]  # validate never saw the bad configs
