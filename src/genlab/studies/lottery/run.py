"""The lottery study's run: IMP chains, each level a stage, measured after training.

A chain (setting, label-noise rate, seed) is its own run folder under ``chains/NAME/`` and runs
through the shared executor. Level L of a chain:

1. ``level{L}-prune`` (L >= 1): mask_L = prune(trained weights of level L-1, mask_{L-1}); logs
   the training accuracy right after pruning and right after rewinding (the ablation);
2. ``level{L}``: rewind to the initialization (or the late-rewinding weights) under mask_L
   and train ``epochs`` epochs with the mask held; test accuracy every ``eval_every_epochs``;
3. ``level{L}-reinit`` (settings with a reinit control, L >= 1): the same mask from a fresh
   random initialization;
4. ``level{L}-measure`` (clean-label chains, or all with ``measure_noisy``): flatness (top Hessian eigenvalue, trace, expected and worst-case
   sharpness), distance from initialization and the PAC-Bayes bounds of the trained ticket.

A level whose training diverges (a non-finite loss) ends its chain with a ``diverged``
record. Masks are written to ``masks/levelL.safetensors`` when made; every stage resumes on its own,
and a finished chain's records are copied into this run in chain order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from genlab.bounds.posterior import GaussianPosterior, fit_posterior, lottery_bound
from genlab.data import Dataset, load_data
from genlab.losses import cross_entropy
from genlab.measures.hessian import hessian_eigenvalues, hessian_trace
from genlab.measures.sharpness import distance_from_init, expected_sharpness, worst_case_sharpness
from genlab.models import MODELS
from genlab.pruning import density, enforce_mask, full_mask, prunable_weights, prune, rewind
from genlab.runs import (
    Diverged,
    MetricsLog,
    Run,
    RunPaths,
    atomic_write_safetensors,
    load_checkpoint,
)
from genlab.studies.base import run_subruns
from genlab.studies.lottery.config import SETTINGS, LotteryConfig, chains
from genlab.train import (
    SAM,
    Callback,
    EndlessSampler,
    SAMStepper,
    SupervisedStepper,
    TrainLoop,
    evaluate,
    train_stage,
)

CHAINS = "chains"


def chain_name(setting: str, noise: float, seed: int) -> str:
    return f"{setting}-noise{noise:g}-s{seed}"


@dataclass
class ChainTask:
    cfg: LotteryConfig
    setting: str
    noise: float
    seed: int
    root: str
    quiet: bool = True


def chain_data(cfg: LotteryConfig, noise: float, seed: int) -> Dataset:
    """The chain's data: uniform label noise at ``noise`` drawn with the chain's seed."""
    data = dataclasses.replace(cfg.data, label_noise=noise, noise_kind="uniform")
    return load_data(data, noise_seed=seed)


def build(cfg: LotteryConfig, ds: Dataset, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[cfg.model](ds.input_shape, ds.num_classes, cfg.width, 0)


class EpochEval:
    """Test accuracy (and loss) at epoch ends; training accuracy on the full training set at
    the loop's last step."""

    def __init__(self, run: Run, ds: Dataset, split: str, context: dict):
        self.run, self.ds, self.split, self.context = run, ds, split, context

    def __call__(self, loop: TrainLoop) -> None:
        test = evaluate(loop.model, self.ds.x_test, self.ds.y_test, cross_entropy)
        extra = {}
        if loop.step == loop.total_steps:
            train = evaluate(loop.model, self.ds.x_train, self.ds.y_train, cross_entropy)
            extra = {"train_acc": train["acc"], "train_loss": train["loss"]}
        self.run.log(loop.step, self.split, **self.context, test_acc=test["acc"],
                     test_loss=test["loss"], **extra)  # fmt: skip
        loop.last_metrics = {"test_acc": test["acc"]}


