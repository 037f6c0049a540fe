"""Onsets, per-seed comparisons and weight-decay scaling of a grokking run, from
``metrics.jsonl`` alone; and the verdict logic the report's claims use (tested on synthetic
series where each claim holds and where it fails).

Every onset is dated against a fixed criterion, never against the run's final value (a rise
still going on at the end would be dated early):

- ``fit``: first logged step with training accuracy >= ``FIT_ACCURACY``;
- test accuracy ``rise_start`` / ``rise_half``: first step at or after ``fit`` where test
  accuracy has covered 10% / 50% of the way from its value at ``fit`` (the plateau) to 100%;
- test RNC1 ``test_rnc1_start`` / ``test_rnc1_half``: first step after its peak where it is
  at or below 0.9x / 0.5x the peak (the population within-class variance contracts);
- training RNC1 ``train_rnc1_start`` / ``train_rnc1_half``: first step after ``fit`` where it
  is at or below 0.9x / 0.5x its value at ``fit`` (it keeps contracting once the training set
  is fit).

Like is compared with like: a start with a start, a halfway point with a halfway point, one
seed at a time (the lag ratio, e.g. ``test_rnc1_half / rise_half``), and only then summarized
over seeds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from genlab.report import fmt
from genlab.runs import series

FIT_ACCURACY = 0.99
"""Training accuracy that counts as fitting the training set. Not 100%: one hard example among
1,000 can hold exact 100% back by thousands of steps (seen with lambda = 0.3 on MNIST: 99% at
step 2,057, 100% at 5,863) while nothing else about the run changes."""

START, HALF = 0.1, 0.5
"""A rise starts when 10% of the way is covered, and is halfway at 50%; RNC1 contracts from
1 - START = 0.9x its reference and is halfway at 0.5x."""

TOGETHER_FACTOR = 2.0
"""Two events co-occur when their steps are within this factor of each other. On the logged
grid (150 log-spaced points over 1e5 steps, a factor 1.08 apart) that is about 9 points."""

DELAY_FACTOR = 3
"""Delayed: an event at least this many times the fit step."""

PAIRS = {
    "test_rnc1_vs_rise_half": ("test_rnc1_half", "rise_half"),
    "test_rnc1_vs_rise_start": ("test_rnc1_start", "rise_start"),
    "train_rnc1_vs_rise_half": ("train_rnc1_half", "rise_half"),
}
"""The per-seed comparisons: (event, reference); the lag ratio is event / reference."""


def member_series(records: list[dict]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """member -> split -> key -> array over that member's logged steps (NaN where a record
    lacks the key, e.g. mutual information, which is measured on a coarser schedule)."""
    pairs = dict.fromkeys((r["member"], r["split"]) for r in records)  # first-seen order
    out: dict = {}
    for member, split in pairs:
        out.setdefault(member, {})[split] = series(records, split, member=member)
    return out


def first_step(steps: np.ndarray, ok: np.ndarray, after: int = 0) -> int | None:
    """The first step at index >= ``after`` where ``ok`` holds, else None."""
    hits = np.flatnonzero(ok[after:])
    return int(steps[after + hits[0]]) if len(hits) else None


def onsets(train: dict, test: dict) -> dict:
    """One member's onset steps (None where the event does not happen); see the module doc."""
    steps = test["step"]
    res: dict = {
        "fit": None,
        "plateau_test_acc": None,
        "final_test_acc": float(test["acc"][-1]),
        "final_train_acc": float(train["acc"][-1]),
        "rise_start": None,
        "rise_half": None,
        "test_rnc1_start": None,
        "test_rnc1_half": None,
        "train_rnc1_start": None,
        "train_rnc1_half": None,
        "test_rnc1_end_to_peak": None,
        "train_rnc1_end_to_fit": None,
    }
    rnc1 = test.get("rnc1")
    if rnc1 is not None and np.isfinite(rnc1).all() and len(rnc1) > 2:
        peak = int(np.argmax(rnc1))
        if rnc1[peak] > 0:
            res["test_rnc1_end_to_peak"] = float(rnc1[-1] / rnc1[peak])
            res["test_rnc1_start"] = first_step(steps, rnc1 <= (1 - START) * rnc1[peak], peak)
            res["test_rnc1_half"] = first_step(steps, rnc1 <= HALF * rnc1[peak], peak)
    fit_idx = np.flatnonzero(train["acc"] >= FIT_ACCURACY)
    if not len(fit_idx):
        return res
    i = int(fit_idx[0])
    res["fit"] = int(steps[i])
    plateau = float(test["acc"][i])
    res["plateau_test_acc"] = plateau
    for key, frac in (("rise_start", START), ("rise_half", HALF)):
        res[key] = first_step(steps, test["acc"] >= plateau + frac * (1.0 - plateau), i)
    train_rnc1 = train.get("rnc1")
    if train_rnc1 is not None and np.isfinite(train_rnc1[i:]).all() and train_rnc1[i] > 0:
        ref = train_rnc1[i]
        res["train_rnc1_end_to_fit"] = float(train_rnc1[-1] / ref)
        res["train_rnc1_start"] = first_step(steps, train_rnc1 <= (1 - START) * ref, i)
        res["train_rnc1_half"] = first_step(steps, train_rnc1 <= HALF * ref, i)
    return res


