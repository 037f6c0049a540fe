"""The lock study's tables and verdicts, from the run folder's files alone.

Ratios are locked / original (or attack / the original's full fine-tuning at its best rate);
wall times and allocator peaks come from ``machine/STAGE.json``, everything else from
``metrics.jsonl``. The verdict functions are pure and tested on synthetic series where each
claim holds and where it fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genlab.lock.attacks import EXACT_ATTACKS, steps_to_reach
from genlab.runs import RunPaths
from genlab.studies.lock.config import LockStudyConfig
from genlab.studies.lock.run import attack_stage, lock_tag, read_machine

LINEAR_TOLERANCE = 0.01
"""Memory is linear in depth when a least-squares line through (depth, bytes) misses every
point by at most 1% of its value."""
PERPLEXITY_TOLERANCE = 0.05
"""Inference is preserved when the locked perplexity is within 5% of the original's (issue 13's
target; the paper's number is not public)."""
BACKWARD_EXCESS = 1.25
"""The backward pass costs disproportionately more when the locked model's backward/forward
time ratio exceeds the original's by at least 25%."""
DENSE_MEMORY = 1.10
"""An attack reaches dense memory when its peak is within 10% of fine-tuning the original."""
COMPARABLE_START = 0.5
"""The fine-tuning verdicts are tested only when the locked model starts at most half the
original's fine-tuning drop above the original's starting loss (``comparable_start``)."""
HARDER_MARGIN = 0.2
"""Fine-tuning is harder to optimize when the locked model removes at least 20% less of its
starting loss than the original in the same steps (a smaller gap is within what a seed or a
rate of the grid changes)."""
TARGET_FRACTION = 0.9
"""An attack reaches the original's fine-tuned loss when it has come within 10% of the
original's own drop of it (start - 0.9 (start - final) of the original's best run): the
original itself touches its final loss only at its last step, so an exact target would turn
evaluation noise of a fraction of a percent into "never"."""
AFFORDABLE_TIME = 2.0
"""... and is affordable when it reaches the original's fine-tuned loss in at most twice the
original's wall time."""


def _records(records: Sequence[dict], split: str, **ctx) -> list[dict]:
    return [
        r for r in records if r.get("split") == split and all(r.get(k) == v for k, v in ctx.items())
    ]


def _ratio(a, b) -> float:
    if a is None or b is None or not b:
        return float("nan")
    return a / b


# --- verdicts ------------------------------------------------------------------------------


def linear_in_depth(depths: Sequence[float], values: Sequence[float],
                    tolerance: float = LINEAR_TOLERANCE) -> tuple[bool, float, float]:  # fmt: skip
    """(linear?, slope, worst relative residual) of a least-squares line through the points:
    linear when the slope is positive and every point lies within ``tolerance`` (relative) of
    the line. Needs three points or more to be falsifiable (fewer: False)."""
    x, y = np.asarray(depths, float), np.asarray(values, float)
    if len(x) < 3:
        return False, float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    worst = float(np.max(np.abs(y - (slope * x + intercept)) / np.abs(y)))
    return bool(slope > 0 and worst <= tolerance), float(slope), worst


def inference_preserved(ppl_original: float, ppl_locked: float,
                        tolerance: float = PERPLEXITY_TOLERANCE) -> bool:  # fmt: skip
    return ppl_locked <= (1 + tolerance) * ppl_original


def backward_disproportionate(
    original: dict, locked: dict, excess: float = BACKWARD_EXCESS
) -> bool:
    """``original`` / ``locked``: {"forward_s", "backward_s"}."""
    ratio = (locked["backward_s"] / locked["forward_s"]) / (
        original["backward_s"] / original["forward_s"]
    )
    return ratio >= excess


def relative_drop(r: dict) -> float:
    """The fraction of its starting held-out loss a fine-tuning run ({"start_loss",
    "final_loss"}) removes."""
    return (r["start_loss"] - r["final_loss"]) / r["start_loss"]


def harder_to_optimize(original: dict, locked: dict, margin: float = HARDER_MARGIN) -> bool:
    """Each: {"start_loss", "final_loss"} of full fine-tuning at its best rate. Harder when the
    locked model removes a fraction of its starting held-out loss at least ``margin`` smaller
    than the original's in the same steps (relative, so a locked model that starts higher is
    not penalized for it)."""

    return relative_drop(locked) <= (1 - margin) * relative_drop(original)


