"""The lottery study's numbers from its records alone, and the claim checks.

Every per-level quantity is an array (seeds, levels + 1) per (setting, noise rate), NaN where a
record is missing. A comparison between two settings is made on seed means, level by level
(like with like: same density, same noise, same epochs), over the pruned levels L >= 1.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
from scipy.stats import spearmanr

MEASURES = (
    "density", "top_eigenvalue", "hessian_trace", "hessian_trace_se", "expected_sharpness",
    "worst_case_sharpness", "distance", "relative_distance", "stochastic_error",
    "stochastic_error_upper", "kl", "kl_kept", "kl_mask", "kl_other", "authors_bound",
    "certified_kl", "certified_bound", "certified_prior_var",
)  # fmt: skip
SHARE = 0.75
"""A directional claim holds when it holds at >= this share of the compared levels."""


def _grid(cfg) -> tuple[dict, int]:
    return {s: i for i, s in enumerate(cfg.seeds)}, cfg.levels + 1


def analyze(records: list[dict], cfg) -> dict:
    """{(setting, noise): {quantity: (seeds, levels + 1) array}} under "levels", plus the
    claim checks under "claims"."""
    seed_index, n_levels = _grid(cfg)
    out: dict = defaultdict(dict)

    def put(key, name, seed, level, value):
        arr = out[key].setdefault(name, np.full((len(seed_index), n_levels), np.nan))
        arr[seed_index[seed], level] = value

    diverged = []
    for r in records:
        if r["split"] == "diverged":
            diverged.append((r["setting"], float(r["noise"]), r["seed"], r["level"], r["step"]))
        if r["split"] not in ("ticket", "reinit", "prune", "measure"):
            continue
        key, seed, level = (r["setting"], float(r["noise"])), r["seed"], r["level"]
        if r["split"] in ("ticket", "reinit"):
            p = r["split"]
            if r["step"] > 0:  # early stopping picks among trained weights, not the start
                best = out[key].get(f"{p}_best_acc")
                prev = best[seed_index[seed], level] if best is not None else np.nan
                put(key, f"{p}_best_acc", seed, level, np.fmax(prev, r["test_acc"]))
            if "train_acc" in r:  # the loop's last step
                put(key, f"{p}_test_acc", seed, level, r["test_acc"])
                put(key, f"{p}_train_acc", seed, level, r["train_acc"])
            if level == 0:  # the dense level (chains without measures have no other record)
                put(key, "density", seed, level, 1.0)
        elif r["split"] == "prune":
            put(key, "density", seed, level, r["density"])
            put(key, "train_acc_pruned", seed, level, r["train_acc_pruned"])
            put(key, "train_acc_rewound", seed, level, r["train_acc_rewound"])
        else:
            for m in MEASURES:
                put(key, m, seed, level, r[m])
    levels = dict(out)
    return {"levels": levels, "claims": check_claims(levels, cfg), "diverged": diverged}


def seed_mean(levels: dict, key: tuple, name: str) -> np.ndarray | None:
    arr = levels.get(key, {}).get(name)
    if arr is None or np.isnan(arr).all():
        return None
    return nanmean(arr)


def nanmean(arr: np.ndarray) -> np.ndarray:
    """The mean over seeds (axis 0) ignoring NaN; NaN, silently, where every seed is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=0)


def directional(a: np.ndarray | None, b: np.ndarray | None, share: float = SHARE) -> dict | None:
    """Whether a < b level by level over the pruned levels (L >= 1) where both exist: held
    when a < b at >= ``share`` of them and on average. None when nothing can be compared."""
    if a is None or b is None:
        return None
    a, b = np.asarray(a[1:], float), np.asarray(b[1:], float)
    ok = ~(np.isnan(a) | np.isnan(b))
    if not ok.any():
        return None
    a, b = a[ok], b[ok]
    wins = int((a < b).sum())
    return {"held": bool(wins >= share * len(a) and a.mean() < b.mean()), "wins": wins,
            "n": int(len(a)), "a": float(a.mean()), "b": float(b.mean())}  # fmt: skip


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan  # undefined for fewer than 3 points or a constant series
    return float(spearmanr(x[ok], y[ok]).statistic)


