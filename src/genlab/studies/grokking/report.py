"""The grokking report: figures, onset tables and the paper's claims beside the run's numbers."""

from __future__ import annotations

import math

import numpy as np

from genlab.report import (
    Claim,
    claims_table,
    config_block,
    count,
    figure_md,
    fmt,
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
)
from genlab.studies.grokking.analysis import FIT_ACCURACY, analyze, member_series
from genlab.studies.grokking.config import GrokkingConfig

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
    cfg = read_config(paths, GrokkingConfig)
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
                count(g["fit"]),
                pct(g["plateau_test_acc"]),
                count(g["test_rise"]),
                count(g["rnc1_start"]),
                count(g["rnc1_fall"]),
                pct(g["final_train_acc"]),
                pct(g["final_test_acc"]),
                sig(g["final_bound"]),
                sig(g["final_error"]),
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
        f"grokking: {cfg.task} / {cfg.model}",
        [
            ("What was run", describe(cfg)),
            ("Onsets (medians over seeds)", onset_table + "\n\n" + ONSET_DEFINITIONS),
            ("Paper's claims beside this run", claims_md(cfg, analysis)),
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
            ("Config", config_block(paths)),
        ],
    )


ONSET_DEFINITIONS = (
    "*train fit at*: first logged step with training accuracy >= 99%. *test rise at*: first step "
    "after that where test accuracy has covered half the way from its value at the fit step to its"
    " final value (n/a when it rose by less than 5 percentage points). *RNC1 contraction starts*: "
    "first step after test RNC1's peak where it is 10% below the peak. *RNC1 halfway at*: first "
    "step after the peak where test RNC1 is below (peak + final) / 2. RNC1 onsets are n/a unless "
    "RNC1 ends below half its peak. *final bound*, *final error*: the Theorem 3.2 bound and the "
    "measured test error it bounds, at the last step (mean over seeds)."
)

OMNIGROK = (
    "Published reference (Omnigrok's MNIST setup, which this protocol follows; Liu et al. 2023, "
    "and Fig. 1 of Sakamoto & Sato): train accuracy reaches 100% at about 2e3 steps; test "
    "accuracy stays about 20% until about 1e4 steps, then reaches about 88% by 1e5 steps; test "
    "RNC1 falls at the same time as test accuracy rises; larger weight decay brings both earlier "
    "(onset roughly proportional to 1/lambda); with alpha = 1 there is no delay."
)


def _listed(values) -> str:
    return ", ".join(str(v) for v in values)


def describe(cfg: GrokkingConfig) -> str:
    if cfg.task == "modular":
        task = f"(a {cfg.op} b) mod {cfg.p}, {cfg.train_fraction:.0%} of pairs for training"
    else:
        task = f"the first {cfg.train_size} `{cfg.task}` training examples, full test split"
    if cfg.model == "transformer":
        t = cfg.transformer
        model = (
            f"Nanda et al.'s one-layer transformer (d_model {t.d_model}, {t.n_heads} "
            f"heads, d_mlp {t.d_mlp}), AdamW lr {cfg.optim.lr} (linear warm-up over "
            f"{cfg.optim.warmup_steps} steps), betas {_listed(cfg.optim.betas)}, weight decay "
            f"{cfg.weight_decays[0]}, full batch, cross-entropy in float64"
        )
    else:
        control = cfg.control_init_scale
        control = "no control" if control is None else f"control alpha = {control}"
        model = (
            f"MLP with {cfg.depth} hidden layers of {cfg.width} (ReLU), alpha = "
            f"{cfg.init_scale} ({control}), "
            f"{cfg.loss} loss, AdamW lr {cfg.optim.lr}, lambda in {{{_listed(cfg.weight_decays)}}}, "
            f"seeds {{{_listed(cfg.seeds)}}}, batch {cfg.batch_size or 'full'}"
        )
    return f"{count(cfg.steps)} steps on {task}; {model}."


def _exponent(k: float | None) -> str:
    return "n/a" if k is None else f"{k:.2f}"


DELAY_FACTOR = 3
"""Delayed generalization: the test rise comes at least this many times the fit step."""


def _ratio(a: float, b: float) -> str:
    return f"{a / max(b, 1):.1f}x"


