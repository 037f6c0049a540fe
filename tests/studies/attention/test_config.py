import dataclasses

import pytest

from genlab.config import OptimConfig
from genlab.errors import ConfigError
from genlab.studies import STUDIES
from genlab.studies.attention.config import AttentionConfig, TaskConfig

ATTENTION = STUDIES["attention"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"optim": OptimConfig(name="gd", lr=-1.0)}, "optim.lr"),
        ({"optim": OptimConfig(name="adamw", lr=5e-3)}, "optim.name"),
        ({"task": TaskConfig(eta=1.0)}, "task.eta"),
        ({"task": TaskConfig(eta=-0.1)}, "task.eta"),
        ({"parts": ("fig3", "nope")}, "parts"),
        ({"parts": ()}, "parts"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    cfg = dataclasses.replace(AttentionConfig(), **change)
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == field


def test_invalid_nested_values_name_the_field():
    cfg = AttentionConfig()
    cfg.parallel.executor = "slurm"  # type: ignore[assignment]
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "parallel.executor"
    cfg = AttentionConfig()
    cfg.fig3.mu_values = (20.0, 5.0)
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "fig3.mu_values"
    cfg = AttentionConfig()
    cfg.fig3.expected = ("benign", "harmful", "wrong")
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "fig3.expected"


def test_presets_exist_and_validate():
    for name in ("smoke", "fig3", "grid", "delayed", "paper", "real-vision", "real-text"):
        assert name in ATTENTION.presets
    for name in ("smoke", "fig3", "grid", "delayed", "transformer"):
        ATTENTION.validate(ATTENTION.presets[name]())
    assert ATTENTION.presets["real-vision"]().real.modality == "vision"
    assert ATTENTION.presets["real-text"]().real.modality == "text"
    assert ATTENTION.presets["real-text"]().parts == ("real",)


def test_settings_of_a_part_that_does_not_run_are_rejected_not_ignored(capsys):
    from genlab.cli import main

    assert main(["run", "attention", "--preset", "fig3", "--grid.steps", "5", "--check"]) == 2
    assert "error: grid.steps: applies to part 'grid'" in capsys.readouterr().err
    assert main(["run", "attention", "--preset", "fig3", "--fig3.steps", "5", "--check"]) == 0
