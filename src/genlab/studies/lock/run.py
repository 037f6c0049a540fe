"""The lock study's run: lock a language model, measure what the lock costs the defender and
what it costs an attacker who knows it.

Stages, in order (each resumes on its own):

1. ``pretrain`` (model=gpt): the small GPT on the corpus's training split;
2. ``lock-TAG-MODULE``: each targeted MLP's DLR-Net distilled (``genlab.lock.lock_model``),
   TAG = ``r{rank}`` (random init) or ``split-r{rank}``; weights under ``locked/TAG/``;
   ``lock-TAG-end-to-end``: the optional KL pass (``distill.kl_steps``);
3. ``depth``: saved activations of one DLR-Net against its depth, at ``lock.rank``;
4. ``tradeoff``: per rank, the saved activations of a full fine-tuning step, parameters, and
   held-out perplexity where distilled;
5. ``capability`` and ``cost``: original vs locked at ``lock.rank``;
6. ``attack-ATTACK-MODEL[-lrLR]``: fine-tuning runs and the dense-recovery attacks.

``metrics.jsonl`` holds what is reproducible bit for bit; wall times and allocator peaks go to
``machine/STAGE.json`` (they depend on the machine and its load).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from genlab.data.corpus import byte_tokens, corpus_splits, token_batches, token_blocks
from genlab.lock.attacks import (
    EXACT_ATTACKS,
    DenseMLP,
    concatenated_model,
    eval_loss,
    finetune,
    lm_loss,
    prepare_attack,
    redistill,
    step_cost,
)
from genlab.lock.distill import capture_mlp_io, distill_end_to_end, relative_error
from genlab.lock.dlr import DLRNet
from genlab.lock.inject import find_targets, inject, locked_modules
from genlab.lock.io import save_locked
from genlab.lock.lock import lock_model
from genlab.measures.capability import next_token_agreement, perplexity
from genlab.measures.memory import (
    forward_backward_flops,
    module_saved_bytes,
    return_freed_memory,
)
from genlab.models.gpt import GPT
from genlab.runs import (
    MetricsLog,
    Run,
    RunPaths,
    atomic_write_json,
    atomic_write_safetensors,
    read_json,
)
from genlab.studies.lock.config import LockStudyConfig
from genlab.train import Callback, EndlessSampler, SupervisedStepper, TrainLoop, train_stage

MODELS = ("original", "locked")


def machine_file(paths: RunPaths, stage: str) -> Path:
    """``machine/STAGE.json``: a stage's machine-dependent measurements."""
    return paths.artifact(f"machine/{stage}.json")


def read_machine(paths: RunPaths, stage: str) -> dict:
    path = machine_file(paths, stage)
    return read_json(path) if path.exists() else {}


def lock_tag(rank: int, init: str) -> str:
    return f"r{rank}" if init == "random" else f"{init}-r{rank}"


# --- the base model and its text ---------------------------------------------------------------


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class HeldOutLoss:
    def __init__(self, run: Run, blocks: torch.Tensor):
        self.run, self.blocks = run, blocks

    def __call__(self, loop: TrainLoop) -> None:
        loss = eval_loss(loop.model, self.blocks)
        self.run.log(loop.step, "pretrain", eval_loss=loss)
        loop.last_metrics = {"eval_loss": loss}


