"""The lottery study's claim checks on synthetic records where each claim holds and fails."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genlab.studies.lottery.analysis import analyze, directional
from genlab.studies.lottery.config import LotteryConfig


def test_directional_needs_most_pruned_levels_and_the_mean():
    # level 0 (dense) is never compared
    assert directional(np.array([9.0, 1, 1, 1, 1]), np.array([0.0, 2, 2, 2, 2]))["held"]
    three_of_four = directional(np.array([0.0, 1, 1, 1, 3]), np.array([0.0, 2, 2, 2, 2]))
    assert three_of_four["held"] and three_of_four["wins"] == 3  # 3/4 >= 75%, mean lower
    assert not directional(np.array([0.0, 1, 1, 3, 3]), np.array([0.0, 2, 2, 2, 2]))["held"]
    # most levels but not on average: a single large reversal refutes it
    assert not directional(np.array([0.0, 1, 1, 1, 9]), np.array([0.0, 2, 2, 2, 2]))["held"]
    # missing levels are skipped; nothing comparable: no verdict
    assert directional(np.array([0.0, np.nan, 1]), np.array([0.0, 2, 2]))["n"] == 1
    assert directional(None, np.array([1.0, 2.0])) is None
    assert directional(np.array([0.0, np.nan]), np.array([0.0, 1.0])) is None


CFG = dataclasses.replace(LotteryConfig(), levels=3, seeds=(0, 1), label_noise=(0.0, 0.4))


def _records(values: dict) -> list[dict]:
    """values: {(setting, noise): {name: per-level list}} -> records as a run logs them."""
    out = []
    for (setting, noise), q in values.items():
        for seed in CFG.seeds:
            for level in range(CFG.levels + 1):
                ctx = {"setting": setting, "noise": noise, "seed": seed, "level": level}
                acc = q.get("acc", [0.9] * 4)[level] + 0.001 * seed
                out.append({"step": 0, "split": "ticket", **ctx, "test_acc": 0.1, "test_loss": 2.0})
                out.append({"step": 10, "split": "ticket", **ctx, "test_acc": acc,
                            "test_loss": 0.3, "train_acc": 1.0, "train_loss": 0.0})  # fmt: skip
                if "reinit" in q and level > 0:
                    out.append({"step": 10, "split": "reinit", **ctx,
                                "test_acc": q["reinit"][level], "test_loss": 0.5,
                                "train_acc": 1.0, "train_loss": 0.0})  # fmt: skip
                measure = {m: 1.0 for m in ("density", "top_eigenvalue", "hessian_trace",
                           "hessian_trace_se", "expected_sharpness", "worst_case_sharpness",
                           "distance", "relative_distance", "stochastic_error",
                           "stochastic_error_upper", "kl", "kl_kept", "kl_mask", "kl_other",
                           "authors_bound", "certified_kl", "certified_bound",
                           "certified_prior_var")}  # fmt: skip
                for name in ("top_eigenvalue", "expected_sharpness", "distance", "kl"):
                    if name in q:
                        measure[name] = q[name][level]
                out.append({"step": 0, "split": "measure", **ctx, **measure})
    return out


def _world(flat_wins: bool) -> dict:
    """Synthetic chains: with ``flat_wins`` SAM / large-lr are flatter, more accurate, farther
    and more robust; without it, the reverse."""
    sharp, flat = [5.0, 5, 5, 5], [1.0, 1, 1, 1]
    good, bad = [0.98, 0.97, 0.96, 0.95], [0.97, 0.90, 0.85, 0.80]
    near, far = [1.0, 1, 1, 1], [3.0, 3, 3, 3]
    a, b = (flat, sharp) if flat_wins else (sharp, flat)
    acc_flat, acc_small = (good, bad) if flat_wins else (bad, good)
    d_large, d_small = (far, near) if flat_wins else (near, far)
    world = {
        ("small-lr", 0.0): {"top_eigenvalue": b, "expected_sharpness": b, "acc": acc_small,
                            "distance": d_small, "kl": d_small,
                            "reinit": [0, 0.5, 0.5, 0.5] if flat_wins else [0, 0.99, 0.99, 0.99]},
        ("large-lr", 0.0): {"top_eigenvalue": a, "expected_sharpness": a, "acc": acc_flat,
                            "distance": d_large, "kl": d_large},
        ("small-lr-sam", 0.0): {"top_eigenvalue": a, "expected_sharpness": a, "acc": acc_flat},
        ("random", 0.0): {"acc": [0.98, 0.5, 0.4, 0.3] if flat_wins else [0.98, 0.99, 0.99, 0.99]},
        ("reverse", 0.0): {"acc": [0.98, 0.2, 0.1, 0.1] if flat_wins else [0.98, 0.99, 0.99, 0.99]},
    }  # fmt: skip
    for s in ("small-lr", "large-lr", "small-lr-sam"):
        world[(s, 0.4)] = {"acc": acc_small if s == "small-lr" else acc_flat}
    return world


@pytest.mark.parametrize("flat_wins", [True, False])
def test_every_directional_claim_follows_the_synthetic_world(flat_wins):
    claims = analyze(_records(_world(flat_wins)), CFG)["claims"]
    names = ["winning_tickets", "large_lr_imp_fails", "sam_flatter_eigenvalue",
             "large_lr_flatter_eigenvalue", "sam_flatter_sharpness",
             "large_lr_flatter_sharpness", "sam_more_accurate", "large_lr_more_accurate",
             "large_lr_farther", "magnitude_beats_random", "magnitude_beats_reverse",
             "large_lr_larger_kl", "small-lr-sam_noise_robust_final",
             "large-lr_noise_robust_early"]  # fmt: skip
    # large-lr IMP failing means large-lr keeps *less* accuracy: the opposite of flat_wins
    expected = {n: flat_wins != (n == "large_lr_imp_fails") for n in names}
    assert {n: claims[n]["held"] for n in names} == expected


def test_early_stopped_accuracy_is_the_best_evaluation_and_seeds_are_averaged():
    levels = analyze(_records(_world(True)), CFG)["levels"]
    q = levels[("small-lr", 0.0)]
    assert q["ticket_best_acc"].shape == (2, 4)
    assert q["ticket_best_acc"][1, 1] == pytest.approx(0.901)
    assert q["ticket_test_acc"][:, 2] == pytest.approx([0.85, 0.851])


def test_missing_settings_give_no_verdict():
    records = [r for r in _records(_world(True)) if r["setting"] == "small-lr"]
    claims = analyze(records, CFG)["claims"]
    assert claims["sam_flatter_eigenvalue"] is None and claims["winning_tickets"]["held"]


def test_density_comes_from_prune_records_for_chains_without_measures():
    ctx = {"setting": "small-lr", "noise": 0.4, "seed": 0}
    records = [{"step": 5, "split": "ticket", **ctx, "level": 0, "test_acc": 0.9,
                "test_loss": 0.1, "train_acc": 0.9, "train_loss": 0.1}]  # fmt: skip
    for level, d in ((1, 0.8), (2, 0.64)):
        records.append({"step": 0, "split": "prune", **ctx, "level": level, "density": d,
                        "train_acc_pruned": 0.5, "train_acc_rewound": 0.1})  # fmt: skip
    cfg = dataclasses.replace(CFG, levels=2, seeds=(0,))
    density = analyze(records, cfg)["levels"][("small-lr", 0.4)]["density"]
    assert density.tolist() == [[1.0, 0.8, 0.64]]
