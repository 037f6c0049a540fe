"""The attention study's parts (fig3, grid, delayed, transformer, real), each a stage of the run."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from genlab.data.tokens import make_token_data, snr
from genlab.executor import num_threads
from genlab.models.token_attention import (
    TrainHistory,
    train_token_attention,
    train_transformer,
)
from genlab.runs import (
    MetricsLog,
    Run,
    RunPaths,
    atomic_write_json,
    read_json,
    series,
)
from genlab.studies.attention.analysis import (
    delayed_analysis,
    grid_numbers,
    longrun_numbers,
    noisy_sample_story,
    regime_of,
)
from genlab.studies.attention.config import (
    PARTS,
    AttentionConfig,
    DelayedConfig,
    RegimeConfig,
    TaskConfig,
)
from genlab.studies.attention.grid import (
    REGIMES,
    GridResult,
    fit_snr_boundary,
    power_law_over_seeds,
    run_grid,
)
from genlab.studies.attention.real import (
    run_real,
)
from genlab.train import measurement_steps, progress_bar

# --- shared helpers ------------------------------------------------------------------------


def make_data(task: TaskConfig, d: int, mu_norm: float, n_test: int | None = None):
    return make_token_data(
        n=task.n,
        n_test=task.n_test if n_test is None else n_test,
        T=task.T,
        d=d,
        mu_norm=mu_norm,
        rho=task.rho,
        eta=task.eta,
        sigma=task.sigma,
        seed=task.seed,
    )


def measure_setting(
    task: TaskConfig, rule: RegimeConfig, d: int, mu_norm: float, steps: int, lr: float
) -> dict:
    """Train one (d, ||mu||) setting for ``steps`` and label its regime: the study's labelling
    path, also used by fig3 (final numbers plus ``regime``)."""
    data = make_data(task, d, mu_norm)
    hist = train_token_attention(
        data, steps=steps, lr=lr, w_init=task.w_init, log_steps=[], track=[]
    )
    return setting_summary(hist, task, d, mu_norm, rule)


def setting_summary(
    hist: TrainHistory, task: TaskConfig, d: int, mu_norm: float, rule: RegimeConfig | None
) -> dict:
    """Final numbers of a trained setting, and its regime by ``rule`` (None: no label, for a
    model the rule's reference losses do not describe)."""
    fin = hist.final()
    out = {"d": d, "mu_norm": mu_norm, "n_snr2": task.n * snr(mu_norm, d, task.sigma) ** 2}
    out.update(fin)
    if rule is not None:
        out["regime"] = regime_of(fin, mu_norm, task, rule)
    return out


def _hist_record(h: TrainHistory, i: int) -> dict:
    return {
        "train_loss": float(h.train_loss[i]),
        "test_loss": float(h.test_loss[i]),
        "train_acc": float(h.train_acc[i]),
        "clean_train_acc": float(h.clean_train_acc[i]),
        "noisy_train_acc": float(h.noisy_train_acc[i]),
        "test_acc": float(h.test_acc[i]),
        "attn_clean": h.attn_clean[i].tolist(),
        "attn_noisy": h.attn_noisy[i].tolist(),
        "attn_test": h.attn_test[i].tolist(),
    }


def _tracked(data) -> tuple[int, int | None]:
    clean = int(torch.nonzero(~data.noisy_mask).flatten()[0])
    noisy = int(data.noisy_idx[0]) if data.noisy_idx.numel() else None
    return clean, noisy


# --- part: fig3 ----------------------------------------------------------------------------


def run_fig3(cfg: AttentionConfig, run: Run) -> dict:
    f3, task = cfg.fig3, cfg.task
    settings = []
    with progress_bar(len(f3.labels), "attention fig3", run.quiet) as update:
        for k, (label, d, mu, exp) in enumerate(
            zip(f3.labels, f3.d_values, f3.mu_values, f3.expected)
        ):
            data = make_data(task, d, mu)
            clean_i, noisy_i = _tracked(data)
            track = [clean_i] + ([noisy_i] if noisy_i is not None else [])
            hist = train_token_attention(
                data, steps=f3.steps, lr=cfg.optim.lr, w_init=task.w_init,
                log_every=f3.log_every, track=track,
            )  # fmt: skip
            for i, step in enumerate(hist.steps.tolist()):
                rec = _hist_record(hist, i)
                rec["clean_sample"] = hist.tracked_attn[i, 0].tolist()
                if noisy_i is not None:
                    rec["noisy_sample"] = hist.tracked_attn[i, 1].tolist()
                run.log(step, f"fig3/{label}", **rec)
            summ = setting_summary(hist, task, d, mu, cfg.regime)
            summ.update(label=label, expected=exp, clean_idx=clean_i, noisy_idx=noisy_i)
            summ["noisy_sample"] = noisy_sample_story(hist, noisy_i is not None)
            settings.append(summ)
            update(k + 1, {"regime": 0.0})
    atomic_write_json(run.paths.artifact("fig3.json"), {"steps": f3.steps, "settings": settings})
    return {s["label"]: s["regime"] for s in settings}


# --- part: grid ----------------------------------------------------------------------------


def run_grid_part(cfg: AttentionConfig, run: Run) -> dict:
    g, task = cfg.grid, cfg.task
    total = len(g.mu_values) * len(g.d_values) * len(g.n_values) * len(g.seeds)
    with progress_bar(total, "attention grid", run.quiet) as update:

        def progress(done: int, tot: int) -> None:
            run.log(done, "grid/progress", cells_done=done, cells_total=tot)
            update(done, {})

        result = run_grid(
            g.mu_values, g.d_values, n_values=g.n_values, seeds=g.seeds, steps=g.steps,
            lr=cfg.optim.lr, eta=task.eta, n_test=task.n_test, T=task.T, rho=task.rho,
            sigma=task.sigma, w_init=task.w_init, progress=progress, **executor_kwargs(cfg),
        )  # fmt: skip
    rule = cfg.regime
    regimes = result.regimes(fit_threshold=rule.fit_threshold, benign_gap=rule.benign_gap)
    fit = fit_snr_boundary(result.n_snr2, regimes)
    law = power_law_over_seeds(result, regimes)
    out = result.to_dict()
    out["regimes"] = regimes.tolist()
    out["regime_names"] = list(REGIMES)
    out["regime_rule"] = {"fit_threshold": rule.fit_threshold, "benign_gap": rule.benign_gap}
    out["sensitivity"] = {
        str(t): result.regimes(fit_threshold=t, benign_gap=rule.benign_gap).tolist()
        for t in rule.sensitivity
    }
    out["boundary"] = {"C": fit.C, "errors": fit.errors, "n_cells": fit.n_cells}
    out["power_law"] = dataclasses.asdict(law)
    atomic_write_json(run.paths.artifact("grid.json"), out)
    return grid_numbers(out)


def load_grid(paths: RunPaths) -> tuple[GridResult, np.ndarray, dict]:
    raw = read_json(paths.artifact("grid.json"))
    return GridResult.from_dict(raw), np.array(raw["regimes"], dtype=int), raw


def executor_kwargs(cfg: AttentionConfig) -> dict:
    """``run_grid``'s executor arguments from the study's ``parallel`` config."""
    p = cfg.parallel
    return dict(
        executor=p.executor, ray_address=p.ray_address, workers=p.workers, threads=p.threads
    )


# --- part: longrun -------------------------------------------------------------------------


def run_longrun(cfg: AttentionConfig, run: Run) -> None:
    """Each budget is a fresh run of that many GD steps over the long-run cells (the batched
    grid path; a budget's cells equal the grid's cells at that step count)."""
    lc, task, rule = cfg.longrun, cfg.task, cfg.regime
    budgets = []
    with progress_bar(len(lc.budgets), "attention longrun", run.quiet) as update:
        for k, steps in enumerate(lc.budgets):
            result = run_grid(
                lc.mu_values, lc.d_values, n_values=(task.n,), seeds=lc.seeds, steps=steps,
                lr=cfg.optim.lr, eta=task.eta, n_test=task.n_test, T=task.T, rho=task.rho,
                sigma=task.sigma, w_init=task.w_init, **executor_kwargs(cfg),
            )  # fmt: skip
            regimes = result.regimes(fit_threshold=rule.fit_threshold, benign_gap=rule.benign_gap)
            run.log(steps, "longrun/progress", budgets_done=k + 1)
            budgets.append({"steps": steps, **result.to_dict(), "regimes": regimes.tolist()})
            update(k + 1, {})
    atomic_write_json(run.paths.artifact("longrun.json"), {"budgets": budgets})


# --- part: delayed -------------------------------------------------------------------------


def delayed_schedule(steps: int, log_points: int) -> list[int]:
    """Log-spaced points plus every 10th step up to 100 (the rise happens early)."""
    return measurement_steps(steps, log_points=log_points, dense_until=((101, 10),))


def run_delayed(cfg: AttentionConfig, run: Run) -> None:
    dl, task = cfg.delayed, cfg.task
    schedule = delayed_schedule(dl.steps, dl.log_points)
    out = []
    with progress_bar(len(dl.labels), "attention delayed", run.quiet) as update:
        for k, (label, d, mu) in enumerate(zip(dl.labels, dl.d_values, dl.mu_values)):
            data = make_data(task, d, mu)
            hist = train_token_attention(
                data, steps=dl.steps, lr=cfg.optim.lr, w_init=task.w_init,
                log_steps=schedule, track=[],
            )  # fmt: skip
            for i, step in enumerate(hist.steps.tolist()):
                run.log(step, f"delayed/{label}", **_hist_record(hist, i))
            summ = setting_summary(hist, task, d, mu, cfg.regime)
            summ["label"] = label
            out.append(summ)
            update(k + 1, {})
    atomic_write_json(run.paths.artifact("delayed.json"), {"steps": dl.steps, "settings": out})


# --- part: transformer ---------------------------------------------------------------------


def run_transformer_part(cfg: AttentionConfig, run: Run) -> None:
    tc, task = cfg.transformer, cfg.task
    data = make_data(task, tc.d, tc.mu_norm, n_test=tc.n_test)
    clean_i, noisy_i = _tracked(data)
    track = [clean_i] + ([noisy_i] if noisy_i is not None else [])
    # one thread: the ops are tiny, and extra threads only spin (badly so on a busy machine)
    with progress_bar(1, "attention transformer", run.quiet) as update, num_threads(1):
        hist = train_transformer(
            data, steps=tc.steps, lr=tc.lr, skip=tc.skip, log_every=tc.log_every, track=track
        )
        update(1, {})
    for i, step in enumerate(hist.steps.tolist()):
        rec = _hist_record(hist, i)
        rec["clean_sample"] = hist.tracked_attn[i, 0].tolist()
        if noisy_i is not None:
            rec["noisy_sample"] = hist.tracked_attn[i, 1].tolist()
        run.log(step, "transformer", **rec)
    # No regime label: the rule's reference losses assume the token model's fixed linear head,
    # which the transformer does not have (its learned head can beat L_opt).
    summ = setting_summary(hist, task, tc.d, tc.mu_norm, rule=None)
    summ.update(clean_idx=clean_i, noisy_idx=noisy_i, steps=tc.steps)
    atomic_write_json(run.paths.artifact("transformer.json"), summ)


# --- run -----------------------------------------------------------------------------------

ARTIFACTS = {
    "fig3": "fig3.json",
    "grid": "grid.json",
    "longrun": "longrun.json",
    "delayed": "delayed.json",
    "transformer": "transformer.json",
    "real": "real_done.json",
}


def run(cfg: AttentionConfig, run: Run) -> dict:
    results: dict = {}
    for part in PARTS:
        if part not in cfg.parts:
            continue
        if not run.stage_done(part):  # a finished part is skipped on resume
            with run.stage(part):  # its wall time goes to stages/PART.json
                if part == "fig3":
                    run_fig3(cfg, run)
                elif part == "grid":
                    run_grid_part(cfg, run)
                elif part == "longrun":
                    run_longrun(cfg, run)
                elif part == "delayed":
                    run_delayed(cfg, run)
                elif part == "transformer":
                    run_transformer_part(cfg, run)
                elif part == "real":
                    art = run.paths.artifact(ARTIFACTS[part])
                    atomic_write_json(art, {"results": run_real(cfg.real, run)})
        results[part] = part_results(part, run.paths, cfg)
    return results


def part_results(part: str, paths: RunPaths, cfg: AttentionConfig) -> dict:
    """The key numbers of a finished part, from its files."""
    art = read_json(paths.artifact(ARTIFACTS[part]))
    if part == "fig3":
        return {s["label"]: s["regime"] for s in art["settings"]}
    if part == "grid":
        return grid_numbers(art)
    if part == "longrun":
        return longrun_numbers(art)
    if part == "delayed":
        res = delayed_numbers(paths, cfg.delayed)
        keys = ("fit_step", "peak_step", "recover_step", "delayed")
        return {label: {k: r[k] for k in keys} for label, r in res.items()}
    if part == "transformer":
        return {k: art[k] for k in ("train_acc", "noisy_train_acc", "test_acc", "test_loss")}
    return art.get("results", {})


def delayed_numbers(paths: RunPaths, dcfg: DelayedConfig) -> dict:
    records = MetricsLog(paths.metrics).read()
    meta = read_json(paths.artifact("delayed.json"))
    out = {}
    for s in meta["settings"]:
        ser = series(records, f"delayed/{s['label']}")
        res = delayed_analysis(
            ser["step"], ser["train_acc"], ser["test_loss"], dcfg.min_rise, dcfg.min_fall
        )
        out[s["label"]] = res
    return out
