"""The grokking report: figures, onset tables and the paper's claims beside the run's numbers."""

from __future__ import annotations

import math

import numpy as np

from genlab.report import figure_md, fmt, pyplot, save_figure, table, write_report
from genlab.runs import (
    MetricsLog,
    RunPaths,
    read_json,
)
from genlab.studies.grokking.analysis import FIT_ACCURACY, analyze, member_series

# --- report --------------------------------------------------------------------------------


def _band(
    ax, plt, series: dict, members: list[str], split: str, key: str, color, style="-", label=None
):
    arrays = [series[m][split][key] for m in members if key in series[m][split]]
    if not arrays:
        return
    n = min(len(a) for a in arrays)
    steps = series[members[0]][split]["step"][:n]
    stack = np.stack([a[:n] for a in arrays])
    mask = np.isfinite(stack).all(0)
    if not mask.any():
        return
    x = steps[mask] + 1  # log axis: step + 1
    ax.plot(x, np.nanmean(stack[:, mask], 0), style, color=color, label=label)
    if len(arrays) > 1:
        ax.fill_between(x, stack[:, mask].min(0), stack[:, mask].max(0), color=color, alpha=0.2)


def report(paths: RunPaths) -> None:
    plt = pyplot()
    cfg = read_json(paths.config)
    records = MetricsLog(paths.metrics).read()
    series = member_series(records)
    analysis = analyze(records)
    groups: dict[str, list[str]] = {}
    for label, sp in series.items():
        a, w = sp["test"]["alpha"][0], sp["test"]["weight_decay"][0]
        groups.setdefault(f"alpha={fmt(a)} lambda={fmt(w)}", []).append(label)
    colors = dict(zip(groups, plt.cm.viridis(np.linspace(0, 0.9, max(1, len(groups))))))

    # Figure 1: accuracy, RNC1, NC2 per lambda.
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for g, ms in groups.items():
        _band(axes[0], plt, series, ms, "test", "acc", colors[g], "-", g)
        _band(axes[0], plt, series, ms, "train", "acc", colors[g], "--")
        _band(axes[1], plt, series, ms, "test", "rnc1", colors[g], "-", g)
        _band(axes[2], plt, series, ms, "test", "nc2_cond", colors[g], "-", g)
    for ax, title in zip(
        axes, ("accuracy (test solid, train dashed)", "test RNC1", "test NC2 (condition number)")
    ):
        ax.set_xscale("log")
        ax.set_xlabel("step + 1")
        ax.set_title(title)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    save_figure(fig, paths.figure("accuracy_nc"))

    # Figure 2: information plane quantities vs RNC1.
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for g, ms in groups.items():
        for m in ms:
            t = series[m]["test"]
            if "mi_zx" in t:
                ok = np.isfinite(t["mi_zx"]) & np.isfinite(t["mi_zy"])
                axes[0].plot(
                    t["step"][ok] + 1,
                    (t["mi_zx"] - t["mi_zy"])[ok],
                    "o-",
                    color=colors[g],
                    ms=3,
                    label=g if m == ms[0] else None,
                )
            if "nhsic_zx" in t:
                axes[1].plot(
                    t["step"] + 1,
                    t["nhsic_zx"] - t["nhsic_zy"],
                    color=colors[g],
                    alpha=0.8,
                    label=g if m == ms[0] else None,
                )
        _band(axes[2], plt, series, ms, "test", "rnc1", colors[g], "-", g)
    for ax, title in zip(
        axes, ("I(Z;X) - I(Z;Y) (compression MI, nats)", "nHSIC(Z;X) - nHSIC(Z;Y)", "test RNC1")
    ):
        ax.set_xscale("log")
        ax.set_xlabel("step + 1")
        ax.set_title(title)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    save_figure(fig, paths.figure("information"))

    # Figure 3: margins to the class-0/class-1 boundary at the last step.
    margins = (
        read_json(paths.artifact("margins.json")) if paths.artifact("margins.json").exists() else {}
    )
    if margins:
        fig, axes = plt.subplots(1, len(margins), figsize=(4 * len(margins), 3.4), squeeze=False)
        for ax, (label, d) in zip(axes[0], margins.items()):
            for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
                ax.hist(
                    d[split],
                    bins=40,
                    density=True,
                    alpha=0.5,
                    color=color,
                    label=f"{split} (n={len(d[split])})",
                )
            ax.axvline(0, color="k", lw=0.8)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("signed margin, class 0 vs 1")
        axes[0][0].legend(fontsize=7)
        save_figure(fig, paths.figure("margins"))

    # Figure 4: Theorem 3.2 bound against the measured test error.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for g, ms in groups.items():
        _band(ax, plt, series, ms, "test", "bound", colors[g], "-", f"{g} bound")
        _band(ax, plt, series, ms, "test", "bound_error", colors[g], ":", f"{g} test error")
    ax.set_xscale("log")
    ax.set_xlabel("step + 1")
    ax.set_title("Theorem 3.2 bound (solid) vs measured test error (dotted)")
    ax.legend(fontsize=6)
    save_figure(fig, paths.figure("bound"))

    rows = []
    for key, g in analysis["groups"].items():
        rows.append(
            [
                key,
                len(g["members"]),
                g["fit"],
                g["plateau_test_acc"],
                g["test_rise"],
                g["rnc1_start"],
                g["rnc1_fall"],
                g["final_train_acc"],
                g["final_test_acc"],
                g["final_bound"],
                g["final_error"],
            ]
        )
    onset_table = table(
        [
            "group",
            "seeds",
            "train fit (99%) at",
            "test acc at fit",
            "test rise at",
            "RNC1 contraction starts",
            "RNC1 halfway at",
            "final train acc",
            "final test acc",
            "final bound",
            "final error",
        ],
        rows,
    )
    write_report(
        paths,
        f"grokking: {cfg['task']} / {cfg['model']}",
        [
            ("What was run", describe(cfg)),
            ("Onsets (medians over seeds)", onset_table + "\n\n" + ONSET_DEFINITIONS),
            ("Paper's claims beside this run", verdicts(cfg, analysis)),
            (
                "Accuracy and neural collapse",
                figure_md(
                    paths,
                    "accuracy_nc",
                    "Test (solid) and train (dashed) accuracy, test RNC1 and NC2; "
                    "mean over seeds, band = min..max.",
                ),
            ),
            (
                "Information bottleneck",
                figure_md(
                    paths,
                    "information",
                    "Compression-based I(Z;X) - I(Z;Y), nHSIC(Z;X) - nHSIC(Z;Y), "
                    "and RNC1 over training.",
                ),
            ),
            (
                "Margins",
                figure_md(
                    paths,
                    "margins",
                    "Signed margins of class-0/1 points to the "
                    "0-vs-1 boundary at the last step: training vs unseen points.",
                )
                if margins
                else "No margins saved.",
            ),
            (
                "Generalization bound",
                figure_md(paths, "bound", "Theorem 3.2 bound vs measured test error."),
            ),
            ("Config", "```json\n" + paths.config.read_text().strip() + "\n```"),
        ],
    )


