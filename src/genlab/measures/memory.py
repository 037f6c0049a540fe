"""What backpropagation must keep and do: the bytes autograd saves for the backward pass, and
the FLOPs of the forward and backward passes.

``saved_activation_bytes(fn, exclude=params)`` runs ``fn`` under saved-tensor hooks and sums
the sizes of the distinct storages autograd packs for backward, leaving out the storages of
``exclude`` (a model's parameters: saved for the input gradient, but resident anyway). For a
GELU MLP d -> h -> d on n tokens that is n (d + 2 h) values (its input, the pre-activation and
the activation); for a DLR-Net of depth L and rank r, n L (d + 2 r) = n (L d + 2 h) when L r = h.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
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
        # detached: a saved output kept as itself would hold its own grad_fn, a cycle through
        # autograd's C++ graph that Python's collector cannot see (the graph, and every
        # activation in it, would outlive the loss)
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def return_freed_memory() -> None:
    """Hand the heap pages freed tensors left behind back to the operating system (glibc's
    ``malloc_trim``; a no-op elsewhere). Between measurements of models whose activations take
    gigabytes, glibc otherwise keeps the freed pages of one pass while the next allocates
    its own, and two passes of 10 GB exhaust a 24 GB machine."""
    import gc

    gc.collect()
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass


def module_saved_bytes(module: torch.nn.Module, tokens: int, seed: int = 0,
                       frozen: bool = False) -> int:  # fmt: skip
    """Bytes ``module`` (an MLP or the DLR-Net replacing it: a map of width d to d) saves for
    backward on ``tokens`` standard-normal inputs that require a gradient, its parameters left
    out. ``frozen``: with its parameters not trained (as behind a LoRA adapter), only what the
    input gradient needs is saved."""
    params = list(module.parameters())
    d = next(p for p in params if p.dim() == 2).shape[1]  # the first layer reads d
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(not frozen and p.requires_grad)
        saved = saved_activation_bytes(lambda: module(x).sum(), exclude=params)[0]
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return saved


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


def peak_memory_bytes(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[int, Any]:
    """(the peak of the bytes allocated while ``fn()`` ran, above what was allocated when it
    started; fn's return value).

    CPU: PyTorch's profiler with ``profile_memory=True`` records every allocation and free of
    the CPU allocator as a ``[memory]`` event of signed size; the peak is the maximum of their
    running sum in time order. CUDA: ``torch.cuda.max_memory_allocated`` after resetting it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, out
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # the profiler's C++ side logs each start and stop there
        prof.start()
    try:
        out = fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak, out


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the duration (C++ logging bypasses
    ``sys.stderr``); a no-op where stderr has no descriptor."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(devnull)
        os.close(saved)
