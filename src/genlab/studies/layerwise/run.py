"""The layerwise study's run: every (mode, seed) training measured by one callback.

Each training is its own run folder under ``trainings/MODE-sSEED/`` (its stages: ``train``,
or ``block0`` .. ``blockL-1`` for the sequential mode, then ``probe``), so it resumes where it
stopped and can run in another process (``parallel``: local, process pool or Ray). When a
training finishes, its records are copied into this run's metrics inside a stage of the same
name, which is what the analysis and the report read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genlab.data import Dataset, load_data
from genlab.losses import cross_entropy
from genlab.measures import cka_from_grams, gram, normalized_gram, normalized_grams, trace_products
from genlab.models import BLOCK_MODELS, AuxHead, BlockNet, block_shapes
from genlab.runs import MetricsLog, Run, RunPaths
from genlab.studies.base import run_subruns
from genlab.studies.layerwise.config import LOCAL_LOSS, LayerwiseConfig
from genlab.train import (
    Callback,
    EndlessSampler,
    LayerwiseStepper,
    SupervisedStepper,
    TrainLoop,
    evaluate,
    fit_linear_probe,
    measurement_steps,
    train_stage,
)

TRAININGS = "trainings"


def training_name(mode: str, seed: int) -> str:
    return f"{mode}-s{seed}"


# --- measurement ---------------------------------------------------------------------------


def measurement_batches(cfg: LayerwiseConfig, ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (B, m, ...), y (B, m)): ``hsic_batches`` fixed test mini-batches of m samples from
    one seeded shuffle of the test split (the same for every mode and seed)."""
    b, m = cfg.hsic_batches, cfg.hsic_batch_size  # b m <= n_test: checked by validate
    order = torch.randperm(ds.n_test, generator=torch.Generator().manual_seed(0))[: b * m]
    return (
        ds.x_test[order].reshape(b, m, *ds.input_shape),
        ds.y_test[order].reshape(b, m),
    )


