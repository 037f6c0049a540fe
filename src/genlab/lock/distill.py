"""Module-wise distillation of a DLR-Net to the MLP it replaces.

1. ``capture_mlp_io``: forward calibration batches through the original model with hooks on
   the targeted MLPs and keep each one's (input, output) token pairs, padding left out.
2. ``distill``: fit the DLR-Net to them by the relative error
   ||DLR(x) - MLP(x)||^2 / ||MLP(x)||^2 (summed over a mini-batch of tokens), AdamW with a
   cosine decay to zero; modules are independent, so each is its own task.
3. ``distill_end_to_end`` (optional): then fit all DLR-Nets together so the locked model's
   next-token distribution follows the original's, by the mean KL(p_original || p_locked)
   over the calibration tokens, only DLR parameters trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from genlab.lock.dlr import DLRNet
from genlab.measures.capability import logits_of, next_token_positions


@torch.no_grad()
def capture_mlp_io(
    model: nn.Module,
    names: list[str],
    batches: Iterable[dict[str, torch.Tensor]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (inputs (N, d), outputs (N, d)) of each named module over every non-padding
    token of ``batches`` (dicts of model inputs with ``input_ids`` and, optionally,
    ``attention_mask``), in order."""
    store: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
    keep: list[torch.Tensor | None] = [None]

    def hook(name):
        def fn(module, args, output):
            x, y = args[0], output
            m = keep[0]
            if m is not None:
                x, y = x[m], y[m]
            store[name].append((x.reshape(-1, x.shape[-1]).clone(),
                                y.reshape(-1, y.shape[-1]).clone()))  # fmt: skip

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            keep[0] = None if mask is None else mask.bool()
            model(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {
        n: (torch.cat([x for x, _ in v]), torch.cat([y for _, y in v])) for n, v in store.items()
    }


def relative_error(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8192) -> float:
    """||net(x) - y||^2 / ||y||^2 over all tokens, accumulated in float64."""
    num = den = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            diff = net(x[i : i + batch]).double() - y[i : i + batch].double()
            num += float(diff.square().sum())
            den += float(y[i : i + batch].double().square().sum())
    return num / den


def distill(
    net: DLRNet,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float = 1e-3,
    batch: int = 1024,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Fit ``net`` to (x, y) for ``steps`` AdamW steps on mini-batches of tokens, the learning
    rate decaying as 0.5 (1 + cos(pi t / steps)); returns each step's relative error."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / max(1, steps)))
    )
    g = torch.Generator().manual_seed(seed)
    history = []
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g)
        yb = y[idx]
        loss = (net(x[idx]) - yb).square().sum() / yb.square().sum().clamp_min(1e-30)
        if not torch.isfinite(loss):  # a diverged fit must not be saved as a lock
            raise FloatingPointError(
                f"distillation diverged at step {len(history)} (loss {float(loss)}): lower the "
                "learning rate or use norm='rms' (inputs of very different scales)"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    net.eval()
    return history


def distill_end_to_end(
    student: nn.Module,
    teacher: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    steps: int,
    lr: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """``steps`` AdamW steps (cosine decay) on the DLR parameters of ``student`` (every
    parameter under a :class:`~genlab.lock.inject.LockedMLP`), one calibration batch per step
    in a seeded random order, minimizing the mean over real next-token positions of
    KL(p_teacher || p_student); returns each step's KL."""
    from genlab.lock.inject import locked_modules

    params = [p for m in locked_modules(student).values() for p in m.parameters()]
    if not params or steps < 1:
        return []
    frozen = {p: p.requires_grad for p in student.parameters()}
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    )
    g = torch.Generator().manual_seed(seed)
    history = []
    teacher.eval()
    student.train()
    try:
        for _ in range(steps):
            batch = batches[int(torch.randint(len(batches), (1,), generator=g))]
            with torch.no_grad():
                log_p = torch.log_softmax(logits_of(teacher, batch)[:, :-1], -1)
            log_q = torch.log_softmax(logits_of(student, batch)[:, :-1], -1)
            keep = next_token_positions(batch)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)[keep].mean()
            opt.zero_grad(set_to_none=True)
            kl.backward()
            opt.step()
            sched.step()
            history.append(float(kl.detach()))
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        student.eval()
    return history
