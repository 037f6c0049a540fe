"""The layerwise report: information planes, input information against depth, linear probes,
the kernel ablation, the accuracy table and the claims, from the run folder alone."""

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
from genlab.studies.layerwise.analysis import REFERENCE, analyze, early_layers
from genlab.studies.layerwise.config import LayerwiseConfig

PAPER = "Sakamoto & Sato, TMLR 2024 (arXiv 2402.09050v2), abstract"
PAPER_QUOTES = (
    f'The paper ({PAPER}): "E2E training has an advantage in propagating input '
    'information"; its normalized HSIC analysis reveals "the E2E training ability to exhibit '
    "different information dynamics across layers, in addition to efficient information "
    'propagation", and "this layer-role differentiation leads to the final representation '
    'following the information bottleneck principle".'
)
NOKLAND = (
    "Nøkland & Eidnes 2019 (arXiv 1901.06656), VGG8b on CIFAR-10: test error 5.99% with global "
    "backprop vs 8.40% with local cross-entropy (figures as cited in genlab issue 11; CIFAR-10 "
    "is not available offline, so not comparable with this run)"
)


AXIS = {
    "nhsic_x": "nHSIC(X; Z)", "nhsic_y": "nHSIC(Y; Z)",
    "cka_rbf_x": "CKA(X; Z), Gaussian", "cka_rbf_y": "CKA(Y; Z), Gaussian",
    "cka_lin_x": "CKA(X; Z), linear", "cka_lin_y": "CKA(Y; Z), linear",
}  # fmt: skip


def _label(mode: str) -> str:
    return {"e2e": "E2E", "layerwise": "layer-wise (CE)", "layerwise-sim": "layer-wise (sim)",
            "layerwise-supcon": "layer-wise (supcon)",
            "layerwise-sequential": "layer-wise sequential (CE)"}.get(mode, mode)  # fmt: skip


def _layer_names(n_layers: int) -> list[str]:
    return [f"Z{i + 1}" for i in range(n_layers - 1)] + ["logits"]


def _planes_figure(paths, plt, analysis, cfg, x_key, y_key, name, title, modes=None):
    planes = analysis["planes"]
    modes = [m for m in (modes or cfg.modes) if m in planes]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.4 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        seed = sorted(planes[mode])[0]
        layers = planes[mode][seed]
        colors = plt.cm.tab10(np.arange(len(layers)) % 10)
        names = _layer_names(len(layers))
        for layer, series in sorted(layers.items()):
            steps = np.array(series["step"], dtype=float)
            ax.plot(
                series[x_key], series[y_key], "-", color=colors[layer], lw=0.8, label=names[layer]
            )
            ax.scatter(series[x_key], series[y_key], c=np.log10(steps + 1), cmap="viridis", s=12,
                       zorder=3)  # fmt: skip
        ax.set_title(f"{_label(mode)} (seed {seed})")
        ax.set_xlabel(AXIS[x_key])
        ax.set_ylabel(AXIS[y_key])
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, paths.figure(name))


def report(paths: RunPaths) -> None:
    plt = pyplot()
    cfg = read_config(paths, LayerwiseConfig)
    records = MetricsLog(paths.metrics).read()
    analysis = analyze(records, cfg)
    final = analysis["final"]
    num_classes = 10  # digits, MNIST and Fashion-MNIST alike
    _planes_figure(
        paths, plt, analysis, cfg, "nhsic_x", "nhsic_y", "planes",
        f"nHSIC information planes, dots coloured by log10 step (dark: early). nHSIC is bounded "
        f"by rank, not 1:\nnHSIC(Y; Z) <= {num_classes} classes, nHSIC(X; Z) <= m = "
        f"{cfg.hsic_batch_size} samples per batch",
    )  # fmt: skip
    ablation = [m for m in ("e2e", REFERENCE) if m in analysis["planes"]]
    _planes_figure(paths, plt, analysis, cfg, "cka_rbf_x", "cka_rbf_y", "planes_cka_rbf",
                   "Kernel ablation: CKA, Gaussian kernel (median bandwidth)", ablation)  # fmt: skip
    _planes_figure(paths, plt, analysis, cfg, "cka_lin_x", "cka_lin_y", "planes_cka_linear",
                   "Kernel ablation: linear CKA", ablation)  # fmt: skip

    # input information and probes against depth
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode in cfg.modes:
        if mode in final:
            x = final[mode]["nhsic_x"]
            depth = np.arange(1, x.shape[1] + 1)
            axes[0].errorbar(depth, x.mean(0), yerr=x.std(0, ddof=1) if len(x) > 1 else None,
                             marker="o", capsize=3, label=_label(mode))  # fmt: skip
        if mode in analysis["probe_acc"]:
            p = analysis["probe_acc"][mode]
            depth = np.arange(1, p.shape[1] + 1)
            axes[1].errorbar(depth, p.mean(0), yerr=p.std(0, ddof=1) if len(p) > 1 else None,
                             marker="o", capsize=3, label=_label(mode))  # fmt: skip
    axes[0].set_title("input information at the end: nHSIC(X; Z_l) (last point: logits)")
    axes[0].set_xlabel("layer")
    axes[1].set_title("linear probe test accuracy per block")
    axes[1].set_xlabel("block")
    for ax in axes:
        ax.legend(fontsize=7)
    save_figure(fig, paths.figure("depth"))

    sections = [
        ("What was run", what_was_run(cfg)),
        ("Claims", claims_md(cfg, analysis)),
        ("Accuracy", accuracy_md(cfg, analysis)),
        (
            "Information planes",
            figure_md(
                paths, "planes", "nHSIC(X; Z) vs nHSIC(Y; Z) per layer over training, first seed."
            ),
        ),  # fmt: skip
        (
            "Input information and layer separability",
            figure_md(
                paths,
                "depth",
                "Final nHSIC(X; Z_l) per layer and linear-probe accuracy per block "
                "(mean and std over seeds).",
            )
            + "\n\n"
            + final_md(cfg, analysis),
        ),  # fmt: skip
        (
            "Kernel ablation",
            figure_md(paths, "planes_cka_rbf", "Gaussian CKA planes.")
            + "\n\n"
            + figure_md(paths, "planes_cka_linear", "Linear CKA planes.")
            + "\n\n"
            + ablation_md(analysis),
        ),  # fmt: skip
        ("Protocol differences from the paper", protocol_md(cfg)),
        ("Config", config_block(paths)),
    ]
    write_report(paths, f"layerwise: {cfg.model} on {cfg.data.name}", sections)


