"""The attention report: one section per part and the paper's claims beside the run's numbers."""

from __future__ import annotations

import math

import numpy as np

from genlab.data.tokens import num_flips
from genlab.report import (
    Claim,
    claims_table,
    count,
    figure_md,
    pct,
    pyplot,
    save_figure,
    sig,
    table,
    write_report,
)
from genlab.runs import (
    MetricsLog,
    RunPaths,
    read_config,
    read_json,
    series,
)
from genlab.studies.attention.analysis import grid_numbers, token_kind
from genlab.studies.attention.config import TOKEN_NAMES, AttentionConfig
from genlab.studies.attention.grid import (
    REGIMES,
    reference_losses,
)
from genlab.studies.attention.real import (
    real_report_sections,
)
from genlab.studies.attention.run import delayed_numbers, load_grid

# --- report --------------------------------------------------------------------------------

TOKEN_COLORS = ("tab:red", "tab:green", "tab:blue")


def _plot_tokens(ax, steps, attn, title):
    T = attn.shape[1]
    for t in range(T):
        if t < 3:
            ax.plot(steps, attn[:, t], color=TOKEN_COLORS[t], lw=2, label=TOKEN_NAMES[t])
        else:
            ax.plot(
                steps, attn[:, t], color="0.6", lw=1, label="tokens 3.. (noise)" if t == 3 else None
            )
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")


def fig3_section(paths: RunPaths, records: list[dict]) -> str:
    plt = pyplot()
    meta = read_json(paths.artifact("fig3.json"))
    settings = meta["settings"]
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6.4), squeeze=False)
    for k, s in enumerate(settings):
        ser = series(records, f"fig3/{s['label']}")
        name = f"{s['label']} (d={s['d']}, ||mu||={sig(float(s['mu_norm']))})"
        _plot_tokens(axes[0, k], ser["step"], ser["clean_sample"], f"{name}\nclean sample")
        if "noisy_sample" in ser:
            _plot_tokens(axes[1, k], ser["step"], ser["noisy_sample"], "noisy (flipped) sample")
    axes[0, 0].set_ylabel("attention probability")
    axes[1, 0].set_ylabel("attention probability")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, paths.figure("fig3_attention"))

    rows, notes = [], []
    for s in settings:
        ok = s["regime"] == s["expected"]
        rows.append([
            s["label"], count(s["d"]), sig(s["mu_norm"]), sig(s["n_snr2"]), pct(s["train_acc"]),
            pct(s["noisy_train_acc"]), pct(s["test_acc"]), sig(s["test_loss"]), s["expected"],
            s["regime"], "yes" if ok else "**no**",
        ])  # fmt: skip
        st = s.get("noisy_sample")
        if st:
            rise = st["token0_peak"] > st["token0_start"] + 0.02
            first = (
                f"its attention on token 0 peaked at {sig(st['token0_peak'])} "
                f"(step {count(st['token0_peak_step'])})"
                if rise
                else f"its attention on token 0 never rose above the initial "
                f"{sig(st['token0_start'])}"
            )
            end = f"{token_kind(st['final_top_token'])} holds the most attention " + (
                f"({sig(st['final_top_attention'])})"
                if st["final_top_token"] == 0
                else f"({sig(st['final_top_attention'])}; token 0: {sig(st['token0_final'])})"
            )
            notes.append(f"- **{s['label']}**, noisy sample: {first}; at the end {end}.")
        if not ok:
            notes.append(
                f"- **{s['label']}** did not reproduce: expected {s['expected']}, measured "
                f"{s['regime']} after {count(meta['steps'])} steps."
            )
    tab = table(
        ["setting", "d", "||mu||", "n SNR^2", "train acc", "noisy train acc", "test acc",
         "test loss", "expected", "measured", "match"],
        rows,
    )  # fmt: skip
    return "\n\n".join(
        [
            f"{count(meta['steps'])} GD steps per setting; one clean and one noisy (flipped) "
            "training sample tracked. *noisy train acc* is the fraction of flipped samples "
            "classified as their flipped label. Measured regime: not overfitting if fewer than "
            "half the flipped labels are fit, else benign if the test loss is at most halfway "
            "from the clean-signal optimum to the uniform-attention loss, else harmful.",
            figure_md(
                paths,
                "fig3_attention",
                "Per-token softmax attention of one clean (top) "
                "and one noisy (bottom) training sample over GD steps.",
            ),  # fmt: skip
            tab,
            "\n".join(notes),
        ]
    )


