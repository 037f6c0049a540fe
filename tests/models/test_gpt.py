"""The small GPT: shapes, causality, padding, tied head, and that genlab.lock can lock it."""

import math

import torch

from genlab.lock import LockConfig, inject, locked_modules
from genlab.models.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=16)


def test_shapes_and_tied_head():
    torch.manual_seed(0)
    model = GPT(CFG)
    assert model(torch.randint(0, 50, (3, 10))).shape == (3, 10, 50)
    assert model.lm_head.weight is model.wte.weight


def test_a_later_token_never_changes_earlier_logits():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    with torch.no_grad():
        assert torch.allclose(model(ids)[0, :8], model(changed)[0, :8], atol=1e-6)
        assert not torch.allclose(model(ids)[0, 8:], model(changed)[0, 8:])


def test_right_padding_does_not_change_the_real_tokens():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    ids = torch.randint(0, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        assert torch.allclose(model(padded, mask)[0, :6], model(ids)[0], atol=1e-6)


def test_its_mlps_are_found_and_locked():
    model = GPT(CFG)
    report = inject(model, LockConfig(rank=16, depth=4))
    assert list(report) == ["h.0.mlp", "h.1.mlp"] == list(locked_modules(model))
    assert report["h.0.mlp"]["h"] == 64 and report["h.0.mlp"]["block"] == "gelu"


def test_initialization_is_gpt2s_so_the_untrained_loss_is_near_log_vocab():
    # N(0, 0.02) weights tied to the head give logits of std 0.02 sqrt(d) (layer-normed inputs),
    # so the loss on any tokens is ln V + O(0.02^2 d): within 0.05 of ln V at d 64. torch's
    # default N(0, 1) embedding gives std sqrt(d) = 8 logits and a loss of tens of nats.
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=256, block_size=32, n_layer=4, n_head=4, d_model=64)
    model = GPT(cfg).eval()
    ids = torch.randint(0, 256, (8, 32))
    with torch.no_grad():
        logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert abs(float(loss) - math.log(256)) < 0.05
    # each std estimated from n >= 4,096 draws: relative standard error 1 / sqrt(2 n) < 1.2%
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert not p.any(), name
        elif p.dim() == 2:
            want = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
            assert abs(float(p.std()) / want - 1) < 0.05, name