def grokking_claims(cfg: GrokkingConfig, analysis: dict) -> list[Claim]:
    """The paper's claims beside this run, from the run's analysis (:func:`analyze`)."""
    mnist = cfg.task != "modular"
    source = (
        "Omnigrok MNIST; Liu et al. 2023, Fig. 1 of Sakamoto & Sato"
        if mnist
        else "Sakamoto & Sato" + ("; Nanda et al." if cfg.model == "transformer" else "")
    )
    paper_delay = (
        f"train accuracy 100% at about 2e3 steps; test accuracy about 20% until about 1e4 "
        f"steps, then about 88% by 1e5 steps ({source})"
        if mnist
        else f"test accuracy rises long after the training set is fit ({source})"
    )
    paper_together = (
        f"test RNC1 falls at the same time as test accuracy rises ({source})"
        if mnist
        else f"test accuracy rises at the same time as RNC1 contracts ({source})"
    )
    groups = analysis["groups"]
    claims: list[Claim] = []
    for key, g in groups.items():
        if g["alpha"] != analysis["main_alpha"]:
            continue
        fit, rise, start, fall = g["fit"], g["test_rise"], g["rnc1_start"], g["rnc1_fall"]
        delay_claim = (
            f"{key}: delayed generalization (test rise at least {DELAY_FACTOR}x the fit step)"
        )
        if fit is None:
            claims.append(
                Claim(
                    delay_claim,
                    paper_delay,
                    f"the training set was never fit ({FIT_ACCURACY:.0%} train accuracy not "
                    f"reached; final {pct(g['final_train_acc'])})",
                    "not tested at this scale",
                )
            )
            continue
        delayed = rise is not None and rise >= DELAY_FACTOR * max(fit, 1)
        measured = (
            f"train fit at step {count(fit)} (test accuracy {pct(g['plateau_test_acc'])}); "
            + (
                f"test rise at step {count(rise)} ({_ratio(rise, fit)} the fit step) to "
                f"{pct(g['final_test_acc'])}"
                if rise
                else f"no test rise after the fit (final test accuracy {pct(g['final_test_acc'])})"
            )
        )
        claims.append(Claim(delay_claim, paper_delay, measured, "held" if delayed else "not held"))
        together_claim = f"{key}: RNC1 contracts together with the test rise (within half a decade)"
        if rise and start and fall:
            # "Together" on the log step axis the paper plots: within half a decade.
            together = abs(math.log10(start / rise)) <= 0.5
            measured = (
                f"RNC1 {'lags' if start > rise else 'leads'}: contraction starts at step "
                f"{count(start)} ({_ratio(start, rise)} the test-rise step), halfway at step "
                f"{count(fall)} ({_ratio(fall, rise)})"
            )
            claims.append(
                Claim(together_claim, paper_together, measured, "held" if together else "not held")
            )
        elif rise and g.get("rnc1_end_to_peak") is not None:
            measured = (
                f"test RNC1 ends at {g['rnc1_end_to_peak']:.2f}x its peak, not halved within the "
                f"run: the test rise at step {count(rise)} is not matched by a completed "
                "contraction"
            )
            claims.append(Claim(together_claim, paper_together, measured, "not held"))
        else:
            why = "no test rise to compare with" if not rise else "test RNC1 was not measured"
            claims.append(Claim(together_claim, paper_together, why, "not tested at this scale"))
    exp = analysis["exponent"]
    exp_claim = "Onsets scale as 1/lambda (larger weight decay brings them earlier)"
    exp_paper = "onset ~ lambda^k with k about -1 (" + (
        "Omnigrok MNIST, Liu et al. 2023)" if mnist else "Sakamoto & Sato)"
    )
    if exp.get("test_rise") is not None:
        k = exp["test_rise"]
        held = abs(k + 1) <= 0.25
        note = (
            ""
            if held
            else "; same direction, weaker than 1/lambda at this scale"
            if k < 0
            else "; not reproduced at this scale"
        )
        measured = (
            f"test rise ~ lambda^{k:.2f}; RNC1 contraction start ~ lambda^"
            f"{_exponent(exp.get('rnc1_start'))}, RNC1 halfway ~ lambda^"
            f"{_exponent(exp.get('rnc1_fall'))} (|k + 1| <= 0.25 counts as held){note}"
        )
        claims.append(Claim(exp_claim, exp_paper, measured, "held" if held else "not held"))
    else:
        claims.append(
            Claim(
                exp_claim,
                exp_paper,
                "fewer than two weight decays had a test rise: no exponent fitted",
                "not tested at this scale",
            )
        )
    for key, g in groups.items():
        if g["alpha"] == analysis["main_alpha"]:
            continue
        fit, rise = g["fit"], g["test_rise"]
        measured = (
            f"train fit at step {count(fit)}, test rise at step {count(rise)}, final test "
            f"accuracy {pct(g['final_test_acc'])}"
        )
        if fit is None:
            verdict = "not tested at this scale"
        else:
            delayed = rise is not None and rise >= DELAY_FACTOR * max(fit, 1)
            verdict = "not held" if delayed else "held"
        claims.append(
            Claim(
                f"{key} (control): no delayed generalization",
                "no delay with alpha = 1 (Omnigrok MNIST, Liu et al. 2023)"
                if mnist
                else "no delay expected",
                measured,
                verdict,
            )
        )
    return claims


def claims(paths: RunPaths) -> list[Claim]:
    """The run's claims table, from its folder alone (config.json and metrics.jsonl)."""
    return grokking_claims(
        read_config(paths, GrokkingConfig), analyze(MetricsLog(paths.metrics).read())
    )


def claims_md(cfg: GrokkingConfig, analysis: dict) -> str:
    """The report's claims section: the published claim, then the claims table."""
    intro = (
        OMNIGROK
        if cfg.task != "modular"
        else (
            "Published claim (Sakamoto & Sato; Nanda et al. for the transformer): test accuracy "
            "rises long after the training set is fit, at the same time as the within-class "
            "variance (RNC1) contracts; larger weight decay brings both earlier."
        )
    )
    return "\n\n".join([intro, claims_table(grokking_claims(cfg, analysis))])