def comparable_start(original: dict, locked: dict, fraction: float = COMPARABLE_START) -> bool:
    """Each: {"start_loss", "final_loss"} of full fine-tuning at its best rate. The fine-tuning
    verdicts (harder to optimize, the defence holds) compare the locked model's curve with the
    original's: like with like only when the locked model starts close to where the original
    starts, within ``fraction`` of the drop the original's own fine-tuning achieves. A broken
    lock starts far higher, "recovers" fast and never reaches the original's loss, which says
    nothing of the defence."""
    drop = original["start_loss"] - original["final_loss"]
    return locked["start_loss"] - original["start_loss"] <= fraction * max(drop, 0.0)


def only_if_comparable(comparable: bool | None, verdict: bool | None) -> bool | None:
    """``verdict`` where the curves are comparable, None (not testable) otherwise."""
    return verdict if comparable else None


def finetune_target(start_loss: float, final_loss: float,
                    fraction: float = TARGET_FRACTION) -> float:  # fmt: skip
    """The loss an attack must reach: ``fraction`` of the way from the original's starting to
    its final held-out loss."""
    return start_loss - fraction * (start_loss - final_loss)


def attack_defeats_lock(row: dict) -> bool:
    """An attack row (ratios to fine-tuning the original) defeats the lock when it fine-tunes
    at dense memory and reaches the original's loss in affordable time."""
    return (row["peak_ratio"] <= DENSE_MEMORY and row["wall_to_target_ratio"] is not None
            and row["wall_to_target_ratio"] <= AFFORDABLE_TIME)  # fmt: skip


# --- tables --------------------------------------------------------------------------------


def tradeoff_rows(records: Sequence[dict], paths: RunPaths) -> list[dict]:
    rows = {r["model"]: r for r in _records(records, "tradeoff")}
    machine = read_machine(paths, "tradeoff")
    base, base_m = rows.get("original"), machine.get("original", {})
    out = []
    for key, r in rows.items():
        if key == "original":
            continue
        m = machine.get(key, {})
        rank = int(r["step"])
        distill_s = [read_machine(paths, f"lock-{lock_tag(rank, 'random')}-{d['module']}").get("distill_s")
                     for d in _records(records, "distill", tag=lock_tag(rank, "random"))]  # fmt: skip
        out.append({
            "rank": rank, "depth": r["depth"],
            "parameter_ratio": _ratio(r["parameters"], base["parameters"]),
            "saved_ratio": _ratio(r["saved_bytes"], base["saved_bytes"]),
            "module_saved_ratio": _ratio(r.get("module_saved_bytes"), base.get("module_saved_bytes")),
            "peak_ratio": _ratio(m.get("peak_bytes"), base_m.get("peak_bytes")),
            "latency_ratio": _ratio(m.get("forward_s"), base_m.get("forward_s")),
            "perplexity_ratio": _ratio(r.get("perplexity"), base.get("perplexity")),
            "distill_s": sum(distill_s) if distill_s and None not in distill_s else None,
            "saved_bytes": r["saved_bytes"],
        })  # fmt: skip
    return sorted(out, key=lambda row: row["rank"])


def finetune_curve(
    records: Sequence[dict], attack: str, model: str, lr: float
) -> tuple[list[int], list[float]]:
    rows = _records(records, "finetune", attack=attack, model=model, lr=lr)
    return [int(r["step"]) for r in rows], [float(r["eval_loss"]) for r in rows]


def best_full(records: Sequence[dict], model: str) -> dict | None:
    rows = _records(records, "attack", attack="full", model=model)
    finite = [r for r in rows if math.isfinite(r["final_loss"])]
    return min(finite, key=lambda r: r["final_loss"]) if finite else (rows[0] if rows else None)


