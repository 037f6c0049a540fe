"""DLR-Net against explicit formulas: the recursion, parameter counts, split initialization
and the concatenation attack."""

import pytest
import torch
from torch.nn import functional as F

from genlab.lock import DLRNet, concatenate, matched_depth, mlp_parameter_count, parameter_count


def _reference(net: DLRNet, x: torch.Tensor) -> torch.Tensor:
    """z_{l+1} = z_l + B_l act(A_l z_l + a_l) + b_l written with explicit matrices."""
    z = x
    for blk in net.blocks:
        if net.block_kind == "gelu":
            hidden = F.gelu(z @ blk.down.weight.T + blk.down.bias)
            z = z + hidden @ blk.up.weight.T + blk.up.bias
        else:
            hidden = F.silu(z @ blk.gate.weight.T) * (z @ blk.down.weight.T)
            z = z + hidden @ blk.up.weight.T
    return z - x


@pytest.mark.parametrize("block", ["gelu", "swiglu"])
def test_random_init_starts_at_zero_and_the_recursion_matches_the_formula(block):
    torch.manual_seed(0)
    net = DLRNet(12, 3, 5, block).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    assert torch.equal(net(x), torch.zeros_like(x))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    ref = _reference(net, x)
    # float64 round-off of depth x (2 products of width d) on values of this size
    tol = 16 * torch.finfo(torch.float64).eps * net.depth * 2 * 12 * float(ref.abs().max())
    assert torch.allclose(net(x), ref, rtol=0, atol=tol)


@pytest.mark.parametrize("block", ["gelu", "swiglu"])
def test_parameter_count_is_the_modules_count(block):
    net = DLRNet(20, 4, 6, block)
    assert parameter_count(20, 4, 6, block) == sum(p.numel() for p in net.parameters())


def test_matched_depth_for_smollm2_and_a_gelu_mlp():
    # SmolLM2-135M: d 576, SwiGLU h 1536: L r = h matches exactly
    assert matched_depth(576, 1536, 32, "swiglu") == 48
    assert parameter_count(576, 32, 48, "swiglu") == mlp_parameter_count(576, 1536, "swiglu")
    # GELU: the L d output biases; the depth is the closest count by brute force over every
    # depth (at d 64, r 8: 30 blocks, not h / r = 32, which is 6% over)
    for d, h, r in ((256, 1024, 16), (64, 256, 8)):
        target = mlp_parameter_count(d, h)
        best = min(range(1, 4 * h), key=lambda k: abs(parameter_count(d, r, k) - target))
        assert matched_depth(d, h, r, "gelu") == best
        assert abs(parameter_count(d, r, best) / target - 1) < 0.05
    assert matched_depth(64, 256, 8) == 30
    with pytest.raises(ValueError, match="more than 5% off"):
        matched_depth(576, 1536, 1000, "swiglu")


@pytest.mark.parametrize("block", ["gelu", "swiglu"])
def test_split_init_equals_the_mlp_to_first_order(block):
    torch.manual_seed(0)
    d, h, r = 10, 12, 3
    w_in, w_gate, w_out = (torch.randn(h, d), torch.randn(h, d), torch.randn(d, h))
    b_in, b_out = torch.randn(h), torch.randn(d)
    x = torch.randn(50, d, dtype=torch.float64)

    def mlp(x, eps):
        if block == "gelu":
            return eps * (F.gelu(x @ w_in.double().T + b_in.double()) @ w_out.double().T
                          + b_out.double())  # fmt: skip
        return eps * (F.silu(x @ w_gate.double().T) * (x @ w_in.double().T)) @ w_out.double().T

    errors = []
    for eps in (1e-3, 1e-4):
        net = DLRNet(d, r, h // r, block).double()
        net.split_from_mlp(w_in.double(), b_in.double(), eps * w_out.double(),
                           eps * b_out.double(), w_gate.double())  # fmt: skip
        ref = mlp(x, eps)
        errors.append(float((net(x) - ref).norm() / ref.norm()))
    # the error is second order in the output scale: 10x smaller output, 10x smaller error
    assert errors[1] < errors[0] / 8 and errors[1] < 1e-2


def test_concatenation_returns_the_split_mlp_and_is_exact_at_depth_one():
    torch.manual_seed(0)
    d, h, r = 8, 6, 2
    w_in, b_in, w_out, b_out = torch.randn(h, d), torch.randn(h), torch.randn(d, h), torch.randn(d)
    net = DLRNet(d, r, h // r).split_from_mlp(w_in, b_in, w_out, b_out)
    got = concatenate(net)
    for a, b in zip(got, (w_in, b_in, w_out, b_out)):
        assert torch.equal(a, b)
    one = DLRNet(d, h, 1).split_from_mlp(w_in, b_in, w_out, b_out)
    x = torch.randn(4, d)
    wi, bi, wo, bo = concatenate(one)
    assert torch.allclose(one(x), F.gelu(x @ wi.T + bi) @ wo.T + bo, atol=1e-6)


def test_split_needs_depth_times_rank_hidden_units():
    with pytest.raises(ValueError, match="depth x rank = 12"):
        DLRNet(4, 5, 2).split_from_mlp(torch.zeros(12, 4), None, torch.zeros(4, 12), None)