def grid_section(paths: RunPaths) -> tuple[str, dict]:
    plt = pyplot()
    result, regimes, b = load_grid(paths)
    cfg = result.config
    mu, d = result.mu_values, result.d_values

    def edges(v):
        v = np.asarray(v, dtype=float)
        if v.size == 1:
            return np.array([v[0] - 0.5, v[0] + 0.5])
        mid = (v[1:] + v[:-1]) / 2
        return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])

    de, me = edges(d), edges(mu)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("train_loss", "test_loss")):
        im = ax.pcolormesh(de, me, result.metrics[key], shading="flat", cmap="viridis")
        fig.colorbar(im, ax=ax)
        ax.set_title(f"final {key.replace('_', ' ')}")
        ax.set_xlabel("d")
        ax.set_ylabel("||mu||")
    fig.tight_layout()
    save_figure(fig, paths.figure("grid_losses"))

    from matplotlib.colors import ListedColormap

    fig, ax = plt.subplots(figsize=(6, 4.6))
    cmap = ListedColormap(["tab:gray", "tab:green", "tab:red"])
    ax.pcolormesh(de, me, regimes, shading="flat", cmap=cmap, vmin=-0.5, vmax=2.5)
    C = float(b["C"]) if b["C"] is not None else float("nan")
    if math.isfinite(C):
        dd = np.linspace(max(de[0], 1.0), de[-1], 200)
        curve = cfg["sigma"] * np.sqrt(C * dd / cfg["n"])
        inside = (curve >= me[0]) & (curve <= me[-1])
        ax.plot(dd[inside], curve[inside], "k--", lw=2, label=f"n SNR^2 = {sig(C)}")
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=r) for c, r in zip(cmap.colors, REGIMES)]
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.set_xlabel("d")
    ax.set_ylabel("||mu||")
    ax.set_title(f"regimes after {cfg['steps']} steps")
    ax.set_xlim(de[0], de[-1])
    ax.set_ylim(me[0], me[-1])
    save_figure(fig, paths.figure("grid_regimes"))

    nums = grid_numbers({"regimes": regimes.tolist(), "boundary": b})
    identified = nums["benign"] > 0 and nums["not_overfitting"] > 0
    harmful = regimes == 2
    harm_txt = "no harmful cells"
    if harmful.any():
        hm = mu[np.nonzero(harmful.any(1))[0]]
        span = sig(hm.min()) if hm.min() == hm.max() else f"{sig(hm.min())} to {sig(hm.max())}"
        harm_txt = f"harmful cells at ||mu|| = {span}"
    body = "\n\n".join(
        [
            f"{len(mu)} x {len(d)} cells (||mu|| {sig(mu.min())}..{sig(mu.max())}, d "
            f"{int(d.min())}..{int(d.max())}), {count(cfg['steps'])} GD steps each, n = "
            f"{cfg['n']}, eta = {cfg['eta']}, seed {cfg['seed']}; executor `{cfg['executor']}`, "
            f"{sig(result.wall_s)} s. A cell *overfits* when at least half its flipped "
            "labels are fit; an overfitting cell is *benign* when its test loss is at most "
            "halfway from the clean-signal optimum to the uniform-attention loss, else "
            "*harmful*.",
            figure_md(paths, "grid_losses", "Final training and test loss over (d, ||mu||)."),
            figure_md(paths, "grid_regimes", "Measured regimes with the fitted boundary."),
            table(
                ["measure", "value"],
                [
                    ["not overfitting cells", nums["not_overfitting"]],
                    ["benign cells", nums["benign"]],
                    ["harmful cells", nums["harmful"]],
                    ["fitted C in n SNR^2 = C", sig(C)],
                    [
                        "misclassified benign/not-overfitting cells",
                        f"{b['errors']} of {b['n_cells']} ({pct(nums['misclassified'])})",
                    ],
                ],
            ),  # fmt: skip
            (
                f"Benign cells lie below n SNR^2 = C and not-overfitting cells above it; the fit "
                f"misclassifies {pct(nums['misclassified'])} of them ({harm_txt}). "
                if identified
                else "**C is not identified**: the grid needs both benign and not-overfitting "
                f"cells ({harm_txt}). "
            )
            + f"**The boundary moves with the step budget**: with more GD steps more cells "
            f"fit their flipped labels, so C grows; this C holds for {count(cfg['steps'])} steps "
            "only.",
        ]
    )
    return body, nums


