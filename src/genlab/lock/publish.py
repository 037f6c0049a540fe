"""``genlab lock MODEL --rank R --out DIR``: lock a causal language model for publishing.

MODEL is a local Hugging Face folder (``AutoModelForCausalLM`` and its tokenizer) or
``smollm2`` (SmolLM2-135M-Instruct, offline). Calibration text: the training split of an
offline corpus; the summary's perplexity is on its held-out split. Modules are distilled in
worker processes (``--workers``), one progress line per module; the locked model is written
by :func:`genlab.lock.save_locked` and read back by :func:`genlab.lock.load_locked`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from genlab.errors import ConfigError
from genlab.executor import ExecutorConfig
from genlab.lock.inject import LockConfig, find_targets
from genlab.lock.io import save_locked
from genlab.lock.lock import DistillConfig, lock_model


@dataclass
class PublishConfig:
    model: Annotated[str, tyro.conf.Positional]
    """A local Hugging Face folder, or smollm2."""
    out: Path
    """Where the locked model is written (must not exist, or be empty)."""
    rank: int = 32
    init: Literal["random", "split"] = "random"
    norm: Literal["none", "rms", "layer"] = "rms"
    """Per-block norm: rms by default (without it SmolLM2's distillation diverges)."""
    target_modules: tuple[str, ...] = ("mlp",)
    steps: int = 300
    """Distillation steps per module."""
    lr: float = 3e-3
    batch: int = 512
    """Calibration tokens per distillation step."""
    kl_steps: int = 0
    """Steps of the end-to-end KL pass (0: none)."""
    corpus: Literal["bible", "news"] = "bible"
    seq_len: int = 128
    calibration_blocks: int = 128
    eval_blocks: int = 16
    workers: int = 2
    """Worker processes distilling modules (1: in this process)."""
    seed: int = 0
    quiet: bool = False


def load_causal_lm(spec: str):
    """(model, tokenizer) of ``smollm2`` or of a local Hugging Face folder."""
    if spec == "smollm2":
        from genlab.models.smollm2 import load_smollm2

        return load_smollm2()
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise ConfigError("MODEL", f"{spec}: neither smollm2 nor a Hugging Face folder with a "
                          "config.json")  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genlab.models.smollm2 import quiet_loading

    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer


def check(cfg: PublishConfig) -> None:
    if cfg.out.exists() and (not cfg.out.is_dir() or any(cfg.out.iterdir())):
        raise ConfigError("--out", f"{cfg.out} exists and is not empty (nothing is overwritten)")
    for name in (
        "rank",
        "steps",
        "batch",
        "seq_len",
        "calibration_blocks",
        "eval_blocks",
        "workers",
    ):
        if getattr(cfg, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(cfg, name)}"
            )
    if cfg.lr <= 0:
        raise ConfigError("--lr", f"must be > 0, got {cfg.lr}")


def publish(cfg: PublishConfig) -> dict:
    """Lock, save and summarize; returns the summary's numbers."""
    from genlab.data.corpus import corpus_splits, token_batches, token_blocks
    from genlab.lock.attacks import step_cost
    from genlab.measures.capability import perplexity
    from genlab.measures.memory import module_saved_bytes

    check(cfg)
    model, tokenizer = load_causal_lm(cfg.model)
    lock = LockConfig(
        target_modules=cfg.target_modules, rank=cfg.rank, norm=cfg.norm, init=cfg.init
    )
    names = find_targets(model, lock)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    train, held = corpus_splits(cfg.corpus)
    calibration = token_blocks(train, encode, cfg.seq_len, cfg.calibration_blocks)
    held_out = token_blocks(held, encode, cfg.seq_len, cfg.eval_blocks)
    original = copy.deepcopy(model)
    parallel = ExecutorConfig(executor="local" if cfg.workers == 1 else "process",
                              workers=cfg.workers, threads=1)  # fmt: skip
    distill = DistillConfig(steps=cfg.steps, lr=cfg.lr, batch=cfg.batch, kl_steps=cfg.kl_steps)
    start = time.perf_counter()
    with module_progress(names, cfg.quiet) as on_module:
        report = lock_model(model, lock, token_batches(calibration), distill, parallel, cfg.seed,
                            on_module=on_module)  # fmt: skip
    save_locked(model, cfg.out, lock)
    tokenizer.save_pretrained(cfg.out)  # the published folder is usable on its own
    batch = held_out[:2]
    errors = [report[n]["error"] for n in names]
    summary = {
        "modules": len(names),
        "parameters_original": sum(p.numel() for p in original.parameters()),
        "parameters_locked": sum(p.numel() for p in model.parameters()),
        "distill_error_mean": sum(errors) / len(errors),
        "distill_error_max": max(errors),
        "perplexity_ratio": perplexity(model, token_batches(held_out)) / perplexity(original, token_batches(held_out)),
        "saved_activation_ratio_model": step_cost(model, batch)["saved_bytes"] / step_cost(original, batch)["saved_bytes"],
        "saved_activation_ratio_mlp": module_saved_bytes(model.get_submodule(names[0]), batch.numel())
        / module_saved_bytes(original.get_submodule(names[0]), batch.numel()),
        "wall_s": time.perf_counter() - start,
    }  # fmt: skip
    return summary


class module_progress:
    """A rich progress display with one bar per module, each completed when its distillation
    finishes (the modules run in other processes: no finer progress reaches this one)."""

    def __init__(self, names: list[str], quiet: bool):
        self.names, self.quiet = names, quiet

    def __enter__(self):
        if self.quiet:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<24}"), BarColumn(bar_width=20),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"))  # fmt: skip
        self.bar.start()
        self.tasks = {n: self.bar.add_task(n, total=1, info="distilling") for n in self.names}

        def done(name: str, state: dict, values: dict) -> None:
            self.bar.update(self.tasks[name], completed=1,
                            info=f"relative error {values['error']:.3g}")  # fmt: skip

        return done

    def __exit__(self, *exc) -> None:
        if not self.quiet:
            self.bar.stop()


def main(argv: list[str]) -> int:
    from genlab.cli import one_line_errors

    cfg = one_line_errors(tyro.cli, PublishConfig, args=argv, prog="genlab lock",
                          description=__doc__)  # fmt: skip
    s = publish(cfg)
    print(f"locked {s['modules']} modules of {cfg.model} at rank {cfg.rank} -> {cfg.out}")
    print(f"  parameters       {s['parameters_original']:,} -> {s['parameters_locked']:,}")
    print(f"  distillation     relative error mean {s['distill_error_mean']:.3g}, worst "
          f"{s['distill_error_max']:.3g}")  # fmt: skip
    print(f"  perplexity       x{s['perplexity_ratio']:.3f} (held-out {cfg.corpus})")
    print(f"  activations      x{s['saved_activation_ratio_model']:.2f} saved per training step "
          f"(one MLP: x{s['saved_activation_ratio_mlp']:.2f})")  # fmt: skip
    print(f"  wall time        {s['wall_s']:.0f} s")
    return 0
