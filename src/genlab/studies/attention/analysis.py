"""Regime labels, the tracked noisy sample's attention story, grid counts and delayed
generalization, computed from a part's numbers alone."""

from __future__ import annotations

import math

import numpy as np

from genlab.models.token_attention import (
    TrainHistory,
)
from genlab.studies.attention.config import TOKEN_NAMES, TaskConfig
from genlab.studies.attention.grid import (
    REGIMES,
    classify_regimes,
)


def regime_of(noisy_train_acc: float, test_loss: float, mu_norm: float, task: TaskConfig,
              fit_threshold: float = 0.5, benign_gap: float = 0.5) -> str:  # fmt: skip
    """The measured regime (:data:`genlab.studies.attention.grid.REGIMES`) of one trained setting, by the grid's
    rule (:func:`genlab.studies.attention.grid.classify_regimes`). Without label noise nothing can be overfit:
    ``not_overfitting``."""
    if not math.isfinite(noisy_train_acc):
        return "not_overfitting"
    code = classify_regimes(
        np.array([noisy_train_acc]),
        np.array([test_loss]),
        np.array([mu_norm]),
        T=task.T,
        sigma=task.sigma,
        fit_threshold=fit_threshold,
        benign_gap=benign_gap,
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
    reg = np.array(raw["regimes"])
    counts = {name: int((reg == i).sum()) for i, name in enumerate(REGIMES)}
    b = raw["boundary"]
    err = b["errors"] / b["n_cells"] if b["n_cells"] else float("nan")
    return {"C": b["C"], "misclassified": err, "cells": int(reg.size), **counts}


def delayed_analysis(steps: np.ndarray, train_acc: np.ndarray, test_loss: np.ndarray,
                     min_improvement: float) -> dict:  # fmt: skip
    """Fit step (first logged step with every training label fit, flipped ones included), the
    step of the smallest test loss, and whether test loss kept falling after the fit by at least
    ``min_improvement`` (relative) - delayed generalization."""
    fitted = np.flatnonzero(train_acc >= 1.0)
    j_min = int(np.nanargmin(test_loss))
    res = {
        "fit_step": None,
        "min_step": int(steps[j_min]),
        "min_test_loss": float(test_loss[j_min]),
        "test_loss_at_fit": None,
        "final_test_loss": float(test_loss[-1]),
        "improvement_after_fit": None,
        "delayed": False,
    }
    if fitted.size:
        jf = int(fitted[0])
        at_fit = float(test_loss[jf])
        after = float(np.nanmin(test_loss[jf:]))
        res.update(fit_step=int(steps[jf]), test_loss_at_fit=at_fit)
        res["improvement_after_fit"] = (at_fit - after) / at_fit
        res["delayed"] = bool(res["improvement_after_fit"] >= min_improvement)
    # an overfitting phase: test loss rising somewhere before its minimum
    before = test_loss[: j_min + 1]
    run_min = np.minimum.accumulate(before)
    rise = before - run_min
    res["overfitting_bump"] = float(np.nanmax(rise)) if rise.size else 0.0
    return res
