"""Onsets and scaling exponents of a grokking run, computed from ``metrics.jsonl`` alone."""

from __future__ import annotations

import numpy as np

from genlab.report import fmt
from genlab.runs import series

# --- analysis (from metrics.jsonl alone) ---------------------------------------------------


def member_series(records: list[dict]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """member -> split -> key -> array over that member's logged steps (NaN where a record
    lacks the key, e.g. mutual information, which is measured on a coarser schedule)."""
    pairs = dict.fromkeys((r["member"], r["split"]) for r in records)  # first-seen order
    out: dict = {}
    for member, split in pairs:
        out.setdefault(member, {})[split] = series(records, split, member=member)
    return out


FIT_ACCURACY = 0.99
"""Training accuracy that counts as fitting the training set. Not 100%: one hard example among
1,000 can hold exact 100% back by thousands of steps (seen with lambda = 0.3 on MNIST: 99% at
step 2,057, 100% at 5,863) while nothing else about the run changes."""


def onsets(train: dict, test: dict) -> dict:
    """Onset steps of one member (None where the event does not happen):

    - ``fit``: first logged step with training accuracy >= ``FIT_ACCURACY``;
    - ``test_rise``: first step at or after ``fit`` where test accuracy has covered half of the
      way from its value at ``fit`` (the plateau) to its final value (None if it rose < 0.05);
    - ``rnc1_start``: first step after test RNC1's peak where it is 10% below the peak (the
      contraction has begun);
    - ``rnc1_fall``: first step after the peak where test RNC1 has fallen halfway from the peak
      to its final value, (peak + final) / 2. Both RNC1 onsets need the final value to be below
      half the peak (a real contraction), else None;
    - ``rnc1_end_to_peak``: final test RNC1 over its peak (how far the contraction got).
    """
    steps = test["step"]
    fit_idx = np.flatnonzero(train["acc"] >= FIT_ACCURACY)
    res = {
        "fit": None,
        "test_rise": None,
        "rnc1_start": None,
        "rnc1_fall": None,
        "plateau_test_acc": None,
        "final_test_acc": float(test["acc"][-1]),
        "final_train_acc": float(train["acc"][-1]),
        "rnc1_end_to_peak": None,
    }
    if len(fit_idx):
        i = fit_idx[0]
        res["fit"] = int(steps[i])
        plateau, final = test["acc"][i], test["acc"][-1]
        res["plateau_test_acc"] = float(plateau)
        if final - plateau >= 0.05:
            j = i + np.flatnonzero(test["acc"][i:] >= plateau + 0.5 * (final - plateau))[0]
            res["test_rise"] = int(steps[j])
    rnc1 = test["rnc1"]
    if np.isfinite(rnc1).all() and len(rnc1) > 2:
        peak = int(np.argmax(rnc1))
        res["rnc1_end_to_peak"] = float(rnc1[-1] / rnc1[peak]) if rnc1[peak] > 0 else None
        if rnc1[-1] < 0.5 * rnc1[peak]:
            for key, target in (
                ("rnc1_start", 0.9 * rnc1[peak]),
                ("rnc1_fall", 0.5 * (rnc1[peak] + rnc1[-1])),
            ):
                k = peak + np.flatnonzero(rnc1[peak:] <= target)[0]
                res[key] = int(steps[k])
    return res


def fit_exponent(x: list[float], y: list[float]) -> float | None:
    """Slope of log y against log x (least squares); None with fewer than two points."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def analyze(records: list[dict]) -> dict:
    series = member_series(records)
    groups: dict[str, dict] = {}
    for label, sp in series.items():
        alpha, wd = sp["test"]["alpha"][0], sp["test"]["weight_decay"][0]
        key = f"alpha={fmt(alpha)} lambda={fmt(wd)}"
        g = groups.setdefault(key, {"alpha": alpha, "weight_decay": wd, "members": []})
        g["members"].append({"member": label, **onsets(sp["train"], sp["test"])})
        g.setdefault("final_bound", []).append(float(sp["test"]["bound"][-1]))
        g.setdefault("final_error", []).append(float(sp["test"]["bound_error"][-1]))
    for g in groups.values():
        for k in (
            "fit",
            "test_rise",
            "rnc1_start",
            "rnc1_fall",
            "final_test_acc",
            "final_train_acc",
            "plateau_test_acc",
            "rnc1_end_to_peak",
        ):
            vals = [m[k] for m in g["members"] if m[k] is not None]
            g[k] = float(np.median(vals)) if vals else None
        g["final_bound"] = float(np.mean(g["final_bound"]))
        g["final_error"] = float(np.mean(g["final_error"]))
    alphas = sorted({g["alpha"] for g in groups.values()})
    main_alpha = max(alphas) if alphas else None
    main = [g for g in groups.values() if g["alpha"] == main_alpha]
    exponent = {
        k: fit_exponent([g["weight_decay"] for g in main], [g[k] for g in main])
        for k in ("test_rise", "rnc1_start", "rnc1_fall", "fit")
    }
    return {"groups": groups, "exponent": exponent, "main_alpha": main_alpha}