ONSET_DEFINITIONS = (
    "*train fit at*: first logged step with training accuracy >= 99%. *test rise at*: first "
    "step after that where test accuracy has covered half the way from its value at the fit step "
    "to its final value (blank when it rose by less than 0.05). *RNC1 contraction starts*: first "
    "step after test RNC1's peak where it is 10% below the peak. *RNC1 halfway at*: first step "
    "after the peak where test RNC1 is below (peak + final) / 2. RNC1 onsets are blank unless "
    "RNC1 ends below half its peak."
)

OMNIGROK = (
    "Published reference (Omnigrok's MNIST setup, which this protocol follows; Liu et al. 2023, "
    "and Fig. 1 of Sakamoto & Sato): train accuracy reaches 100% at about 2e3 steps; test "
    "accuracy stays about 0.2 until about 1e4 steps, then reaches about 0.88 by 1e5 steps; test "
    "RNC1 falls at the same time as test accuracy rises; larger weight decay brings both earlier "
    "(onset roughly proportional to 1/lambda); with alpha = 1 there is no delay."
)


def describe(cfg: dict) -> str:
    if cfg["task"] == "modular":
        task = (
            f"(a {cfg['op']} b) mod {cfg['p']}, {cfg['train_fraction']:.0%} of pairs for training"
        )
    else:
        task = f"the first {cfg['train_size']} `{cfg['task']}` training examples, full test split"
    if cfg["model"] == "transformer":
        t = cfg["transformer"]
        model = (
            f"Nanda et al.'s one-layer transformer (d_model {t['d_model']}, {t['n_heads']} "
            f"heads, d_mlp {t['d_mlp']}), AdamW lr {t['lr']}, weight decay "
            f"{t['weight_decay']}, full batch, cross-entropy in float64"
        )
    else:
        model = (
            f"MLP with {cfg['depth']} hidden layers of {cfg['width']} (ReLU), alpha = "
            f"{cfg['init_scale']} (control alpha = {cfg['control_init_scale']}), "
            f"{cfg['loss']} loss, AdamW lr {cfg['lr']}, lambda in {cfg['weight_decays']}, "
            f"seeds {cfg['seeds']}, batch {cfg['batch_size'] or 'full'}"
        )
    return f"{cfg['steps']} steps on {task}; {model}."


