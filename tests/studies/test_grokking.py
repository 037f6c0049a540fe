import math

import numpy as np
import pytest

from genlab.errors import ConfigError
from genlab.runs import MetricsLog, RunPaths, execute
from genlab.studies import STUDIES
from genlab.studies.grokking import (
    GrokkingConfig,
    fit_exponent,
    members_of,
    onsets,
    schedule,
)
from genlab.train import Callback

GROKKING = STUDIES["grokking"]


def test_onsets_on_a_hand_made_grokking_curve():
    steps = np.array([0, 10, 100, 1000, 2000, 5000, 10000, 20000])
    # 99.5% counts as fitting the training set (one hard example must not hold the fit back)
    train = {"step": steps, "acc": np.array([0.1, 0.5, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0])}
    test = {
        "step": steps,
        "acc": np.array([0.1, 0.2, 0.2, 0.2, 0.3, 0.5, 0.9, 0.9]),
        "rnc1": np.array([1.0, 2.0, 4.0, 4.0, 3.5, 0.5, 0.04, 0.04]),
    }
    res = onsets(train, test)
    assert res["fit"] == 100 and res["plateau_test_acc"] == 0.2
    # halfway from 0.2 to 0.9 is 0.55: first reached at step 10000
    assert res["test_rise"] == 10000
    # 10% below the peak 4 is 3.6: first reached at step 2000; halfway from the peak to the
    # final 0.04 is 2.02: first at or below it at step 5000
    assert res["rnc1_start"] == 2000 and res["rnc1_fall"] == 5000
    assert res["rnc1_end_to_peak"] == 0.01
    # A contraction that stops at 0.7x the peak: no RNC1 onsets, but how far it got is kept.
    res = onsets(train, {**test, "rnc1": np.array([1.0, 2.0, 4.0, 4.0, 3.5, 3.0, 2.8, 2.8])})
    assert res["rnc1_start"] is None and res["rnc1_fall"] is None
    assert math.isclose(res["rnc1_end_to_peak"], 0.7)


def test_onsets_without_a_rise_or_a_fit():
    steps = np.array([0, 1, 2])
    res = onsets(
        {"step": steps, "acc": np.array([0.1, 0.9, 0.98])},
        {"step": steps, "acc": np.array([0.1, 0.2, 0.2]), "rnc1": np.ones(3)},
    )
    assert res["fit"] is None and res["test_rise"] is None and res["rnc1_fall"] is None


def test_fit_exponent_recovers_inverse_scaling():
    lam = [0.3, 0.1, 0.03, 0.01]
    assert math.isclose(fit_exponent(lam, [50.0 / x for x in lam]), -1.0, abs_tol=1e-9)
    assert fit_exponent([0.1], [5.0]) is None
    assert fit_exponent([0.1, 0.3], [None, 4.0]) is None


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
        ({"lr": -1.0}, "lr"),
        ({"train_fraction": 1.5}, "train_fraction"),
        ({"p": 1}, "p"),
        ({"weight_decays": (-0.1,)}, "weight_decays"),
        ({"task": "mnist", "model": "transformer"}, "model"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        GROKKING.validate(GrokkingConfig(**change))


# --- end to end: the smoke preset groks, resumes exactly, rebuilds its report ----------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grokking") / "smoke"
    summary = execute(GROKKING, GROKKING.presets["smoke"](), out, quiet=True)
    return out, summary


def test_smoke_preset_groks_long_after_fitting(smoke_run):
    out, summary = smoke_run
    assert summary["status"] == "complete"
    records = MetricsLog(RunPaths(out).metrics).read()
    train = {r["step"]: r["acc"] for r in records if r["split"] == "train"}
    test = {r["step"]: r["acc"] for r in records if r["split"] == "test"}
    fit = min(s for s, a in train.items() if a == 1.0)
    assert fit <= 300 and test[fit] < 0.2  # memorized, not generalized
    assert test[max(test)] > 0.95  # ... and later it generalizes
    rise = min(s for s, a in test.items() if s > fit and a > 0.5)
    assert rise > 3 * fit  # delayed, not simultaneous
    for key in ("rnc1", "nc2", "bound", "nhsic_zx", "nhsic_zy"):
        assert all(math.isfinite(r[key]) for r in records if r["split"] == "test" and key in r)


def test_report_is_rebuilt_from_the_run_folder_alone(smoke_run):
    out, _ = smoke_run
    paths = RunPaths(out)
    before = paths.report_md.read_text()
    for f in (paths.report_md, paths.report_html, *paths.figures.glob("*.png")):
        f.unlink()
    GROKKING.report(paths)
    assert paths.report_md.read_text() == before
    assert {f.name for f in paths.figures.glob("*.png")} >= {"accuracy_nc.png", "bound.png"}


class Interrupt(Exception):
    pass


# Two weight decays and an alpha control, 300 steps: small enough to run in a test and in the
# child process of the SIGKILL tests (which builds it from this code).
SMALL_SWEEP = """
from genlab.studies import STUDIES
from genlab.studies.grokking import GrokkingConfig
CONFIG = GrokkingConfig(**{
    **vars(STUDIES["grokking"].presets["smoke"]()), "width": 64, "p": 23,
    "weight_decays": (1.0, 0.3), "control_init_scale": 0.5, "steps": 300, "log_points": 20,
    "checkpoint_every": 100,
})
"""


def small_sweep() -> GrokkingConfig:
    namespace: dict = {}
    exec(SMALL_SWEEP, namespace)
    return namespace["CONFIG"]


@pytest.fixture(scope="module")
def uninterrupted_sweep(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sweep") / "a"
    execute(GROKKING, small_sweep(), root, quiet=True)
    assert len({r["member"] for r in MetricsLog(RunPaths(root).metrics).read()}) == 4
    return (root / "metrics.jsonl").read_text()


def test_sweep_resumed_after_interrupt_equals_uninterrupted(tmp_path, uninterrupted_sweep):
    def boom(loop):
        raise Interrupt

    cfg = small_sweep()
    with pytest.raises(Interrupt):
        execute(GROKKING, cfg, tmp_path / "b", quiet=True, extra_callbacks=[Callback(boom, [250])])
    assert execute(GROKKING, cfg, tmp_path / "b", quiet=True, resume=True)["status"] == "complete"
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == uninterrupted_sweep


@pytest.mark.parametrize(("where", "at"), [("after_step", 50), ("mid_checkpoint", 200)])
def test_sweep_sigkilled_then_resumed_equals_uninterrupted(
    tmp_path, where, at, uninterrupted_sweep, kill_then_resume
):
    # at step 50 the newest checkpoint is the step-0 one (its records were once logged twice)
    kill_then_resume(GROKKING, small_sweep(), SMALL_SWEEP, where, at, tmp_path / "b")
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == uninterrupted_sweep