def delayed_section(paths: RunPaths, records: list[dict], cfg: AttentionConfig) -> tuple[str, dict]:
    plt = pyplot()
    meta = read_json(paths.artifact("delayed.json"))
    res = delayed_numbers(paths, cfg.delayed)
    settings = meta["settings"]
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6), squeeze=False)
    for k, s in enumerate(settings):
        ser = series(records, f"delayed/{s['label']}")
        st = np.maximum(ser["step"], 1)
        r = res[s["label"]]
        axes[0, k].plot(st, ser["test_loss"], label="test loss")
        axes[0, k].plot(st, ser["train_loss"], "--", label="train loss")
        axes[1, k].plot(st, ser["attn_test"][:, 0], label="test attention on token 0")
        axes[1, k].plot(st, ser["train_acc"], ":", label="train acc (observed labels)")
        for ax in axes[:, k]:
            ax.set_xscale("log")
            ax.set_xlabel("step")
            if r["fit_step"] is not None:
                ax.axvline(max(r["fit_step"], 1), color="k", ls="--", lw=1, label="train set fit")
            ax.axvline(max(r["min_step"], 1), color="tab:red", ls=":", lw=1,
                       label="min test loss")  # fmt: skip
        axes[0, k].set_title(f"{s['label']} (n SNR^2 = {sig(s['n_snr2'])})", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, paths.figure("delayed"))
    rows = []
    for s in settings:
        r = res[s["label"]]
        rows.append([
            s["label"], count(s["d"]), sig(s["mu_norm"]), count(r["fit_step"]),
            sig(r["test_loss_at_fit"]), count(r["min_step"]), sig(r["min_test_loss"]),
            pct(r["improvement_after_fit"]), sig(r["overfitting_bump"]), s["regime"],
            "yes" if r["delayed"] else "no",
        ])  # fmt: skip
    body = "\n\n".join(
        [
            f"{count(meta['steps'])} GD steps per setting, logged on a log-spaced schedule. "
            "*Fit step*: first logged step where every training label (flipped ones included) is "
            "fit. *Delayed generalization*: test loss falls by at least "
            f"{pct(cfg.delayed.min_improvement)} after the fit. *Overfitting "
            "bump*: the largest rise of test loss above its running minimum before its overall "
            "minimum.",
            figure_md(paths, "delayed", "Test loss (top) and mean test attention on the "
                      "relevant token (bottom); dashed: train set fit, dotted: min test loss."),
            table(
                ["setting", "d", "||mu||", "fit step", "test loss at fit", "min step",
                 "min test loss", "improvement after fit", "overfitting bump", "final regime",
                 "delayed"],
                rows,
            ),
        ]
    )  # fmt: skip
    return body, res


