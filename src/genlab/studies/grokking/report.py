"""The grokking report: figures, onset tables and the paper's claims beside the run's numbers."""

from __future__ import annotations

import numpy as np

from genlab.data import MODULAR
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
from genlab.studies.grokking.analysis import (
    DELAY_FACTOR,
    FIT_ACCURACY,
    TOGETHER_FACTOR,
    analyze,
    inverse_lambda_label,
    long_after_fit_verdict,
    member_series,
    together_verdict,
)
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
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), sharey=True)
    for ax, key, title in (
        (axes[0], "bound_stated", "Theorem 3.2 as stated (no bias, total within-class variance)"),
        (axes[1], "bound_variant", "variant (bias offset, variance along w_c - w_k)"),
    ):
        for g, ms in groups.items():
            _band(ax, plt, series, ms, "train", key, colors[g], "-", f"{g}: from train stats")
            _band(ax, plt, series, ms, "test", key, colors[g], "--", f"{g}: from test stats")
            _band(ax, plt, series, ms, "test", "bound_error", colors[g], ":", f"{g}: test error")
        ax.set_xscale("log")
        ax.set_xlabel("step + 1")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylim(0, 1.5)
    axes[0].legend(fontsize=6)
    save_figure(fig, paths.figure("bound"))

    rows = []
    for key, g in analysis["groups"].items():
        rows.append(
            [
                key,
                len(g["members"]),
                count(g["fit"]),
                pct(g["plateau_test_acc"]),
                count(g["rise_start"]),
                count(g["rise_half"]),
                count(g["test_rnc1_start"]),
                count(g["test_rnc1_half"]),
                count(g["train_rnc1_half"]),
                pct(g["final_train_acc"]),
                pct(g["final_test_acc"]),
                sig(g["final_bound_stated_train"]),
                sig(g["final_error"]),
            ]
        )
    onset_table = table(
        [
            "group",
            "seeds",
            "train fit (99%) at",
            "test acc at fit",
            "test rise starts",
            "test rise halfway",
            "test RNC1 starts",
            "test RNC1 halved",
            "train RNC1 halved",
            "final train acc",
            "final test acc",
            "final bound (stated, train stats)",
            "final test error",
        ],
        rows,
    )
    write_report(
        paths,
        f"grokking: {cfg.data.name} / {cfg.model}",
        [
            ("What was run", describe(cfg)),
            ("Onsets (medians over seeds)", onset_table + "\n\n" + ONSET_DEFINITIONS),
            ("Protocol differences from the authors", protocol_md(cfg)),
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
                figure_md(
                    paths,
                    "bound",
                    "Theorem 3.2 bound computed from training-set statistics (solid: a "
                    "prediction of the test error from training data alone) and from test-set "
                    "statistics (dashed: >= the test error by construction), against the "
                    "measured test error (dotted). Left: the theorem as stated; right: the "
                    "tighter variant with the classifier's bias.",
                ),
            ),
            ("Config", config_block(paths)),
        ],
    )


def _listed(values) -> str:
    return ", ".join(str(v) for v in values)


def describe(cfg: GrokkingConfig) -> str:
    d = cfg.data
    if d.name == MODULAR:
        task = f"(a {d.op} b) mod {d.p}, {d.train_fraction:.0%} of pairs for training"
    else:
        task = f"the first {d.train_size} `{d.name}` training examples, full test split"
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


NORMALIZATION = {
    "standard": "the same",
    "train": "the 1,000 training images' own mean and std",
    "none": "none (raw pixels in [0, 1])",
}

ONSET_DEFINITIONS = (
    "Every onset is dated against a fixed criterion. *train fit*: first logged step with "
    f"training accuracy >= {FIT_ACCURACY:.0%}. *test rise starts / halfway*: first step after "
    "the fit where test accuracy has covered 10% / 50% of the way from its value at the fit "
    "to 100%. *test RNC1 starts / halved*: first step after test RNC1's peak where it is at "
    "or below 0.9x / 0.5x the peak. *train RNC1 halved*: first step after the fit where "
    "training-set RNC1 is at or below half its value at the fit. n/a: never within the run. "
    "*final bound*: Theorem 3.2 as stated, from training-set statistics, at the last step "
    "(mean over seeds), beside the measured test error."
)

