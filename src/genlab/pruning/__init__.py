"""Pruning by masks: which weights are prunable, global pruning by a criterion, masks held
through training, rewinding.

A mask is a dict ``name -> 0/1 float tensor`` over the prunable weights (the ``.weight`` of
every ``nn.Linear`` and ``nn.Conv*``, found by type; biases, normalization parameters and,
unless asked, the output layer are never pruned). ``prune`` removes a fraction of the
*remaining* prunable weights across all layers at once (global ranking), so after L levels
at fraction f the density is about (1 - f)^L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

CRITERIA = ("magnitude", "reverse", "random")
"""magnitude: smallest |w| first (IMP); reverse: largest |w| first; random: uniformly."""

Mask = dict[str, torch.Tensor]


def prunable_weights(model: nn.Module, prune_output: bool = False,
                     exclude: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """Names of the prunable weights in module order: the weights of Linear and Conv layers,
    without the last Linear (the output layer) unless ``prune_output``, and without names in
    ``exclude``."""
    layers = [(name, mod) for name, mod in model.named_modules()
              if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]  # fmt: skip
    if not prune_output:
        last_linear = [name for name, mod in layers if isinstance(mod, nn.Linear)]
        if last_linear:
            layers = [(n, m) for n, m in layers if n != last_linear[-1]]
    names = [f"{name}.weight" if name else "weight" for name, _ in layers]
    return [n for n in names if n not in set(exclude)]


def full_mask(model: nn.Module, names: Sequence[str]) -> Mask:
    params = dict(model.named_parameters())
    return {k: torch.ones_like(params[k], dtype=torch.float32) for k in names}


def density(mask: Mask) -> float:
    kept = sum(int(m.sum()) for m in mask.values())
    return kept / sum(m.numel() for m in mask.values())


def prune(
    weights: dict[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    criterion: str = "magnitude",
    generator: torch.Generator | None = None,
) -> Mask:
    """A new mask without round(fraction x remaining) more of the surviving weights, ranked
    globally by ``criterion``. Ties at the threshold are broken by position (stable sort), so
    exactly that many go."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    names = list(mask)
    alive = torch.cat([mask[k].reshape(-1) for k in names]).bool()
    remaining = int(alive.sum())
    n_prune = int(math.floor(fraction * remaining + 0.5))
    if criterion == "random":
        score = torch.rand(alive.shape, generator=generator, dtype=torch.float64)
    else:
        mag = torch.cat([weights[k].detach().abs().reshape(-1).double() for k in names])
        score = mag if criterion == "magnitude" else -mag
    score = torch.where(alive, score, torch.full_like(score, math.inf))  # pruned: never again
    order = torch.sort(score, stable=True).indices[:n_prune]
    flat = alive.clone()
    flat[order] = False
    out, start = {}, 0
    for k in names:
        n = mask[k].numel()
        out[k] = flat[start : start + n].reshape(mask[k].shape).to(torch.float32)
        start += n
    return out


@torch.no_grad()
def apply_mask_(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for k, m in mask.items():
        params[k].mul_(m.to(params[k].dtype))


def enforce_mask(
    model: nn.Module,
    mask: Mask,
    optimizer: torch.optim.Optimizer,
    mask_gradients: bool | None = None,
) -> list:
    """Hold ``mask`` through training: after every optimizer step the pruned weights are set
    back to exactly 0 (weight decay or momentum cannot move them). Applies the mask now;
    returns the hook handles (``handle.remove()`` to stop).

    ``mask_gradients`` (None: only for an optimizer with a ``base_optimizer``, i.e. SAM) also
    zeroes the pruned weights' gradients before each step. A per-coordinate optimizer (SGD
    with momentum and weight decay, Adam, AdamW) does not need it: a pruned coordinate's
    momentum never reaches a kept one and its weight is reset anyway (tested: the kept weights
    follow the same path either way). SAM does: its ascent is scaled by the global gradient
    norm, which must not count pruned weights."""
    params = dict(model.named_parameters())
    weights = [params[k] for k in mask]
    masks = [m.to(params[k].dtype) for k, m in mask.items()]
    if mask_gradients is None:
        mask_gradients = hasattr(optimizer, "base_optimizer")

    # one fused multiply per list (torch._foreach_mul_), not one kernel per tensor
    def mask_grads(*_):
        pairs = [(p.grad, m) for p, m in zip(weights, masks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    def mask_weights(*_):
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)

    apply_mask_(model, mask)
    handles = [optimizer.register_step_post_hook(mask_weights)]
    if mask_gradients:
        handles.append(optimizer.register_step_pre_hook(mask_grads))
    return handles


def rewind(model: nn.Module, state: dict[str, torch.Tensor], mask: Mask) -> None:
    """Load ``state`` (the weights at the rewind iteration) into ``model`` and apply ``mask``."""
    model.load_state_dict(state)
    apply_mask_(model, mask)


__all__ = [
    "CRITERIA",
    "Mask",
    "apply_mask_",
    "density",
    "enforce_mask",
    "full_mask",
    "prunable_weights",
    "prune",
    "rewind",
]
