import math

import pytest
import torch

from genlab.data.modular import make_modular_data
from genlab.models.modular_transformer import (
    ModularTransformer,
    ModularTransformerConfig,
    accuracy,
    loss_fn,
    make_optimizer,
    train_step,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is as fast and immune to other processes' load."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def roundoff_atol(c: ModularTransformerConfig, scale: float, dtype: torch.dtype, extra: int = 0):
    """Absolute round-off between the full pass and the last-position pass: one rounding per
    term of each reduction from the embedding to the logits (QKV and W_in: d_model, scores:
    d_head, mixing: n_ctx, W_O: n_heads d_head, W_out: d_mlp, unembedding: d_model), on values
    at most ``scale`` (the largest activation); ``extra`` more terms (e.g. a batch mean)."""
    n = 3 * c.d_model + c.d_head + c.n_ctx + c.n_heads * c.d_head + c.d_mlp + extra
    return 2 * n * torch.finfo(dtype).eps * scale


def largest(*tensors) -> float:
    return max(float(t.detach().abs().max()) for t in tensors)


def _tokens(p, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ab = torch.randint(0, p, (n, 2), generator=g)
    return torch.cat([ab, torch.full((n, 1), p)], dim=1)


def test_default_config_is_nandas():
    c = ModularTransformerConfig()
    assert (c.p, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.n_ctx) == (113, 128, 4, 32, 512, 3)
    opt, sched = make_optimizer(ModularTransformer(c, seed=0))  # Nanda's training defaults
    group = opt.param_groups[0]
    assert (group["weight_decay"], group["betas"], group["initial_lr"]) == (1.0, (0.9, 0.98), 1e-3)
    assert c.d_vocab == 114 and c.d_vocab_out == 113
    model = ModularTransformer(c, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 114 * 128 + 3 * 128 + 4 * 128 * 128 + 2 * 512 * 128 + 512 + 128 + 128 * 113
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    # init scale: std 1/sqrt(d_model) everywhere but the unembedding (1/sqrt(p))
    assert abs(model.W_in.std().item() - 1 / math.sqrt(128)) < 0.005
    assert abs(model.W_U.std().item() - 1 / math.sqrt(113)) < 0.005
    assert torch.all(model.b_in == 0) and torch.all(model.b_out == 0)


def test_shapes_and_features():
    c = ModularTransformerConfig(p=23, d_model=32, n_heads=4, d_head=8, d_mlp=64)
    model = ModularTransformer(c, seed=0)
    tokens = _tokens(23, 10)
    logits, cache = model(tokens, return_cache=True)
    assert logits.shape == (10, 23)
    assert cache["attn_pattern"].shape == (10, 4, 3, 3)
    assert cache["resid_post"].shape == (10, 3, 32)
    assert cache["mlp_hidden"].shape == (10, 3, 64)
    feats = model.features(tokens)
    assert feats.shape == (10, 32)
    atol = roundoff_atol(c, largest(logits, *cache.values()), torch.float32)  # float32 passes
    torch.testing.assert_close(feats, cache["resid_post"][:, -1], rtol=0, atol=atol)
    # features are the unembed's input
    torch.testing.assert_close(feats @ model.W_U, logits, rtol=0, atol=atol)


def test_last_position_pass_equals_the_full_pass():
    # Training uses the last-position-only pass; the full pass (every position's query and MLP,
    # causal mask) is the reference. float64 so that only rounding can differ.
    c = ModularTransformerConfig(p=23, d_model=32, n_heads=4, d_head=8, d_mlp=64)
    model = ModularTransformer(c, seed=1).double()
    tokens = _tokens(23, 50, seed=2)
    full, cache = model(tokens, return_cache=True)
    atol = roundoff_atol(c, largest(full, *cache.values()), torch.float64)
    torch.testing.assert_close(model(tokens), full, rtol=0, atol=atol)
    torch.testing.assert_close(model.features(tokens), cache["features"], rtol=0, atol=atol)
    # and the gradients agree too
    grads = []
    for fast in (True, False):
        model.zero_grad()
        logits = model(tokens) if fast else model(tokens, return_cache=True)[0]
        loss_fn(logits, tokens[:, 0]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # Backward through the same reductions, plus the mean over the 50 examples.
    atol = roundoff_atol(c, largest(grads[1]), torch.float64, extra=50)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=atol)


def test_attention_is_causal():
    c = ModularTransformerConfig(p=23, d_model=32, n_heads=2, d_head=16, d_mlp=64)
    model = ModularTransformer(c, seed=1)
    tokens = _tokens(23, 16)
    _, cache = model(tokens, return_cache=True)
    pattern = cache["attn_pattern"]  # (B, H, T_q, T_k)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(16, 2, 3))
    assert torch.all(pattern.triu(diagonal=1) == 0)  # no attention to later positions
    assert torch.all(pattern[..., 0, 0] == 1)  # the first position sees only itself
    # changing b leaves position 0 untouched but changes the prediction at "="
    other = tokens.clone()
    other[:, 1] = (other[:, 1] + 1) % 23
    _, cache2 = model(other, return_cache=True)
    torch.testing.assert_close(cache2["resid_post"][:, 0], cache["resid_post"][:, 0])
    assert not torch.allclose(cache2["features"], cache["features"])


def test_deterministic_by_seed():
    c = ModularTransformerConfig(p=23, d_model=32, d_head=8, d_mlp=64)
    a, b, other = (ModularTransformer(c, seed=s) for s in (3, 3, 4))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.W_E, other.W_E)
    state = torch.random.get_rng_state()
    ModularTransformer(c, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_loss_is_float64_cross_entropy():
    logits = torch.randn(7, 5)
    labels = torch.randint(0, 5, (7,))
    loss = loss_fn(logits, labels)
    assert loss.dtype == torch.float64
    # log-sum-exp over 5 classes and a mean over 7 examples, on values <= max |logit| + log 5.
    atol = 2 * (5 + 7) * torch.finfo(torch.float64).eps * (largest(logits) + math.log(5))
    want = torch.nn.functional.cross_entropy(logits.double(), labels)
    torch.testing.assert_close(loss, want, rtol=0, atol=atol)


def test_warmup_and_optimizer_settings():
    model = ModularTransformer(ModularTransformerConfig(p=7, d_model=8, d_head=2, d_mlp=8), 0)
    opt, sched = make_optimizer(model)
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1.0 and group["betas"] == (0.9, 0.98)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == lrs[11] == 1e-3


def test_training_reduces_loss_and_is_deterministic():
    p = 23
    d = make_modular_data(p=p, train_fraction=0.3, seed=0, encoding="index")
    c = ModularTransformerConfig(p=p)

    def run(steps):
        model = ModularTransformer(c, seed=0)
        opt, sched = make_optimizer(model)
        losses = [train_step(model, opt, sched, d.x_train, d.y_train) for _ in range(steps)]
        return model, losses

    model, losses = run(200)
    assert losses[-1] < 0.05 * losses[0]  # observed 3.3 -> ~0.002
    assert accuracy(model, d.x_train, d.y_train) == 1.0
    model2, losses2 = run(5)
    assert losses2 == losses[:5]
