import json

import pytest

from genlab.errors import CheckpointError, RunExists
from genlab.runs import MetricsLog, RunPaths, execute, run_name
from genlab.studies import STUDIES
from genlab.studies.classify import ClassifyConfig, OptimConfig
from genlab.train import Callback

CLASSIFY = STUDIES["classify"]


def small(**kw) -> ClassifyConfig:
    cfg = ClassifyConfig(steps=300, measure_every=25, checkpoint_every=100, **kw)
    CLASSIFY.validate(cfg)
    return cfg


def test_run_folder_holds_every_file(tmp_path):
    summary = execute(CLASSIFY, small(), tmp_path / "r", quiet=True)
    paths = RunPaths(tmp_path / "r")
    assert summary["status"] == "complete"
    for f in (
        paths.config,
        paths.env,
        paths.metrics,
        paths.report_md,
        paths.report_html,
        paths.summary,
        paths.figure("curves"),
        paths.latest_checkpoint,
        paths.noisy_idx,
    ):
        assert f.exists(), f
    env = json.loads(paths.env.read_text())
    assert env["seed"] == 0 and env["torch"].startswith("2.13")
    records = MetricsLog(paths.metrics).read()
    assert {r["split"] for r in records} == {"train", "test"}
    assert [r["step"] for r in records if r["split"] == "test"] == list(range(0, 301, 25))
    assert "data:image/png;base64" in paths.report_html.read_text()
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temp files


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    cfg = small()
    execute(CLASSIFY, cfg, tmp_path / "a", quiet=True)

    def boom(loop):
        raise Interrupt

    with pytest.raises(Interrupt):
        execute(
            CLASSIFY, cfg, tmp_path / "b", quiet=True, extra_callbacks=[Callback(boom, steps=[237])]
        )
    assert not (tmp_path / "b" / "metrics.jsonl").read_text().count('"step": 250')
    summary = execute(CLASSIFY, cfg, tmp_path / "b", quiet=True, resume=True)
    assert summary["status"] == "complete"
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    b = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b  # bit-identical metrics, not just close


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    execute(CLASSIFY, small(), tmp_path / "a", quiet=True)
    execute(CLASSIFY, small(), tmp_path / "b", quiet=True)
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()
    execute(CLASSIFY, small(seed=1), tmp_path / "c", quiet=True)
    assert (tmp_path / "a/metrics.jsonl").read_text() != (tmp_path / "c/metrics.jsonl").read_text()


def test_finished_run_is_not_overwritten_without_force(tmp_path):
    execute(CLASSIFY, small(), tmp_path / "r", quiet=True)
    before = (tmp_path / "r/metrics.jsonl").read_text()
    with pytest.raises(RunExists, match="--force"):
        execute(CLASSIFY, small(seed=3), tmp_path / "r", quiet=True)
    with pytest.raises(RunExists):
        execute(CLASSIFY, small(), tmp_path / "r", quiet=True, resume=True)
    assert (tmp_path / "r/metrics.jsonl").read_text() == before
    execute(CLASSIFY, small(seed=3), tmp_path / "r", quiet=True, force=True)
    assert (tmp_path / "r/metrics.jsonl").read_text() != before


def test_corrupt_checkpoint_is_reported_on_resume(tmp_path):
    with pytest.raises(Interrupt):
        execute(
            CLASSIFY,
            small(),
            tmp_path / "r",
            quiet=True,
            extra_callbacks=[Callback(lambda lp: (_ for _ in ()).throw(Interrupt), [150])],
        )
    ckpt = sorted((tmp_path / "r/checkpoints").glob("*.safetensors"))[-1]
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncate
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        execute(CLASSIFY, small(), tmp_path / "r", quiet=True, resume=True)


def test_nan_loss_marks_run_diverged_with_the_step(tmp_path):
    cfg = small(optim=OptimConfig(name="sgd", lr=1e4, momentum=0.0))
    cfg.loss = "mse"
    summary = execute(CLASSIFY, cfg, tmp_path / "r", quiet=True)
    assert summary["status"] == "diverged" and summary["step"] >= 1
    saved = json.loads((tmp_path / "r/summary.json").read_text())
    assert saved["status"] == "diverged" and str(saved["step"]) in saved["error"]


def test_run_name_is_preset_plus_hash_of_changes():
    base = ClassifyConfig()
    assert run_name("smoke", base, ClassifyConfig()) == "smoke"
    changed = run_name("smoke", small(), ClassifyConfig())
    assert changed.startswith("smoke-") and changed != run_name("smoke", small(seed=2), base)