class RewindSaver:
    """Late rewinding: save the weights at step ``rewind_step`` of the dense training."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, loop: TrainLoop) -> None:
        atomic_write_safetensors(self.path, loop.model.state_dict())


def make_stepper(cfg: LotteryConfig, setting: str, model: nn.Module, mask: dict,
                 sampler: EndlessSampler) -> SupervisedStepper:  # fmt: skip
    spec = SETTINGS[setting]
    lr = cfg.lr_small if spec.lr == "small" else cfg.lr_large
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)  # fmt: skip
    if spec.sam:
        opt = SAM(model.parameters(), sgd, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive)
        enforce_mask(model, mask, opt)
        return SAMStepper(model, opt, sampler, cross_entropy)
    enforce_mask(model, mask, sgd)
    return SupervisedStepper(model, sgd, sampler, cross_entropy)


def train_ticket(run: Run, cfg: LotteryConfig, task: ChainTask, ds: Dataset, model: nn.Module,
                 mask: dict, stage: str, split: str, context: dict,
                 rewind_path: Path | None = None) -> None:  # fmt: skip
    """Train ``model`` (already rewound and masked) as stage ``stage``; its final weights are
    left in ``model`` (restored from the stage's final checkpoint if it finished before)."""
    steps_per_epoch = ds.n_train // min(cfg.batch_size, ds.n_train)
    total = cfg.epochs * steps_per_epoch
    sampler = EndlessSampler(ds.x_train, ds.y_train, cfg.batch_size,
                             seed=task.seed * 1000 + context["level"])  # fmt: skip
    stepper = make_stepper(cfg, task.setting, model, mask, sampler)
    evals = range(0, total + 1, cfg.eval_every_epochs * steps_per_epoch)
    callbacks = [Callback(EpochEval(run, ds, split, context), [*evals, total])]
    if rewind_path is not None:
        callbacks.append(Callback(RewindSaver(rewind_path), [cfg.rewind_step]))
    loop = TrainLoop(stepper, total, callbacks)
    label = f"{chain_name(task.setting, task.noise, task.seed)} {stage}"
    train_stage(run, stage, loop, cfg.checkpoint_every, label)


def weights_of(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {k: params[k].detach() for k in names}


def measure_ticket(cfg: LotteryConfig, ds: Dataset, model: nn.Module, mask: dict,
                   init: dict, sparsity_grid: int, seed: int) -> dict:  # fmt: skip
    """Every measure of a trained ticket, as one record's values."""
    n = min(cfg.measure_train, ds.n_train)
    xs, ys = ds.x_train[:n], ds.y_train[:n]
    batches = [(xs[i : i + 500], ys[i : i + 500]) for i in range(0, n, 500)]
    top = hessian_eigenvalues(model, cross_entropy, batches, k=1, max_iter=cfg.hessian_iters,
                              tol=1e-3, mask=mask, seed=seed)  # fmt: skip
    trace = hessian_trace(model, cross_entropy, batches, probes=cfg.trace_probes, mask=mask,
                          seed=seed)  # fmt: skip
    n_sharp = min(cfg.sharpness_train, ds.n_train)
    sharp = expected_sharpness(model, cfg.sharpness_sigma, (ds.x_train[:n_sharp],
                               ds.y_train[:n_sharp]), cfg.sharpness_samples, mask=mask,
                               seed=seed)  # fmt: skip
    worst = worst_case_sharpness(model, cross_entropy, (xs, ys), cfg.worst_case_rho, mask=mask)
    dist = distance_from_init(model, init, mask, params=[k for k, _ in model.named_parameters()])
    posterior = GaussianPosterior(model, mask, init)
    fit_posterior(posterior, ds.x_train, ds.y_train, cfg.bound_steps, cfg.bound_batch,
                  cfg.bound_lr, cfg.delta, seed=seed)  # fmt: skip
    b = lottery_bound(posterior, ds.x_train, ds.y_train, cfg.bound_draws, cfg.bound_draw_batch,
                      sparsity_grid, delta=cfg.delta, delta_mc=cfg.delta, seed=seed)  # fmt: skip
    return {
        "density": density(mask),
        "top_eigenvalue": float(top[0]),
        "hessian_trace": trace.value,
        "hessian_trace_se": trace.stderr,
        "expected_sharpness": sharp.sharpness,
        "noisy_train_error": sharp.noisy_error,
        "worst_case_sharpness": worst,
        "distance": dist.l2,
        "relative_distance": dist.relative,
        "stochastic_error": b.r_hat,
        "stochastic_error_upper": b.r_upper,
        "kl": b.terms.total,
        "kl_kept": b.terms.kl_kept,
        "kl_mask": b.terms.kl_mask,
        "kl_other": b.terms.kl_other,
        "authors_bound": b.authors,
        "certified_kl": b.certified_terms.total,
        "certified_prior_var": b.prior_var,
        "certified_bound": b.certified,
        "m": b.m,
    }


def accuracy(model: nn.Module, ds: Dataset) -> float:
    return evaluate(model, ds.x_train, ds.y_train, cross_entropy)["acc"]


def run_chain(task: ChainTask, extra_callbacks: list | None = None) -> list[dict]:
    """Every level of one IMP chain in its own run folder; its records."""
    cfg, spec = task.cfg, SETTINGS[task.setting]
    run = Run(RunPaths(Path(task.root)), cfg, resume=True, quiet=task.quiet,
              extra_callbacks=list(extra_callbacks or []))  # fmt: skip
    ds = chain_data(cfg, task.noise, task.seed)
    model = build(cfg, ds, task.seed)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    names = prunable_weights(model, cfg.prune_output)
    ctx = {"setting": task.setting, "noise": task.noise, "seed": task.seed}
    rewind_path = run.paths.artifact("rewind.safetensors")
    mask = full_mask(model, names)
    for level in range(cfg.levels + 1):
        context = {**ctx, "level": level}
        mask_path = run.paths.artifact(f"masks/level{level}.safetensors")
        if level > 0:
            trained = load_checkpoint(run.paths.stage_checkpoints(f"level{level - 1}"))
            model.load_state_dict(trained.tensors)  # level L-1's trained ticket
            g = torch.Generator().manual_seed(task.seed * 1000 + level)
            mask = prune(weights_of(model, names), mask, cfg.prune_fraction, spec.criterion, g)
            atomic_write_safetensors(mask_path, mask)
            if not run.stage_done(f"level{level}-prune"):
                with run.stage(f"level{level}-prune"):
                    after_prune = _masked_accuracy(model, mask, ds)
                    rewind(model, _rewind_state(cfg, init, rewind_path), mask)
                    run.log(0, "prune", **context, density=density(mask),
                            train_acc_pruned=after_prune, train_acc_rewound=accuracy(model, ds))  # fmt: skip
        start = init if level == 0 else _rewind_state(cfg, init, rewind_path)
        rewind(model, start, mask)
        if run.stage_done(f"level{level}-diverged"):
            break
        try:
            train_ticket(run, cfg, task, ds, model, mask, f"level{level}", "ticket", context,
                         rewind_path if level == 0 and cfg.rewind_step > 0 else None)  # fmt: skip
        except Diverged as e:  # a result (a too large learning rate), not a crash: the chain ends
            with run.stage(f"level{level}-diverged"):
                run.log(e.step, "diverged", **context, loss=e.loss)
            break
        if spec.reinit and level > 0 and not run.stage_done(f"level{level}-reinit"):
            control = build(cfg, ds, 10_000 + task.seed)  # a fresh random initialization
            rewind(control, control.state_dict(), mask)
            train_ticket(run, cfg, task, ds, control, mask, f"level{level}-reinit", "reinit",
                         context)  # fmt: skip
        if (task.noise == 0 or cfg.measure_noisy) and not run.stage_done(f"level{level}-measure"):
            with run.stage(f"level{level}-measure"):
                values = measure_ticket(cfg, ds, model, mask, init, cfg.levels + 1,
                                        seed=task.seed)  # fmt: skip
                run.log(0, "measure", **context, **values)
    return MetricsLog(run.paths.metrics).read()


def _rewind_state(cfg: LotteryConfig, init: dict, path: Path) -> dict:
    return init if cfg.rewind_step == 0 else load_file(str(path))


def _masked_accuracy(model: nn.Module, mask: dict, ds: Dataset) -> float:
    """Training accuracy of ``model`` with ``mask`` applied (model restored afterwards)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    rewind(model, saved, mask)
    acc = accuracy(model, ds)
    model.load_state_dict(saved)
    return acc


def run(cfg: LotteryConfig, run: Run) -> dict:
    tasks = [
        ChainTask(cfg, setting, noise, seed,
                  str(run.paths.root / CHAINS / chain_name(setting, noise, seed)), run.quiet)
        for setting, noise, seed in chains(cfg)
    ]  # fmt: skip
    run_subruns(run, tasks, lambda t: chain_name(t.setting, t.noise, t.seed), run_chain,
                cfg.parallel)  # fmt: skip
    from genlab.studies.lottery.analysis import analyze, key_numbers

    return key_numbers(analyze(MetricsLog(run.paths.metrics).read(), cfg))