PAPER = "Sakamoto & Sato, arXiv 2509.20829 v2"
PAPER_QUOTES = (
    f'What the paper claims ({PAPER}; quoted from the v2 text): the abstract, "the '
    "contraction of population within-class variance is a key factor underlying both grokking "
    'and information bottleneck" and "distinct time scales between fitting the training set '
    "and the progression of neural collapse account for the behavior of the late-phase "
    'phenomena"; on MNIST, "the decrease of RNC1 is synchronized not with fitting the '
    "training set but with the emergence of grokking, i.e., the improvement of test "
    'accuracy" (RNC1 on the training set, as in the authors\' code) and "stronger weight '
    'decay lambda accelerates the timing of grokking". Theorem 4.3 gives RNC1 a time scale '
    "tau_2 = Omega((lambda eta)^-1 log(1/eps_2)) against tau_1 = Omega(eta^-1 log(1/eps_1)) "
    "for the training loss (gradient descent on the summed squared loss with an L2 penalty): "
    "a lower bound that grows as 1/lambda, not a predicted exponent."
)
PAPER_FIG2 = (
    f"{PAPER}, Fig. 2 (MNIST, lambda = 0.01): train accuracy 100% and test accuracy 15% at "
    "step 16,000; test accuracy 88% at step 100,000"
)
OMNIGROK = (
    "Liu et al. 2023 (Omnigrok), MNIST with alpha = 8, whose setup both papers follow: train "
    "accuracy 100% at about 2e3 steps, test accuracy about 20% until about 1e4 steps and "
    "about 88% by 1e5; with alpha = 1 no delay"
)


def _ratio(a: float, b: float) -> str:
    return f"{a / max(b, 1):.1f}x"


def _comparison(c: dict, what: str) -> str:
    """One per-seed comparison summarized over seeds: order, lag ratio and its spread."""
    if c["seeds"] == 0:
        return f"{what}: no seed with the reference event"
    text = (
        f"{what}: within {TOGETHER_FACTOR:g}x in {c['together']} of {c['seeds']} seeds; "
        f"leads in {c['leads']}, lags in {c['lags']}"
    )
    if c["median"] is not None:
        text += f", lag ratio median {c['median']:.2f} (range {c['min']:.2f} to {c['max']:.2f})"
    if c["missing"]:
        text += f"; never reached in {c['missing']}"
    return text


