import json

import numpy as np
import pytest

from genlab.runs import MetricsLog, execute
from genlab.studies import STUDIES
from genlab.studies.attention.config import RegimeConfig, TaskConfig
from genlab.studies.attention.run import measure_setting

ATTENTION = STUDIES["attention"]
FIGURES = ("fig3_attention", "grid_regimes", "delayed", "transformer")


@pytest.fixture(scope="module")
def smoke_run(smoke_runs):
    return smoke_runs("attention")


def test_smoke_run_is_complete(smoke_run):
    paths, summary = smoke_run
    assert summary["status"] == "complete"
    assert json.loads(paths.summary.read_text())["status"] == "complete"
    assert paths.report_md.exists() and paths.report_html.exists()
    for name in FIGURES:
        assert paths.figure(name).exists(), name
    for art in ("grid.json", "fig3.json", "longrun.json", "delayed.json", "transformer.json"):
        assert paths.artifact(art).exists(), art
    grid = json.loads(paths.artifact("grid.json").read_text())
    assert np.array(grid["regimes"]).shape == (2, 2, 4, 4)  # n x seed x ||mu|| x d
    assert set(grid["boundary"]) == {"C", "errors", "n_cells"}
    assert len(grid["power_law"]["per_seed"]) == 2 and set(grid["sensitivity"]) == {
        "0.5",
        "0.75",
        "1.0",
    }
    splits = {r["split"] for r in MetricsLog(paths.metrics).read()}
    assert {"fig3/benign", "fig3/large-noise", "fig3/large-signal", "transformer"} <= splits
    assert "grid/progress" in splits
    results = summary["results"]
    assert set(results) == {"fig3", "grid", "longrun", "delayed", "transformer"}
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


# slow (30 s): the contract test already kills the attention smoke run halfway and resumes it
@pytest.mark.slow
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
    rule = RegimeConfig()
    large_signal = measure_setting(task, rule, d=500, mu_norm=100.0, steps=1000, lr=5e-3)
    assert large_signal["regime"] == "not_overfitting"
    assert large_signal["noisy_train_acc"] == 0.0 and large_signal["test_acc"] > 0.95
    benign = measure_setting(task, rule, d=2000, mu_norm=20.0, steps=2000, lr=5e-3)
    assert benign["regime"] == "benign"
    assert benign["noisy_train_acc"] == 1.0 and benign["test_acc"] > 0.95