def pretrained_gpt(run: Run, cfg: LockStudyConfig, train: list[str], held: list[str]) -> GPT:
    """genlab's GPT trained ``pretrain_steps`` AdamW steps on byte blocks of ``train``."""
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.gpt)
    blocks = token_blocks(
        train, byte_tokens, cfg.seq_len + 1, cfg.pretrain_steps * cfg.pretrain_batch
    )
    sampler = EndlessSampler(blocks[:, :-1], blocks[:, 1:], cfg.pretrain_batch, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    evals = token_blocks(held, byte_tokens, cfg.seq_len, cfg.eval_blocks)
    every = max(1, cfg.pretrain_steps // 5)
    loop = TrainLoop(SupervisedStepper(model, opt, sampler, next_token_loss), cfg.pretrain_steps,
                     [Callback(HeldOutLoss(run, evals), [cfg.pretrain_steps], every)])  # fmt: skip
    train_stage(run, "pretrain", loop, checkpoint_every=max(100, every), label="pretrain")
    return model.eval()


def base_model(run: Run, cfg: LockStudyConfig) -> tuple[nn.Module, Callable[[str], list[int]]]:
    """(the model to lock, its tokenizer as text -> ids)."""
    if cfg.model == "smollm2":
        from genlab.models.smollm2 import load_smollm2

        model, tokenizer = load_smollm2()
        return model, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    return pretrained_gpt(run, cfg, *corpus_splits(cfg.corpus)), byte_tokens


@dataclasses.dataclass
class Texts:
    calibration: torch.Tensor
    """(N, T) blocks of the corpus's training split."""
    held_out: torch.Tensor
    finetune_train: torch.Tensor
    finetune_eval: torch.Tensor


def texts(cfg: LockStudyConfig, encode: Callable[[str], list[int]]) -> Texts:
    train, held = corpus_splits(cfg.corpus)
    ft_train, ft_held = corpus_splits(cfg.finetune_corpus)
    pool = max(cfg.redistill_blocks, 4 * cfg.finetune.batch * cfg.finetune.eval_every)
    return Texts(
        token_blocks(train, encode, cfg.seq_len, cfg.calibration_blocks),
        token_blocks(held, encode, cfg.seq_len, cfg.eval_blocks),
        token_blocks(ft_train, encode, cfg.seq_len, pool),
        token_blocks(ft_held, encode, cfg.seq_len, cfg.eval_blocks),
    )


# --- locking -------------------------------------------------------------------------------


def dlr_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The DLR-Nets' tensors (all the end-to-end pass trains), by their names in ``model``.
    Not the whole state dict: a tied head and embedding share memory, which safetensors
    refuses to write."""
    return {f"{name}.{k}": v for name, m in locked_modules(model).items()
            for k, v in m.state_dict().items()}  # fmt: skip


def load_dlr_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`dlr_state`; every tensor must land in a DLR-Net of ``model``."""
    expected = dlr_state(model).keys()
    if set(state) != set(expected):
        raise ValueError(
            f"DLR state does not match the model: {sorted(set(state) ^ set(expected))[:3]}"
        )
    model.load_state_dict(state, strict=False)


def locked_copy(run: Run, cfg: LockStudyConfig, base: nn.Module, calibration: torch.Tensor,
                rank: int, init: str) -> nn.Module:  # fmt: skip
    """A copy of ``base`` locked at ``rank`` with ``init``, each module a stage whose weights
    are kept under ``locked/TAG/`` (a finished module is loaded, not distilled again)."""
    tag = lock_tag(rank, init)
    lc = dataclasses.replace(cfg.lock, rank=rank, init=init)
    model = copy.deepcopy(base)
    names = find_targets(model, lc)
    folder = run.paths.artifact(f"locked/{tag}")
    stage = {n: f"lock-{tag}-{n}" for n in names}
    done = {}
    for n in names:
        if run.stage_done(stage[n]):
            done[n] = (load_file(str(folder / f"{n}.safetensors")), read_json(folder / f"{n}.json"))

    def store(name: str, state: dict, values: dict) -> None:
        with run.stage(stage[name]):
            atomic_write_safetensors(folder / f"{name}.safetensors", state)
            atomic_write_json(folder / f"{name}.json", values)
            atomic_write_json(
                machine_file(run.paths, stage[name]), {"distill_s": values["distill_s"]}
            )
            run.log(names.index(name), "distill", tag=tag, rank=rank, init=init, module=name,
                    error=values["error"], first_error=values["first_error"])  # fmt: skip

    dc = dataclasses.replace(cfg.distill, kl_steps=0)
    lock_model(model, lc, token_batches(calibration), dc, cfg.parallel, cfg.seed, done=done,
               on_module=store)  # fmt: skip
    if cfg.distill.kl_steps > 0:
        end = f"lock-{tag}-end-to-end"
        path = folder / "end_to_end.safetensors"
        if run.stage_done(end):
            load_dlr_state(model, load_file(str(path)))
        else:
            with run.stage(end):
                kl = distill_end_to_end(model, base, token_batches(calibration), cfg.distill.kl_steps,
                                        cfg.distill.kl_lr, cfg.seed)  # fmt: skip
                atomic_write_safetensors(path, dlr_state(model))
                run.log(cfg.distill.kl_steps, "end_to_end", tag=tag, kl_first=kl[0], kl_last=kl[-1])
    return model.eval()


# --- measurements ------------------------------------------------------------------------------


def forward_latency(models: dict[str, nn.Module], blocks: torch.Tensor, repeats: int) -> dict:
    """Median seconds of a no-grad forward pass on ``blocks`` per model, the models timed in
    turn within each repeat (so a change in machine load hits them alike)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()(input_ids=blocks)  # warm-up
        for _ in range(repeats):
            for k, m in models.items():
                start = time.perf_counter()
                m(input_ids=blocks)
                times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def fine_tune_batch(cfg: LockStudyConfig, t: Texts) -> torch.Tensor:
    return t.finetune_train[: cfg.finetune.batch]


def measure_depth(run: Run, cfg: LockStudyConfig, base: nn.Module, t: Texts) -> None:
    """Saved activations of one DLR-Net of rank ``lock.rank`` at depths 1, 2, 4, ... up to the
    matched depth, on as many tokens as a fine-tuning batch: trained (full fine-tuning), and
    frozen (behind LoRA) with the configured norm and with RMSNorm; the MLP's for reference."""
    if run.stage_done("depth"):
        return
    with run.stage("depth"):
        name = find_targets(base, cfg.lock)[0]
        info = next(iter(inject(copy.deepcopy(base), cfg.lock, cfg.seed).values()))
        tokens = fine_tune_batch(cfg, t).numel()
        mlp = base.get_submodule(name)
        reference = {"mlp_saved_bytes": module_saved_bytes(mlp, tokens, cfg.seed),
                     "mlp_frozen_bytes": module_saved_bytes(mlp, tokens, cfg.seed, frozen=True)}  # fmt: skip
        depths = sorted({*(2**k for k in range(12) if 2**k < info["depth"]), info["depth"]})
        for depth in depths:
            net = DLRNet(info["d"], info["rank"], depth, info["block"], cfg.lock.norm)
            rms = DLRNet(info["d"], info["rank"], depth, info["block"], "rms")
            run.log(depth, "depth", rank=info["rank"], d=info["d"], tokens=tokens,
                    saved_bytes=module_saved_bytes(net, tokens, cfg.seed),
                    frozen_bytes=module_saved_bytes(net, tokens, cfg.seed, frozen=True),
                    frozen_rms_bytes=module_saved_bytes(rms, tokens, cfg.seed, frozen=True),
                    **reference)  # fmt: skip


def measure_tradeoff(run: Run, cfg: LockStudyConfig, base: nn.Module, locked: dict[int, nn.Module],
                     t: Texts) -> None:  # fmt: skip
    """Per rank (and the original): parameters, saved activations and peak memory of a full
    fine-tuning step, forward latency, held-out perplexity where distilled."""
    if run.stage_done("tradeoff"):
        return
    batch = fine_tune_batch(cfg, t)
    machine: dict[str, dict] = {}
    with run.stage("tradeoff"):
        models: dict[str, nn.Module] = {"original": base}
        for r in cfg.ranks:
            lc = dataclasses.replace(cfg.lock, rank=r)
            models[f"r{r}"] = locked.get(r) or _injected(base, lc, cfg.seed)
        latency = forward_latency(models, t.held_out[: cfg.finetune.batch], cfg.latency_repeats)
        first = find_targets(base, cfg.lock)[0]
        for key, model in models.items():
            cost = step_cost(model, batch)
            rank = 0 if key == "original" else int(key[1:])
            depth = 0 if key == "original" else next(iter(locked_modules(model).values())).dlr.depth
            distilled = key == "original" or rank in locked
            ppl = perplexity(model, token_batches(t.held_out)) if distilled else None
            run.log(rank, "tradeoff", model=key, depth=depth, parameters=_count(model),
                    saved_bytes=cost["saved_bytes"], perplexity=ppl,
                    module_saved_bytes=module_saved_bytes(model.get_submodule(first), batch.numel(),
                                                          cfg.seed))  # fmt: skip
            machine[key] = {"peak_bytes": cost["peak_bytes"], "forward_s": latency[key]}
        atomic_write_json(machine_file(run.paths, "tradeoff"), machine)


def _injected(base: nn.Module, lc, seed: int) -> nn.Module:
    model = copy.deepcopy(base)
    inject(model, lc, seed)
    return model.eval()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_capability(run: Run, cfg: LockStudyConfig, base: nn.Module, models: dict[str, nn.Module],
                       t: Texts) -> None:  # fmt: skip
    """Held-out perplexity of the original and of each locked model, top-1 agreement and mean
    KL(original || locked) of their next-token distributions."""
    if run.stage_done("capability"):
        return
    with run.stage("capability"):
        held = token_batches(t.held_out)
        run.log(0, "capability", model="original", perplexity=perplexity(base, held))
        for key, model in models.items():
            agree = next_token_agreement(base, model, held)
            run.log(0, "capability", model=key, perplexity=perplexity(model, held), **agree)


def measure_cost(
    run: Run, cfg: LockStudyConfig, base: nn.Module, locked: nn.Module, t: Texts
) -> None:
    """Forward and backward FLOPs (flop counter) and times of a full fine-tuning step."""
    if run.stage_done("cost"):
        return
    batch = fine_tune_batch(cfg, t)
    machine = {}
    with run.stage("cost"):
        for key, model in (("original", base), ("locked", locked)):
            m = copy.deepcopy(model).train()
            fwd, bwd = forward_backward_flops(lambda m=m: lm_loss(m, batch))
            times = {"forward_s": [], "backward_s": []}
            for _ in range(cfg.latency_repeats):
                start = time.perf_counter()
                loss = lm_loss(m, batch)
                mid = time.perf_counter()
                loss.backward()
                times["forward_s"].append(mid - start)
                times["backward_s"].append(time.perf_counter() - mid)
                m.zero_grad(set_to_none=True)
            run.log(0, "cost", model=key, forward_flops=fwd, backward_flops=bwd)
            machine[key] = {k: statistics.median(v) for k, v in times.items()}
        atomic_write_json(machine_file(run.paths, "cost"), machine)


# --- attacks -----------------------------------------------------------------------------------


def attack_stage(attack: str, model: str, lr: float | None = None) -> str:
    return f"attack-{attack}-{model}" + (f"-lr{lr:g}" if lr is not None else "")


def run_finetune(run: Run, cfg: LockStudyConfig, t: Texts, stage: str, model: nn.Module, attack: str,
                 key: str, lr: float, steps: int, extra: dict | None = None) -> None:  # fmt: skip
    """Fine-tune ``model`` prepared for ``attack`` at ``lr`` as ``stage``: its held-out losses
    (split ``finetune``) and one ``attack`` record; times and peak memory to the machine file.
    ``redistill`` and ``concatenate`` fine-tune their dense model fully."""
    if run.stage_done(stage):
        return
    with run.stage(stage):
        torch.manual_seed(cfg.seed)  # LoRA's initialization
        ready, context = prepare_attack(model, attack, cfg.lora_rank, cfg.checkpoint_every)
        ctx = {"attack": attack, "model": key, "lr": lr}
        cost = step_cost(ready, fine_tune_batch(cfg, t), context)
        fc = dataclasses.replace(cfg.finetune, lr=lr, steps=steps, seed=cfg.seed)
        out = finetune(ready, t.finetune_train, t.finetune_eval, fc, context,
                       on_eval=lambda step, loss: run.log(step, "finetune", **ctx, eval_loss=loss))  # fmt: skip
        run.log(steps, "attack", **ctx, **(extra or {}), final_loss=out["eval_loss"][-1],
                start_loss=out["eval_loss"][0], saved_bytes=cost["saved_bytes"],
                trainable=cost["trainable"], steps=steps)  # fmt: skip
        timed = out["step_s"][1:] or out["step_s"]  # the first step pays one-off allocations
        atomic_write_json(machine_file(run.paths, stage), {
            "step_s": statistics.median(timed), "peak_bytes": cost["peak_bytes"]})  # fmt: skip
    del ready, out
    return_freed_memory()


def mean_module_error(base: nn.Module, dense: nn.Module, calibration: torch.Tensor) -> float:
    """Mean over the replaced modules of the relative error of ``dense``'s module against the
    original MLP, on the original's inputs to it over the calibration text."""
    names = [n for n, m in dense.named_modules() if isinstance(m, DenseMLP)]
    io = capture_mlp_io(base, names, token_batches(calibration))
    return sum(relative_error(dense.get_submodule(n), *io[n]) for n in names) / len(names)


def best_lr(run: Run, key: str) -> float:
    """The rate of ``lr_grid`` whose full fine-tuning of ``key`` ended lowest."""
    rows = [r for r in MetricsLog(run.paths.metrics).read()
            if r["split"] == "attack" and r["attack"] == "full" and r["model"] == key]  # fmt: skip
    finite = [r for r in rows if r["final_loss"] == r["final_loss"]]
    return min(finite or rows, key=lambda r: r["final_loss"])["lr"]


def run_attacks(run: Run, cfg: LockStudyConfig, base: nn.Module, locked: nn.Module,
                split: nn.Module | None, t: Texts) -> None:  # fmt: skip
    models = {"original": base, "locked": locked}
    steps = cfg.finetune.steps
    for key, model in models.items():
        for lr in cfg.lr_grid:
            run_finetune(run, cfg, t, attack_stage("full", key, lr), model, "full", key, lr, steps)
    lr = {key: best_lr(run, key) for key in models}
    for attack in cfg.attacks:
        if attack in ("lora-attn", "lora-all"):
            for key, model in models.items():
                run_finetune(run, cfg, t, attack_stage(attack, key), model, attack, key,
                             cfg.lora_lr, steps)  # fmt: skip
        elif attack in EXACT_ATTACKS:
            for key, model in models.items():
                if attack == "checkpoint-dlr" and key == "original":
                    continue  # nothing to checkpoint inside
                run_finetune(run, cfg, t, attack_stage(attack, key), model, attack, key,
                             lr[key], cfg.cost_steps)  # fmt: skip
        elif attack == "redistill":
            stage = attack_stage(attack, "locked")
            if not run.stage_done(stage):
                dense, rep = redistill(locked, token_batches(t.finetune_train[: cfg.redistill_blocks]),
                                       cfg.redistill_steps, lr=cfg.distill.lr,
                                       batch=cfg.distill.batch, seed=cfg.seed)  # fmt: skip
                held = token_batches(t.held_out)
                extra = {"tokens": rep.tokens, "redistill_steps": rep.steps,
                         "module_error": sum(rep.errors.values()) / len(rep.errors),
                         "perplexity": perplexity(dense, held),
                         **next_token_agreement(base, dense, held)}  # fmt: skip
                run_finetune(run, cfg, t, stage, dense, "redistill", "locked", lr["original"],
                             steps, extra)  # fmt: skip
                atomic_write_json(
                    machine_file(run.paths, stage + "-distill"), {"wall_s": rep.wall_s}
                )
        elif attack == "concatenate":
            held = token_batches(t.held_out)
            for key, model in (("locked", locked), ("split", split)):
                stage = attack_stage(attack, key)
                if model is None or run.stage_done(stage):
                    continue
                dense = concatenated_model(model)
                extra = {"perplexity": perplexity(dense, held),
                         "module_error": mean_module_error(base, dense, t.calibration),
                         **next_token_agreement(base, dense, held)}  # fmt: skip
                run_finetune(run, cfg, t, stage, dense, "concatenate", key, lr["original"], steps,
                             extra)  # fmt: skip


# --- the run -----------------------------------------------------------------------------------


def run(cfg: LockStudyConfig, run: Run) -> dict:
    base, encode = base_model(run, cfg)
    base.eval()
    t = texts(cfg, encode)
    ranks = cfg.ranks if cfg.distill_sweep else (cfg.lock.rank,)
    locked = {r: locked_copy(run, cfg, base, t.calibration, r, "random") for r in ranks}
    main = locked[cfg.lock.rank]
    split = (
        locked_copy(run, cfg, base, t.calibration, cfg.lock.rank, "split")
        if cfg.split_control
        else None
    )
    save_locked(main, run.paths.artifact("locked-model"), cfg.lock)
    measure_depth(run, cfg, base, t)
    measure_tradeoff(run, cfg, base, locked, t)
    measure_capability(
        run, cfg, base, {"locked": main, **({"split": split} if split is not None else {})}, t
    )
    measure_cost(run, cfg, base, main, t)
    run_attacks(run, cfg, base, main, split, t)
    from genlab.studies.lock.analysis import analyze, key_numbers

    return key_numbers(analyze(MetricsLog(run.paths.metrics).read(), run.paths, cfg))
