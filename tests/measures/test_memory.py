"""Saved activations against hand counts: an MLP saves d + 2h values per token, a DLR-Net of
depth L and rank r saves L (d + 2r)."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from genlab.lock import DLRNet
from genlab.measures.memory import saved_activation_bytes


def test_an_mlp_saves_its_input_pre_activation_and_activation_per_token():
    d, h, n = 16, 64, 3 * 5
    mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    x = torch.randn(3, 5, d)
    saved, out = saved_activation_bytes(lambda: mlp(x), exclude=mlp.parameters())
    assert saved == 4 * n * (d + 2 * h)
    assert out.shape == x.shape
    # parameters count when not excluded: the second weight matrix (the first layer computes
    # no input gradient, x does not require one, so its weight is not saved)
    with_weights, _ = saved_activation_bytes(lambda: mlp(x))
    assert with_weights == saved + 4 * d * h


@pytest.mark.parametrize("block,per_block", [("gelu", lambda d, r: d + 2 * r),
                                             ("swiglu", lambda d, r: d + 4 * r)])  # fmt: skip
def test_a_dlr_net_saves_every_blocks_input_and_hidden_activations(block, per_block):
    d, r, depth, n = 16, 4, 8, 7
    net = DLRNet(d, r, depth, block)
    x = torch.randn(n, d)
    saved, _ = saved_activation_bytes(lambda: net(x), exclude=net.parameters())
    # gelu: the block input, the pre-activation, the activation (B's input): d + 2 r; swiglu:
    # the input (shared by G and U), G u (silu's input), silu(G u) and U u (the product's
    # inputs), the product (B's input): d + 4 r
    assert saved == 4 * n * depth * per_block(d, r)


def test_no_grad_saves_nothing():
    mlp = nn.Linear(8, 8)
    with torch.no_grad():
        saved, _ = saved_activation_bytes(lambda: mlp(torch.randn(2, 8)))
    assert saved == 0


def test_flops_of_an_mlp_forward_and_backward_by_hand():
    from genlab.measures.memory import forward_backward_flops

    d, h, n = 16, 64, 10
    mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    x = torch.randn(n, d)
    fwd, bwd = forward_backward_flops(lambda: mlp(x).square().sum())
    assert fwd == 2 * n * d * h * 2  # two products of 2 n d h
    # backward: weight gradients of both layers, the input gradient of the second only
    # (x needs none): 3 products
    assert bwd == 3 * 2 * n * d * h
    # a DLR-Net at matched parameters (L r = h) does the same products: same FLOPs
    net = DLRNet(d, 8, 8)
    fwd_dlr, _ = forward_backward_flops(lambda: net(x).square().sum())
    assert fwd_dlr == fwd


def test_peak_memory_is_the_high_water_mark_of_allocations_above_the_start():
    from genlab.measures.memory import peak_memory_bytes

    def fn():
        a = torch.empty(1000, 1000)  # 4,000,000 bytes
        b = torch.empty(2000, 1000)  # 8,000,000: 12,000,000 held together
        del a
        c = torch.empty(500, 1000)  # 2,000,000 while b is held: 10,000,000
        del b, c
        return "done"

    resident = torch.empty(3000, 1000)  # allocated before: not part of the peak
    peak, out = peak_memory_bytes(fn)
    assert peak == 12_000_000 and out == "done"
    del resident


def test_module_saved_bytes_of_an_mlp_and_its_dlr_net_by_hand():
    from genlab.measures.memory import module_saved_bytes

    d, h, n = 16, 64, 11
    mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    assert module_saved_bytes(mlp, n) == 4 * n * (d + 2 * h)
    assert module_saved_bytes(DLRNet(d, 8, 8), n) == 4 * n * 8 * (d + 2 * 8)  # L (d + 2 r)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_tensor_pages_go_back_to_the_system():
    from genlab.measures.memory import return_freed_memory

    def rss_mb() -> int:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) // 1024

    return_freed_memory()
    base = rss_mb()
    tensors = [torch.ones(256, 576) for _ in range(800)]  # 470 MB of 590 kB tensors
    keep = tensors[::50]  # a few survivors pin the heap: freeing alone gives little back
    del tensors
    return_freed_memory()
    assert rss_mb() - base < 100 + len(keep)  # the 470 MB are back, bar the kept 16 x 0.6 MB


def test_counting_does_not_keep_the_graph_alive():
    """exp saves its own output: kept as itself by the pack hook, that output would hold its
    grad_fn, which holds it back (a cycle in C++ the collector cannot see)."""
    import gc
    import weakref

    x = torch.randn(64, 64, requires_grad=True)
    refs = []

    def fn():
        y = x.exp()
        refs.append(weakref.ref(y))
        return y.sum()

    saved, out = saved_activation_bytes(fn)
    assert saved == 64 * 64 * 4  # exp's output, once
    del out
    gc.collect()
    assert refs[0]() is None
