import numpy as np
import pytest

from genlab.studies import STUDIES
from genlab.studies.attention.analysis import delayed_analysis, regime_of
from genlab.studies.attention.config import RegimeConfig, TaskConfig

ATTENTION = STUDIES["attention"]


def test_regime_of_uses_the_configured_rule_and_requires_every_label_by_default():
    task, rule = TaskConfig(), RegimeConfig()
    fin = {"noisy_train_acc": 1.0, "clean_train_acc": 1.0, "test_loss": 0.41}
    assert regime_of(fin, 20.0, task, rule) == "benign"
    assert regime_of({**fin, "test_loss": 0.64}, 20.0, task, rule) == "harmful"
    # 3 of 4 flipped labels fit: not overfitting by the paper's definition, overfitting at 0.5
    part = {**fin, "noisy_train_acc": 0.75}
    assert regime_of(part, 20.0, task, rule) == "not_overfitting"
    assert regime_of(part, 20.0, task, RegimeConfig(fit_threshold=0.5)) == "benign"
    # every flipped label fit but one clean label lost: not every training label is fit
    assert regime_of({**fin, "clean_train_acc": 0.9}, 20.0, task, rule) == "not_overfitting"
    assert regime_of({**fin, "noisy_train_acc": float("nan")}, 20.0, task, rule) == (
        "not_overfitting"
    )
    # the benign gap moves the benign / harmful line
    assert regime_of(fin, 20.0, task, RegimeConfig(benign_gap=0.0)) == "harmful"


STEPS = np.array([0, 10, 30, 100, 300, 1000, 3000, 10000])
FIT = np.array([0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_delayed_signature_present_rise_then_fall():
    loss = np.array([0.65, 0.50, 0.55, 0.60, 0.58, 0.45, 0.42, 0.40])
    r = delayed_analysis(STEPS, FIT, loss, min_rise=0.05, min_fall=0.05)
    assert r["delayed"] and r["fit_step"] == 30
    assert (r["premin_step"], r["peak_step"], r["recover_step"]) == (10, 100, 1000)
    assert r["rise"] == pytest.approx(0.10 / 0.50) and r["fall"] == pytest.approx(0.20 / 0.60)
    assert r["min_step"] == 10000 and r["min_test_loss"] == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("loss", "why"),
    [
        ([0.65, 0.60, 0.55, 0.50, 0.48, 0.45, 0.42, 0.40], "falls throughout: no overfitting"),
        ([0.65, 0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.70], "rises and never falls"),
        ([0.50] * 8, "flat"),
        ([0.65, 0.50, 0.51, 0.50, 0.49, 0.48, 0.47, 0.46], "a 2% wiggle is not a rise"),
        ([0.65, 0.50, 0.60, 0.59, 0.59, 0.59, 0.59, 0.59], "a 2% dip is not a fall"),
    ],
)
def test_delayed_signature_absent(loss, why):
    r = delayed_analysis(STEPS, FIT, np.array(loss), min_rise=0.05, min_fall=0.05)
    assert not r["delayed"], why
    if np.all(np.diff(loss) <= 0):  # never rises: no peak to date
        assert r["peak_step"] is None and r["premin_step"] is None and r["rise"] == 0


def test_delayed_recover_step_is_none_when_the_loss_stays_above_its_earlier_minimum():
    loss = np.array([0.65, 0.50, 0.55, 0.70, 0.65, 0.60, 0.58, 0.56])
    r = delayed_analysis(STEPS, FIT, loss, min_rise=0.05, min_fall=0.05)
    assert r["delayed"] and r["recover_step"] is None and r["fit_step"] == 30


def test_a_rise_and_fall_before_the_training_set_is_fit_is_not_the_signature():
    loss = np.array([0.65, 0.50, 0.55, 0.60, 0.58, 0.45, 0.42, 0.40])  # peak at step 100
    late_fit = np.array([0.8, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0, 1.0])  # fit at 1000, after it
    r = delayed_analysis(STEPS, late_fit, loss, min_rise=0.05, min_fall=0.05)
    assert not r["delayed"] and r["fit_step"] == 1000 and r["peak_step"] == 100
    never = delayed_analysis(STEPS, np.full(8, 0.9), loss, min_rise=0.05, min_fall=0.05)
    assert not never["delayed"] and never["fit_step"] is None
