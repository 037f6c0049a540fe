"""DLR-Net: a deep low-rank residual network that stands in for a transformer MLP (DLR-Lock,
Sakamoto, Ablin, Danieli & Cuturi, arXiv 2605.10777; only the abstract is public, so every
detail here is genlab's design).

For an input x (..., d), depth L and rank r:

    z_0 = x
    z_{l+1} = z_l + B_l act(A_l N_l(z_l) + a_l) + b_l        A_l (r, d), B_l (d, r)
    DLR(x) = z_L - x                                          (..., d)

so DLR(x) replaces MLP(x) where the MLP's output joins the residual stream. ``block="swiglu"``
uses B_l (silu(G_l u) * (U_l u)) with u = N_l(z_l) (G_l, U_l (r, d), no biases), as Llama's MLP.
N_l is the identity, RMSNorm or LayerNorm.

Parameters: a GELU block has 2 d r + r + d, a SwiGLU block 3 d r, so L r = h matches a GELU MLP
of hidden width h (2 d h + h + d) up to the L d output biases, and a SwiGLU MLP (3 d h) exactly.
A backward pass keeps, per token, the block inputs z_l (d each) and the r-wide activations of
every block: about L d + 2 h values against the MLP's d + 2 h.

Initialization: ``random`` (A_l, G_l, U_l as nn.Linear's default; B_l = 0 and b_l = 0, so the net
starts at exactly zero output) or ``split`` from an MLP (block l takes the l-th group of r hidden
units: to first order in the MLP's output, DLR(x) = MLP(x); the concatenation attack undoes it).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

Block = Literal["gelu", "swiglu"]
Norm = Literal["none", "rms", "layer"]


def _norm(kind: Norm, d: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "rms":
        return nn.RMSNorm(d)
    if kind == "layer":
        return nn.LayerNorm(d)
    raise ValueError(f"norm must be none, rms or layer, got {kind!r}")


class DLRBlock(nn.Module):
    """z -> z + B act(A N(z) + a) + b (gelu), or z + B (silu(G N(z)) * U N(z)) (swiglu)."""

    def __init__(self, d: int, r: int, block: Block = "gelu", norm: Norm = "none"):
        super().__init__()
        self.block = block
        self.norm = _norm(norm, d)
        if block == "gelu":
            self.down = nn.Linear(d, r)  # A_l, a_l
        elif block == "swiglu":
            self.gate = nn.Linear(d, r, bias=False)  # G_l
            self.down = nn.Linear(d, r, bias=False)  # U_l
        else:
            raise ValueError(f"block must be gelu or swiglu, got {block!r}")
        self.up = nn.Linear(r, d, bias=block == "gelu")  # B_l (, b_l)
        nn.init.zeros_(self.up.weight)  # the net starts at zero output
        if self.up.bias is not None:
            nn.init.zeros_(self.up.bias)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        u = self.norm(z)
        if self.block == "gelu":
            return self.up(F.gelu(self.down(u)))
        return self.up(F.silu(self.gate(u)) * self.down(u))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.residual(z)


class DLRNet(nn.Module):
    """A stack of ``depth`` DLR blocks of rank ``rank`` on width ``d``; forward returns
    z_L - x (the MLP's replacement)."""

    def __init__(self, d: int, rank: int, depth: int, block: Block = "gelu",
                 norm: Norm = "none"):  # fmt: skip
        super().__init__()
        if min(d, rank, depth) < 1:
            raise ValueError(f"d, rank and depth must be >= 1, got {d}, {rank}, {depth}")
        self.d, self.rank, self.depth, self.block_kind = d, rank, depth, block
        self.blocks = nn.ModuleList(DLRBlock(d, rank, block, norm) for _ in range(depth))
        self.checkpoint_every = 0
        """k > 0: while gradients are on, keep only every k-th block's input for backward and
        recompute the blocks in between (the checkpointing attack); 0: keep everything."""

    def _segment(self, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for blk in self.blocks[start:stop]:
            z = blk(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.checkpoint_every
        if k > 0 and torch.is_grad_enabled():
            z = x
            for start in range(0, self.depth, k):
                z = checkpoint(self._segment, z, start, start + k, use_reentrant=False)
        else:
            z = self._segment(x, 0, self.depth)
        return z - x

    @torch.no_grad()
    def split_from_mlp(self, w_in: torch.Tensor, b_in: torch.Tensor | None, w_out: torch.Tensor,
                       b_out: torch.Tensor | None, w_gate: torch.Tensor | None = None) -> DLRNet:  # fmt: skip
        """``split`` initialization from an MLP x -> W_out act(W_in x + b_in) + b_out (GELU;
        W_in (h, d), W_out (d, h)) or W_out (silu(W_gate x) * (W_in x)) (SwiGLU): block l
        takes hidden units l r .. (l + 1) r - 1; b_out goes to the last block. Needs
        depth x rank = h."""
        h = w_in.shape[0]
        if self.depth * self.rank != h:
            raise ValueError(f"split needs depth x rank = {h} hidden units, got "
                             f"{self.depth} x {self.rank}")  # fmt: skip
        for l, blk in enumerate(self.blocks):
            rows = slice(l * self.rank, (l + 1) * self.rank)
            blk.down.weight.copy_(w_in[rows])
            if blk.down.bias is not None:
                blk.down.bias.copy_(b_in[rows] if b_in is not None else 0.0)
            if self.block_kind == "swiglu":
                blk.gate.weight.copy_(w_gate[rows])
            blk.up.weight.copy_(w_out[:, rows])
            if blk.up.bias is not None:
                blk.up.bias.zero_()
        if b_out is not None and self.blocks[-1].up.bias is not None:
            self.blocks[-1].up.bias.copy_(b_out)
        return self


def concatenate(net: DLRNet) -> tuple[torch.Tensor, ...]:
    """The concatenation attack: every block's weights side by side as one wide MLP
    (W_in (L r, d), b_in, W_out (d, L r), b_out = sum_l b_l; SwiGLU: W_in, W_gate, W_out), the
    MLP the net equals to first order when every block reads x (exact for depth 1 without a
    norm). Free to an attacker who knows the defence."""
    blocks = list(net.blocks)
    w_in = torch.cat([b.down.weight for b in blocks])
    w_out = torch.cat([b.up.weight for b in blocks], dim=1)
    if net.block_kind == "swiglu":
        return w_in.detach(), torch.cat([b.gate.weight for b in blocks]).detach(), w_out.detach()
    b_in = torch.cat([b.down.bias for b in blocks])
    b_out = torch.stack([b.up.bias for b in blocks]).sum(0)
    return w_in.detach(), b_in.detach(), w_out.detach(), b_out.detach()


def parameter_count(d: int, rank: int, depth: int, block: Block = "gelu") -> int:
    """Parameters of a DLRNet without norms: L (2 d r + r + d) (gelu) or L 3 d r (swiglu)."""
    per_block = 2 * d * rank + rank + d if block == "gelu" else 3 * d * rank
    return depth * per_block


def mlp_parameter_count(d: int, h: int, block: Block = "gelu") -> int:
    """A GELU MLP d -> h -> d with biases (2 d h + h + d), or a SwiGLU MLP without (3 d h)."""
    return 2 * d * h + h + d if block == "gelu" else 3 * d * h


def matched_depth(d: int, h: int, rank: int, block: Block = "gelu", within: float = 0.05) -> int:
    """The depth L whose DLRNet of rank ``rank`` comes closest to the MLP's parameter count
    (L r = h up to the GELU blocks' L d output biases, which a small d makes matter: at d 64,
    r 8 the closest depth is 30, not 32); ValueError naming the closest count when it is more
    than ``within`` (relative) off."""
    target = mlp_parameter_count(d, h, block)
    depth = min(range(1, 2 * max(1, h // rank) + 2),
                key=lambda k: (abs(parameter_count(d, rank, k, block) - target), k))  # fmt: skip
    count = parameter_count(d, rank, depth, block)
    if abs(count - target) > within * target:
        raise ValueError(f"rank {rank}: the closest depth {depth} gives {count:,} parameters "
                         f"against the MLP's {target:,} (more than {within:.0%} off)")  # fmt: skip
    return depth