def compare(members: list[dict], event: str, reference: str) -> dict:
    """Per seed, ``event`` against ``reference`` (a member's onsets): the lag ratio
    event / reference (> 1: the event lags), over the seeds where the reference happened.
    A seed whose event never happens is counted, with ratio None (evidence against
    co-occurrence, not a missing value)."""
    ratios = []
    for m in members:
        if m.get(reference) is None:
            continue
        ev = m.get(event)
        ratios.append(None if ev is None else max(ev, 1) / max(m[reference], 1))
    found = [r for r in ratios if r is not None]
    return {
        "seeds": len(ratios),
        "ratios": ratios,
        "leads": sum(r < 1 for r in found),
        "lags": sum(r > 1 for r in found),
        "together": sum(1 / TOGETHER_FACTOR <= r <= TOGETHER_FACTOR for r in found),
        "missing": len(ratios) - len(found),
        "median": float(np.median(found)) if found else None,
        "min": min(found) if found else None,
        "max": max(found) if found else None,
    }


def together_verdict(*comparisons: dict) -> str:
    """Held when, in every comparison, a majority of the seeds with a reference event has the
    event within ``TOGETHER_FACTOR``; not tested without any such seed."""
    if any(c["seeds"] == 0 for c in comparisons):
        return "not tested at this scale"
    return "held" if all(2 * c["together"] > c["seeds"] for c in comparisons) else "not held"


def long_after_fit_verdict(members: list[dict]) -> str:
    """Separation of time scales: in a majority of seeds with a test rise, training RNC1 is
    halved from its value at the fit at least ``DELAY_FACTOR`` x the fit step, and within
    ``TOGETHER_FACTOR`` of the test rise's halfway point."""
    seeds = [m for m in members if m.get("fit") is not None and m.get("rise_half") is not None]
    if not seeds:
        return "not tested at this scale"
    ok = 0
    for m in seeds:
        t = m.get("train_rnc1_half")
        if t is None:
            continue
        late = t >= DELAY_FACTOR * max(m["fit"], 1)
        ok += late and 1 / TOGETHER_FACTOR <= t / max(m["rise_half"], 1) <= TOGETHER_FACTOR
    return "held" if 2 * ok > len(seeds) else "not held"


