"""Sharpness of a trained network and its distance from initialization.

- ``expected_sharpness``: E_{u ~ N(0, sigma^2 I)} [err(w + u)] - err(w), the 0-1 error under
  Gaussian weight noise minus the error of the mean network (Sakamoto & Sato 2022's measure;
  Neyshabur et al. 2017's expected sharpness with the 0-1 error), averaged over ``samples``
  noise draws. With a mask only surviving weights are perturbed (pruned ones stay 0).
- ``worst_case_sharpness``: max_{||e|| <= rho} L(w + e) - L(w), approximated by one ascent step
  e = rho g / ||g|| (g the loss gradient), as SAM does (Foret et al. 2021).
- ``distance_from_init``: ||m * (theta - theta_0)||_2 over the given weights, raw and relative
  to ||m * theta_0||_2.

Noise and ascent act on the weights named in ``params`` (default: every trainable parameter);
the model is evaluated in eval mode and restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@contextlib.contextmanager
def _eval_and_restore(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Eval mode; every parameter is restored to its value on entry afterwards."""
    saved = {k: p.detach().clone() for k, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    try:
        yield saved
    finally:
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(saved[k])
        model.train(was_training)


@torch.no_grad()
def zero_one_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 5000) -> float:
    wrong = 0
    for i in range(0, len(y), batch):
        wrong += int((model(x[i : i + batch]).argmax(-1) != y[i : i + batch]).sum())
    return wrong / max(1, len(y))


def _selected(model: nn.Module, params: Sequence[str] | None) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    names = [k for k, p in named.items() if p.requires_grad] if params is None else params
    return {k: named[k] for k in names}


@dataclass(frozen=True)
class ExpectedSharpness:
    sharpness: float
    """mean noisy error - clean error."""
    noisy_error: float
    clean_error: float
    samples: int


def expected_sharpness(
    model: nn.Module,
    sigma: float,
    data: tuple[torch.Tensor, torch.Tensor],
    samples: int = 10,
    mask: dict[str, torch.Tensor] | None = None,
    params: Sequence[str] | None = None,
    seed: int = 0,
) -> ExpectedSharpness:
    """The 0-1 error of w + u, u ~ N(0, sigma^2) on the selected (and surviving) weights,
    averaged over ``samples`` draws, minus the error of w, on ``data`` = (x, y)."""
    x, y = data
    g = torch.Generator().manual_seed(seed)
    with _eval_and_restore(model) as saved:
        clean = zero_one_error(model, x, y)
        chosen = _selected(model, params)
        noisy = []
        for _ in range(samples):
            with torch.no_grad():
                for k, p in chosen.items():
                    u = torch.randn(p.shape, generator=g, dtype=p.dtype) * sigma
                    if mask is not None and k in mask:
                        u = u * mask[k]
                    p.copy_(saved[k] + u)
            noisy.append(zero_one_error(model, x, y))
    mean = sum(noisy) / samples
    return ExpectedSharpness(mean - clean, mean, clean, samples)


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: Callable,
    data: tuple[torch.Tensor, torch.Tensor],
    rho: float = 0.05,
    mask: dict[str, torch.Tensor] | None = None,
    params: Sequence[str] | None = None,
) -> float:
    """L(w + rho g / ||g||) - L(w) on ``data``, g = grad L(w) (masked on pruned weights)."""
    x, y = data
    with _eval_and_restore(model) as saved:
        chosen = _selected(model, params)
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, list(chosen.values()), allow_unused=True)
        grads = {
            k: (torch.zeros_like(p) if gr is None else gr) * (mask[k] if mask and k in mask else 1)
            for (k, p), gr in zip(chosen.items(), grads)
        }
        norm = torch.sqrt(sum(gr.double().square().sum() for gr in grads.values()))
        with torch.no_grad():
            if float(norm) > 0:
                for k, p in chosen.items():
                    p.copy_(saved[k] + rho * grads[k] / norm.to(p.dtype))
            perturbed = loss_fn(model(x), y)
    return float(perturbed.detach()) - float(loss.detach())


@dataclass(frozen=True)
class Distance:
    l2: float
    """||m * (theta - theta_0)||_2"""
    relative: float
    """l2 / ||m * theta_0||_2"""


def distance_from_init(
    model: nn.Module,
    init_state: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor] | None = None,
    params: Sequence[str] | None = None,
) -> Distance:
    """The L2 distance of the (masked) weights from their initial values, in float64."""
    chosen = _selected(model, params if params is not None else list(init_state))
    diff, init = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for k, p in chosen.items():
        m = mask[k].double() if mask is not None and k in mask else 1.0
        theta0 = init_state[k].double()
        diff += ((p.detach().double() - theta0) * m).square().sum()
        init += (theta0 * m).square().sum()
    l2 = float(diff.sqrt())
    return Distance(l2, l2 / float(init.sqrt()) if float(init) > 0 else float("inf"))
