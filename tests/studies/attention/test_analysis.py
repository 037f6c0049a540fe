import numpy as np
import pytest

from genlab.studies import STUDIES
from genlab.studies.attention.analysis import delayed_analysis, regime_of
from genlab.studies.attention.config import TaskConfig

ATTENTION = STUDIES["attention"]


def test_regime_of_labels():
    task = TaskConfig()
    assert regime_of(0.0, 0.41, 20.0, task) == "not_overfitting"
    assert regime_of(1.0, 0.41, 20.0, task) == "benign"
    assert regime_of(1.0, 0.64, 20.0, task) == "harmful"
    assert regime_of(float("nan"), 0.41, 20.0, task) == "not_overfitting"


def test_delayed_analysis_on_a_hand_made_curve():
    steps = np.array([0, 10, 100, 1000, 10000])
    train_acc = np.array([0.8, 0.8, 1.0, 1.0, 1.0])
    test_loss = np.array([0.65, 0.50, 0.55, 0.45, 0.42])
    res = delayed_analysis(steps, train_acc, test_loss, 0.01)
    assert res["fit_step"] == 100 and res["min_step"] == 10000
    assert res["delayed"] and res["improvement_after_fit"] == pytest.approx(0.13 / 0.55)
    assert res["overfitting_bump"] == pytest.approx(0.05)
    never = delayed_analysis(steps, np.full(5, 0.8), test_loss, 0.01)
    assert never["fit_step"] is None and not never["delayed"]