def _exponent(k: float | None) -> str:
    return "n/a" if k is None else f"{k:.2f}"


def verdicts(cfg: dict, analysis: dict) -> str:
    groups = analysis["groups"]
    main = {k: g for k, g in groups.items() if g["alpha"] == analysis["main_alpha"]}
    lines = [
        OMNIGROK
        if cfg["task"] != "modular"
        else (
            "Published claim (Sakamoto & Sato; Nanda et al. for the transformer): test accuracy "
            "rises long after the training set is fit, at the same time as the within-class "
            "variance (RNC1) contracts; larger weight decay brings both earlier."
        ),
        "",
        "This run:",
    ]
    for key, g in main.items():
        fit, rise, start, fall = g["fit"], g["test_rise"], g["rnc1_start"], g["rnc1_fall"]
        if fit is None:
            lines.append(
                f"- {key}: the training set was never fit ({FIT_ACCURACY:.0%} train accuracy "
                f"not reached; final {fmt(g['final_train_acc'])})."
            )
            continue
        delayed = rise is not None and rise >= 3 * max(fit, 1)
        line = (
            f"- {key}: train fit at step {fmt(fit)}, test accuracy {fmt(g['plateau_test_acc'])} "
            f"then; test rise at {fmt(rise)} to {fmt(g['final_test_acc'])}; RNC1 contraction "
            f"starts at {fmt(start)}, halfway at {fmt(fall)}. Delayed generalization (rise at "
            f"least 3x the fit step): **{'yes' if delayed else 'no'}**"
            + (f" ({rise / max(fit, 1):.1f}x)" if rise else "")
        )
        if rise and start and fall:
            # "Together" on the log step axis the paper plots: within half a decade.
            together = abs(math.log10(start / rise)) <= 0.5
            line += (
                f"; RNC1 {'lags' if start > rise else 'leads'}: it starts contracting at "
                f"{start / rise:.1f}x the test-rise step and is "
                f"halfway down at {fall / rise:.1f}x: onsets within half a decade: "
                f"**{'yes' if together else 'no'}**"
            )
        elif rise and g.get("rnc1_end_to_peak") is not None:
            line += (
                f"; test RNC1 ends at {g['rnc1_end_to_peak']:.2f}x its peak, not halved within "
                "the run: this rise is **not** matched by a completed contraction"
            )
        lines.append(line + ".")
    exp = analysis["exponent"]
    if exp.get("test_rise") is not None:
        k = exp["test_rise"]
        verdict = (
            "reproduced"
            if abs(k + 1) <= 0.25
            else "same direction, weaker than 1/lambda at this scale"
            if k < 0
            else "not reproduced at this scale"
        )
        lines.append(
            f"- Onset vs lambda: test-rise onset ~ lambda^{k:.2f}; RNC1 contraction start ~ "
            f"lambda^{_exponent(exp.get('rnc1_start'))}, RNC1 halfway ~ lambda^"
            f"{_exponent(exp.get('rnc1_fall'))}; the paper predicts an exponent of about -1 "
            f"(|k + 1| <= 0.25 counts as reproduced): **{verdict}**."
        )
    else:
        lines.append(
            "- Onset vs lambda: fewer than two weight decays had a test rise, so no "
            "exponent was fitted (**not tested at this scale**)."
        )
    controls = {k: g for k, g in groups.items() if g["alpha"] != analysis["main_alpha"]}
    for key, g in controls.items():
        lines.append(
            f"- Control {key}: train fit at {fmt(g['fit'])}, test rise at "
            f"{fmt(g['test_rise'])}, final test accuracy {fmt(g['final_test_acc'])} "
            "(no delay expected)."
        )
    return "\n".join(lines)