def layer_outputs(model: BlockNet, x: torch.Tensor) -> list[torch.Tensor]:
    """[Z_1, ..., Z_L, logits] of x (B, m, ...) in eval mode, each (B, m, ...)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flat = x.flatten(0, 1)
        outs = model.block_outputs(flat)
        outs.append(model.head(outs[-1]))
    model.train(was_training)
    return [z.reshape(*x.shape[:2], *z.shape[1:]) for z in outs]


class InfoPlaneMeter:
    """The measurement callback: for every layer (each block's output, then the logits),
    nHSIC(X; Z) and nHSIC(Y; Z) averaged over the fixed test mini-batches, the same pairs by
    CKA (linear, and Gaussian with the median bandwidth), test loss and accuracy (on the first
    ``test_eval_size`` test samples, on all of them at the loop's last step)."""

    def __init__(self, run: Run, cfg: LayerwiseConfig, ds: Dataset, context: dict):
        self.run, self.cfg, self.ds, self.context = run, cfg, ds, context
        self.x, self.y = measurement_batches(cfg, ds)
        self.r_x = normalized_grams(self.x, cfg.sigma)
        self.r_y = torch.stack(
            [normalized_gram(yb, label_kernel=True, num_classes=ds.num_classes) for yb in self.y]
        )
        onehot = nn.functional.one_hot(self.y, ds.num_classes).double()
        # CKA's fixed sides: the Grams of X and of the one-hot labels, per batch and kernel
        self.fixed = {
            (side, kernel): [gram(a, kernel) for a in batches]
            for side, batches in (("x", self.x), ("y", onehot))
            for kernel in ("linear", "gaussian")
        }

    def __call__(self, loop: TrainLoop) -> None:
        step = loop.step
        model = loop.model
        for layer, z in enumerate(layer_outputs(model, self.x)):
            r_z = normalized_grams(z, self.cfg.sigma)
            values = {
                "nhsic_x": float(trace_products(self.r_x, r_z).mean()),
                "nhsic_y": float(trace_products(self.r_y, r_z).mean()),
            }
            for kernel, tag in (("linear", "lin"), ("gaussian", "rbf")):
                g_z = [gram(zb, kernel) for zb in z]
                for side in ("x", "y"):
                    fixed = self.fixed[side, kernel]
                    values[f"cka_{tag}_{side}"] = _mean(map(cka_from_grams, fixed, g_z))
            self.run.log(step, "plane", **self.context, layer=layer, **values)
        # Full test split at the end of a loop; before, its first ``test_eval_size`` samples
        # (the test pass would otherwise be most of the measurement's cost).
        n = self.ds.n_test if loop.step == loop.total_steps else self.cfg.test_eval_size
        test = evaluate(model, self.ds.x_test[:n], self.ds.y_test[:n], cross_entropy)
        self.run.log(step, "test", **self.context, **test, n=min(n, self.ds.n_test),
                     objective=loop.last_loss)  # fmt: skip
        loop.last_metrics = {"test_acc": test["acc"]}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- one training --------------------------------------------------------------------------


@dataclass
class TrainingTask:
    cfg: LayerwiseConfig
    mode: str
    seed: int
    root: str
    quiet: bool = True


def step_schedule(optimizer, total: int, drops: tuple[float, ...], factor: float):
    """The learning rate times ``factor`` once per fraction in ``drops`` of ``total`` steps
    passed."""
    marks = [math.ceil(f * total) for f in drops]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: factor ** sum(t >= mark for mark in marks)
    )


def aux_heads(cfg: LayerwiseConfig, model: BlockNet, ds: Dataset, local_loss: str):
    out = ds.num_classes if local_loss == "ce" else cfg.proj_dim
    shapes = block_shapes(model, ds.input_shape)
    return nn.ModuleList([AuxHead(s, out, cfg.max_aux_features) for s in shapes])


def build(cfg: LayerwiseConfig, ds: Dataset, seed: int, local_loss: str):
    torch.manual_seed(seed)
    model = BLOCK_MODELS[cfg.model](ds.input_shape, ds.num_classes, cfg.width)
    return model, aux_heads(cfg, model, ds, local_loss)


def _optimizer(cfg: LayerwiseConfig, params, total: int):
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, step_schedule(opt, total, cfg.lr_drops, cfg.lr_drop)


def train_one(task: TrainingTask, extra_callbacks: list | None = None) -> list[dict]:
    """Train, measure and probe one (mode, seed) in its own run folder; its records."""
    cfg, mode, seed = task.cfg, task.mode, task.seed
    run = Run(RunPaths(Path(task.root)), cfg, resume=True, quiet=task.quiet,
              extra_callbacks=list(extra_callbacks or []))  # fmt: skip
    ds = load_data(cfg.data)
    local_loss = LOCAL_LOSS.get(mode, "ce")
    model, heads = build(cfg, ds, seed, local_loss)
    steps_per_epoch = ds.n_train // min(cfg.batch_size, ds.n_train)
    context = {"mode": mode, "seed": seed}
    label = training_name(mode, seed)
    if mode == "layerwise-sequential":
        per_block = cfg.sequential_epochs * steps_per_epoch
        last = len(model.blocks) - 1
        for k in range(len(model.blocks)):
            params = [*model.blocks[k].parameters(), *heads[k].parameters()]
            if k == last:
                params += list(model.head.parameters())
            opt, sched = _optimizer(cfg, params, per_block)
            sampler = EndlessSampler(ds.x_train, ds.y_train, cfg.batch_size, seed=seed * 1000 + k)
            stepper = LayerwiseStepper(model, heads, opt, sampler, local_loss, ds.num_classes,
                                       sched, trained=k, temperature=cfg.temperature,
                                       input_weight=cfg.input_info_weight, sigma=cfg.sigma)  # fmt: skip
            meter = InfoPlaneMeter(run, cfg, ds, {**context, "block": k})
            # Steps count on across blocks (block k: k per_block .. (k + 1) per_block), so a
            # record's step and its checkpoint's agree and a resume keeps exactly the records
            # logged up to the checkpoint.
            start = k * per_block
            steps = [start + s for s in measurement_steps(per_block, log_points=cfg.measure_points)]
            loop = TrainLoop(stepper, start + per_block, [Callback(meter, steps)], step=start)
            train_stage(run, f"block{k}", loop, cfg.checkpoint_every, f"{label} block {k}")
    else:
        total = cfg.epochs * steps_per_epoch
        sampler = EndlessSampler(ds.x_train, ds.y_train, cfg.batch_size, seed=seed)
        if mode == "e2e":
            opt, sched = _optimizer(cfg, model.parameters(), total)
            stepper = SupervisedStepper(model, opt, sampler, cross_entropy, sched)
        else:
            opt, sched = _optimizer(cfg, [*model.parameters(), *heads.parameters()], total)
            stepper = LayerwiseStepper(model, heads, opt, sampler, local_loss, ds.num_classes,
                                       sched, temperature=cfg.temperature,
                                       input_weight=cfg.input_info_weight, sigma=cfg.sigma)  # fmt: skip
        meter = InfoPlaneMeter(run, cfg, ds, context)
        steps = measurement_steps(total, log_points=cfg.measure_points)
        loop = TrainLoop(stepper, total, [Callback(meter, steps)])
        train_stage(run, "train", loop, cfg.checkpoint_every, label)
    if not run.stage_done("probe"):
        with run.stage("probe"):
            for layer, acc in enumerate(probe_accuracies(cfg, model, ds)):
                run.log(0, "probe", **context, layer=layer, acc=acc)
    return [r for r in MetricsLog(run.paths.metrics).read()]


@torch.no_grad()
def pooled_features(model: BlockNet, x: torch.Tensor, max_features: int, batch: int = 1000):
    """Every block's output of x, average-pooled as an auxiliary head does: a list over
    blocks of (N, <= max_features) tensors."""
    model.eval()
    chunks: list[list[torch.Tensor]] = []
    for i in range(0, len(x), batch):
        outs = model.block_outputs(x[i : i + batch])
        chunks.append([AuxHead(tuple(z.shape[1:]), 1, max_features).pooled(z) for z in outs])
    return [torch.cat(parts) for parts in zip(*chunks)]


def probe_accuracies(cfg: LayerwiseConfig, model: BlockNet, ds: Dataset) -> list[float]:
    """Test accuracy of a linear classifier fitted on each frozen block's pooled output."""
    n = min(cfg.probe_train, ds.n_train)
    train = pooled_features(model, ds.x_train[:n], cfg.max_aux_features)
    test = pooled_features(model, ds.x_test, cfg.max_aux_features)
    accs = []
    for f_train, f_test in zip(train, test):
        mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)  # standardized features
        torch.manual_seed(0)
        probe = nn.Linear(f_train.shape[1], ds.num_classes)
        probe = fit_linear_probe(probe, (f_train - mean) / std, ds.y_train[:n],
                                 cfg.probe_steps, cfg.probe_lr)  # fmt: skip
        with torch.no_grad():
            pred = probe((f_test - mean) / std).argmax(1)
        accs.append(int((pred == ds.y_test).sum()) / ds.n_test)
    return accs


# --- the study's run -----------------------------------------------------------------------


def run(cfg: LayerwiseConfig, run: Run) -> dict:
    tasks = [
        TrainingTask(cfg, mode, seed, str(run.paths.root / TRAININGS / training_name(mode, seed)),
                     quiet=run.quiet)
        for mode in cfg.modes
        for seed in cfg.seeds
    ]  # fmt: skip
    run_subruns(run, tasks, lambda t: training_name(t.mode, t.seed), train_one, cfg.parallel)
    from genlab.studies.layerwise.analysis import analyze, key_numbers

    return key_numbers(analyze(MetricsLog(run.paths.metrics).read(), cfg))