def transformer_section(paths: RunPaths, records: list[dict]) -> str:
    plt = pyplot()
    s = read_json(paths.artifact("transformer.json"))
    ser = series(records, "transformer")
    has_noisy = "noisy_sample" in ser
    fig, axes = plt.subplots(1, 3 if has_noisy else 2, figsize=(13, 3.6))
    _plot_tokens(axes[0], ser["step"], ser["clean_sample"], "CLS attention, clean sample")
    if has_noisy:
        _plot_tokens(axes[1], ser["step"], ser["noisy_sample"], "CLS attention, noisy sample")
    ax = axes[-1]
    ax.plot(ser["step"], ser["train_acc"], label="train acc")
    ax.plot(ser["step"], ser["noisy_train_acc"], label="noisy train acc (memorised)")
    ax.plot(ser["step"], ser["test_acc"], label="test acc")
    ax.set_xlabel("step")
    ax.set_title("accuracy", fontsize=9)
    ax.legend(fontsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, paths.figure("transformer"))
    return "\n\n".join(
        [
            f"One pre-LN Transformer encoder layer (learnable CLS token and linear head, all "
            f"parameters trained by full-batch SGD) on d = {s['d']}, ||mu|| = "
            f"{sig(float(s['mu_norm']))} (n SNR^2 = {sig(s['n_snr2'])}), "
            f"{count(s['steps'])} steps. "
            "Attention is the CLS query's attention on the data tokens (the CLS-to-CLS mass is "
            "left out, so rows sum to less than 1). No regime label: the rule's reference losses "
            "assume the single-head model's fixed head.",
            figure_md(paths, "transformer", "Transformer variant: CLS attention and accuracy."),
            table(
                ["train acc", "noisy train acc", "test acc", "test loss", "regime"],
                [
                    [
                        pct(s["train_acc"]),
                        pct(s["noisy_train_acc"]),
                        pct(s["test_acc"]),
                        sig(s["test_loss"]),
                        s["regime"],
                    ]
                ],
            ),  # fmt: skip
        ]
    )


def attention_claims(fig3: dict | None, grid: dict | None, delayed: dict | None) -> list[Claim]:
    """The paper's claims beside this run, from the parts' numbers: ``fig3.json``, the grid's
    counts (:func:`grid_numbers`) and the delayed part's analysis (:func:`delayed_numbers`);
    None for a part that was not run."""
    claims = []
    if fig3 is not None:
        benign = [s for s in fig3["settings"] if s["regime"] == "benign"]
        miss = [s["label"] for s in fig3["settings"] if s["regime"] != s["expected"]]
        measured = (
            "benign in "
            + ", ".join(f"{s['label']} (test acc {pct(s['test_acc'])})" for s in benign)
            if benign
            else "no fig3 setting was measured benign"
        ) + (
            f"; settings off their expected regime: {', '.join(miss)}"
            if miss
            else "; every fig3 setting landed in its expected regime"
        )
        claims.append(
            Claim(
                "A benign-overfitting regime exists (flipped labels fit, test near the clean "
                "optimum)",
                "benign, harmful and not-overfitting settings (Fig. 3)",
                measured,
                "held" if benign else "not held",
            )
        )
    if grid is not None:
        claim = "Regimes are governed by n SNR^2 (a boundary n SNR^2 = C)"
        paper = "phase diagram over (d, ||mu||) (Fig. 5)"
        if grid["benign"] == 0 or grid["not_overfitting"] == 0:
            claims.append(
                Claim(
                    claim,
                    paper,
                    "the grid lacks benign or not-overfitting cells",
                    "not tested at this scale",
                )
            )
        else:
            good = grid["misclassified"] < 0.1
            claims.append(
                Claim(
                    claim,
                    paper,
                    f"the best single threshold n SNR^2 = {sig(grid['C'])} misclassifies "
                    f"{pct(grid['misclassified'])} of the benign and not-overfitting cells "
                    f"({'roughly holds' if good else 'holds only loosely'} at this step budget; "
                    f"harmful cells: {grid['harmful']})",
                    "held" if good else "not held",
                )
            )
    if delayed is not None:
        yes = [k for k, r in delayed.items() if r["delayed"]]
        no = [k for k, r in delayed.items() if not r["delayed"]]
        claims.append(
            Claim(
                "Delayed generalization (test loss keeps improving after the training set, "
                "flipped labels included, is fit)",
                "generalization can arrive after an initial overfitting phase",
                (f"seen in {', '.join(yes)}" if yes else "not seen")
                + (f"; not in {', '.join(no)}" if no else ""),
                "held" if yes else "not held",
            )
        )
    return claims


