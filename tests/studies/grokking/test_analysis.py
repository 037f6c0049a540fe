"""The grokking analysis and its verdict logic on synthetic series: claims that hold, that
fail (RNC1 lagging the rise, never contracting, no rise at all) and that cannot be tested."""

import math

import numpy as np
import pytest

from genlab.studies.grokking.analysis import (
    compare,
    fit_exponent,
    inverse_lambda_label,
    long_after_fit_verdict,
    onsets,
    together_verdict,
    weight_decay_verdict,
)

STEPS = np.unique(np.geomspace(1, 100_000, 200).round().astype(int))


def sigmoid_in_log_step(center: float, lo: float, hi: float) -> np.ndarray:
    """A value moving from lo to hi around step ``center`` on the log axis."""
    return lo + (hi - lo) / (1 + np.exp(-6 * (np.log10(STEPS) - math.log10(center))))


def member(fit=100, rise=10_000, test_rnc1=10_000, train_rnc1=10_000):
    """Synthetic series: training fit at ``fit``; test accuracy from 0.2 to 0.95 around
    ``rise`` (None: never); test RNC1 from 1 to 0.05 around ``test_rnc1`` (None: flat); and
    training RNC1 from 1 to 0.05 around ``train_rnc1`` (None: flat)."""
    train_acc = sigmoid_in_log_step(fit / 2, 0.0, 1.0)
    train_acc[STEPS >= fit] = 1.0
    acc = np.full(len(STEPS), 0.2) if rise is None else sigmoid_in_log_step(rise, 0.2, 0.95)
    flat = np.ones(len(STEPS))
    return onsets(
        {"step": STEPS, "acc": train_acc,
         "rnc1": flat if train_rnc1 is None else sigmoid_in_log_step(train_rnc1, 1.0, 0.05)},
        {"step": STEPS, "acc": acc,
         "rnc1": flat if test_rnc1 is None else sigmoid_in_log_step(test_rnc1, 1.0, 0.05)},
    )  # fmt: skip


def test_onsets_are_dated_by_fixed_criteria_not_by_the_final_value():
    steps = np.array([0, 10, 100, 1000, 2000, 5000, 10000, 20000])
    train = {"step": steps, "acc": np.array([0.1, 0.5, 0.995, 1, 1, 1, 1, 1.0]),
             "rnc1": np.array([1, 1, 2.0, 1.9, 1.5, 1.0, 0.8, 0.5])}  # fmt: skip
    test = {"step": steps, "acc": np.array([0.1, 0.2, 0.2, 0.2, 0.3, 0.5, 0.61, 0.62]),
            "rnc1": np.array([1.0, 2.0, 4.0, 4.0, 3.5, 0.5, 0.04, 0.04])}  # fmt: skip
    res = onsets(train, test)
    assert res["fit"] == 100 and res["plateau_test_acc"] == 0.2
    # 10% of the way from 0.2 to 100% is 0.28 (step 2000); halfway is 0.6 (step 10000). A
    # criterion relative to the final 0.62 would have dated the halfway point at 0.41: 5000.
    assert res["rise_start"] == 2000 and res["rise_half"] == 10000
    assert res["test_rnc1_start"] == 2000 and res["test_rnc1_half"] == 5000  # 3.6 and 2.0
    # training RNC1 from 2.0 at the fit: 1.8 first reached at 2000, 1.0 at 5000
    assert res["train_rnc1_start"] == 2000 and res["train_rnc1_half"] == 5000
    assert res["test_rnc1_end_to_peak"] == 0.01 and res["train_rnc1_end_to_fit"] == 0.25


def test_a_rise_still_going_at_the_end_has_no_halfway_point():
    res = member(rise=200_000)  # centred after the run ends
    assert res["rise_start"] is not None and res["rise_half"] is None


def test_rnc1_with_the_rise_is_held_and_lagging_or_flat_is_not():
    together = [member(rise=10_000, test_rnc1=12_000) for _ in range(3)]
    lagging = [member(rise=10_000, test_rnc1=40_000) for _ in range(3)]
    flat = [member(rise=10_000, test_rnc1=None) for _ in range(3)]
    never_rises = [member(rise=None) for _ in range(3)]

    def verdict(ms):
        return together_verdict(
            compare(ms, "test_rnc1_half", "rise_half"),
            compare(ms, "test_rnc1_start", "rise_start"),
        )

    assert verdict(together) == "held"
    lag = compare(lagging, "test_rnc1_half", "rise_half")
    assert lag["lags"] == 3 and lag["leads"] == 0 and 3.5 < lag["median"] < 4.5
    assert verdict(lagging) == "not held"  # 4x after the rise: not "together"
    assert (
        verdict(flat) == "not held" and compare(flat, "test_rnc1_half", "rise_half")["missing"] == 3
    )
    assert verdict(never_rises) == "not tested at this scale"
    # Leading by 3x is as far from "together" as lagging by 3x.
    leading = [member(rise=30_000, test_rnc1=10_000) for _ in range(3)]
    assert compare(leading, "test_rnc1_half", "rise_half")["leads"] == 3
    assert verdict(leading) == "not held"
    # One seed of three against is still a majority for; two of three is not.
    assert verdict(together[:2] + lagging[:1]) == "held"
    assert verdict(together[:1] + lagging[:2]) == "not held"