def what_was_run(cfg: LayerwiseConfig) -> str:
    return (
        f"`{cfg.model}` on `{cfg.data.name}`, modes {', '.join(_label(m) for m in cfg.modes)}, "
        f"seeds {list(cfg.seeds)}. Adam, lr {cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} "
        f"epochs (sequential: {cfg.sequential_epochs} per block), learning rate x{cfg.lr_drop:g} "
        f"at {', '.join(f'{f:.0%}' for f in cfg.lr_drops)} of training. nHSIC (sigma "
        f"{cfg.sigma:g}) and CKA on {cfg.hsic_batches} fixed test mini-batches of "
        f"{cfg.hsic_batch_size}, at {cfg.measure_points} log-spaced steps (per block in the "
        "sequential mode)."
    )


def _pm(v: np.ndarray, f=sig) -> str:
    return f(float(v.mean())) + (f" ± {f(float(v.std(ddof=1)))}" if len(v) > 1 else "")


def accuracy_md(cfg: LayerwiseConfig, analysis: dict) -> str:
    rows = []
    for mode in cfg.modes:
        accs = np.array(list(analysis["test_acc"].get(mode, {}).values()))
        if len(accs):
            rows.append([_label(mode), _pm(accs, pct), len(accs)])
    return table(["mode", "test accuracy (mean ± std over seeds)", "seeds"], rows) + (
        f"\n\nContext, not a comparison: {NOKLAND}."
    )


def final_md(cfg: LayerwiseConfig, analysis: dict) -> str:
    rows = []
    for mode in cfg.modes:
        f = analysis["final"].get(mode)
        if f is None:
            continue
        names = _layer_names(f["nhsic_x"].shape[1])
        for layer, name in enumerate(names):
            probe = analysis["probe_acc"].get(mode)
            p = (
                pct(float(probe[:, layer].mean()))
                if probe is not None and layer < probe.shape[1]
                else "n/a"
            )
            rows.append([_label(mode), name, _pm(f["nhsic_x"][:, layer]),
                         _pm(f["nhsic_y"][:, layer]), p])  # fmt: skip
    return table(["mode", "layer", "nHSIC(X; Z)", "nHSIC(Y; Z)", "probe acc"], rows)


def ablation_md(analysis: dict) -> str:
    """Whether the E2E vs layer-wise early-layer ordering survives another estimator."""
    final = analysis["final"]
    if "e2e" not in final or REFERENCE not in final:
        return "E2E and layer-wise (CE) were not both run."
    rows = []
    for key, name in (("nhsic_x", "nHSIC"), ("cka_rbf_x", "CKA, Gaussian"),
                      ("cka_lin_x", "CKA, linear")):  # fmt: skip
        e, w = final["e2e"][key][:, :-1], final[REFERENCE][key][:, :-1]
        k = early_layers(e.shape[1])
        em, wm = float(e[:, :k].mean()), float(w[:, :k].mean())
        rows.append([name, sig(em), sig(wm), "E2E" if em > wm else "layer-wise"])
    return table(["estimator", "E2E early blocks", "layer-wise early blocks",
                  "keeps more input information"], rows)  # fmt: skip