def _part_numbers(
    paths: RunPaths, cfg: AttentionConfig
) -> tuple[dict | None, dict | None, dict | None]:
    """(fig3, grid counts, delayed analysis) of the parts this run finished (None: not run)."""
    parts = cfg.parts
    fig3 = grid = delayed = None
    if "fig3" in parts and paths.artifact("fig3.json").exists():
        fig3 = read_json(paths.artifact("fig3.json"))
    if "grid" in parts and paths.artifact("grid.json").exists():
        grid = grid_numbers(read_json(paths.artifact("grid.json")))
    if "delayed" in parts and paths.artifact("delayed.json").exists():
        delayed = delayed_numbers(paths, cfg.delayed)
    return fig3, grid, delayed


def claims(paths: RunPaths) -> list[Claim]:
    """The run's claims table, from its folder alone."""
    return attention_claims(*_part_numbers(paths, read_config(paths, AttentionConfig)))


def claims_md(fig3: dict | None, grid: dict | None, delayed: dict | None) -> str:
    """The report's claims section: the claims table of the synthetic parts."""
    claims = attention_claims(fig3, grid, delayed)
    return claims_table(claims) if claims else "No synthetic part was run."


def report(paths: RunPaths) -> None:
    cfg = read_config(paths, AttentionConfig)
    records = MetricsLog(paths.metrics).read()
    parts = cfg.parts
    task = cfg.task
    sections = [
        (
            "What was run",
            f"Parts: {', '.join(parts)}. Synthetic task: n = {task.n} training samples "
            f"(ceil(n eta) = {num_flips(task.n, task.eta)} labels flipped, eta = "
            f"{task.eta}), T = {task.T} tokens, rho = {task.rho}, sigma = "
            f"{task.sigma}, {task.n_test} clean test samples; model "
            "f(X) = nu^T X^T softmax(X W p) with fixed head nu, W and p trained by full-batch "
            f"GD (lr {cfg.optim.lr}, W init {task.w_init}, seed {task.seed}). "
            "SNR = ||mu|| / (sigma sqrt(d)).",
        )
    ]
    fig3 = grid = delayed = None
    if "fig3" in parts and paths.artifact("fig3.json").exists():
        sections.append(("Attention dynamics (paper Fig. 3)", fig3_section(paths, records)))
        fig3 = read_json(paths.artifact("fig3.json"))
    if "grid" in parts and paths.artifact("grid.json").exists():
        body, grid = grid_section(paths)
        sections.append(("Phase diagram (paper Fig. 5)", body))
    if "delayed" in parts and paths.artifact("delayed.json").exists():
        body, delayed = delayed_section(paths, records, cfg)
        sections.append(("Delayed generalization", body))
    if "transformer" in parts and paths.artifact("transformer.json").exists():
        sections.append(("Transformer variant", transformer_section(paths, records)))
    if "real" in parts:
        sections.extend(real_report_sections(paths))
    sections.append(("Paper's claims vs this run", claims_md(fig3, grid, delayed)))
    sections.append(
        (
            "Reference",
            "Sakamoto & Sato, *Benign Overfitting in Token Selection of Attention Mechanism*, "
            "ICML 2025, arXiv 2409.17625. Reference losses for the regime rule: "
            f"L_opt = {sig(float(reference_losses(20.0, task.T, task.sigma)[0]))}, "
            f"L_unif = {sig(float(reference_losses(20.0, task.T, task.sigma)[1]))} "
            "at ||mu|| = 20.",
        )
    )
    write_report(paths, "attention: benign overfitting in token selection", sections)