def test_training_rnc1_must_contract_long_after_the_fit_and_with_the_rise():
    assert long_after_fit_verdict([member(fit=100, rise=10_000, train_rnc1=10_000)] * 3) == "held"
    # contracting right at the fit (synchronized with fitting, not with grokking)
    assert long_after_fit_verdict([member(fit=100, rise=10_000, train_rnc1=120)] * 3) == "not held"
    # never contracting
    assert long_after_fit_verdict([member(rise=10_000, train_rnc1=None)] * 3) == "not held"
    assert long_after_fit_verdict([member(rise=None)] * 3) == "not tested at this scale"


def test_fit_exponent_recovers_inverse_scaling_with_an_interval():
    lam = [0.3, 0.1, 0.03, 0.01]
    exact = fit_exponent(lam, [50.0 / x for x in lam])
    assert math.isclose(exact["k"], -1.0, abs_tol=1e-9) and exact["points"] == 4
    assert exact["lo"] == pytest.approx(-1.0, abs=1e-6) and exact["hi"] == pytest.approx(
        -1.0, abs=1e-6
    )
    assert fit_exponent([0.1], [5.0]) is None
    assert fit_exponent([0.1, 0.3], [None, 4.0]) is None
    two = fit_exponent([0.1, 0.3], [30.0, 10.0])
    assert two["lo"] is None and inverse_lambda_label(two).startswith("no confidence")


def test_weight_decay_verdict_on_synthetic_sweeps():
    rng = np.random.default_rng(0)
    lams = [0.3, 0.1, 0.03, 0.01]

    def sweep(k, noise=0.1, seeds=5):
        return {lam: [int(1000 * lam**k * math.exp(noise * rng.standard_normal())) for _ in range(seeds)]
                for lam in lams}  # fmt: skip

    held = weight_decay_verdict(sweep(-1.0))
    assert (
        held["verdict"] == "held"
        and inverse_lambda_label(held["exponent"]) == "consistent with 1/lambda"
    )
    weak = weight_decay_verdict(sweep(-0.4))
    assert weak["verdict"] == "held"  # earlier, but the exponent is no -1:
    assert inverse_lambda_label(weak["exponent"]).startswith("weaker")
    assert weight_decay_verdict(sweep(+0.5))["verdict"] == "not held"  # later with more decay
    flat = weight_decay_verdict(sweep(0.0, noise=0.3))
    assert flat["verdict"] in ("not held", "not tested at this scale")
    # Lambdas whose runs never rise are listed, not dropped.
    partial = sweep(-1.0)
    partial[0.01] = [None] * 5
    res = weight_decay_verdict(partial)
    assert res["no_rise"] == [0.01] and 0.01 not in res["medians"]
    # One seed per lambda (3 points, 1 degree of freedom): falling medians, a wide interval.
    one = weight_decay_verdict({0.3: [2900], 0.1: [6100], 0.03: [13000]})
    assert one["verdict"] in ("held", "not tested at this scale")
    assert weight_decay_verdict({0.3: [None], 0.1: [None]})["verdict"] == "not tested at this scale"
    # Two medians on one logged step (the paper preset's lambda = 0.001 and 0.003): a tie at
    # the logging resolution is not a rise; a median that grows with lambda is.
    tied = {0.001: [25851] * 5, 0.003: [25851] * 5, 0.01: [22679] * 5, 0.1: [9897] * 5,
            0.3: [4319] * 5}  # fmt: skip
    tied = {lam: [s + 37 * i for i, s in enumerate(v)] for lam, v in tied.items()}
    assert weight_decay_verdict(tied)["verdict"] == "held"
    rises = {**tied, 0.03: [30000 + 37 * i for i in range(5)]}
    assert weight_decay_verdict(rises)["verdict"] == "not held"
    flat_ends = {0.3: [5000] * 3, 0.1: [5000] * 3}
    assert weight_decay_verdict(flat_ends)["verdict"] != "held"  # no fall at all
