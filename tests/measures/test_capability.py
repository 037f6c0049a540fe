"""Perplexity and next-token agreement against explicit loops over positions."""

import math

import pytest
import torch

from genlab.measures.capability import next_token_agreement, perplexity
from genlab.models.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, d_model=8)


def _batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    return [{"input_ids": ids, "attention_mask": mask}, {"input_ids": ids[:1, :5]}]


def _loop_positions(batches):
    for batch in batches:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        for i in range(ids.shape[0]):
            for t in range(ids.shape[1] - 1):
                if mask is None or (mask[i, t] and mask[i, t + 1]):
                    yield batch, i, t


def test_perplexity_is_exp_of_the_mean_nll_over_real_positions():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    nll, n = 0.0, 0
    for batch, i, t in _loop_positions(_batches()):
        logits = model(**batch)[i, t].double()
        nll -= float(torch.log_softmax(logits, -1)[batch["input_ids"][i, t + 1]])
        n += 1
    assert n == 9 + 5 + 9 + 4
    assert perplexity(model, _batches()) == pytest.approx(math.exp(nll / n), rel=1e-10)


def test_agreement_and_kl_by_explicit_loop():
    torch.manual_seed(0)
    a, b = GPT(CFG).eval(), GPT(CFG).eval()
    agree, kl, n = 0, 0.0, 0
    for batch, i, t in _loop_positions(_batches()):
        pa = torch.softmax(a(**batch)[i, t].double(), -1)
        pb = torch.softmax(b(**batch)[i, t].double(), -1)
        agree += int(pa.argmax() == pb.argmax())
        kl += float((pa * (pa.log() - pb.log())).sum())
        n += 1
    got = next_token_agreement(a, b, _batches())
    assert got["agreement"] == pytest.approx(agree / n)
    assert got["kl"] == pytest.approx(kl / n, rel=1e-9)
    same = next_token_agreement(a, a, _batches())
    assert same["agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-12)
