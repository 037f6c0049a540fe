"""Nanda et al.'s one-layer transformer for modular arithmetic ("Progress measures for grokking
via mechanistic interpretability", 2023), written out nanoGPT-style.

Input: token triples (a, b, "=") with a, b in [0, p) and "=" the token id p (vocabulary p + 1);
output: logits over the p residues read at the last position ("="). One block, attention then
MLP, each added to the residual stream; no LayerNorm, no biases in attention, learned
positional embeddings, causal attention (position i attends to positions <= i).

Shapes: B batch, T = 3 positions, D = d_model, H heads of size d_head, F = d_mlp, V = p + 1
input tokens, C = p output classes.

Init (as in Nanda's progress-measures code; every parameter explicit, no nn.Linear):
    W_E   (V, D)      ~ N(0, 1/D)           (Nanda stores it transposed as (D, V))
    W_pos (T, D)      ~ N(0, 1/D)
    W_Q, W_K, W_V (H, d_head, D) ~ N(0, 1/D)
    W_O   (D, H*d_head) ~ N(0, 1/D)
    W_in  (F, D) ~ N(0, 1/D),  b_in (F,) = 0
    W_out (D, F) ~ N(0, 1/D),  b_out (D,) = 0
    W_U   (D, C)      ~ N(0, 1/C)           (Nanda: 1/sqrt(d_vocab) with d_vocab = p + 1)
The parameters are drawn in that order under ``torch.manual_seed(seed)``. Differences from Nanda:
the unembedding maps to the p residues only (Nanda's maps to all p + 1 tokens, so its std is
1/sqrt(p + 1) and "=" is a never-correct class); the masked attention score is -inf (Nanda
subtracts 1e10, the same after softmax).

Training (:func:`train_step`, :func:`make_optimizer`): full batch, AdamW lr 1e-3, weight decay
1.0, betas (0.9, 0.98), Nanda's linear warm-up of the lr over the first 10 steps, and the
cross-entropy computed in float64 (logits cast before log_softmax, as Nanda does to avoid the
float32 "slingshot" loss spikes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genlab.losses import cross_entropy


@dataclass
class ModularTransformerConfig:
    p: int = 113
    """Modulus: inputs a, b in [0, p), p output classes, "=" token id p."""
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 3
    """Sequence length: (a, b, "=")."""

    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p


class ModularTransformer(nn.Module):
    """tokens (B, 3) int64 -> logits (B, p) at the "=" position.

    ``features(tokens)`` is the residual stream at the last position after the block, the input
    of the unembedding (B, d_model): the penultimate representation for neural collapse.
    ``forward(tokens, return_cache=True)`` also returns the attention pattern and activations.
    """

    def __init__(self, config: ModularTransformerConfig, seed: int | None = None):
        super().__init__()
        c = self.config = config
        if c.n_heads * c.d_head <= 0 or c.d_model <= 0 or c.d_mlp <= 0:
            raise ValueError("d_model, n_heads, d_head and d_mlp must be positive")
        d, h, dh, f = c.d_model, c.n_heads, c.d_head, c.d_mlp
        self.W_E = nn.Parameter(torch.empty(c.d_vocab, d))  # (V, D)
        self.W_pos = nn.Parameter(torch.empty(c.n_ctx, d))  # (T, D)
        self.W_Q = nn.Parameter(torch.empty(h, dh, d))  # (H, d_head, D)
        self.W_K = nn.Parameter(torch.empty(h, dh, d))
        self.W_V = nn.Parameter(torch.empty(h, dh, d))
        self.W_O = nn.Parameter(torch.empty(d, h * dh))  # (D, H*d_head)
        self.W_in = nn.Parameter(torch.empty(f, d))  # (F, D)
        self.b_in = nn.Parameter(torch.zeros(f))
        self.W_out = nn.Parameter(torch.empty(d, f))  # (D, F)
        self.b_out = nn.Parameter(torch.zeros(d))
        self.W_U = nn.Parameter(torch.empty(d, c.d_vocab_out))  # (D, C)
        # causal mask: (T, T), True where query position i may attend key position j <= i
        self.register_buffer(
            "mask", torch.tril(torch.ones(c.n_ctx, c.n_ctx, dtype=torch.bool)), persistent=False
        )
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Nanda's init (module docstring), under ``torch.manual_seed(seed)`` when a seed is
        given (the global RNG state is restored afterwards)."""
        c = self.config
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for w in (self.W_E, self.W_pos, self.W_Q, self.W_K, self.W_V, self.W_O, self.W_in):
                w.normal_(0.0, 1.0 / math.sqrt(c.d_model))
            self.b_in.zero_()
            self.W_out.normal_(0.0, 1.0 / math.sqrt(c.d_model))
            self.b_out.zero_()
            self.W_U.normal_(0.0, 1.0 / math.sqrt(c.d_vocab_out))

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal multi-head attention on the residual stream x (B, T, D); returns its output
        (B, T, D) and the attention pattern (B, H, T_query, T_key)."""
        c = self.config
        q = torch.einsum("hed,btd->bhte", self.W_Q, x)  # (B, H, T, d_head)
        k = torch.einsum("hed,btd->bhte", self.W_K, x)  # (B, H, T, d_head)
        v = torch.einsum("hed,btd->bhte", self.W_V, x)  # (B, H, T, d_head)
        t = x.shape[1]
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.d_head)  # (B, H, T_q, T_k)
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        pattern = scores.softmax(dim=-1)  # (B, H, T_q, T_k), rows sum to 1
        z = pattern @ v  # (B, H, T, d_head)
        z = z.transpose(1, 2).reshape(x.shape[0], t, c.n_heads * c.d_head)  # (B, T, H*d_head)
        return z @ self.W_O.t(), pattern  # (B, T, D)

    def mlp(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ReLU MLP on x (B, T, D); returns its output (B, T, D) and hidden acts (B, T, F)."""
        hidden = torch.relu(x @ self.W_in.t() + self.b_in)  # (B, T, F)
        return hidden @ self.W_out.t() + self.b_out, hidden  # (B, T, D)

    def last_position(self, resid: torch.Tensor) -> torch.Tensor:
        """The block's output at the last position only, from the embedded stream (B, T, D).

        Only the "=" position is read out, and in one layer nothing else depends on the other
        positions' queries or MLP outputs: keys and values at every position, the query and
        the MLP at the last one. The same numbers as the full pass (up to float rounding) for
        about a third of its MLP and query cost, which is most of a training step."""
        c = self.config
        b, t, d = resid.shape
        x_last = resid[:, -1]  # (B, D)
        # Projections as single matmuls over all heads; T = 3, so the per-example score and
        # mixing products are cheaper elementwise than as millions of tiny batched matmuls.
        q = (x_last @ self.W_Q.reshape(-1, d).t()).view(b, 1, c.n_heads, c.d_head)  # (B,1,H,dh)
        k = (resid @ self.W_K.reshape(-1, d).t()).view(b, t, c.n_heads, c.d_head)  # (B,T,H,dh)
        v = (resid @ self.W_V.reshape(-1, d).t()).view(b, t, c.n_heads, c.d_head)  # (B,T,H,dh)
        # the last query may attend every key position (causal mask all True on its row)
        scores = (q * k).sum(-1) / math.sqrt(c.d_head)  # (B, T, H)
        z = (scores.softmax(dim=1)[..., None] * v).sum(1)  # (B, H, d_head)
        resid_mid = x_last + z.reshape(b, -1) @ self.W_O.t()  # (B, D)
        hidden = torch.relu(resid_mid @ self.W_in.t() + self.b_in)  # (B, F)
        return resid_mid + hidden @ self.W_out.t() + self.b_out  # (B, D)

    def forward(
        self, tokens: torch.Tensor, return_cache: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """tokens (B, T) int64 -> logits (B, p) read at the last position."""
        t = tokens.shape[1]
        resid = F.embedding(tokens, self.W_E) + self.W_pos[:t]  # (B, T, D)
        if not return_cache:
            return self.last_position(resid) @ self.W_U  # (B, p)

        attn_out, pattern = self.attention(resid)
        resid_mid = resid + attn_out  # (B, T, D)
        mlp_out, hidden = self.mlp(resid_mid)
        resid_post = resid_mid + mlp_out  # (B, T, D)
        final = resid_post[:, -1]  # (B, D): the penultimate representation
        logits = final @ self.W_U  # (B, p)
        cache = {
            "resid_pre": resid,
            "attn_pattern": pattern,
            "resid_mid": resid_mid,
            "mlp_hidden": hidden,
            "resid_post": resid_post,
            "features": final,
        }
        return logits, cache

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream at the last position, before unembedding: (B, d_model)."""
        t = tokens.shape[1]
        return self.last_position(F.embedding(tokens, self.W_E) + self.W_pos[:t])


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy computed in float64 (Nanda: cast the logits before log_softmax)."""
    return cross_entropy(logits, labels, torch.float64)


def make_optimizer(
    model: ModularTransformer,
    lr: float = 1e-3,
    weight_decay: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.98),
    warmup_steps: int = 10,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and Nanda's linear warm-up schedule (call ``scheduler.step()`` after each
    ``optimizer.step()``); the defaults are Nanda et al.'s. Warm-up: update s = 0, 1, 2, ...
    uses lr * min(s / warmup_steps, 1), so the first update has lr 0 (only the Adam moments
    move), as in Nanda's code; 0 disables it."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    warm = warmup_steps

    def factor(step: int) -> float:
        return 1.0 if warm <= 0 else min(step / warm, 1.0)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(
    model: ModularTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    tokens: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """One full-batch step; returns the training loss (before the update)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(tokens), labels)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach())


@torch.no_grad()
def accuracy(model: ModularTransformer, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(tokens).argmax(-1) == labels).to(torch.float64).mean())
