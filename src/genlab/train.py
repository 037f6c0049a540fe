"""The shared training loop, read top to bottom in ``TrainLoop.run``.

A loop owns a model, an optimizer, a batch sampler and a loss; callbacks (measurements,
checkpoints, anything a study adds) run after the steps they ask for. Studies add
measurements by adding callbacks, never by copying the loop.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from genlab.errors import CheckpointError, ConfigError
from genlab.runs import Diverged, Run, load_checkpoint, save_checkpoint

# --- schedules -----------------------------------------------------------------------------


def measurement_steps(
    total: int,
    every: int = 0,
    log_points: int = 0,
    dense_until: tuple[tuple[int, int], ...] = (),
    log_from: int = 1,
) -> list[int]:
    """Steps at which to measure: 0 and ``total``; every ``every`` steps; ``log_points``
    log-spaced steps in [log_from, total]; and ``dense_until`` pairs (limit, stride): every ``stride``
    steps below ``limit`` (the grokking protocol: every step below 30, every 10 below 150)."""
    steps = {0, total}
    if every > 0:
        steps.update(range(0, total + 1, every))
    if log_points > 0:
        lo, hi = math.log10(max(1, min(log_from, total))), math.log10(max(1, total))
        steps.update(
            int(round(10 ** (lo + (hi - lo) * i / max(1, log_points - 1))))
            for i in range(log_points)
        )
    for limit, stride in dense_until:
        steps.update(range(0, min(limit, total), stride))
    return sorted(s for s in steps if 0 <= s <= total)


# --- batches -------------------------------------------------------------------------------


class BatchSampler:
    """Minibatch indices of M members over one training set of n examples (see module doc).

    All members share n and ``batch_size``, so their positions in their own permutations move
    in lockstep: one ``pos`` serves all. State: each generator's state, the (M, n) current
    permutations, ``pos`` (n when a new permutation is due).
    """

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int]):
        if not 1 <= batch_size <= n:
            raise ConfigError("batch_size", f"must be in [1, {n}] (or None), got {batch_size}")
        self.n, self.batch_size = n, batch_size
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.perms = torch.zeros(len(self.generators), n, dtype=torch.long)
        self.pos = n  # no permutation drawn yet

    def next(self) -> torch.Tensor:
        """(M, batch_size) int64 indices of the next batch of every member."""
        if self.pos + self.batch_size > self.n:  # epoch over (a partial last batch is dropped)
            for m, g in enumerate(self.generators):
                self.perms[m] = torch.randperm(self.n, generator=g)
            self.pos = 0
        idx = self.perms[:, self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "sampler.generator_state": torch.stack([g.get_state() for g in self.generators]),
            "sampler.perm": self.perms.clone(),
            "sampler.pos": torch.tensor(self.pos, dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        gs, perm = state["sampler.generator_state"], state["sampler.perm"]
        if gs.shape[0] != len(self.generators) or perm.shape != self.perms.shape:
            raise CheckpointError(
                f"sampler state for {gs.shape[0]} members x {perm.shape[-1]} examples does not "
                f"match {len(self.generators)} x {self.n}"
            )
        for g, s in zip(self.generators, gs):
            g.set_state(s.clone())
        self.perms.copy_(perm)
        self.pos = int(state["sampler.pos"])


class EndlessSampler:
    """Batches of (x, y) from an endlessly reshuffled training set: one member's
    :class:`BatchSampler` (a fresh permutation per epoch from its own generator, the last
    partial batch dropped); the full batch when ``batch_size`` covers the set. Its state
    resumes exactly."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        self.x, self.y = x, y
        self.n = y.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.indices = BatchSampler(self.n, self.batch_size, [seed])

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size == self.n:  # full batch: no gather needed
            return self.x, self.y
        idx = self.indices.next()[0]
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict:
        return self.indices.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.indices.load_state_dict(state)


# --- evaluation ----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, batch_size: int = 2000
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on (x, y), in batches, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, y.shape[0], batch_size):
        logits = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total_loss += float(loss_fn(logits, yb)) * yb.shape[0]
        correct += int((logits.argmax(-1) == yb).sum())
    model.train(was_training)
    n = max(1, y.shape[0])
    return {"loss": total_loss / n, "acc": correct / n}


# --- callbacks -----------------------------------------------------------------------------


@dataclass
class Callback:
    """Calls ``fn(loop)`` after the steps in ``steps`` (and/or every ``every`` steps)."""

    fn: Callable[[TrainLoop], None]
    steps: Iterable[int] = ()
    every: int = 0

    def __post_init__(self):
        self.steps = frozenset(self.steps)

    def wants(self, step: int) -> bool:
        return step in self.steps or (self.every > 0 and step % self.every == 0)