def fit_exponent(x: list[float], y: list[float | None]) -> dict | None:
    """Least-squares slope k of log y against log x with its 95% confidence interval (t
    distribution, n - 2 degrees of freedom; None bounds with fewer than 3 points); None with
    fewer than two distinct x."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    fit = stats.linregress(lx, ly)
    dof = len(pts) - 2
    half = float(stats.t.ppf(0.975, dof) * fit.stderr) if dof > 0 else math.inf
    lo, hi = (fit.slope - half, fit.slope + half) if math.isfinite(half) else (None, None)
    return {"k": float(fit.slope), "lo": lo, "hi": hi, "points": len(pts)}


def weight_decay_verdict(per_lambda: dict[float, list[int | None]]) -> dict:
    """The paper's claim as stated: stronger weight decay brings grokking earlier. From the
    per-seed rise steps of each lambda: held when the median rise never grows as lambda grows
    (equal medians are allowed: rise steps are dated on the logged steps, so two close medians
    can land on one logged step), falls from the smallest lambda to the largest, and the fitted
    exponent's 95% interval lies below 0; not held when a median grows with lambda or the
    interval lies above 0; else not tested (too few seeds to decide). Lambdas without a rise
    in any seed are listed, never dropped silently."""
    risen = {lam: [s for s in v if s is not None] for lam, v in per_lambda.items()}
    no_rise = sorted(lam for lam, v in risen.items() if not v)
    medians = {lam: float(np.median(v)) for lam, v in sorted(risen.items()) if v}
    xs = [lam for lam, v in risen.items() for _ in v]
    ys = [s for v in risen.values() for s in v]
    exp = fit_exponent(xs, ys)
    vals = list(medians.values())  # in increasing lambda
    falling = len(vals) >= 2 and all(b <= a for a, b in zip(vals, vals[1:])) and vals[-1] < vals[0]
    if exp is None:
        verdict = "not tested at this scale"
    elif not falling or (exp["lo"] is not None and exp["lo"] > 0):
        verdict = "not held"
    elif exp["hi"] is not None and exp["hi"] < 0:
        verdict = "held"
    else:
        verdict = "not tested at this scale"
    return {"verdict": verdict, "exponent": exp, "medians": medians, "no_rise": no_rise}


def inverse_lambda_label(exp: dict | None) -> str:
    """How a fitted exponent compares with 1/lambda (Theorem 4.3's time scale for RNC1)."""
    if exp is None:
        return "no exponent fitted"
    if exp["lo"] is None:
        return "no confidence interval (fewer than 3 points)"
    if exp["lo"] <= -1 <= exp["hi"]:
        return "consistent with 1/lambda"
    return "weaker than 1/lambda (k > -1)" if exp["lo"] > -1 else "stronger than 1/lambda (k < -1)"


def analyze(records: list[dict]) -> dict:
    by_member = member_series(records)
    groups: dict[str, dict] = {}
    for label, sp in by_member.items():
        alpha, wd = sp["test"]["alpha"][0], sp["test"]["weight_decay"][0]
        key = f"alpha={fmt(alpha)} lambda={fmt(wd)}"
        g = groups.setdefault(key, {"alpha": alpha, "weight_decay": wd, "members": []})
        g["members"].append({"member": label, **onsets(sp["train"], sp["test"])})
        train, test = sp["train"], sp["test"]
        g.setdefault("final_bound_stated_train", []).append(float(train["bound_stated"][-1]))
        g.setdefault("final_bound_variant_train", []).append(float(train["bound_variant"][-1]))
        g.setdefault("final_error", []).append(float(test["bound_error"][-1]))
    for g in groups.values():
        summarize_group(g)
    return summarize_sweep(groups)


def summarize_group(g: dict) -> dict:
    """Medians over a group's members of every onset, means of the final bound and error, and
    the per-seed comparisons (:data:`PAIRS`); in place."""
    for k in g["members"][0]:
        if k == "member":
            continue
        vals = [m[k] for m in g["members"] if m[k] is not None]
        g[k] = float(np.median(vals)) if vals else None
    for k in ("final_bound_stated_train", "final_bound_variant_train", "final_error"):
        g[k] = float(np.mean(g[k]))
    g["compare"] = {name: compare(g["members"], *pair) for name, pair in PAIRS.items()}
    return g


def summarize_sweep(groups: dict[str, dict]) -> dict:
    """The analysis of summarized groups: the main alpha (the largest) and its weight-decay
    verdict."""
    alphas = sorted({g["alpha"] for g in groups.values()})
    main_alpha = max(alphas) if alphas else None
    main = [g for g in groups.values() if g["alpha"] == main_alpha]
    lambdas = {g["weight_decay"]: [m["rise_half"] for m in g["members"]] for g in main}
    return {
        "groups": groups,
        "main_alpha": main_alpha,
        "weight_decay": weight_decay_verdict(lambdas),
    }