def attack_rows(records: Sequence[dict], paths: RunPaths) -> list[dict]:
    """Per attack and model: peak memory, saved activations, step time, steps and wall time to
    the loss fine-tuning the original reaches (``finetune_target``), final loss; each a ratio to fine-tuning the
    original (full, best rate). Attacks that only move activations follow their model's full
    fine-tuning curve (same arithmetic): their steps and loss are taken from it."""
    base = best_full(records, "original")
    if base is None:
        return []
    base_m = read_machine(paths, attack_stage("full", "original", base["lr"]))
    target = finetune_target(base["start_loss"], base["final_loss"])
    base_steps = steps_to_reach(*finetune_curve(records, "full", "original", base["lr"]), target)
    best = {k: best_full(records, k) for k in ("original", "locked")}
    out = []
    for r in _records(records, "attack"):
        if r["attack"] == "full" and r is not best.get(r["model"]):
            continue  # one row per model: its best rate
        lr = r["lr"]
        stage = attack_stage(r["attack"], r["model"], lr if r["attack"] == "full" else None)
        m = read_machine(paths, stage)
        curve_of = (
            ("full", r["model"], best[r["model"]]["lr"])
            if r["attack"] in EXACT_ATTACKS
            else (r["attack"], r["model"], lr)
        )
        steps, losses = finetune_curve(records, *curve_of)
        reached = steps_to_reach(steps, losses, target)
        final = losses[-1] if losses else float("nan")
        step_ratio = _ratio(m.get("step_s"), base_m.get("step_s"))
        wall = (None if reached is None or base_steps in (None, 0)
                else step_ratio * reached / base_steps)  # fmt: skip
        out.append({
            "attack": r["attack"], "model": r["model"], "lr": lr, "trainable": r["trainable"],
            "peak_ratio": _ratio(m.get("peak_bytes"), base_m.get("peak_bytes")),
            "saved_ratio": _ratio(r["saved_bytes"], base["saved_bytes"]),
            "step_time_ratio": step_ratio, "steps_to_target": reached,
            "base_steps_to_target": base_steps, "wall_to_target_ratio": wall,
            "final_loss_ratio": _ratio(final, base["final_loss"]), "final_loss": final,
            "exact": r["attack"] in EXACT_ATTACKS,
            "perplexity": r.get("perplexity"), "agreement": r.get("agreement"),
            "tokens": r.get("tokens"), "module_error": r.get("module_error"),
        })  # fmt: skip
    for row in out:
        row["defeats"] = attack_defeats_lock(row) if row["model"] != "original" else None
    return out


def analyze(records: Sequence[dict], paths: RunPaths, cfg: LockStudyConfig) -> dict:
    tag = lock_tag(cfg.lock.rank, "random")
    depth = _records(records, "depth")
    linear, slope, worst = linear_in_depth(
        [r["step"] for r in depth], [r["saved_bytes"] for r in depth]
    )
    cap = {r["model"]: r for r in _records(records, "capability")}
    cost = {r["model"]: r for r in _records(records, "cost")}
    cost_m = read_machine(paths, "cost")
    errors = {t: [(r["step"], r["module"], r["error"]) for r in _records(records, "distill", tag=t)]
              for t in (tag, lock_tag(cfg.lock.rank, "split"))}  # fmt: skip
    attacks = attack_rows(records, paths)
    full = {k: best_full(records, k) for k in ("original", "locked")}
    out = {
        "tradeoff": tradeoff_rows(records, paths),
        "depth": {"depths": [r["step"] for r in depth], "saved_bytes": [r["saved_bytes"] for r in depth],
                  "frozen_bytes": [r.get("frozen_bytes") for r in depth],
                  "frozen_rms_bytes": [r.get("frozen_rms_bytes") for r in depth],
                  "mlp_saved_bytes": depth[0].get("mlp_saved_bytes") if depth else None,
                  "mlp_frozen_bytes": depth[0].get("mlp_frozen_bytes") if depth else None,
                  "linear": linear, "slope": slope, "worst_residual": worst},
        "capability": cap,
        "cost": {k: {**v, **cost_m.get(k, {})} for k, v in cost.items()},
        "errors": errors,
        "attacks": attacks,
        "full": full,
        "end_to_end": _records(records, "end_to_end"),
        "pretrain": _records(records, "pretrain"),
    }  # fmt: skip
    main = next((row for row in out["tradeoff"] if row["rank"] == cfg.lock.rank), None)
    out["main"] = main
    if "original" in cap and "locked" in cap:
        out["perplexity_ratio"] = cap["locked"]["perplexity"] / cap["original"]["perplexity"]
        out["preserved"] = inference_preserved(
            cap["original"]["perplexity"], cap["locked"]["perplexity"]
        )
    if all(k in out["cost"] and "forward_s" in out["cost"][k] for k in ("original", "locked")):
        out["backward_disproportionate"] = backward_disproportionate(
            out["cost"]["original"], out["cost"]["locked"]
        )
    if all(full.values()):
        out["comparable"] = comparable_start(full["original"], full["locked"])
        out["harder"] = only_if_comparable(
            out["comparable"], harder_to_optimize(full["original"], full["locked"])
        )
    return out


def key_numbers(a: dict) -> dict:
    main = a.get("main") or {}
    return {
        "saved_activation_ratio": main.get("saved_ratio"),
        "mlp_saved_activation_ratio": main.get("module_saved_ratio"),
        "forward_latency_ratio": main.get("latency_ratio"),
        "perplexity_ratio": a.get("perplexity_ratio"),
        "memory_linear_in_depth": a["depth"]["linear"],
        "attacks_that_defeat_the_lock": sorted({r["attack"] for r in a["attacks"] if r["defeats"]}),
    }
