import dataclasses

import pytest

from genlab.config import DataConfig, OptimConfig
from genlab.errors import ConfigError
from genlab.studies import STUDIES
from genlab.studies.grokking.config import MNIST_DATA, GrokkingConfig, members_of
from genlab.studies.grokking.run import schedule

GROKKING = STUDIES["grokking"]


def test_members_and_schedule_follow_the_protocol():
    cfg = GROKKING.presets["mnist-fig"]()
    members = members_of(cfg)
    assert [(m.alpha, m.weight_decay) for m in members] == [
        (8.0, 0.3),
        (8.0, 0.1),
        (8.0, 0.03),
        (1.0, 0.3),
        (1.0, 0.1),
        (1.0, 0.03),
    ]
    steps, mi = schedule(cfg)
    assert steps[:30] == list(range(30)) and {30, 40, 140, 100_000} <= set(steps)
    assert 35 not in steps and mi <= set(steps) and len(mi) <= cfg.mi_points + 1
    assert len([s for s in steps if s >= 150]) >= 100  # about 150 log-spaced points


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"optim": OptimConfig(lr=-1.0)}, "optim.lr"),
        ({"data": DataConfig(name="modular", train_fraction=1.5)}, "data.train_fraction"),
        ({"data": DataConfig(name="modular", p=1)}, "data.p"),
        ({"data": DataConfig(name="mnist")}, "data.train_size"),
        ({"data": DataConfig(name="digits", train_size=10)}, "data.name"),
        ({"data": DataConfig(name="modular", normalize="none")}, "data.normalize"),
        ({"data": dataclasses.replace(MNIST_DATA, label_noise=0.1)}, "data.label_noise"),
        ({"weight_decays": (-0.1,)}, "weight_decays"),
        ({"data": MNIST_DATA, "model": "transformer"}, "model"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        GROKKING.validate(GrokkingConfig(**change))


# --- end to end: the smoke preset groks, resumes exactly, rebuilds its report ----------------


@pytest.mark.parametrize(
    ("preset", "args", "field"),
    [
        ("smoke", ["--transformer.p", "97"], "transformer.p"),  # --data.p is used
        ("smoke", ["--transformer.d-model", "64"], "transformer.d_model"),  # MLP sweep: not read
        ("smoke", ["--optim.warmup-steps", "10"], "optim.warmup_steps"),  # no MLP warm-up
        ("smoke", ["--optim.weight-decay", "0.1"], "optim.weight_decay"),  # --weight-decays
        ("smoke", ["--optim.name", "sgd"], "optim.name"),
        ("modular-transformer", ["--width", "64"], "width"),  # MLP only
        ("modular-transformer", ["--weight-decays", "0.1", "0.3"], "weight_decays"),
        ("mnist-fig", ["--data.p", "97"], "data.p"),  # not a modular task
    ],
)
def test_a_field_that_does_not_apply_is_rejected_not_ignored(preset, args, field, capsys):
    from genlab.cli import main

    assert main(["run", "grokking", "--preset", preset, *args, "--check"]) == 2
    assert f"error: {field}: " in capsys.readouterr().err


def test_members_are_weight_decay_outer_seed_inner_then_controls():
    cfg = GrokkingConfig(weight_decays=(0.3, 0.1), seeds=(42, 43, 44), control_init_scale=1.0)
    got = [(m.alpha, m.weight_decay, m.seed) for m in members_of(cfg)]
    main = [(8.0, w, s) for w in (0.3, 0.1) for s in (42, 43, 44)]
    assert got == main + [(1.0, 0.3, 42), (1.0, 0.1, 42)]  # one control per lambda, first seed
