"""Regime labels, the tracked noisy sample's attention story, grid counts and delayed
generalization, computed from a part's numbers alone."""

from __future__ import annotations

import math

import numpy as np

from genlab.models.token_attention import (
    TrainHistory,
)
from genlab.studies.attention.config import TOKEN_NAMES, RegimeConfig, TaskConfig
from genlab.studies.attention.grid import (
    REGIMES,
    classify_regimes,
)


def regime_of(fin: dict, mu_norm: float, task: TaskConfig, rule: RegimeConfig) -> str:
    """The measured regime (:data:`~genlab.studies.attention.grid.REGIMES`) of one trained
    setting from its final numbers ``fin`` (``noisy_train_acc``, ``clean_train_acc``,
    ``test_loss``), by the study's one rule (:func:`~genlab.studies.attention.grid.
    classify_regimes` with ``rule``'s thresholds). Without label noise nothing can be
    overfit: ``not_overfitting``."""
    if not math.isfinite(fin["noisy_train_acc"]):
        return "not_overfitting"
    code = classify_regimes(
        np.array([fin["noisy_train_acc"]]),
        np.array([fin["test_loss"]]),
        np.array([mu_norm]),
        clean_train_acc=np.array([fin["clean_train_acc"]]),
        T=task.T,
        sigma=task.sigma,
        fit_threshold=rule.fit_threshold,
        benign_gap=rule.benign_gap,
    )[0]
    return REGIMES[int(code)]


def noisy_sample_story(hist: TrainHistory, has_noisy: bool) -> dict | None:
    """Where the tracked noisy sample's attention went: token 0's peak and the final argmax."""
    if not has_noisy:
        return None
    a = hist.tracked_attn[:, 1].numpy()  # (L, T)
    steps = hist.steps.numpy()
    peak = int(np.argmax(a[:, 0]))
    final = a[-1]
    top = int(np.argmax(final))
    return {
        "token0_start": float(a[0, 0]),
        "token0_peak": float(a[peak, 0]),
        "token0_peak_step": int(steps[peak]),
        "token0_final": float(final[0]),
        "final_top_token": top,
        "final_top_attention": float(final[top]),
    }


def token_kind(t: int) -> str:
    return TOKEN_NAMES[t] if t < len(TOKEN_NAMES) else f"token {t} (irrelevant, noise only)"


def grid_numbers(raw: dict) -> dict:
    """Key numbers of a grid run (``grid.json``): cells per regime (over every n, seed,
    ||mu||, d), the n SNR^2 = C fit, the power-law boundary's exponents with their intervals
    over seeds, and how often the seeds agree on a cell's regime."""
    reg = np.array(raw["regimes"])  # (n, seed, mu, d)
    counts = {name: int((reg == i).sum()) for i, name in enumerate(REGIMES)}
    b = raw["boundary"]
    err = b["errors"] / b["n_cells"] if b["n_cells"] else float("nan")
    law = raw["power_law"]
    agree = (reg == reg[:, :1]).all(axis=1)  # (n, mu, d): every seed in one regime
    return {
        "C": b["C"], "misclassified": err, "cells": int(reg.size), **counts,
        "a": law["a_mean"], "a_interval": law["a_interval"],
        "b": law["b_mean"], "b_interval": law["b_interval"],
        "power_law_misclassified": [f["errors"] / f["n_cells"] if f["n_cells"] else float("nan")
                                    for f in law["per_seed"]],
        "seeds_agree": float(agree.mean()),
        "power_law": law,
    }  # fmt: skip


