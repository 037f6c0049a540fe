"""Real-data part of the attention study: text loader, ViT, cached last-block path, tiny run."""

from __future__ import annotations

import shutil

import pytest
import torch

from genlab.runs import Run, RunPaths, read_json
from genlab.studies.attention.real import (
    RealDataConfig,
    real_report_sections,
    run_real,
    smoke_config,
)


def test_tiny_vision_run_writes_table_and_report(tmp_path, monkeypatch):
    from genlab.data import cache_dir

    shared = cache_dir() / "datasets" / "mnist.npz"
    if shared.exists():  # a copy of the decoded dataset only: the phase-0 cache stays isolated
        (tmp_path / "cache" / "datasets").mkdir(parents=True)
        shutil.copy(shared, tmp_path / "cache" / "datasets" / "mnist.npz")
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    cfg = smoke_config("vision")
    assert isinstance(cfg, RealDataConfig)
    run = Run(RunPaths(tmp_path / "run"), cfg, quiet=True)
    with run.stage("real"):
        key = run_real(cfg, run)
    assert 0 <= key["real_vision_baseline_test_acc"] <= 1
    table = read_json(run.paths.artifact("real_table.json"))
    rows = table["vision"]["rows"]
    assert len(rows) == len(cfg.ns) * len(cfg.etas) * len(cfg.seeds)
    assert all(len(r["curves"]["max_attn"]) == cfg.phase2_log_points + 1 for r in rows)
    assert all(r["curves"]["step"][-1] == cfg.phase2_steps for r in rows)
    # Bernoulli(eta) label noise (the authors'): no flips at eta = 0, at most n otherwise
    assert all(r["n_noisy"] == 0 for r in rows if r["eta"] == 0)
    assert all(0 <= r["n_noisy"] <= r["n"] for r in rows)
    assert list((tmp_path / "cache" / "attention_real").glob("vit-*.safetensors"))
    records = run.metrics.read()
    assert {r["split"] for r in records} >= {"real_vision_phase2", "real_vision_phase1"}
    sections = real_report_sections(run.paths)
    md = "\n".join(body for _, body in sections)
    assert "95.0%" in md and "84.0%" in md and "88.4%" in md
    assert run.paths.figure("real_vision_phase2").exists()
    # A rerun reuses the cached phase-0 checkpoint.
    run2 = Run(RunPaths(tmp_path / "run2"), cfg, quiet=True)
    with run2.stage("real"):
        key2 = run_real(cfg, run2)
    assert read_json(run2.paths.artifact("real_table.json"))["vision"]["phase0"]["cached"]
    assert key2["real_vision_baseline_test_acc"] == pytest.approx(
        key["real_vision_baseline_test_acc"]
    )


def test_phase2_length_and_the_authors_optimizer():
    import dataclasses

    from genlab.studies.attention.real import phase2_optimizer, phase2_steps

    cfg = smoke_config("vision")
    assert phase2_steps(cfg, 20) == cfg.phase2_steps  # fixed steps for every n
    paper = dataclasses.replace(cfg, phase2_epochs=2000, phase2_batch=16,
                                phase2_optimizer="adamw-linear", phase2_lr=5e-5)  # fmt: skip
    assert phase2_steps(paper, 20) == 2000 * 2 and phase2_steps(paper, 1000) == 2000 * 63
    w = torch.nn.Parameter(torch.ones(3))
    opt, sched = phase2_optimizer(paper, [w], steps=4)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.0
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([5e-5, 3.75e-5, 2.5e-5, 1.25e-5])
    assert opt.param_groups[0]["lr"] == 0.0  # decayed to zero at the last step
    adam, constant = phase2_optimizer(cfg, [w], steps=4)
    adam.step()
    constant.step()
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == cfg.phase2_lr


def test_tiny_text_run_uses_the_authors_head(tmp_path, monkeypatch):
    """Text: no special tokens, the pretrained pooler and a fresh classifier fitted in phase 1,
    q/k of the last layer trained in phase 2; the report's protocol table says so."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    cfg = smoke_config("text")
    run = Run(RunPaths(tmp_path / "run"), cfg, quiet=True)
    with run.stage("real"):
        key = run_real(cfg, run)
    assert 0 <= key["real_text_baseline_test_acc"] <= 1
    table = read_json(run.paths.artifact("real_table.json"))["text"]
    assert "no special tokens" in table["model"] and "pooler" in table["model"]
    assert len(table["rows"]) == len(cfg.ns) * len(cfg.etas) * len(cfg.seeds)
    cache = list((tmp_path / "cache" / "attention_real").glob("minilm-rt-*.safetensors"))
    assert len(cache) == 1
    md = "\n".join(body for _, body in real_report_sections(run.paths))
    assert "72.9%" in md and "no special tokens; the pretrained pooler" in md
