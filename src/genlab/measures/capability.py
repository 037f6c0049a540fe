"""What a language model can still do: held-out perplexity, and how closely a second model
(a locked one) follows a first.

Over the next-token predictions of ``batches`` (dicts with ``input_ids`` (B, T) and optionally
``attention_mask``), position t predicting token t + 1 wherever both are real tokens:

- perplexity = exp(mean_t -log p(x_{t+1} | x_<=t));
- agreement = the fraction of positions where both models' top-1 tokens are equal;
- mean KL(p_a || p_b) of the two next-token distributions, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def logits_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    return out.logits if hasattr(out, "logits") else out


def next_token_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T - 1) bool: position t predicts a real token t + 1 from a real token t."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    return mask[:, :-1] & mask[:, 1:]


@torch.no_grad()
def perplexity(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for batch in batches:
        logp = torch.log_softmax(logits_of(model, batch)[:, :-1].double(), -1)
        target = batch["input_ids"][:, 1:]
        keep = next_token_positions(batch)
        token_nll = -logp.gather(-1, target[..., None]).squeeze(-1)
        nll += float(token_nll[keep].sum())
        count += int(keep.sum())
    model.train(was_training)
    return math.exp(nll / count)


@torch.no_grad()
def next_token_agreement(
    a: nn.Module, b: nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """{"agreement": top-1 agreement, "kl": mean KL(p_a || p_b)} over the predicted positions."""
    modes = (a.training, b.training)
    a.eval()
    b.eval()
    agree, kl, count = 0, 0.0, 0
    for batch in batches:
        la = torch.log_softmax(logits_of(a, batch)[:, :-1].double(), -1)
        lb = torch.log_softmax(logits_of(b, batch)[:, :-1].double(), -1)
        keep = next_token_positions(batch)
        agree += int(((la.argmax(-1) == lb.argmax(-1)) & keep).sum())
        kl += float((la.exp() * (la - lb)).sum(-1)[keep].sum())
        count += int(keep.sum())
    a.train(modes[0])
    b.train(modes[1])
    return {"agreement": agree / count, "kl": kl / count}
