"""The lock study's verdicts on synthetic series where each claim holds and where it fails,
and the attack table's ratios on hand-made records."""

import json

import pytest

from genlab.runs import RunPaths
from genlab.studies.lock.analysis import (
    attack_defeats_lock,
    attack_rows,
    backward_disproportionate,
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

    run("full", "original", 0.1, [3.0, 2.6, 2.0], 100, 1.0, 1000)  # the baseline: target 2.0
    run("full", "original", 0.01, [3.0, 2.9, 2.8], 100, 1.0, 1000)
    run("full", "locked", 0.1, [3.2, 2.5, 1.9], 800, 2.0, 3000)  # best: reaches 2.0 at step 20
    run("full", "locked", 0.01, [3.2, 3.1, 3.0], 800, 2.0, 3000)
    run("checkpoint-layers", "locked", 0.1, [3.2], 50, 3.0, 1050)  # exact: full's curve
    rows = {(r["attack"], r["model"]): r for r in attack_rows(recs, paths)}
    assert set(rows) == {("full", "original"), ("full", "locked"), ("checkpoint-layers", "locked")}
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


def test_fine_tuning_verdicts_need_a_lock_that_kept_the_model():
    from genlab.studies.lock.analysis import only_if_preserved

    assert only_if_preserved(True, True) is True and only_if_preserved(True, False) is False
    # a broken lock: neither "harder" nor "the defence holds" can be judged from its curve
    assert only_if_preserved(False, True) is None and only_if_preserved(False, False) is None
    assert only_if_preserved(None, True) is None  # capability not measured
