import dataclasses
import json

import numpy as np
import pytest

from genlab.errors import ConfigError
from genlab.runs import MetricsLog, RunPaths, execute
from genlab.studies import STUDIES
from genlab.studies.attention import (
    AttentionConfig,
    TaskConfig,
    delayed_analysis,
    measure_setting,
    regime_of,
)

ATTENTION = STUDIES["attention"]
FIGURES = ("fig3_attention", "grid_losses", "grid_regimes", "delayed", "transformer")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention") / "smoke"
    cfg = ATTENTION.presets["smoke"]()
    ATTENTION.validate(cfg)
    summary = execute(ATTENTION, cfg, root, quiet=True)
    return RunPaths(root), summary


def test_smoke_run_is_complete(smoke_run):
    paths, summary = smoke_run
    assert summary["status"] == "complete"
    assert json.loads(paths.summary.read_text())["status"] == "complete"
    assert paths.report_md.exists() and paths.report_html.exists()
    for name in FIGURES:
        assert paths.figure(name).exists(), name
    for art in ("grid.json", "fig3.json", "delayed.json", "transformer.json"):
        assert paths.artifact(art).exists(), art
    grid = json.loads(paths.artifact("grid.json").read_text())
    assert np.array(grid["regimes"]).shape == (4, 4)
    assert set(grid["boundary"]) == {"C", "errors", "n_cells"}
    splits = {r["split"] for r in MetricsLog(paths.metrics).read()}
    assert {"fig3/benign", "fig3/large-noise", "fig3/large-signal", "transformer"} <= splits
    assert "grid/progress" in splits
    results = summary["results"]
    assert set(results) == {"fig3", "grid", "delayed", "transformer"}
    text = paths.report_md.read_text()
    for heading in ("Attention dynamics", "Phase diagram", "Delayed generalization",
                    "Transformer variant", "Paper's claims vs this run"):  # fmt: skip
        assert heading in text
    assert "boundary moves with the step budget" in text
    # the smoke fig3 settings land where the theory says
    assert results["fig3"] == {
        "benign": "benign",
        "large-noise": "harmful",
        "large-signal": "not_overfitting",
    }


def test_report_rebuilds_from_files(smoke_run):
    paths, _ = smoke_run
    before = paths.report_md.read_text()
    paths.report_md.unlink()
    paths.figure("grid_regimes").unlink()
    paths.figure("fig3_attention").unlink()
    ATTENTION.report(paths)
    assert paths.report_md.read_text() == before
    assert paths.figure("grid_regimes").exists() and paths.figure("fig3_attention").exists()


def test_resume_skips_finished_parts(smoke_run, tmp_path):
    paths, _ = smoke_run
    # a copy of the finished run, with the summary gone: the parts' artifacts are all there
    import shutil

    root = tmp_path / "resumed"
    shutil.copytree(paths.root, root)
    (root / "summary.json").unlink()
    grid_before = (root / "grid.json").read_text()
    cfg = ATTENTION.presets["smoke"]()
    n_records = len(MetricsLog(root / "metrics.jsonl").read())
    out = execute(ATTENTION, cfg, root, resume=True, quiet=True)
    assert out["status"] == "complete"
    assert (root / "grid.json").read_text() == grid_before
    assert len(MetricsLog(root / "metrics.jsonl").read()) == n_records  # nothing retrained


def test_sigkill_inside_a_part_then_resume_equals_uninterrupted(
    smoke_run, tmp_path, kill_then_resume
):
    paths, _ = smoke_run
    code = "from genlab.studies import STUDIES\nCONFIG = STUDIES['attention'].presets['smoke']()"
    # killed in the grid part (fig3 finished): the grid's records logged so far must not stay
    kill_then_resume(ATTENTION, ATTENTION.presets["smoke"](), code, "record:grid/progress", 1,
                     tmp_path / "r")  # fmt: skip

    def records(root):  # wall times differ from run to run; everything else must not
        return [r for r in MetricsLog(root / "metrics.jsonl").read() if r["split"] != "timing"]

    assert records(tmp_path / "r") == records(paths.root)
    grid = json.loads((tmp_path / "r/grid.json").read_text())
    reference = json.loads(paths.artifact("grid.json").read_text())
    assert {k: v for k, v in grid.items() if "wall" not in k} == {
        k: v for k, v in reference.items() if "wall" not in k
    }


def test_regimes_of_hand_picked_settings():
    task = TaskConfig(n_test=500)
    large_signal = measure_setting(task, d=500, mu_norm=100.0, steps=1000)
    assert large_signal["regime"] == "not_overfitting"
    assert large_signal["noisy_train_acc"] == 0.0 and large_signal["test_acc"] > 0.95
    benign = measure_setting(task, d=2000, mu_norm=20.0, steps=2000)
    assert benign["regime"] == "benign"
    assert benign["noisy_train_acc"] == 1.0 and benign["test_acc"] > 0.95


def test_regime_of_labels():
    task = TaskConfig()
    assert regime_of(0.0, 0.41, 20.0, task) == "not_overfitting"
    assert regime_of(1.0, 0.41, 20.0, task) == "benign"
    assert regime_of(1.0, 0.64, 20.0, task) == "harmful"
    assert regime_of(float("nan"), 0.41, 20.0, task) == "not_overfitting"


def test_delayed_analysis_on_a_hand_made_curve():
    steps = np.array([0, 10, 100, 1000, 10000])
    train_acc = np.array([0.8, 0.8, 1.0, 1.0, 1.0])
    test_loss = np.array([0.65, 0.50, 0.55, 0.45, 0.42])
    res = delayed_analysis(steps, train_acc, test_loss, 0.01)
    assert res["fit_step"] == 100 and res["min_step"] == 10000
    assert res["delayed"] and res["improvement_after_fit"] == pytest.approx(0.13 / 0.55)
    assert res["overfitting_bump"] == pytest.approx(0.05)
    never = delayed_analysis(steps, np.full(5, 0.8), test_loss, 0.01)
    assert never["fit_step"] is None and not never["delayed"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task": TaskConfig(lr=-1.0)}, "task.lr"),
        ({"task": TaskConfig(eta=1.0)}, "task.eta"),
        ({"task": TaskConfig(eta=-0.1)}, "task.eta"),
        ({"parts": ("fig3", "nope")}, "parts"),
        ({"parts": ()}, "parts"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    cfg = dataclasses.replace(AttentionConfig(), **change)
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == field


def test_invalid_nested_values_name_the_field():
    cfg = AttentionConfig()
    cfg.grid.executor = "slurm"  # type: ignore[assignment]
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "grid.executor"
    cfg = AttentionConfig()
    cfg.fig3.mu_values = (20.0, 5.0)
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "fig3.mu_values"
    cfg = AttentionConfig()
    cfg.fig3.expected = ("benign", "harmful", "wrong")
    with pytest.raises(ConfigError) as err:
        ATTENTION.validate(cfg)
    assert err.value.field == "fig3.expected"


def test_presets_exist_and_validate():
    for name in ("smoke", "fig3", "grid", "delayed", "paper", "real-vision", "real-text"):
        assert name in ATTENTION.presets
    for name in ("smoke", "fig3", "grid", "delayed", "transformer"):
        ATTENTION.validate(ATTENTION.presets[name]())
    assert ATTENTION.presets["real-vision"]().real.modality == "vision"
    assert ATTENTION.presets["real-text"]().real.modality == "text"
    assert ATTENTION.presets["real-text"]().parts == ("real",)