def grokking_claims(cfg: GrokkingConfig, analysis: dict) -> list[Claim]:
    """The paper's claims beside this run, from the run's analysis (:func:`analyze`)."""
    mnist = cfg.data.name != MODULAR
    delay_ref = (
        f"{PAPER_FIG2}; {OMNIGROK}"
        if mnist
        else f"test accuracy rises long after the training set is fit ({PAPER})"
    )
    claims: list[Claim] = []
    for key, g in analysis["groups"].items():
        if g["alpha"] != analysis["main_alpha"]:
            continue
        fit, rise = g["fit"], g["rise_half"]
        delay_claim = (
            f"{key}: delayed generalization (test rise halfway >= {DELAY_FACTOR}x the fit step)"
        )
        if fit is None:
            claims.append(Claim(
                delay_claim, delay_ref,
                f"the training set was never fit ({FIT_ACCURACY:.0%} not reached; final "
                f"{pct(g['final_train_acc'])})", "not tested at this scale",
            ))  # fmt: skip
            continue
        delayed = rise is not None and rise >= DELAY_FACTOR * max(fit, 1)
        measured = (
            f"train fit at step {count(fit)} (test accuracy {pct(g['plateau_test_acc'])}); "
            + (
                f"test rise halfway at step {count(rise)} ({_ratio(rise, fit)} the fit step), final "
                f"test accuracy {pct(g['final_test_acc'])}"
                if rise
                else f"no test rise (final test accuracy {pct(g['final_test_acc'])})"
            )
        )
        claims.append(Claim(delay_claim, delay_ref, measured, "held" if delayed else "not held"))
        half, start = (
            g["compare"]["test_rnc1_vs_rise_half"],
            g["compare"]["test_rnc1_vs_rise_start"],
        )
        claims.append(Claim(
            f"{key}: (a) the population (test-set) RNC1 contracts with the test rise (start "
            f"with start and halfway with halfway within {TOGETHER_FACTOR:g}x, in most seeds)",
            f"\"the contraction of population within-class variance is a key factor underlying "
            f"grokking\" ({PAPER}, abstract)",
            _comparison(half, "halved vs rise halfway") + "; " + _comparison(start, "starts vs rise starts"),
            together_verdict(half, start),
        ))  # fmt: skip
        train = g["compare"]["train_rnc1_vs_rise_half"]
        measured = _comparison(train, "training RNC1 halved vs rise halfway")
        if g["train_rnc1_half"] is not None:
            measured += (
                f"; median training RNC1 halved at step {count(g['train_rnc1_half'])} "
                f"({_ratio(g['train_rnc1_half'], fit)} the fit step)"
            )
        claims.append(Claim(
            f"{key}: (b) training-set RNC1 keeps contracting long after the fit (halved >= "
            f"{DELAY_FACTOR}x the fit step), on the time scale of the test rise (within "
            f"{TOGETHER_FACTOR:g}x of its halfway point), in most seeds",
            f"\"the decrease of RNC1 is synchronized not with fitting the training set but with "
            f"the emergence of grokking\" ({PAPER}, MNIST experiments)",
            measured, long_after_fit_verdict(g["members"]),
        ))  # fmt: skip
        bound, err = g["final_bound_stated_train"], g["final_error"]
        claims.append(Claim(
            f"{key}: Theorem 3.2 (as stated) from training-set statistics bounds the test error "
            "at the last step",
            f"Theorem 3.2 ({PAPER}) bounds the test error by population class statistics",
            f"bound {sig(bound)} (variant with bias: {sig(g['final_bound_variant_train'])}) vs "
            f"measured test error {sig(err)}"
            + ("; vacuous (above 1): it holds trivially" if bound >= 1 else ""),
            "held" if bound >= err else "not held",
        ))  # fmt: skip
    wd = analysis["weight_decay"]
    exp = wd["exponent"]
    medians = ", ".join(f"lambda = {fmt(lam)}: {count(s)}" for lam, s in wd["medians"].items())
    measured = f"median test rise halfway: {medians or 'none'}"
    if exp is not None:
        ci = "" if exp["lo"] is None else f", 95% CI {exp['lo']:.2f} to {exp['hi']:.2f}"
        measured += f"; rise ~ lambda^{exp['k']:.2f}{ci} over {exp['points']} seeds x lambdas ({inverse_lambda_label(exp)})"
    if wd["no_rise"]:
        measured += "; no rise in any seed for lambda = " + ", ".join(fmt(x) for x in wd["no_rise"])
    claims.append(Claim(
        "Stronger weight decay brings grokking earlier (median rise falls as lambda grows, "
        "exponent's 95% interval below 0)",
        f"\"stronger weight decay lambda accelerates the timing of grokking\" ({PAPER}); "
        "Theorem 4.3: RNC1's time scale is at least of order 1/lambda",
        measured, wd["verdict"],
    ))  # fmt: skip
    for key, g in analysis["groups"].items():
        if g["alpha"] == analysis["main_alpha"]:
            continue
        fit, rise = g["fit"], g["rise_half"]
        measured = (
            f"train fit at step {count(fit)}, test rise halfway at step {count(rise)}, final "
            f"test accuracy {pct(g['final_test_acc'])}"
        )
        if fit is None:
            verdict = "not tested at this scale"
        else:
            delayed = rise is not None and rise >= DELAY_FACTOR * max(fit, 1)
            verdict = "not held" if delayed else "held"
        claims.append(Claim(
            f"{key} (control): no delayed generalization",
            "no delay with alpha = 1 (Liu et al. 2023, Omnigrok)" if mnist else "no delay expected",
            measured, verdict,
        ))  # fmt: skip
    return claims