def check_claims(levels: dict, cfg) -> dict:
    """Each claim's comparison (see ``directional``), keyed by a short name."""
    noise0 = 0.0
    hi = max(cfg.label_noise)

    def m(setting, name, noise=noise0):
        return seed_mean(levels, (setting, noise), name)

    def neg(x):
        return None if x is None else -x

    checks = {
        # a winning ticket: beats the same mask from a random re-initialization
        "winning_tickets": directional(
            m("small-lr", "reinit_test_acc"), m("small-lr", "ticket_test_acc")
        ),
        # IMP at a large lr keeps less of its dense accuracy than at a small lr
        "large_lr_imp_fails": directional(
            _retention(m("large-lr", "ticket_test_acc")),
            _retention(m("small-lr", "ticket_test_acc")),
        ),
        "sam_flatter_eigenvalue": directional(
            m("small-lr-sam", "top_eigenvalue"), m("small-lr", "top_eigenvalue")
        ),
        "large_lr_flatter_eigenvalue": directional(
            m("large-lr", "top_eigenvalue"), m("small-lr", "top_eigenvalue")
        ),
        "sam_flatter_sharpness": directional(
            m("small-lr-sam", "expected_sharpness"), m("small-lr", "expected_sharpness")
        ),
        "large_lr_flatter_sharpness": directional(
            m("large-lr", "expected_sharpness"), m("small-lr", "expected_sharpness")
        ),
        "sam_more_accurate": directional(
            neg(m("small-lr-sam", "ticket_test_acc")), neg(m("small-lr", "ticket_test_acc"))
        ),
        "large_lr_more_accurate": directional(
            neg(m("large-lr", "ticket_test_acc")), neg(m("small-lr", "ticket_test_acc"))
        ),
        "large_lr_farther": directional(m("small-lr", "distance"), m("large-lr", "distance")),
        "magnitude_beats_random": directional(
            neg(m("small-lr", "ticket_test_acc")), neg(m("random", "ticket_test_acc"))
        ),
        "magnitude_beats_reverse": directional(
            neg(m("small-lr", "ticket_test_acc")), neg(m("reverse", "ticket_test_acc"))
        ),
        "large_lr_larger_kl": directional(m("small-lr", "kl"), m("large-lr", "kl")),
    }
    if hi > 0:
        for flat in ("small-lr-sam", "large-lr"):
            for acc in ("ticket_test_acc", "ticket_best_acc"):
                tag = "final" if acc == "ticket_test_acc" else "early"
                checks[f"{flat}_noise_robust_{tag}"] = directional(
                    neg(m(flat, acc, hi)), neg(m("small-lr", acc, hi)))  # fmt: skip
    # KL against distance and flatness over every (setting, noise, seed, level) ticket
    kl, dist, eig = (np.concatenate([v[n].ravel() for v in levels.values() if n in v] or
                                    [np.zeros(0)]) for n in ("kl", "distance", "top_eigenvalue"))  # fmt: skip
    checks["kl_distance_spearman"] = spearman(kl, dist)
    checks["kl_eigenvalue_spearman"] = spearman(kl, eig)
    return checks


def _retention(acc: np.ndarray | None) -> np.ndarray | None:
    """Accuracy at each level relative to the dense level 0."""
    return None if acc is None else acc / acc[0]


def key_numbers(analysis: dict) -> dict:
    out = {}
    for (setting, noise), q in analysis["levels"].items():
        acc = q.get("ticket_test_acc")
        if acc is not None:
            means = nanmean(acc)
            out[f"{setting}_noise{noise:g}_dense_test_acc"] = float(means[0])
            out[f"{setting}_noise{noise:g}_sparsest_test_acc"] = float(means[-1])
    for name, c in analysis["claims"].items():
        if isinstance(c, dict):
            out[f"claim_{name}_held"] = c["held"]
        elif isinstance(c, float):
            out[name] = c
    return out
