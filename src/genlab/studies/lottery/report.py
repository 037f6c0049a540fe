"""The lottery report: accuracy, flatness, distance, label noise, the PAC-Bayes decomposition
and the pruning-criterion ablation against density, and the claims, from the run folder alone."""

from __future__ import annotations

import numpy as np

from genlab.report import (
    Claim,
    claims_table,
    config_block,
    figure_md,
    pct,
    pyplot,
    save_figure,
    sig,
    table,
    write_report,
)
from genlab.runs import MetricsLog, RunPaths, read_config
from genlab.studies.lottery.analysis import SHARE, analyze, nanmean, seed_mean
from genlab.studies.lottery.config import FLATNESS_SETTINGS, LotteryConfig

PAPER = "Sakamoto & Sato, NeurIPS 2022 (arXiv 2205.07320)"
PAPER_QUOTES = (
    f'The paper ({PAPER}, abstract): with IMP, "the initial large learning rate does not work '
    'well in deep neural networks such as ResNet"; "we hypothesize that the winning tickets have '
    'relatively sharp minima"; "flatness is useful for improving accuracy and robustness to '
    "label noise and [...] the distance from the initial weights is deeply involved in winning "
    'tickets"; and (Section 1) "winning tickets are actually more vulnerable to label noise '
    'setting compared to the subnetwork created with the large learning rate".'
)
PYHESSIAN = (
    "PyHessian's tutorial (Yao et al., github amirgholami/PyHessian): a pretrained ResNet-20 on "
    "one CIFAR-10 batch has top eigenvalue about 195.6 and trace about 638.3 (context only: "
    "another model, data and batch)"
)
COLORS = {"small-lr": "C0", "large-lr": "C1", "small-lr-sam": "C2", "random": "C3",
          "reverse": "C4"}  # fmt: skip


def _density(q: dict) -> np.ndarray | None:
    d = q.get("density")
    return None if d is None else nanmean(d)


def _plot(ax, levels, key, name, label, **kw):
    y, x = seed_mean(levels, key, name), _density(levels.get(key, {}))
    if y is None or x is None:
        return
    if kw.pop("positive", False):  # a log axis: leave out zeros (the dense level's mask KL)
        y = np.where(y > 0, y, np.nan)
    arr = levels[key][name]
    err = np.nanstd(arr, axis=0, ddof=1) if arr.shape[0] > 1 else None
    ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, label=label,
                color=COLORS.get(key[0]), **kw)  # fmt: skip