def protocol_md(cfg: GrokkingConfig) -> str:
    """Every known difference from the authors' protocol (their public code,
    keitaroskmt/collapse-dynamics, and the paper's text), with this run's setting."""
    if cfg.data.name == MODULAR:
        return (
            "The paper's grokking experiments are on images and text; the modular-arithmetic "
            "task (Power et al.; Nanda et al. for the transformer) is genlab's own check of "
            "the same measures, with no protocol of the authors to follow."
        )
    rows = [
        [
            "training data",
            "first 1,000 MNIST training images",
            f"first {cfg.data.train_size} of genlab's offline `{cfg.data.name}` training split",
        ],
        [
            "input normalization",
            "(x - 0.1307) / 0.3081",
            NORMALIZATION[cfg.data.normalize],
        ],
        [
            "model",
            "paper: [784, 200, 200, 200, 10]; code default: 784-200-200-10",
            f"{cfg.depth} hidden layers of {cfg.width}, ReLU",
        ],
        [
            "init scale",
            "alpha = 8 on every parameter",
            f"alpha = {fmt(cfg.init_scale)} (+ alpha = {cfg.control_init_scale} controls)",
        ],
        [
            "optimizer",
            "AdamW, lr 1e-3, weight decay 0.01 (a sweep in the figures)",
            f"AdamW, lr {cfg.optim.lr}, lambda in {{{', '.join(fmt(x) for x in cfg.weight_decays)}}}",
        ],
        [
            "loss",
            "squared error on one-hot targets, summed over batch and outputs",
            "the same (mean with AdamW eps / batch, the same step exactly)"
            if cfg.batch_reduction == "sum"
            else "per-example mean (AdamW eps not rescaled)",
        ],
        [
            "batches, steps",
            "100, reshuffled every epoch; 100k steps",
            f"{cfg.batch_size or 'full batch'}, reshuffled every epoch; {count(cfg.steps)} steps",
        ],
        [
            "logging",
            "every step below 30, every 10 below 150, then every steps // 150 (linear)",
            f"the same dense start, then {cfg.log_points} log-spaced points",
        ],
        ["seeds", "5 (Fig. 3)", str(len(cfg.seeds))],
        [
            "neural collapse",
            "training set; RNC1 = Tr(Sigma_W) / B_g^2, B_g the largest feature norm (paper), the squared mean norm (authors' notebook)",
            "training and test sets; RNC1 over the squared mean norm (as the notebook)",
        ],
        [
            "nHSIC",
            "every batch of 100 of the shuffled test split, 3 passes",
            f"{cfg.nhsic_batches} batches of 100 from one fixed shuffle of the test split, 1 pass",
        ],
        [
            "compression MI",
            "X: convolutional autoencoder (latent 4, 200 epochs), Z: PCA-4, whitened, Kozachenko-Leonenko k = 5, whole test split (their X and Z pass over separately shuffled loaders, so the pairs do not match)",
            f"X: {'the same autoencoder, ' + str(cfg.mi_autoencoder_epochs) + ' epochs, cached' if cfg.mi_x_compressor == 'autoencoder' else 'PCA-4'}; Z: PCA-4; whitened; Kozachenko-Leonenko k = 5; {cfg.mi_samples} paired test samples (a fixed random subset)",
        ],
        [
            "Theorem 3.2",
            "population statistics",
            "stated form and a variant with the bias, each from training and from test statistics",
        ],
    ]
    return table(["", "authors", "this run"], rows)


def claims(paths: RunPaths) -> list[Claim]:
    """The run's claims table, from its folder alone (config.json and metrics.jsonl)."""
    return grokking_claims(
        read_config(paths, GrokkingConfig), analyze(MetricsLog(paths.metrics).read())
    )


def claims_md(cfg: GrokkingConfig, analysis: dict) -> str:
    """The report's claims section: the paper's claims in its words, then the claims table."""
    intro = PAPER_QUOTES
    if cfg.data.name == MODULAR:
        intro += (
            " This run is modular arithmetic, not the paper's MNIST: the claims are checked "
            "in form only, with no published numbers for this task."
        )
    return "\n\n".join([intro, claims_table(grokking_claims(cfg, analysis))])