# --- the loop ------------------------------------------------------------------------------


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tensor once: a name whose tensor is the same memory as an earlier
    name's (tied weights, e.g. a language model's head and embedding) is left out, since
    safetensors refuses shared storage."""
    seen, out = set(), {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.stride())
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


def load_unique_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`unique_tensors` of a model back; only tied names may be missing."""
    tied = set(model.state_dict()) - set(unique_tensors(model.state_dict()))
    result = model.load_state_dict(tensors, strict=False)
    wrong = set(result.missing_keys) - tied
    if wrong or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not fit the model: missing {sorted(wrong)}, "
                           f"unexpected {sorted(result.unexpected_keys)}")  # fmt: skip


class SupervisedStepper:
    """One optimizer step of ``model`` on the sampler's next batch; everything the step needs
    to continue exactly is in its checkpoint (tensors to safetensors, the rest to a .pt file).

    Any object with ``step() -> loss tensor``, ``checkpoint_tensors()``, ``checkpoint_state()``
    and ``restore(tensors, state)`` can drive a :class:`TrainLoop` (the grokking study's
    batched ensemble does)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sampler: EndlessSampler,
        loss_fn: Callable,
        scheduler=None,
    ):
        self.model, self.optimizer, self.sampler = model, optimizer, sampler
        self.loss_fn, self.scheduler = loss_fn, scheduler

    def step(self) -> torch.Tensor:
        x, y = self.sampler.next()
        return self.update(self.loss_fn(self.model(x), y))

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimizer (and scheduler) step on ``loss``; the loss, detached."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return unique_tensors(self.model.state_dict())

    def checkpoint_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        load_unique_tensors(self.model, tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization (Foret et al. 2021) around a base optimizer: ascend to
    w + e, e = rho g / ||g|| (ASAM, ``adaptive``: e_i = rho |w_i|^2 g_i / ||(|w| g)||,
    Kwon et al. 2021), take the gradient there, and step the base optimizer from w (restored
    exactly, not as (w + e) - e) with it.

    ``step(closure)``: the gradient at w must be in ``.grad``; the closure recomputes the loss
    at the ascended point and calls backward. Hooks registered on this optimizer (e.g.
    ``genlab.pruning.enforce_mask``) run around the whole step. ``param_groups`` are the base
    optimizer's, so a learning-rate schedule on either reaches both, also after a resume."""

    def __init__(self, params, base_optimizer: torch.optim.Optimizer, rho: float = 0.05,
                 adaptive: bool = False):  # fmt: skip
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self._base: torch.optim.Optimizer | None = None
        self._own_groups: list = []
        super().__init__(params, {"rho": rho, "adaptive": adaptive})
        self._base = base_optimizer
        for group in base_optimizer.param_groups:
            group.setdefault("rho", rho)
            group.setdefault("adaptive", adaptive)

    @property
    def base_optimizer(self) -> torch.optim.Optimizer:
        return self._base

    @property
    def param_groups(self) -> list:
        return self._own_groups if self._base is None else self._base.param_groups

    @param_groups.setter
    def param_groups(self, groups: list) -> None:
        self._own_groups = groups  # torch's __init__ builds these; the base's are used after

    @torch.no_grad()
    def _ascend(self) -> None:
        scaled = [((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(2)
                  for g in self.param_groups for p in g["params"] if p.grad is not None]  # fmt: skip
        norm = torch.norm(torch.stack(scaled), 2) if scaled else torch.zeros(())
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["w"] = p.detach().clone()
                p.add_((p.square() if group["adaptive"] else 1.0) * p.grad * scale)

    @torch.no_grad()
    def _descend(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if "w" in self.state[p]:
                    p.copy_(self.state[p].pop("w"))  # exactly back to w
        self._base.step()

    def step(self, closure=None):
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss with backward")
        self._ascend()
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            closure()
        self._descend()

    def state_dict(self) -> dict:
        return self._base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._base.load_state_dict(state_dict)


class SAMStepper(SupervisedStepper):
    """A supervised step with :class:`SAM`: the loss and gradient at w (batch-norm running
    statistics updated by this pass only), then the gradient at the ascended point with every
    buffer restored after it, so the second pass leaves the statistics as the first left them."""

    def step(self) -> torch.Tensor:
        x, y = self.sampler.next()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        buffers = [b.clone() for b in self.model.buffers()]

        def closure():
            self.loss_fn(self.model(x), y).backward()
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)

        self.optimizer.step(closure)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


LOCAL_LOSSES = ("ce", "sim", "supcon")
"""Local losses of layer-wise training: cross-entropy of an auxiliary linear classifier;
similarity matching (Nokland & Eidnes 2019) and supervised contrastive (Khosla et al. 2020) on
an auxiliary linear projection."""


class LayerwiseStepper(SupervisedStepper):
    """Layer-wise training as a stepper: every trained block k has its own auxiliary head
    ``aux_heads[k]`` and local loss, and gets its input detached, so no gradient crosses blocks.

    ``trained=None`` (simultaneous, the paper's main mode): every block's local loss and the
    final classifier's cross-entropy (on the detached last block output) are summed and one
    optimizer step is taken. ``trained=k`` (sequential): blocks 0..k-1 run frozen (eval mode,
    no gradient), block k learns from its local loss, and the final classifier is trained with
    the last block. The optimizer must hold exactly the parameters that are trained.
    ``input_weight`` > 0 adds -input_weight nHSIC(X; Z_k) (bandwidth ``sigma``) on the batch
    to each trained block's loss: a reward for keeping input information.
    """

    def __init__(
        self,
        model,
        aux_heads: nn.ModuleList,
        optimizer: torch.optim.Optimizer,
        sampler: EndlessSampler,
        local_loss: str = "ce",
        num_classes: int = 10,
        scheduler=None,
        trained: int | None = None,
        temperature: float = 0.1,
        input_weight: float = 0.0,
        sigma: float = 5.0,
    ):
        from genlab.losses import cross_entropy

        super().__init__(model, optimizer, sampler, cross_entropy, scheduler)
        if local_loss not in LOCAL_LOSSES:
            raise ConfigError("local_loss", f"choose from {LOCAL_LOSSES}, got {local_loss!r}")
        self.aux_heads, self.local_loss = aux_heads, local_loss
        self.num_classes, self.trained, self.temperature = num_classes, trained, temperature
        self.input_weight, self.sigma = input_weight, sigma

    def block_loss(self, k: int, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from genlab.losses import similarity_matching, supervised_contrastive

        out = self.aux_heads[k](z)
        if self.local_loss == "ce":
            return self.loss_fn(out, y)
        if self.local_loss == "sim":
            return similarity_matching(out, y, self.num_classes)
        return supervised_contrastive(out, y, self.temperature)

    def step(self) -> torch.Tensor:
        x, y = self.sampler.next()
        blocks = self.model.blocks
        last = len(blocks) - 1
        first = 0 if self.trained is None else self.trained
        h = x
        if first > 0:
            with torch.no_grad():
                for block in blocks[:first]:
                    block.eval()  # frozen: batch norm uses its running statistics
                    h = block(h)
        loss = torch.zeros(())
        r_x = None
        for k in range(first, len(blocks) if self.trained is None else first + 1):
            h = blocks[k](h.detach())
            loss = loss + self.block_loss(k, h, y)
            if self.input_weight:  # reward input information: - w nHSIC(X; Z_k) on the batch
                from genlab.measures import normalized_grams, trace_products

                if r_x is None:
                    r_x = normalized_grams(x[None], self.sigma)
                r_z = normalized_grams(h[None], self.sigma, detach=False)
                loss = loss - self.input_weight * trace_products(r_x, r_z)[0].to(loss.dtype)
        if self.trained is None or self.trained == last:
            loss = loss + self.loss_fn(self.model.head(h.detach()), y)
        return self.update(loss)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        tensors = dict(self.model.state_dict())
        tensors.update({f"aux.{k}": v for k, v in self.aux_heads.state_dict().items()})
        return tensors

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        aux = {k[4:]: v for k, v in tensors.items() if k.startswith("aux.")}
        self.aux_heads.load_state_dict(aux)
        model = {k: v for k, v in tensors.items() if not k.startswith("aux.")}
        super().restore(model, state)


def fit_linear_probe(
    head: nn.Module, feats: torch.Tensor, y: torch.Tensor, steps: int, lr: float
) -> nn.Module:
    """``head`` fitted on frozen features by full-batch Adam on cross-entropy, then frozen (a
    linear probe; also the attention study's phase-1 classifier)."""
    import torch.nn.functional as F

    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(feats), y).backward()
        opt.step()
    return head.requires_grad_(False)


@dataclass
class TrainLoop:
    stepper: SupervisedStepper
    total_steps: int
    callbacks: list[Callback] = field(default_factory=list)
    progress: Callable[[int, dict], None] | None = None
    """Called as progress(step, last_metrics) every ``progress_every`` steps."""
    progress_every: int = 50
    step: int = 0
    resumed: bool = False
    """Restored from a checkpoint: the measurements of its step were logged before it."""
    last_loss: float = float("nan")
    last_metrics: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.stepper.model

    def run(self) -> None:
        if not self.resumed:
            self._after_step()  # measure the initialization (and checkpoint it)
        if isinstance(self.model, nn.Module):
            self.model.train()
        stepper = self.stepper
        while self.step < self.total_steps:
            loss = stepper.step()  # a scalar, or one loss per member of an ensemble
            self.step += 1
            if not bool(torch.isfinite(loss).all()):
                raise Diverged(self.step, float(loss.float().mean()))
            self.last_loss = float(loss.float().mean())
            self._after_step()

    def _after_step(self) -> None:
        for cb in self.callbacks:
            if cb.wants(self.step):
                cb.fn(self)
        if self.progress is not None and (
            self.step % self.progress_every == 0 or self.step == self.total_steps
        ):
            self.progress(self.step, {"loss": self.last_loss, **self.last_metrics})

    def checkpoint_state(self) -> dict:
        return {
            "step": self.step,
            "last_metrics": self.last_metrics,
            "stepper": self.stepper.checkpoint_state(),
        }

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        try:
            self.stepper.restore(tensors, state["stepper"])
            self.step = int(state["step"])
            self.last_metrics = dict(state.get("last_metrics", {}))
            self.resumed = True
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint does not match this run's model ({e})") from None


def train_in_run(loop: TrainLoop, run: Run, checkpoint_every: int, label: str = "") -> None:
    """Drive ``loop`` inside the run's current stage: continue from the stage's checkpoint on
    resume, checkpoint on a schedule and at the end, show progress unless quiet."""
    stage = run.current_stage
    if stage is None:
        raise RuntimeError("train_in_run needs a stage: wrap it in `with run.stage(name):`")
    if stage.resume_from is not None:
        ckpt = stage.resume_from
        loop.restore(ckpt.tensors, ckpt.state)
        if not run.quiet:
            print(f"{run.paths.root}: {stage.name} resumes at step {ckpt.step}", flush=True)

    def checkpoint(lp: TrainLoop) -> None:
        run.metrics.sync()  # the records this checkpoint vouches for reach the disk first
        tensors, state = lp.stepper.checkpoint_tensors(), lp.checkpoint_state()
        save_checkpoint(stage.checkpoints, lp.step, tensors, state)

    ckpt_steps = {loop.total_steps}
    loop.callbacks = [
        *loop.callbacks,
        Callback(checkpoint, ckpt_steps, checkpoint_every),
        *run.extra_callbacks,
    ]
    with progress_bar(loop.total_steps, label or "train", run.quiet, start=loop.step) as update:
        loop.progress = update
        loop.run()


def train_stage(
    run: Run, name: str, loop: TrainLoop, checkpoint_every: int, label: str = ""
) -> None:
    """Run ``loop`` as stage ``name`` of ``run``; a stage finished in an earlier attempt is
    restored from its final checkpoint instead (without one, e.g. damaged, the stage runs
    again)."""
    if run.stage_done(name):
        ckpt = load_checkpoint(run.paths.stage_checkpoints(name))
        if ckpt is not None and ckpt.step == loop.total_steps:
            loop.stepper.restore(ckpt.tensors, ckpt.state["stepper"])
            return
    with run.stage(name):
        train_in_run(loop, run, checkpoint_every, label=label)


# --- progress ------------------------------------------------------------------------------


class progress_bar:
    """A rich progress bar with ETA and the latest key metrics; silent when ``quiet``.
    Rich degrades to plain output when stdout is not a terminal."""

    def __init__(self, total: int, label: str, quiet: bool, start: int = 0):
        self.total, self.label, self.quiet, self.start = total, label, quiet, start

    def __enter__(self) -> Callable[[int, dict], None]:
        if self.quiet:
            return lambda step, metrics: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # Off a terminal rich assumes 80 columns and elides the ETA and metrics; a log file
        # has room for the whole line.
        console = None if sys.stdout.isatty() else Console(width=160)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
            console=console,
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=self.total, completed=self.start, info="")

        def update(step: int, metrics: dict) -> None:
            info = " ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float | int)
            )
            self.bar.update(self.task, completed=step, info=info)

        return update

    def __exit__(self, *exc) -> None:
        if not self.quiet:
            self.bar.stop()


# --- optimizers and schedules --------------------------------------------------------------


def make_optimizer(
    params,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer, kind: str, total_steps: int, warmup_steps: int = 0):
    """``constant``, ``cosine`` (to 0 at the end) or ``step`` (x0.1 at 50% and 75%), each after a
    linear warm-up of ``warmup_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if kind == "step":
            return 0.1 ** ((t >= 0.5) + (t >= 0.75))
        return 1.0

    if kind == "constant" and warmup_steps == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
