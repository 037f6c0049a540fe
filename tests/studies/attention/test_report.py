import pytest

from genlab.studies.attention.analysis import longrun_numbers
from genlab.studies.attention.grid import REGIMES
from genlab.studies.attention.report import attention_claims, longrun_claim


def _law(a_iv, b_iv, seeds=3, a_range=(-0.6, -0.4), b_range=(0.4, 0.6)) -> dict:
    """grid_numbers' power-law entry: per-seed fits and the intervals over seeds."""
    fit = {"c": 1.0, "a": -0.5, "b": 0.5, "errors": 1, "n_cells": 100,
           "a_range": a_range, "b_range": b_range}  # fmt: skip
    return {"per_seed": [fit] * seeds, "a_mean": sum(a_iv) / 2, "a_interval": a_iv,
            "b_mean": sum(b_iv) / 2, "b_interval": b_iv}  # fmt: skip


def _grid(law: dict, benign: int = 4) -> dict:
    return {"benign": benign, "not_overfitting": 5, "harmful": 3, "C": 7.3,
            "misclassified": 0.05, "a": law["a_mean"], "a_interval": law["a_interval"],
            "b": law["b_mean"], "b_interval": law["b_interval"], "power_law": law}  # fmt: skip


def test_attention_claims_map_the_measurements_to_verdicts():
    fig3 = {
        "settings": [
            {"label": "benign", "regime": "harmful", "expected": "benign", "test_acc": 0.7},
            {"label": "large-signal", "regime": "not_overfitting", "expected": "not_overfitting",
             "test_acc": 1.0},
        ]
    }  # fmt: skip
    no_benign = _grid(_law((-0.7, -0.3), (0.3, 0.7)), benign=0)
    delayed = {"a": {"delayed": False}, "b": {"delayed": True}}
    claims = attention_claims(fig3, no_benign, delayed)
    assert [c.verdict for c in claims] == ["not held", "not tested at this scale", "held"]
    assert "settings off their expected regime: benign" in claims[0].measured
    assert claims[2].measured == "signature in b; not in a"
    assert attention_claims(None, None, {"a": {"delayed": False}})[0].verdict == "not held"
    assert attention_claims(None, None, None) == []


@pytest.mark.parametrize(
    ("law", "verdict"),
    [
        (_law((-0.7, -0.3), (0.3, 0.7)), "held"),  # n SNR^2 = C inside both intervals
        (_law((-1.2, -0.8), (0.3, 0.7)), "not held"),  # a excludes -1/2
        (_law((-0.7, -0.3), (1.4, 1.8)), "not held"),  # b excludes 1/2
        (_law((-0.7, -0.3), (0.3, 0.7), seeds=1), "held"),  # intervals given: per-seed fine
        (_law((float("nan"),) * 2, (0.3, 0.7)), "not tested at this scale"),  # one n
        (_law((-0.7, -0.3), (0.3, 0.7), b_range=(0.4, 4.0)), "not tested at this scale"),
    ],
)
def test_the_snr_boundary_claim_follows_the_exponent_intervals(law, verdict):
    (claim,) = attention_claims(None, _grid(law), None)
    assert claim.verdict == verdict


def _longrun(regimes_by_budget: list[list[str]], steps=(1000, 10000, 100000)) -> dict:
    """longrun.json for one cell (||mu|| 5, d 4500, n 20) with the given seeds' regimes."""
    code = {name: i for i, name in enumerate(REGIMES)}
    budgets = [
        {"steps": s, "n_values": [20], "mu_values": [5.0], "d_values": [4500],
         "config": {"sigma": 1.0}, "regimes": [[[[code[r]]] for r in regs]]}
        for s, regs in zip(steps, regimes_by_budget)
    ]  # fmt: skip
    return {"budgets": budgets}


def test_longrun_numbers_and_claim_on_a_cell_that_turns_benign():
    nums = longrun_numbers(_longrun([["harmful"] * 3, ["benign", "benign", "harmful"],
                                     ["benign"] * 3]))  # fmt: skip
    (cell,) = nums["cells"]
    assert cell["benign_from"] == 100000 and cell["n_snr2"] == pytest.approx(20 * 25 / 4500)
    assert nums["per_budget"]["10000"] == {"not_overfitting": 0, "benign": 2, "harmful": 1}
    assert longrun_claim(nums).verdict == "held"


@pytest.mark.parametrize(
    ("regimes", "verdict"),
    [
        ([["harmful"] * 3] * 3, "not held"),  # stays harmful
        ([["benign"] * 3] * 3, "not tested at this scale"),  # never harmful: nothing to turn
        ([["not_overfitting"] * 3, ["benign"] * 3, ["benign"] * 3], "not tested at this scale"),
        ([["harmful"] * 3, ["harmful"] * 3, ["benign", "benign", "harmful"]], "not held"),
        # benign once, then harmful again: not benign *from* a budget on
        ([["harmful"] * 3, ["benign"] * 3, ["harmful"] * 3], "not held"),
    ],
)
def test_longrun_claim_when_nothing_turns_benign(regimes, verdict):
    assert longrun_claim(longrun_numbers(_longrun(regimes))).verdict == verdict


def test_benign_from_needs_every_later_budget_benign():
    # benign, harmful, benign: benign *from* the last budget, after a harmful one: turned
    nums = longrun_numbers(_longrun([["benign"] * 3, ["harmful"] * 3, ["benign"] * 3]))
    assert nums["cells"][0]["benign_from"] == 100000
    assert longrun_claim(nums).verdict == "held"
