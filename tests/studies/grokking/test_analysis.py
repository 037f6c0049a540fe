import math

import numpy as np

from genlab.studies.grokking.analysis import fit_exponent, onsets


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
