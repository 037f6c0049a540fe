"""``lock_model``: replace a model's MLPs by DLR-Nets distilled to reproduce them.

Teacher inputs (default): every targeted MLP's inputs and outputs are captured once on the
calibration batches, then each DLR-Net is distilled to its MLP independently, one task per
module through the shared executor (local, process pool or Ray; every task seeds its own
generator and runs with the same thread count, so the result does not depend on where it
ran). Student inputs: layer by layer in order, each DLR-Net is distilled on the inputs the
already-locked lower layers produce, to the original MLP's outputs on those inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genlab.executor import ExecutorConfig, map_tasks
from genlab.lock.distill import capture_mlp_io, distill, relative_error
from genlab.lock.dlr import DLRNet
from genlab.lock.inject import LockConfig, find_targets, inject, locked_modules


@dataclass
class DistillConfig:
    steps: int = 500
    lr: float = 1e-3
    batch: int = 1024
    """Tokens per AdamW step."""
    weight_decay: float = 0.0
    inputs: Literal["teacher", "student"] = "teacher"


@dataclass
class DistillTask:
    name: str
    shape: tuple
    """DLRNet(d, rank, depth, block, norm) arguments."""
    state: dict
    x: torch.Tensor
    y: torch.Tensor
    config: DistillConfig
    seed: int


def run_distill_task(task: DistillTask) -> tuple[str, dict, float, float]:
    """(name, trained state, first-step error, final relative error on the captured tokens)."""
    net = DLRNet(*task.shape).to(task.x.dtype)
    net.load_state_dict(task.state)
    c = task.config
    history = distill(net, task.x, task.y, c.steps, c.lr, c.batch, c.weight_decay, task.seed)
    return (
        task.name,
        net.state_dict(),
        history[0] if history else float("nan"),
        relative_error(net, task.x, task.y),
    )


def _shape(net: DLRNet) -> tuple:
    norm = {"RMSNorm": "rms", "LayerNorm": "layer"}.get(type(net.blocks[0].norm).__name__, "none")
    return (net.d, net.rank, net.depth, net.block_kind, norm)


def lock_model(
    model: nn.Module,
    config: LockConfig,
    calibration: Iterable[dict[str, torch.Tensor]],
    distill_config: DistillConfig | None = None,
    parallel: ExecutorConfig | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """Lock ``model`` in place; per replaced module its shape, parameter counts and the
    relative distillation error on the calibration tokens."""
    dc = distill_config or DistillConfig()
    parallel = parallel or ExecutorConfig(executor="local")
    calibration = list(calibration)
    names = find_targets(model, config)
    if dc.inputs == "teacher":
        io = capture_mlp_io(model, names, calibration)
        report = inject(model, config, seed)
        nets = {n: m.dlr for n, m in locked_modules(model).items()}
        tasks = [DistillTask(n, _shape(nets[n]), nets[n].state_dict(), *io[n], dc, seed + i)
                 for i, n in enumerate(names)]  # fmt: skip
        results = map_tasks(run_distill_task, tasks, executor=parallel.executor,
                            workers=parallel.workers, threads=parallel.threads,
                            ray_address=parallel.ray_address)  # fmt: skip
        for name, state, first, error in results:
            nets[name].load_state_dict(state)
            report[name].update(first_error=first, error=error)
        return report
    originals = {n: copy.deepcopy(model.get_submodule(n)) for n in names}
    report = inject(model, config, seed)
    for i, name in enumerate(names):  # bottom-up: lower layers are already locked
        locked = locked_modules(model)[name]
        x, _ = capture_mlp_io(model, [name], calibration)[name]
        with torch.no_grad():
            y = originals[name](x)
        _, state, first, error = run_distill_task(
            DistillTask(name, _shape(locked.dlr), locked.dlr.state_dict(), x, y, dc, seed + i)
        )
        locked.dlr.load_state_dict(state)
        report[name].update(first_error=first, error=error)
    return report
