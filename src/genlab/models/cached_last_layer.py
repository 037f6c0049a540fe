"""Backbones whose layers before the last are frozen and cached, for training only the last
layer's query/key (the two-phase protocol of the attention study's real-data part).

A :class:`CachedModel` maps a cached last-block input ``h`` (B, T, d) (and a padding mask) to
logits read from the first token and that token's query attention over tokens.
:class:`ViTCached` wraps genlab's :class:`~genlab.models.vit.ViT` (first token: CLS);
:class:`BertLastLayerCached` wraps the last layer of a Hugging Face BERT (e.g.
all-MiniLM-L6-v2) computing only the first token's row, then a head (the authors: BERT's
pooler and classifier); :func:`encode_texts` runs the frozen layers once to fill the cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from genlab.models.vit import reinit_linears_


class CachedModel:
    """What phase 2 needs from a backbone: first-token logits from a cached last-block input,
    and the query/key parameters (with their re-initialization)."""

    def logits(self, h, mask):  # -> (logits (B, K), CLS attention (B, H, T))
        raise NotImplementedError

    def qk_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def reinit_qk(self, generator: torch.Generator, std: float, kind: str = "normal") -> None:
        raise NotImplementedError


class ViTCached(CachedModel):
    def __init__(self, vit):
        self.vit = vit

    def logits(self, h, mask):
        return self.vit.cls_logits_from_cache(h)

    def qk_parameters(self):
        return self.vit.qk_parameters()

    def reinit_qk(self, generator, std, kind="normal"):
        self.vit.reinit_last_qk(generator, std, kind)


class BertLastLayerCached(CachedModel):
    """The first token's row of a (post-LN) BERT layer from its cached input, then ``head``
    (any module on that row: a linear layer, or BERT's pooler and a classifier).

    Scores use q_cls . (W_k h_t + b_k) = (W_k^T q_cls) . h_t + q_cls . b_k and the output uses
    sum_t a_t (W_v h_t + b_v) = W_v (sum_t a_t h_t) + b_v, so no per-token projection is needed.
    """

    def __init__(self, layer, head: nn.Module):
        self.layer, self.head = layer, head
        sa = layer.attention.self
        self.sa = sa
        self.heads = sa.num_attention_heads
        self.d_head = sa.attention_head_size

    def cls_output(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa, hh, dh = self.sa, self.heads, self.d_head
        d = h.shape[-1]
        q = sa.query(h[:, 0]).view(-1, hh, dh)  # (B, H, dh)
        wk = sa.key.weight.view(hh, dh, d)
        u = torch.einsum("bhe,hed->bhd", q, wk)
        scores = (
            torch.einsum("btd,bhd->bht", h, u) + (q * sa.key.bias.view(hh, dh)).sum(-1)[..., None]
        )
        scores = scores / math.sqrt(dh)
        scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1)
        ctx = torch.einsum("bht,btd->bhd", attn, h)
        wv = sa.value.weight.view(hh, dh, d)
        o = torch.einsum("bhd,hed->bhe", ctx, wv) + sa.value.bias.view(hh, dh)
        o = o.reshape(h.shape[0], hh * dh)
        out = self.layer.attention.output
        a = out.LayerNorm(out.dense(o) + h[:, 0])
        ffn = self.layer.output
        return ffn.LayerNorm(ffn.dense(self.layer.intermediate(a)) + a), attn

    def logits(self, h, mask):
        c, attn = self.cls_output(h, mask)
        return self.head(c), attn

    def qk_parameters(self):
        return [self.sa.query.weight, self.sa.query.bias, self.sa.key.weight, self.sa.key.bias]

    def reinit_qk(self, generator, std, kind="normal"):
        reinit_linears_((self.sa.query, self.sa.key), generator, std, kind)


@torch.no_grad()
def encode_texts(
    tokenizer,
    model,
    texts: list[str],
    max_length: int,
    batch: int = 64,
    add_special_tokens: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(last-layer input (N, T, d), padding mask (N, T) bool, final first-token output (N, d));
    T is the longest tokenized text (<= max_length). Texts run in length order to cut padding.
    ``add_special_tokens=False`` (the authors' tokenization) makes the first token a word."""
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, add_special_tokens=add_special_tokens
    )
    lengths = [len(ids) for ids in enc["input_ids"]]
    if min(lengths) == 0:
        empty = lengths.index(0)
        raise ValueError(f"text {empty} ({texts[empty]!r}) has no tokens")
    t_max = max(lengths)
    n, d = len(texts), model.config.hidden_size
    h_all = torch.zeros(n, t_max, d)
    mask_all = torch.zeros(n, t_max, dtype=torch.bool)
    cls_all = torch.zeros(n, d)
    order = np.argsort(lengths, kind="stable")
    for i in range(0, n, batch):
        idx = order[i : i + batch].tolist()
        t = max(lengths[j] for j in idx)
        ids = torch.zeros(len(idx), t, dtype=torch.long)
        att = torch.zeros(len(idx), t, dtype=torch.long)
        for row, j in enumerate(idx):
            ids[row, : lengths[j]] = torch.tensor(enc["input_ids"][j])
            att[row, : lengths[j]] = 1
        out = model(input_ids=ids, attention_mask=att, output_hidden_states=True)
        h_all[idx, :t] = out.hidden_states[-2]
        mask_all[idx, :t] = att.bool()
        cls_all[idx] = out.last_hidden_state[:, 0]
    return h_all, mask_all, cls_all
