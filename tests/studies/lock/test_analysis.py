"""The lock study's verdicts on synthetic series where each claim holds and where it fails,
and the attack table's ratios on hand-made records."""

import json

import pytest

from genlab.runs import RunPaths
from genlab.studies.lock.analysis import (
    attack_defeats_lock,
    attack_rows,
    backward_disproportionate,
    finetune_target,
    harder_to_optimize,
    inference_preserved,
    linear_in_depth,
)


def test_linear_in_depth_holds_for_a_line_and_fails_for_a_curve_or_too_few_points():
    depths = [1, 2, 4, 8, 16, 48]
    ok, slope, worst = linear_in_depth(depths, [1000 + 250 * L for L in depths])
    assert ok and slope == pytest.approx(250) and worst < 1e-9
    assert not linear_in_depth(depths, [1000 + 25 * L * L for L in depths])[0]  # quadratic
    assert not linear_in_depth(depths, [5000 - 50 * L for L in depths])[0]  # decreasing
    assert not linear_in_depth([1, 2], [1, 2])[0]  # two points always fit a line


def test_inference_preserved_at_the_five_percent_line():
    assert inference_preserved(20.0, 20.9)
    assert not inference_preserved(20.0, 21.1)


def test_backward_disproportionate_compares_the_backward_forward_ratios():
    original = {"forward_s": 1.0, "backward_s": 2.0}
    assert backward_disproportionate(original, {"forward_s": 2.0, "backward_s": 6.0})  # 3 vs 2
    assert not backward_disproportionate(original, {"forward_s": 3.0, "backward_s": 6.0})  # 2 vs 2


def test_harder_to_optimize_is_relative_so_a_worse_start_is_not_counted():
    original = {"start_loss": 3.0, "final_loss": 2.4}  # 20% down
    assert harder_to_optimize(original, {"start_loss": 3.3, "final_loss": 3.0})  # 9% down
    assert not harder_to_optimize(original, {"start_loss": 4.0, "final_loss": 3.0})  # 25% down
    # the smoke run's curves: 6.47% against 6.40% down is the same curve, not a harder one
    smoke = {"start_loss": 2.6795, "final_loss": 2.5061}
    assert not harder_to_optimize(smoke, {"start_loss": 2.6845, "final_loss": 2.5127})
    assert harder_to_optimize(original, {"start_loss": 3.0, "final_loss": 2.55})  # 15% < 0.8 x 20%


def test_an_attack_defeats_the_lock_only_at_dense_memory_and_affordable_time():
    assert attack_defeats_lock({"peak_ratio": 1.05, "wall_to_target_ratio": 1.8})
    assert not attack_defeats_lock({"peak_ratio": 1.5, "wall_to_target_ratio": 1.0})
    assert not attack_defeats_lock({"peak_ratio": 1.0, "wall_to_target_ratio": 2.5})
    assert not attack_defeats_lock({"peak_ratio": 1.0, "wall_to_target_ratio": None})


def _write(paths, stage, values):
    p = paths.artifact(f"machine/{stage}.json")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(values))


def test_attack_rows_are_ratios_to_the_originals_best_full_run(tmp_path):
    paths = RunPaths(tmp_path)
    recs = []

    def run(attack, model, lr, losses, saved, step_s, peak, every=10):
        for i, loss in enumerate(losses):
            recs.append({"split": "finetune", "step": i * every, "attack": attack, "model": model,
                         "lr": lr, "eval_loss": loss})  # fmt: skip
        recs.append({"split": "attack", "step": every * (len(losses) - 1), "attack": attack,
                     "model": model, "lr": lr, "final_loss": losses[-1], "start_loss": losses[0],
                     "saved_bytes": saved, "trainable": 100})  # fmt: skip
        stage = f"attack-{attack}-{model}" + (f"-lr{lr:g}" if attack == "full" else "")
        _write(paths, stage, {"step_s": step_s, "peak_bytes": peak})

    run("full", "original", 0.1, [3.0, 2.6, 2.0], 100, 1.0, 1000)  # the baseline: target 2.1
    run("full", "original", 0.01, [3.0, 2.9, 2.8], 100, 1.0, 1000)
    run("full", "locked", 0.1, [3.2, 2.5, 1.9], 800, 2.0, 3000)  # best: reaches 2.0 at step 20
    run("full", "locked", 0.01, [3.2, 3.1, 3.0], 800, 2.0, 3000)
    run("checkpoint-layers", "locked", 0.1, [3.2], 50, 3.0, 1050)  # exact: full's curve
    # ends above the original's 2.0 but within a tenth of its drop: reached, cheaply, densely
    run("lora-attn", "locked", 0.001, [3.2, 2.6, 2.08], 100, 0.5, 1000)
    rows = {(r["attack"], r["model"]): r for r in attack_rows(recs, paths)}
    assert set(rows) == {
        ("full", "original"),
        ("full", "locked"),
        ("checkpoint-layers", "locked"),
        ("lora-attn", "locked"),
    }
    base, full, ckpt = (
        rows["full", "original"],
        rows["full", "locked"],
        rows["checkpoint-layers", "locked"],
    )
    assert (
        base["peak_ratio"] == 1
        and base["steps_to_target"] == 20
        and base["wall_to_target_ratio"] == 1
    )
    assert full["lr"] == 0.1 and full["peak_ratio"] == 3 and full["saved_ratio"] == 8
    assert full["steps_to_target"] == 20 and full["wall_to_target_ratio"] == 2
    assert full["final_loss_ratio"] == pytest.approx(1.9 / 2.0) and not full["defeats"]
    assert ckpt["exact"] and ckpt["steps_to_target"] == 20 and ckpt["wall_to_target_ratio"] == 3
    assert (
        ckpt["peak_ratio"] == pytest.approx(1.05) and not ckpt["defeats"]
    )  # dense memory, 3x time
    assert base["defeats"] is None
    lora = rows["lora-attn", "locked"]
    assert lora["steps_to_target"] == 20 and lora["wall_to_target_ratio"] == 0.5
    assert lora["final_loss_ratio"] == pytest.approx(2.08 / 2.0) and lora["defeats"]


def test_the_target_is_a_fraction_of_the_originals_drop():
    assert finetune_target(3.0, 2.0) == pytest.approx(2.1)
    assert finetune_target(3.0, 2.0, fraction=1.0) == 2.0
    assert finetune_target(3.0, 3.0) == 3.0  # no drop: the start itself


def test_fine_tuning_verdicts_need_a_locked_model_that_starts_near_the_original():
    from genlab.studies.lock.analysis import comparable_start, only_if_comparable

    original = {"start_loss": 2.55, "final_loss": 2.21}  # the gpt run's curves: drop 0.34
    assert comparable_start(original, {"start_loss": 2.57, "final_loss": 2.24})
    assert comparable_start(original, {"start_loss": 2.71, "final_loss": 2.3})  # 0.16 < 0.17
    assert not comparable_start(original, {"start_loss": 2.73, "final_loss": 2.3})  # 0.18
    # the smollm2 run: a broken lock starting 10.5 above a drop of 0.08
    assert not comparable_start({"start_loss": 3.62, "final_loss": 3.54},
                                {"start_loss": 14.1, "final_loss": 7.9})  # fmt: skip
    assert only_if_comparable(True, True) is True and only_if_comparable(True, False) is False
    assert only_if_comparable(False, True) is None and only_if_comparable(False, False) is None
    assert only_if_comparable(None, True) is None  # not measured
