"""The layerwise study's numbers from its records alone, and the claim checks.

Layers are indexed 0..L-1 for the blocks' outputs and L for the logits; the claims are about
the blocks (the "last layer" is the last block's output, the classifier's input).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

MEASURES = ("nhsic_x", "nhsic_y", "cka_lin_x", "cka_lin_y", "cka_rbf_x", "cka_rbf_y")
REFERENCE = "layerwise"
"""The layer-wise mode the claims compare E2E with (cross-entropy local losses, simultaneous:
the paper's main comparison)."""


def planes(records: list[dict]) -> dict:
    """{mode: {seed: {layer: {"step": [...], measure: [...]}}}}, one point per measured step
    (a step measured twice, the sequential mode's block boundary, keeps its later record)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["split"] != "plane":
            continue
        series = out[r["mode"]][r["seed"]].setdefault(
            r["layer"], {"step": [], **{m: [] for m in MEASURES}}
        )
        if series["step"] and series["step"][-1] == r["step"]:
            for m in ("step", *MEASURES):
                series[m].pop()
        series["step"].append(r["step"])
        for m in MEASURES:
            series[m].append(r[m])
    return {mode: dict(seeds) for mode, seeds in out.items()}


def analyze(records: list[dict], cfg=None) -> dict:
    """Final per-layer measures (seeds x layers arrays), final test accuracy and probe accuracy
    per mode, and the claim checks."""
    pl = planes(records)
    final: dict = {}
    for mode, seeds in pl.items():
        order = sorted(seeds)
        final[mode] = {
            m: np.array([[seeds[s][l][m][-1] for l in sorted(seeds[s])] for s in order])
            for m in MEASURES
        }
        final[mode]["seeds"] = order
    acc: dict = defaultdict(dict)
    for r in records:
        if r["split"] == "test":
            acc[r["mode"]][r["seed"]] = r["acc"]  # the last measurement wins
    probe: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["split"] == "probe":
            probe[r["mode"]][r["seed"]][r["layer"]] = r["acc"]
    probes = {
        mode: np.array([[per[s][l] for l in sorted(per[s])] for s in sorted(per)])
        for mode, per in probe.items()
    }
    result = {
        "planes": pl,
        "final": final,
        "test_acc": {mode: dict(sorted(v.items())) for mode, v in acc.items()},
        "probe_acc": probes,
    }
    result["claims"] = claim_checks(final, result["test_acc"])
    result["claims_by_mode"] = {
        mode: claim_checks(final, result["test_acc"], mode) for mode in final if mode != "e2e"
    }
    return result


# --- claims --------------------------------------------------------------------------------


def early_layers(n_blocks: int) -> int:
    """How many blocks count as early: the first half, rounded up."""
    return math.ceil(n_blocks / 2)


def e2e_keeps_more_input_information(e2e_x: np.ndarray, lw_x: np.ndarray) -> dict:
    """Held when, for every seed, E2E's mean nHSIC(X; Z_l) over the early blocks exceeds
    layer-wise training's. Arrays are (seeds, blocks), seeds paired."""
    k = early_layers(e2e_x.shape[1])
    diff = e2e_x[:, :k].mean(1) - lw_x[:, :k].mean(1)
    return {"held": bool((diff > 0).all()), "diff": diff.tolist(), "early": k,
            "e2e": e2e_x[:, :k].mean(1).tolist(), "layerwise": lw_x[:, :k].mean(1).tolist()}  # fmt: skip


def layerwise_layers_move_alike(e2e_x: np.ndarray, lw_x: np.ndarray) -> dict:
    """Held when, for every seed, the spread (std over blocks) of the final nHSIC(X; Z_l) is
    smaller under layer-wise training than under E2E."""
    s_e2e, s_lw = e2e_x.std(1), lw_x.std(1)
    return {"held": bool((s_lw < s_e2e).all()), "e2e": s_e2e.tolist(), "layerwise": s_lw.tolist()}


def e2e_bottleneck_shape(e2e_x: np.ndarray, e2e_y: np.ndarray, tol: float = 0.02) -> dict:
    """Held when, on the seed mean, E2E's last block has a lower nHSIC(X; Z) than the highest of
    its earlier blocks and an nHSIC(Y; Z) within ``tol`` (relative) of the highest over all
    blocks."""
    x, y = e2e_x.mean(0), e2e_y.mean(0)
    lower_x = bool(x[-1] < x[:-1].max()) if len(x) > 1 else False
    high_y = bool(y[-1] >= (1 - tol) * y.max())
    return {"held": lower_x and high_y, "last_x": float(x[-1]), "max_early_x": float(x[:-1].max())
            if len(x) > 1 else float("nan"), "last_y": float(y[-1]), "max_y": float(y.max())}  # fmt: skip


def e2e_more_accurate(e2e_acc: list[float], lw_acc: list[float]) -> dict:
    """Held when E2E's final test accuracy beats layer-wise training's for every seed (paired)."""
    diff = np.array(e2e_acc) - np.array(lw_acc)
    return {"held": bool((diff > 0).all()), "diff": diff.tolist()}


def claim_checks(final: dict, test_acc: dict, reference: str = REFERENCE) -> dict:
    """Each claim's check of E2E against the layer-wise mode ``reference`` ({}: one of the two
    was not run). Blocks only: the logits layer (the last index) is dropped."""
    if "e2e" not in final or reference not in final:
        return {}
    e, w = final["e2e"], final[reference]
    seeds = [s for s in e["seeds"] if s in w["seeds"]]
    ie, iw = [e["seeds"].index(s) for s in seeds], [w["seeds"].index(s) for s in seeds]
    ex, wx, ey = e["nhsic_x"][ie, :-1], w["nhsic_x"][iw, :-1], e["nhsic_y"][:, :-1]
    return {
        "input_information": e2e_keeps_more_input_information(ex, wx),
        "move_alike": layerwise_layers_move_alike(ex, wx),
        "bottleneck": e2e_bottleneck_shape(e["nhsic_x"][:, :-1], ey),
        "accuracy": e2e_more_accurate(
            [test_acc["e2e"][s] for s in seeds], [test_acc[reference][s] for s in seeds]
        ),
    }


def key_numbers(analysis: dict) -> dict:
    out = {}
    for mode, per_seed in analysis["test_acc"].items():
        out[f"{mode}_test_acc"] = float(np.mean(list(per_seed.values())))
    for name, check in analysis["claims"].items():
        out[f"claim_{name}_held"] = check["held"]
    return out
