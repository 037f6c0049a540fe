"""What backpropagation must keep and do: the bytes autograd saves for the backward pass, and
the FLOPs of the forward and backward passes.

``saved_activation_bytes(fn, exclude=params)`` runs ``fn`` under saved-tensor hooks and sums
the sizes of the distinct storages autograd packs for backward, leaving out the storages of
``exclude`` (a model's parameters: saved for the input gradient, but resident anyway). For a
GELU MLP d -> h -> d on n tokens that is n (d + 2 h) values (its input, the pre-activation and
the activation); for a DLR-Net of depth L and rank r, n L (d + 2 r) = n (L d + 2 h) when L r = h.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def saved_activation_bytes(
    fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()
) -> tuple[int, Any]:
    """(bytes autograd saved while ``fn()`` ran, counted once per storage, without the
    storages of ``exclude``; fn's return value)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def forward_backward_flops(loss_fn: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """(forward FLOPs, backward FLOPs) of computing ``loss_fn()`` and backpropagating it,
    counted by ``torch.utils.flop_counter`` (matrix products and convolutions: a (m, k) x
    (k, n) product counts 2 m k n)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        loss = loss_fn()
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()