def longrun_numbers(raw: dict) -> dict:
    """From ``longrun.json``: per budget the cells in each regime (over ||mu||, d, seeds), and
    per (||mu||, d) cell ``benign_from``, the first budget from which every seed is benign at
    that and every later budget (None: not by the last), with its n SNR^2."""
    budgets = raw["budgets"]
    steps = [b["steps"] for b in budgets]
    reg = np.array([b["regimes"] for b in budgets])[:, 0]  # (budget, seed, mu, d); one n
    per_budget = {
        str(s): {name: int((r == i).sum()) for i, name in enumerate(REGIMES)}
        for s, r in zip(steps, reg)
    }
    all_benign = (reg == REGIMES.index("benign")).all(axis=1)  # (budget, mu, d)
    # benign from budget k on: every seed benign at k and at every later budget
    stays_benign = np.flip(np.logical_and.accumulate(np.flip(all_benign, 0), 0), 0)
    cfg, n = budgets[0]["config"], budgets[0]["n_values"][0]
    cells = []
    for i, mu in enumerate(budgets[0]["mu_values"]):
        for j, d in enumerate(budgets[0]["d_values"]):
            hit = np.flatnonzero(stays_benign[:, i, j])
            cells.append({
                "mu_norm": mu, "d": d, "n_snr2": n * mu**2 / (cfg["sigma"] ** 2 * d),
                "regimes": [[REGIMES[int(c)] for c in reg[k, :, i, j]] for k in range(len(steps))],
                "benign_from": int(steps[hit[0]]) if hit.size else None,
            })  # fmt: skip
    return {"budgets": steps, "per_budget": per_budget, "cells": cells}


def delayed_analysis(
    steps: np.ndarray,
    train_acc: np.ndarray,
    test_loss: np.ndarray,
    min_rise: float,
    min_fall: float,
) -> dict:
    """Delayed generalization, the paper's signature: an overfitting phase in which the test
    loss rises, then a later fall.

    With ``L`` the test loss at the logged ``steps``: the *peak* is the step maximising the
    rise ``L[j] - min(L[:j+1])`` above the running minimum, and the *pre-peak minimum* that
    running minimum. ``rise = (L_peak - L_premin) / L_premin`` and
    ``fall = (L_peak - min(L[peak:])) / L_peak``; the signature is present (``delayed``) iff
    ``rise >= min_rise``, ``fall >= min_fall`` and the training set is fit by the peak (the
    rise is an overfitting phase). Its timescale: ``peak_step`` and
    ``recover_step`` (with ``premin_step``, None when the loss never rises), the first step
    after the peak with ``L`` back at or below the pre-peak
    minimum (None: not within the run). ``fit_step``: first logged step with every training
    label (flipped ones included) fit, or None.
    """
    steps = np.asarray(steps)
    loss = np.asarray(test_loss, dtype=float)
    loss = np.where(np.isfinite(loss), loss, np.inf)  # a diverged point is never a minimum
    run_min = np.minimum.accumulate(loss)
    j_peak = int(np.argmax(loss - run_min))
    j_pre = int(np.argmin(loss[: j_peak + 1]))
    pre, peak = float(loss[j_pre]), float(loss[j_peak])
    post = float(loss[j_peak:].min())
    back = np.flatnonzero(loss[j_peak:] <= pre)
    fitted = np.flatnonzero(np.asarray(train_acc) >= 1.0)
    rise = (peak - pre) / pre if pre > 0 else 0.0
    fall = (peak - post) / peak if peak > 0 else 0.0
    j_min = int(np.argmin(loss))
    return {
        "fit_step": int(steps[fitted[0]]) if fitted.size else None,
        # no rise at all: there is no peak to date
        "premin_step": int(steps[j_pre]) if rise > 0 else None,
        "peak_step": int(steps[j_peak]) if rise > 0 else None,
        "recover_step": int(steps[j_peak + back[0]]) if back.size and rise > 0 else None,
        "rise": rise,
        "fall": fall,
        "min_step": int(steps[j_min]),
        "min_test_loss": float(loss[j_min]),
        "final_test_loss": float(loss[-1]),
        # an *overfitting* phase: the training set (flipped labels included) is fit by the peak
        "delayed": bool(
            rise >= min_rise
            and fall >= min_fall
            and fitted.size
            and steps[fitted[0]] <= steps[j_peak]
        ),
    }
