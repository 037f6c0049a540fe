"""Study ``classify``: supervised training of an MLP or small CNN on any registered dataset,
with optional label noise; records learning curves, memorization of noisy labels and the
weight norm. Other studies reuse its config pieces and its measurement callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genlab.config import (
    DataConfig,
    OptimConfig,
    require_nonnegative,
    require_positive,
    require_unit,
)
from genlab.data import Dataset, check_data_config, load_data
from genlab.errors import ConfigError
from genlab.losses import LOSSES
from genlab.models import build_model, weight_norm
from genlab.report import count, figure_md, pct, pyplot, save_figure, sig, table, write_report
from genlab.runs import (
    MetricsLog,
    Run,
    RunPaths,
    atomic_write_json,
    metric_series,
    read_config,
)
from genlab.studies.base import Study
from genlab.train import (
    Callback,
    EndlessSampler,
    SupervisedStepper,
    TrainLoop,
    evaluate,
    make_optimizer,
    make_scheduler,
    measurement_steps,
    train_in_run,
)


@dataclass
class ModelConfig:
    kind: Literal["mlp", "cnn"] = "mlp"
    depth: int = 2
    """Hidden layers (MLP)."""
    width: int = 128
    """Hidden units (MLP) or base channels (CNN)."""
    init_scale: float = 1.0
    """Every parameter is multiplied by this after the default init."""


@dataclass
class ClassifyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: Literal["ce", "mse_sum"] = "ce"
    """ce: cross-entropy; mse_sum: squared error on one-hot targets, summed over outputs."""
    steps: int = 600
    batch_size: int = 64
    seed: int = 0
    measure_every: int = 50
    """Measure every N steps (0: off)."""
    log_points: int = 0
    """Also measure at this many log-spaced steps."""
    checkpoint_every: int = 200


def validate(cfg: ClassifyConfig) -> None:
    check_data_config(cfg.data)
    require_positive(
        {
            "optim.lr": cfg.optim.lr,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "model.width": cfg.model.width,
            "model.init_scale": cfg.model.init_scale,
            "checkpoint_every": cfg.checkpoint_every,
        }
    )
    require_nonnegative(
        {
            "optim.weight_decay": cfg.optim.weight_decay,
            "model.depth": cfg.model.depth,
            "measure_every": cfg.measure_every,
            "log_points": cfg.log_points,
            "optim.warmup_steps": cfg.optim.warmup_steps,
        }
    )
    require_unit({"optim.momentum": cfg.optim.momentum})
    require_unit({f"optim.betas[{i}]": b for i, b in enumerate(cfg.optim.betas)})
    if cfg.optim.name not in ("sgd", "adamw"):
        raise ConfigError(
            "optim.name", f"classify trains with sgd or adamw, got {cfg.optim.name!r}"
        )


class ClassificationMeter:
    """The measurement callback: train (observed labels), test, and noisy-subset metrics."""

    def __init__(self, run: Run, ds: Dataset, loss_fn):
        self.run, self.ds, self.loss_fn = run, ds, loss_fn

    def __call__(self, loop: TrainLoop) -> None:
        ds, model, step = self.ds, loop.model, loop.step
        train = evaluate(model, ds.x_train, ds.y_train, self.loss_fn)
        test = evaluate(model, ds.x_test, ds.y_test, self.loss_fn)
        self.run.log(step, "train", **train, weight_norm=float(weight_norm(model.parameters())))
        self.run.log(step, "test", **test)
        if len(ds.noisy_idx):
            idx = ds.noisy_idx
            # memorized: predicts the (wrong) training label; clean: predicts the true label.
            mem = evaluate(model, ds.x_train[idx], ds.y_train[idx], self.loss_fn)
            cln = evaluate(model, ds.x_train[idx], ds.clean_y_train[idx], self.loss_fn)
            self.run.log(step, "noisy", acc=mem["acc"], loss=mem["loss"], clean_acc=cln["acc"])
        loop.last_metrics = {"train_acc": train["acc"], "test_acc": test["acc"]}


def run(cfg: ClassifyConfig, run: Run) -> dict:
    ds = load_data(cfg.data, noise_seed=cfg.seed)
    atomic_write_json(run.paths.noisy_idx, {"noisy_idx": ds.noisy_idx.tolist()})
    model = build_model(
        cfg.model.kind,
        ds.input_shape,
        ds.num_classes,
        width=cfg.model.width,
        depth=cfg.model.depth,
        init_scale=cfg.model.init_scale,
        seed=cfg.seed,
    )
    o = cfg.optim
    optimizer = make_optimizer(
        model.parameters(), o.name, o.lr, o.weight_decay, momentum=o.momentum, betas=o.betas
    )
    loss_fn = LOSSES[cfg.loss]
    meter = ClassificationMeter(run, ds, loss_fn)
    stepper = SupervisedStepper(
        model,
        optimizer,
        EndlessSampler(ds.x_train, ds.y_train, cfg.batch_size, seed=cfg.seed),
        loss_fn,
        make_scheduler(optimizer, cfg.optim.schedule, cfg.steps, cfg.optim.warmup_steps),
    )
    loop = TrainLoop(
        stepper,
        total_steps=cfg.steps,
        callbacks=[
            Callback(meter, measurement_steps(cfg.steps, cfg.measure_every, cfg.log_points))
        ],
    )
    with run.stage("train"):
        train_in_run(loop, run, cfg.checkpoint_every, label=f"classify {cfg.data.name}")
    return final_numbers(run.metrics.read())


def final_numbers(records: list[dict]) -> dict:
    last = {}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "split", "stage"):
                last[f"{r['split']}_{k}"] = v
        last["step"] = r["step"]
    return last


def report(paths: RunPaths) -> None:
    plt = pyplot()
    records = MetricsLog(paths.metrics).read()
    cfg = read_config(paths, ClassifyConfig)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for split, style in (("train", "--"), ("test", "-"), ("noisy", ":")):
        s, v = metric_series(records, split, "loss")
        if s:
            axes[0].plot(s, v, style, label=split)
        s, v = metric_series(records, split, "acc")
        if s:
            axes[1].plot(
                s, v, style, label=f"{split}" + (" (memorized)" if split == "noisy" else "")
            )
    s, v = metric_series(records, "train", "weight_norm")
    axes[2].plot(s, v)
    for ax, name in zip(axes, ("loss", "accuracy", "weight norm")):
        ax.set_xlabel("step")
        ax.set_title(name)
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].legend()
    save_figure(fig, paths.figure("curves"))
    final = final_numbers(records)

    def reader(key: str, value) -> str:  # accuracies as percentages, other numbers to 3 digits
        return pct(value) if key.endswith("_acc") else sig(value)

    numbers = {k: v for k, v in final.items() if isinstance(v, (int, float)) and k != "step"}
    rows = [[k, reader(k, v)] for k, v in sorted(numbers.items())]
    rows.append(["step", count(final.get("step"))])
    write_report(
        paths,
        f"classify: {cfg.data.name} / {cfg.model.kind}",
        [
            (
                "What was run",
                f"{count(cfg.steps)} steps of {cfg.optim.name} "
                f"(lr {cfg.optim.lr}, weight decay {cfg.optim.weight_decay}) "
                f"with {cfg.loss} loss on "
                f"`{cfg.data.name}` (label noise {cfg.data.label_noise}, "
                f"{cfg.data.noise_kind}).",
            ),
            ("Key numbers (last measurement)", table(["measure", "value"], rows)),
            (
                "Learning curves",
                figure_md(
                    paths,
                    "curves",
                    "Loss, accuracy (noisy = agreement with "
                    "the corrupted training labels) and weight norm.",
                ),
            ),
            (
                "Published claim",
                "`classify` is a baseline study with no published claim to compare.",
            ),
        ],
    )


PRESETS = {
    # digits, MLP 64-128-128-10, AdamW: about 97% test accuracy in a few seconds.
    "smoke": ClassifyConfig,
    # 30% of digits labels flipped: the network first learns the true rule, then memorizes.
    "noisy": lambda: ClassifyConfig(
        data=DataConfig(label_noise=0.3, noise_kind="flip"), steps=3000, measure_every=100
    ),
    # A LeNet-300-300-style MLP on full MNIST with SGD and a cosine schedule.
    "paper": lambda: ClassifyConfig(
        data=DataConfig(name="mnist"),
        model=ModelConfig(width=300),
        optim=OptimConfig(name="sgd", lr=0.05, schedule="cosine"),
        steps=20000,
        batch_size=128,
        measure_every=1000,
        checkpoint_every=2000,
    ),
}

STUDY = Study(
    name="classify",
    description="Supervised training (MLP/CNN) with label noise: learning curves, "
    "memorization, weight norm.",
    config_cls=ClassifyConfig,
    presets=PRESETS,
    run=run,
    report=report,
    validate=validate,
    key_figure="curves",
)
