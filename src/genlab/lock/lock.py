"""``lock_model``: replace a model's MLPs by DLR-Nets distilled to reproduce them.

Teacher inputs (default): every targeted MLP's inputs and outputs are captured once on the
calibration batches, then each DLR-Net is distilled to its MLP independently, one task per
module through the shared executor (local, process pool or Ray; every task seeds its own
generator and runs with the same thread count, so the result does not depend on where it
ran). Student inputs: layer by layer in order, each DLR-Net is distilled on the inputs the
already-locked lower layers produce, to the original MLP's outputs on those inputs. Then, with
``kl_steps > 0``, an end-to-end pass fits all DLR-Nets together to the original's next-token
distributions (``distill_end_to_end``).

Resuming: ``done`` hands back modules finished in an earlier attempt (their trained state and
report), which are loaded instead of distilled again; ``on_module(name, state, report)`` is
called as each module finishes, so a run can store it at once (a stage per module).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genlab.executor import ExecutorConfig, map_tasks
from genlab.lock.distill import capture_mlp_io, distill, distill_end_to_end, relative_error
from genlab.lock.dlr import DLRNet
from genlab.lock.inject import (
    LockConfig,
    find_targets,
    fuse_encoder_mlps,
    inject,
    locked_modules,
)


@dataclass
class DistillConfig:
    steps: int = 500
    lr: float = 1e-3
    batch: int = 1024
    """Tokens per AdamW step."""
    weight_decay: float = 0.0
    inputs: Literal["teacher", "student"] = "teacher"
    kl_steps: int = 0
    """Steps of the end-to-end KL pass after the module-wise distillation (0: none)."""
    kl_lr: float = 1e-4


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


def run_distill_task(task: DistillTask) -> tuple[str, dict, float, float, float]:
    """(name, trained state, first-step error, final relative error on the captured tokens,
    wall seconds)."""
    start = time.perf_counter()
    net = DLRNet(*task.shape).to(task.x.dtype)
    net.load_state_dict(task.state)
    c = task.config
    history = distill(net, task.x, task.y, c.steps, c.lr, c.batch, c.weight_decay, task.seed)
    return (
        task.name,
        net.state_dict(),
        history[0] if history else float("nan"),
        relative_error(net, task.x, task.y),
        time.perf_counter() - start,
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
    done: dict[str, tuple[dict, dict]] | None = None,
    on_module: Callable[[str, dict, dict], None] | None = None,
) -> dict[str, dict]:
    """Lock ``model`` in place; per replaced module its shape, parameter counts, the relative
    distillation error on the calibration tokens (``error``; ``first_error``: at the first
    step) and the distillation wall time (``distill_s``). With ``kl_steps``, the report's
    ``"end_to_end"`` entry holds the KL history of the end-to-end pass."""
    dc = distill_config or DistillConfig()
    parallel = parallel or ExecutorConfig(executor="local")
    done = dict(done or {})
    calibration = list(calibration)
    fuse_encoder_mlps(model)  # BERT: one module per MLP, to capture and to replace
    names = find_targets(model, config)
    teacher = copy.deepcopy(model) if dc.kl_steps > 0 else None
    if dc.inputs == "teacher":
        todo = [n for n in names if n not in done]
        io = capture_mlp_io(model, todo, calibration) if todo else {}
        report = inject(model, config, seed)
        nets = {n: m.dlr for n, m in locked_modules(model).items()}
        tasks = [DistillTask(n, _shape(nets[n]), nets[n].state_dict(), *io.pop(n), dc,
                             seed + names.index(n)) for n in todo]  # fmt: skip

        def finished(task: DistillTask, result: tuple) -> None:
            name, state, first, error, seconds = result
            done[name] = (state, {"first_error": first, "error": error, "distill_s": seconds})
            if on_module is not None:
                on_module(name, *done[name])

        map_tasks(run_distill_task, tasks, executor=parallel.executor, workers=parallel.workers,
                  threads=parallel.threads, ray_address=parallel.ray_address,
                  on_done=finished)  # fmt: skip
        for name in names:
            state, values = done[name]
            nets[name].load_state_dict(state)
            report[name].update(values)
    else:
        originals = {n: copy.deepcopy(model.get_submodule(n)) for n in names}
        report = inject(model, config, seed)
        for i, name in enumerate(names):  # bottom-up: lower layers are already locked
            locked = locked_modules(model)[name]
            if name not in done:
                x, _ = capture_mlp_io(model, [name], calibration)[name]
                with torch.no_grad():
                    y = originals[name](x)
                _, state, first, error, seconds = run_distill_task(
                    DistillTask(name, _shape(locked.dlr), locked.dlr.state_dict(), x, y, dc,
                                seed + i)
                )  # fmt: skip
                done[name] = (state, {"first_error": first, "error": error, "distill_s": seconds})
                if on_module is not None:
                    on_module(name, *done[name])
            state, values = done[name]
            locked.dlr.load_state_dict(state)
            report[name].update(values)
    if teacher is not None:
        report["end_to_end"] = {"kl": distill_end_to_end(model, teacher, calibration,
                                                         dc.kl_steps, dc.kl_lr, seed)}  # fmt: skip
    return report
