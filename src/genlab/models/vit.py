"""A small Vision Transformer (pre-LN, CLS token) whose last block can run from a cached input.

Used by the real-data part of the ``attention`` study (Sakamoto & Sato, ICML 2025): phase 2
re-initializes and trains only the last block's query and key projections. The classifier reads
the CLS token alone, so for phase 2 only the CLS *query* row of the last block matters: keys and
values are needed for every token, everything after the attention only for CLS.
:meth:`ViT.last_block_input` computes the (frozen) input of the last block once, and
:meth:`ViT.cls_logits_from_cache` finishes the forward pass from it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    """Pre-LN transformer block with separate query/key/value/output projections."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.d_head = heads, d_model // heads
        self.ln1 = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, dh)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d_head).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output (B, T, d) and attention probabilities (B, H, T, T)."""
        h = self.ln1(x)
        q, k, v = self.split(self.query(h)), self.split(self.key(h)), self.split(self.value(h))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_head), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(x.shape)
        x = x + self.out(o)
        return x + self.mlp(self.ln2(x)), attn

    def cls_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLS row only: output (B, d) and CLS-query attention probabilities (B, H, T)."""
        h = self.ln1(x)
        q = self.split(self.query(h[:, :1]))  # (B, H, 1, dh)
        k, v = self.split(self.key(h)), self.split(self.value(h))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_head), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(x.shape[0], -1)  # (B, d)
        c = x[:, 0] + self.out(o)
        return c + self.mlp(self.ln2(c)), attn[:, :, 0]


class ViT(nn.Module):
    """Patch embedding + CLS + learned positions, ``depth`` blocks, LayerNorm, linear head."""

    def __init__(
        self,
        image_size: int = 28,
        patch: int = 7,
        channels: int = 1,
        d_model: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
        num_classes: int = 10,
    ):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not divisible by patch {patch}")
        self.patch = patch
        self.num_tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Linear(channels * patch * patch, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(0.02 * torch.randn(1, self.num_tokens, d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    @property
    def last(self) -> Block:
        return self.blocks[-1]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, T, d) embedded tokens, CLS first."""
        b, c, _, _ = x.shape
        p = self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)
        t = self.patch_embed(patches)
        return torch.cat([self.cls.expand(b, -1, -1), t], dim=1) + self.pos

    def last_block_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last block (everything before it is frozen in phase 2)."""
        h = self.tokens(x)
        for block in self.blocks[:-1]:
            h, _ = block(h)
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized CLS output (B, d): what the linear head reads."""
        h = self.tokens(x)
        for block in self.blocks:
            h, _ = block(h)
        return self.norm(h[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every block's attention probabilities (B, H, T, T)."""
        h, maps = self.tokens(x), []
        for block in self.blocks:
            h, attn = block(h)
            maps.append(attn)
        return self.head(self.norm(h[:, 0])), maps

    def cls_logits_from_cache(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the last block's CLS-query attention (B, H, T) from a cached input."""
        c, attn = self.last.cls_forward(h)
        return self.head(self.norm(c)), attn

    def qk_parameters(self) -> list[nn.Parameter]:
        """The last block's query and key weights and biases (the phase-2 parameters)."""
        return [
            self.last.query.weight,
            self.last.query.bias,
            self.last.key.weight,
            self.last.key.bias,
        ]

    @torch.no_grad()
    def reinit_last_qk(
        self, generator: torch.Generator, std: float = 0.02, kind: str = "normal"
    ) -> None:
        """Fresh query/key parameters in the last block only: ``normal``: N(0, std^2) weights
        and zero biases; ``reset``: nn.Linear's own initialization (:func:`reset_linear_`)."""
        reinit_linears_((self.last.query, self.last.key), generator, std, kind)


@torch.no_grad()
def reset_linear_(linear: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's default initialization drawn from ``generator``: weight and bias uniform on
    (-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5) has that bound)."""
    bound = 1.0 / math.sqrt(linear.in_features)
    linear.weight.copy_((2 * torch.rand(linear.weight.shape, generator=generator) - 1) * bound)
    if linear.bias is not None:
        linear.bias.copy_((2 * torch.rand(linear.bias.shape, generator=generator) - 1) * bound)


@torch.no_grad()
def reinit_linears_(linears, generator: torch.Generator, std: float, kind: str) -> None:
    """Re-initialize ``linears``: ``normal`` (N(0, std^2) weights, zero biases) or ``reset``
    (:func:`reset_linear_`, what the layers' own ``reset_parameters`` draws)."""
    for lin in linears:
        if kind == "reset":
            reset_linear_(lin, generator)
        elif kind == "normal":
            lin.weight.copy_(std * torch.randn(lin.weight.shape, generator=generator))
            if lin.bias is not None:
                lin.bias.zero_()
        else:
            raise ValueError(f"unknown init kind {kind!r}; use 'reset' or 'normal'")