def layerwise_claims(cfg: LayerwiseConfig, analysis: dict) -> list[Claim]:
    checks = analysis["claims"]
    if not checks:
        return []

    def verdict(c):
        return "held" if c["held"] else "not held"

    def seeds(v):
        return ", ".join(sig(x) for x in v)

    c1, c2, c3, c4 = (checks[k] for k in ("input_information", "move_alike", "bottleneck",
                                          "accuracy"))  # fmt: skip
    return [
        Claim("E2E keeps more input information in early layers",
              "\"E2E training has an advantage in propagating input information\"",
              f"mean nHSIC(X; Z) over the first {c1['early']} blocks, per seed: E2E "
              f"{seeds(c1['e2e'])} vs layer-wise {seeds(c1['layerwise'])}", verdict(c1)),
        Claim("layer-wise layers move alike (no role differentiation)",
              "E2E shows \"different information dynamics across layers\"",
              f"std over blocks of the final nHSIC(X; Z), per seed: layer-wise "
              f"{seeds(c2['layerwise'])} vs E2E {seeds(c2['e2e'])}", verdict(c2)),
        Claim("E2E's last block: less input information than earlier blocks, the most label "
              "information", "\"the final representation following the information bottleneck "
              "principle\"",
              f"seed mean: last block nHSIC(X; Z) {sig(c3['last_x'])} vs highest earlier "
              f"{sig(c3['max_early_x'])}; nHSIC(Y; Z) {sig(c3['last_y'])} vs highest "
              f"{sig(c3['max_y'])}", verdict(c3)),
        Claim("E2E reaches a higher test accuracy than layer-wise training",
              "E2E \"demonstrates a superior performance\"",
              f"E2E minus layer-wise (CE), per seed: {_points(c4['diff'])} points",
              verdict(c4)),
    ]  # fmt: skip


def _points(diffs) -> str:
    """Accuracy differences as signed percentage points, 2 decimals."""
    return ", ".join(f"{100 * d:+.2f}" for d in diffs)


def by_mode_md(analysis: dict) -> str:
    """The same checks against every layer-wise mode, not only the reference."""
    rows = []
    for mode, c in analysis.get("claims_by_mode", {}).items():
        if not c:
            continue
        early = c["input_information"]
        rows.append([
            _label(mode),
            f"{sig(np.mean(early['e2e']))} vs {sig(np.mean(early['layerwise']))}",
            "held" if early["held"] else "not held",
            "held" if c["move_alike"]["held"] else "not held",
            f"{_points(c['accuracy']['diff'])}",
            "held" if c["accuracy"]["held"] else "not held",
        ])  # fmt: skip
    if not rows:
        return ""
    intro = (
        "E2E against every layer-wise mode (the same checks; seed means in the 2nd column). "
        "The sequential mode trains each block for `sequential_epochs`, not `epochs`, and "
        "its classifier only with the last block: before that its logits and test accuracy "
        "come from an untrained classifier."
    )
    headers = ["layer-wise mode", "early-block nHSIC(X; Z), E2E vs mode",
               "E2E keeps more input information", "mode's layers move alike",
               "E2E minus mode, test acc (points)", "E2E more accurate"]  # fmt: skip
    return intro + "\n\n" + table(headers, rows)


def claims_md(cfg: LayerwiseConfig, analysis: dict) -> str:
    intro = PAPER_QUOTES + (
        " Each verdict is computed from this run (layer-wise = the simultaneous mode with "
        "cross-entropy local losses, seeds paired; a claim holds only when it holds for every "
        "seed, except the bottleneck shape, checked on the seed mean)."
    )
    parts = [intro, claims_table(layerwise_claims(cfg, analysis)), by_mode_md(analysis)]
    return "\n\n".join(p for p in parts if p)


def protocol_md(cfg: LayerwiseConfig) -> str:
    rows = [
        ["data", "CIFAR-10 (and MNIST-family for LeNet5)",
         f"{cfg.data.name} (CIFAR-10 is not available offline)"],
        ["model widths", "VGG8b / ResNet-18 at full width",
         "LeNet5 at its original size" if cfg.model == "lenet5" else
         f"{cfg.model}, width setting {cfg.width} (narrowed for 2 CPU cores)"],
        ["schedule", "Adam lr 5e-4, batch 128, learning-rate drops, hundreds of epochs",
         f"Adam lr {cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epochs"],
        ["nHSIC", "sigma 5, batches of 100, averaged over the test set",
         f"sigma {cfg.sigma:g}, {cfg.hsic_batches} batches of {cfg.hsic_batch_size}"],
        ["data augmentation", "as in the authors' code", "none"],
    ]  # fmt: skip
    return table(["item", "paper", "this run"], rows)


def claims(paths: RunPaths) -> list[Claim]:
    cfg = read_config(paths, LayerwiseConfig)
    return layerwise_claims(cfg, analyze(MetricsLog(paths.metrics).read(), cfg))