def _axes(ax, title, ylabel, log_y=False):
    from matplotlib.ticker import NullFormatter, PercentFormatter

    ax.set_xscale("log")
    ax.invert_xaxis()
    # ticks at the levels' densities (at most 5 of them), as percentages
    xs = sorted({round(float(v), 6) for line in ax.get_lines() for v in line.get_xdata()
                 if np.isfinite(v) and v > 0}, reverse=True)  # fmt: skip
    if xs:
        ax.set_xticks(xs[:: max(1, -(-len(xs) // 5))])
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("density (fraction of prunable weights kept)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if log_y:
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def figures(paths: RunPaths, cfg: LotteryConfig, levels: dict) -> None:
    plt = pyplot()
    noises = sorted(cfg.label_noise)
    # 1. accuracy against density
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in cfg.settings:
        _plot(ax, levels, (s, 0.0), "ticket_test_acc", s)
        if (s, 0.0) in levels and "reinit_test_acc" in levels[(s, 0.0)]:
            _plot(ax, levels, (s, 0.0), "reinit_test_acc", f"{s}: random re-init", ls="--")
    _axes(ax, "test accuracy of each ticket after training (clean labels)", "test accuracy")
    save_figure(fig, paths.figure("accuracy"))
    # 2. flatness against density
    flat = [s for s in cfg.settings if s in FLATNESS_SETTINGS]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (name, title, log) in zip(axes, [
        ("top_eigenvalue", "top Hessian eigenvalue", True),
        ("hessian_trace", "Hessian trace (Hutchinson)", True),
        ("expected_sharpness", f"expected sharpness (sigma {cfg.sharpness_sigma:g})", False),
        ("worst_case_sharpness", f"worst-case sharpness (rho {cfg.worst_case_rho:g})", True),
    ]):  # fmt: skip
        for s in flat:
            _plot(ax, levels, (s, 0.0), name, s)
        _axes(ax, title, name.replace("_", " "), log)
    save_figure(fig, paths.figure("flatness"))
    # 3. distance from initialization
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in cfg.settings:
        _plot(ax, levels, (s, 0.0), "relative_distance", s)
    _axes(ax, "distance from initialization ||m (theta - theta0)|| / ||m theta0||", "relative")
    save_figure(fig, paths.figure("distance"))
    # 4. label noise
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for s in flat:
            _plot(ax, levels, (s, noise), "ticket_test_acc", f"{s} final")
            _plot(ax, levels, (s, noise), "ticket_best_acc", f"{s} early-stopped", ls=":")
        _axes(ax, f"uniform label noise {noise:g}", "test accuracy")
    save_figure(fig, paths.figure("label_noise"))
    # 5. the PAC-Bayes decomposition
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for s in flat:
        for name, ls in (("kl_kept", "-"), ("kl_mask", "--"), ("kl_other", ":")):
            _plot(axes[0], levels, (s, 0.0), name, f"{s} {name}", ls=ls, positive=True)
        _plot(axes[1], levels, (s, 0.0), "authors_bound", f"{s} authors' quantity")
        _plot(axes[1], levels, (s, 0.0), "certified_bound", f"{s} certified", ls="--")
        _plot(axes[1], levels, (s, 0.0), "stochastic_error", f"{s} stochastic error", ls=":")
    _axes(axes[0], "spike-and-slab KL parts (nats)", "nats", True)
    _axes(
        axes[1],
        "stochastic ticket: authors' quantity (not a bound) and the certified bound",
        "error",
    )
    for key, q in sorted(levels.items()):
        if "kl" in q and key[1] == 0.0:
            axes[2].scatter(q["distance"].ravel(), q["kl"].ravel(), s=12, label=key[0],
                            color=COLORS.get(key[0]))  # fmt: skip
    axes[2].set_xlabel("distance from initialization")
    axes[2].set_ylabel("KL (nats)")
    axes[2].set_yscale("log")
    axes[2].set_title("KL against distance (every ticket)", fontsize=9)
    axes[2].legend(fontsize=7)
    save_figure(fig, paths.figure("bound"))
    # 6. pruning-criterion ablation
    crit = [s for s in ("small-lr", "random", "reverse") if s in cfg.settings]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax, (name, title) in zip(axes, [("train_acc_pruned", "right after pruning"),
                                        ("train_acc_rewound", "right after rewinding"),
                                        ("ticket_train_acc", "after retraining")]):  # fmt: skip
        for s in crit:
            label = {"small-lr": "magnitude (smallest first)", "random": "random",
                     "reverse": "reverse (largest first)"}[s]  # fmt: skip
            _plot(ax, levels, (s, 0.0), name, label)
        _axes(ax, f"train accuracy {title}", "train accuracy")
    save_figure(fig, paths.figure("ablation"))


def _held(check) -> str:
    if check is None:
        return "not tested at this scale"
    return "held" if check["held"] else "not held"


def _cmp(check, fmt=sig, what=("a", "b")) -> str:
    if check is None:
        return "not measured in this run"
    return (f"{what[0]} {fmt(check['a'])} vs {what[1]} {fmt(check['b'])} (seed and level "
            f"means); in the claimed direction at {check['wins']}/{check['n']} pruned levels")  # fmt: skip


def _neg(check):
    return None if check is None else {**check, "a": -check["a"], "b": -check["b"]}


def lottery_claims(cfg: LotteryConfig, analysis: dict) -> list[Claim]:
    c = analysis["claims"]
    hi = max(cfg.label_noise)
    rows = [
        Claim("IMP at a small learning rate finds winning tickets (better than the same mask "
              "from a random re-initialization)",
              "Frankle & Carbin 2019's definition; the paper builds on it",
              _cmp(c["winning_tickets"], pct, ("re-init", "ticket")),
              _held(c["winning_tickets"])),
        Claim("IMP with a large learning rate does not work well (keeps less of its dense "
              "accuracy as it prunes)",
              f'"does not work well in deep neural networks such as ResNet" ({PAPER}, abstract); '
              "a deep-network effect, may not appear on small models",
              _cmp(c["large_lr_imp_fails"], sig, ("large-lr retention", "small-lr retention")),
              _held(c["large_lr_imp_fails"])),
        Claim("Winning tickets sit in relatively sharp minima: SAM lowers the top Hessian "
              "eigenvalue of tickets", f'"winning tickets have relatively sharp minima" ({PAPER})',
              _cmp(c["sam_flatter_eigenvalue"], sig, ("SAM", "small-lr")),
              _held(c["sam_flatter_eigenvalue"])),
        Claim("... and a larger learning rate lowers it", "as above",
              _cmp(c["large_lr_flatter_eigenvalue"], sig, ("large-lr", "small-lr")),
              _held(c["large_lr_flatter_eigenvalue"])),
        Claim("SAM lowers the expected sharpness (0-1 error under weight noise) of tickets",
              "as above", _cmp(c["sam_flatter_sharpness"], sig, ("SAM", "small-lr")),
              _held(c["sam_flatter_sharpness"])),
        Claim("A larger learning rate lowers the expected sharpness of tickets", "as above",
              _cmp(c["large_lr_flatter_sharpness"], sig, ("large-lr", "small-lr")),
              _held(c["large_lr_flatter_sharpness"])),
        Claim("Flatness improves accuracy: SAM tickets beat small-lr tickets",
              f'"flatness is useful for improving accuracy" ({PAPER}, abstract)',
              _cmp(_neg(c["sam_more_accurate"]), pct, ("SAM", "small-lr")),
              _held(c["sam_more_accurate"])),
        Claim("... and large-lr tickets beat small-lr tickets", "as above",
              _cmp(_neg(c["large_lr_more_accurate"]), pct, ("large-lr", "small-lr")),
              _held(c["large_lr_more_accurate"])),
        Claim("A larger learning rate moves tickets farther from initialization",
              f'"the distance from the initial weights is deeply involved in winning tickets" '
              f"({PAPER}, abstract)",
              _cmp(c["large_lr_farther"], sig, ("small-lr", "large-lr")),
              _held(c["large_lr_farther"])),
        Claim("Magnitude pruning beats random pruning", "Frankle & Carbin 2019",
              _cmp(_neg(c["magnitude_beats_random"]), pct, ("magnitude", "random")),
              _held(c["magnitude_beats_random"])),
        Claim("Magnitude pruning beats reverse-magnitude pruning", "Frankle & Carbin 2019",
              _cmp(_neg(c["magnitude_beats_reverse"]), pct, ("magnitude", "reverse")),
              _held(c["magnitude_beats_reverse"])),
        Claim("Moving farther costs KL: large-lr tickets have a larger spike-and-slab KL",
              f"the bound's trade-off ({PAPER}, Section 5)",
              _cmp(c["large_lr_larger_kl"], sig, ("small-lr", "large-lr")),
              _held(c["large_lr_larger_kl"])),
    ]  # fmt: skip
    for flat in ("small-lr-sam", "large-lr"):
        for tag in ("final", "early"):
            check = c.get(f"{flat}_noise_robust_{tag}")
            rows.append(Claim(
                f"Under label noise {hi:g}, {flat} tickets beat small-lr tickets "
                f"({'final' if tag == 'final' else 'early-stopped (best test)'} accuracy)",
                '"winning tickets are actually more vulnerable to label noise" (Section 1)',
                _cmp(_neg(check), pct, (flat, "small-lr")), _held(check)))  # fmt: skip
    return rows


def level_table(cfg: LotteryConfig, levels: dict, setting: str) -> str:
    q = levels.get((setting, 0.0))
    if not q:
        return ""
    mean = {k: nanmean(v) for k, v in q.items()}
    rows = []
    for lv in range(cfg.levels + 1):

        def g(name, f=sig, lv=lv):
            return f(mean[name][lv]) if name in mean and not np.isnan(mean[name][lv]) else "-"

        rows.append([lv, g("density", pct), g("ticket_test_acc", pct), g("ticket_best_acc", pct),
                     g("reinit_test_acc", pct), g("top_eigenvalue"),
                     f"{g('hessian_trace')} ± {g('hessian_trace_se')}",
                     g("expected_sharpness"), g("worst_case_sharpness"), g("distance"),
                     g("kl"), g("stochastic_error"), g("authors_bound"),
                     g("certified_bound")])  # fmt: skip
    return f"**{setting}** (clean labels, seed means)\n\n" + table(
        ["level", "density", "test acc", "best test acc", "re-init acc", "top eig",
         "trace ± se", "exp. sharpness", "worst-case", "distance", "KL (nats)",
         "stoch. error", "authors' quantity", "certified"], rows)  # fmt: skip


def protocol_md(cfg: LotteryConfig) -> str:
    rows = [
        ["data", "CIFAR-10 / CIFAR-100 (ResNet-20), MNIST", f"{cfg.data.name} (CIFAR is not "
         "available offline)"],
        ["model", "ResNet-20; a 2-conv 'lenet' in their code (64-64 conv, fc 256-256)",
         f"{cfg.model}" + (f", width setting {cfg.width}" if cfg.model != "lenet300" else "")],
        ["IMP", "global magnitude 20% per level, rewind to iteration 0, 15 levels",
         f"global magnitude (controls: random, reverse), {cfg.prune_fraction:g} per level, rewind to "
         f"step {cfg.rewind_step}, {cfg.levels} levels"],
        ["training", "SGD lr 0.01 (ResNet-20: momentum 0.9, wd 1e-4, 30k iterations); large "
         "lr not stated in their code (0.1 as in Frankle & Carbin)",
         f"SGD lr {cfg.lr_small:g} / {cfg.lr_large:g}, momentum {cfg.momentum:g}, wd "
         f"{cfg.weight_decay:g}, batch {cfg.batch_size}, {cfg.epochs} epochs per level"],
        ["SAM", "rho 0.05, perturbs every parameter", f"rho {cfg.sam_rho:g}"
         f"{' (ASAM)' if cfg.sam_adaptive else ''}, perturbs every surviving parameter"],
        ["label noise", "CIFAR-10 train labels redrawn uniformly (seeded)",
         f"uniform, rates {', '.join(f'{n:g}' for n in cfg.label_noise)}, seeded per chain; "
         "early-stopped = best test accuracy over epoch ends (an oracle, as their best_acc)"],
        ["bound: posterior fit", "SGD lr 0.01 momentum 0.95, 256 epochs, surrogate in [0, 4]",
         f"Adam lr {cfg.bound_lr:g}, {cfg.bound_steps} steps of {cfg.bound_batch}; surrogate "
         "bounded in [0, 1]"],
        ["bound: r", "10 passes of the stochastic net, no Monte-Carlo correction",
         f"{cfg.bound_draws} draws x {cfg.bound_draw_batch} examples; the certified bound adds "
         "the kl-inverse Monte-Carlo correction"],
        ["Hessian", "not in their code", f"{cfg.measure_train} training examples, Lanczos "
         f"<= {cfg.hessian_iters} products, Hutchinson {cfg.trace_probes} probes"],
    ]  # fmt: skip
    return table(["item", "authors", "this run"], rows)


def bound_md(cfg: LotteryConfig) -> str:
    return (
        "The **authors' bound** follows their code: the prior of each prunable weight is "
        "s delta_0 + (1 - s) N(theta0_i, sigma_P,i^2) with the per-coordinate variance "
        "sigma_P,i^2 = sigma_i^2 + Delta_i^2, which gives KL 0.5 log(1 + Delta_i^2 / sigma_i^2) "
        "per kept weight, plus the mask's description length d H_b(s) and the Gaussian KL of "
        "the never-pruned parameters; B = (KL + log(2 sqrt(m) / delta)) / m and the bound is "
        "min(r + B + sqrt(B (B + 2r)), r + sqrt(B / 2)) with delta = "
        f"{cfg.delta:g}. The per-coordinate prior variance is chosen after seeing the trained "
        "weights, and r is a Monte-Carlo estimate, so **this is not a certificate**.\n\n"
        "The **certified bound** uses the same posterior with one prior variance lambda from a "
        "fixed grid of 64 values (log-spaced over [1e-8, 1]) and the sparsity of the ticket's "
        f"level from the run's {cfg.levels + 1} level sparsities: a union bound over the "
        f"64 x {cfg.levels + 1} priors; the kl-inverse (Maurer) form; and r replaced by its "
        "Langford-Caruana upper limit kl_inverse(r_hat, log(2 / delta') / draws). It holds with "
        f"probability >= 1 - {cfg.delta:g} - {cfg.delta:g}. Level 0 (density 1) is the ordinary "
        "Gaussian PAC-Bayes bound of the dense network (no mask term). Caveats: the input "
        "standardization constants come from the training images (the customary MNIST / "
        "Fashion-MNIST constants; digits: this training split), and a batch-norm network's "
        "running statistics are fitted on them too; strictly, a certificate needs both fixed "
        "independently of the sample, and no KL term pays for them."
    )


def report(paths: RunPaths) -> None:
    cfg = read_config(paths, LotteryConfig)
    analysis = analyze(MetricsLog(paths.metrics).read(), cfg)
    levels = analysis["levels"]
    figures(paths, cfg, levels)
    c = analysis["claims"]
    corr = (f"Spearman correlation over every ticket: KL vs distance "
            f"{sig(c['kl_distance_spearman'])}, KL vs top eigenvalue "
            f"{sig(c['kl_eigenvalue_spearman'])}.")  # fmt: skip
    diverged = "".join(
        f"\n\nDiverged: the {s} chain (noise {n:g}, seed {sd}) at level {lv}, step {st} (a "
        "non-finite loss); its later levels are missing."
        for s, n, sd, lv, st in analysis["diverged"]
    )
    sections = [
        ("Claims", PAPER_QUOTES + f" Each verdict compares seed means level by level over the "
         f"pruned levels and holds when the claimed direction holds at >= {SHARE:.0%} of them "
         "and on average.\n\n" + claims_table(lottery_claims(cfg, analysis)) + diverged),
        ("Accuracy against density", figure_md(paths, "accuracy", "IMP tickets per setting; "
         "dashed: the small-lr masks from a random re-initialization")),
        ("Flatness against density", figure_md(paths, "flatness", "after training, on "
         f"{cfg.measure_train} training examples; restricted to the surviving weights") +
         f"\n\nContext, not a target: {PYHESSIAN}."),
        ("Distance from initialization", figure_md(paths, "distance", "masked L2 distance "
         "relative to the masked initial norm")),
        ("Label noise", figure_md(paths, "label_noise", "final and early-stopped (best test) "
         "accuracy of tickets trained on noisy labels")),
        ("PAC-Bayes bound", bound_md(cfg) + "\n\n" + figure_md(paths, "bound", "KL parts, "
         "bounds and the KL-distance relation") + "\n\n" + corr),
        ("Pruning-criterion ablation", figure_md(paths, "ablation", "train accuracy right "
         "after pruning, after rewinding, after retraining")),
        ("Per level", "\n\n".join(t for t in (level_table(cfg, levels, s) for s in cfg.settings)
                                  if t)),
        ("Protocol differences from the authors", protocol_md(cfg)),
        ("Config", config_block(paths)),
    ]  # fmt: skip
    write_report(paths, "Lottery tickets, flatness and a spike-and-slab PAC-Bayes bound",
                 sections)  # fmt: skip


def claims(paths: RunPaths) -> list[Claim]:
    cfg = read_config(paths, LotteryConfig)
    return lottery_claims(cfg, analyze(MetricsLog(paths.metrics).read(), cfg))
