import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.tokens import derive_seed, make_token_data
from genlab.models.token_attention import (
    TokenAttention,
    TokenTransformer,
    gram_operators,
    head,
    init_w0,
    log_schedule,
    loss_and_query_grad,
    token_values,
    train_naive,
    train_token_attention,
    train_token_attention_batched,
    train_transformer,
)
from genlab.studies.attention.grid import BENIGN, HARMFUL, NOT_OVERFITTING, classify_regimes

F64 = torch.float64
EPS64, EPS32 = torch.finfo(F64).eps, torch.finfo(torch.float32).eps


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: intra-op threads only add synchronisation (slow on a busy machine)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(mu=4.0, seed=0, d=24, n=6, T=5, n_test=40):
    return make_token_data(n=n, n_test=n_test, T=T, d=d, mu_norm=mu, seed=seed, dtype=F64)


def test_init_w0_is_the_default_nn_linear_init():
    d = 17
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(3, "W0"))
        ref = nn.Linear(d, d, bias=False).weight.detach()
    w = init_w0(d, 3)
    assert torch.equal(w, ref)
    assert w.abs().max() <= 1 / math.sqrt(d)
    assert torch.equal(init_w0(d, 3, F64), ref.double())


def test_head_and_values():
    nu = head(5.0, 6)
    assert torch.allclose(nu, (5 * torch.eye(6)[0] - 5 * torch.eye(6)[1]) / (math.sqrt(2) * 25))
    x = torch.randn(3, 4, 6)
    # (x_1 - x_2) / (sqrt(2) mu) vs a float32 dot product of d = 6: <= 2 d eps sum |x_k nu_k|.
    atol = 2 * 6 * EPS32 * float((x.abs() @ nu.abs()).max())
    assert torch.allclose(token_values(x, 5.0), x @ nu, rtol=0, atol=atol)


def test_closed_form_gradient_matches_autograd():
    data = tiny()
    x, y = data.x_train, data.y_train
    nu = head(data.mu_norm, data.d, F64)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(data.d, data.d, generator=g, dtype=F64) / 5
    p = torch.randn(data.d, generator=g, dtype=F64) / 5
    W.requires_grad_(True)
    p.requires_grad_(True)
    s = (x @ W) @ p
    s.retain_grad()
    a = torch.softmax(s, dim=-1)
    loss = F.softplus(-y * (a * (x @ nu)).sum(-1)).mean()
    loss.backward()
    q = (W @ p).detach()
    loss2, gq = loss_and_query_grad(x, y, x @ nu, q)
    # Round-off only. Autograd scores (x W) p and closed-form x (W p) differ by <= 2 d eps
    # |x| |W| |p|; that moves the loss by sum |dL/ds| times as much. The gradients sum
    # m = n T terms b x (b = dL/ds, whose relative change is <= 2 |v - f| <= 4 max |v| times
    # the scores' change) and dot products of d: relative to their absolute terms.
    m, d = x.shape[0] * x.shape[1], x.shape[2]
    wa, pa, b = W.detach().abs(), p.detach().abs(), s.grad
    s_err = 2 * d * EPS64 * float((x.abs() @ wa @ pa).max())
    assert abs(loss.item() - loss2.item()) <= float(b.abs().sum()) * s_err + m * EPS64 * loss.item()
    rel = 2 * (m + d) * EPS64 + 4 * float((x @ nu).abs().max()) * s_err
    g_terms = torch.einsum("nt,ntd->d", b.abs(), x.abs())  # entrywise bound on |g| terms
    atol_w, atol_p = (
        rel * float(torch.outer(g_terms, pa).max()),
        rel * float((wa.T @ g_terms).max()),
    )
    assert torch.allclose(W.grad, torch.outer(gq, p.detach()), rtol=0, atol=atol_w)  # g p^T
    assert torch.allclose(p.grad, W.detach().T @ gq, rtol=0, atol=atol_p)  # dL/dp = W^T g
    # and against gradcheck on q directly
    assert torch.autograd.gradcheck(
        lambda qq: loss_and_query_grad(x, y, x @ nu, qq)[0], (q.clone().requires_grad_(True),)
    )


def _max_diff(h1, h2):
    keys = ("train_loss", "test_loss", "attn_clean", "attn_noisy", "attn_test", "tracked_attn")
    diff = max((getattr(h1, k) - getattr(h2, k)).abs().nan_to_num(0).max().item() for k in keys)
    return max(diff, (h1.final_query - h2.final_query).abs().max().item())


def _trajectory_atol(cell, naive, **kw) -> float:
    """Round-off allowed between two float64 trainings of one cell by different code paths.
    Moving every input by one ulp (eps relative) perturbs every step by about one rounding;
    how far that moves the logged values measures how much training amplifies rounding (up to
    ~1e6 for the mu = 20 cells, varying ~5x with the direction: the largest of three). Each
    path rounds its reductions over the m = n T tokens and d features at up to m + d ulps."""
    per_ulp = EPS64  # the logged values are O(1)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        sign = 2.0 * torch.randint(0, 2, cell.x_train.shape, generator=g, dtype=F64) - 1
        moved = dataclasses.replace(cell, x_train=cell.x_train * (1 + EPS64 * sign))
        per_ulp = max(per_ulp, _max_diff(naive, train_naive(moved, **kw)))
    return 2 * (cell.n * cell.T + cell.d) * per_ulp


@pytest.mark.parametrize(
    "w_init,train_w", [("kaiming", True), ("identity", True), ("identity", False)]
)
@pytest.mark.parametrize("method", ["gram", "dense"])
def test_fast_batched_equals_naive_autograd(w_init, train_w, method):
    # three cells with their own data, mu_norm and seed; d=24 < m=30 exercises rank deficiency
    cells = [tiny(3.0, 0), tiny(9.0, 1), tiny(20.0, 2)]
    kw = dict(steps=50, lr=0.5, w_init=w_init, train_w=train_w, log_every=5)
    naive = [train_naive(c, **kw) for c in cells]
    fast = train_token_attention_batched(cells, method=method, **kw)
    for cell, hn, hf in zip(cells, naive, fast):
        assert torch.equal(hn.steps, hf.steps)
        assert _max_diff(hn, hf) <= _trajectory_atol(cell, hn, **kw)
        for k in ("train_acc", "noisy_train_acc", "test_acc"):
            assert torch.equal(getattr(hn, k).nan_to_num(-1), getattr(hf, k).nan_to_num(-1))
    assert fast[0].train_loss[-1] < fast[0].train_loss[0]  # it learns something


def test_gram_operators_identity():
    x = torch.randn(2, 3, 4, 5, dtype=F64)
    ops = gram_operators(x, None)
    assert torch.allclose(ops.P, ops.G) and torch.allclose(ops.K, ops.U)
    assert ops.P.shape == (2, 12, 12) and ops.U.shape == (2, 5, 12)


def test_attention_starts_uniform():
    data = tiny()
    for hist in (train_token_attention(data, steps=3), train_naive(data, steps=3)):
        assert hist.steps.tolist() == [0, 3]
        assert torch.allclose(hist.tracked_attn[0], torch.full((6, 5), 0.2, dtype=F64))
        assert torch.allclose(hist.attn_test[0], torch.full((4,), 0.2, dtype=F64))
    model = TokenAttention(data.d, data.mu_norm, dtype=F64)
    assert torch.all(model.p == 0)
    assert torch.allclose(model.attention(data.x_train), torch.full((6, 5), 0.2, dtype=F64))


def test_history_contents():
    data = tiny(d=32)
    h = train_token_attention(data, steps=20, lr=0.5, log_every=7, track=[0, 3])
    assert h.steps.tolist() == [0, 7, 14, 20]
    assert h.train_loss.shape == (4,) and h.attn_clean.shape == (4, 4)
    assert h.tracked_attn.shape == (4, 2, 5) and h.tracked_idx.tolist() == [0, 3]
    assert h.final_query.shape == (32,)
    assert torch.allclose(h.tracked_attn.sum(-1), torch.ones(4, 2, dtype=F64))
    fin = h.final()
    assert set(fin) >= {"train_loss", "test_loss", "noisy_train_acc", "attn_relevant_test"}
    assert log_schedule(10, 4) == [0, 4, 8, 10]
    assert log_schedule(10, log_steps=[3, 99]) == [0, 3, 10]


def test_transformer_shapes_and_a_step_reduces_the_loss():
    data = tiny(d=16)
    model = TokenTransformer(16, seed=0, dtype=F64)
    f, att = model.forward_with_attention(data.x_train)
    assert f.shape == (6,) and att.shape == (6, 6)
    assert torch.allclose(att.sum(-1), torch.ones(6, dtype=F64))
    assert model.cls_attention(data.x_train).shape == (6, 5)
    assert model.cls_attention(data.x_train, include_cls=True).shape == (6, 6)
    # deterministic init that leaves the global RNG alone
    state = torch.random.get_rng_state()
    again = TokenTransformer(16, seed=0, dtype=F64)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again.cls, model.cls) and torch.equal(again.qkv.weight, model.qkv.weight)

    def loss():
        return F.softplus(-data.y_train * model(data.x_train)).mean()

    opt = torch.optim.SGD(model.parameters(), lr=5e-3)
    before = loss()
    before.backward()
    opt.step()
    assert loss().item() < before.item()

    for skip in (True, False):
        h = train_transformer(data, steps=30, lr=5e-2, skip=skip, log_every=10)
        assert h.steps.tolist() == [0, 10, 20, 30] and h.tracked_attn.shape == (4, 6, 5)
        assert h.train_loss[-1] < h.train_loss[0]


# Two (three) hand-picked cells at the paper's defaults (n=20, T=8, rho=0.1, eta=0.2, lr=5e-3).
# Verified: at (d=500, ||mu||=100) the flipped samples stay unfitted through 1000 (and 2000)
# steps for seeds 0-7; at (d=2000, ||mu||=20) seeds 1-7 fit every flipped sample by step 1000
# and seed 0 by step 2000 (3 of 4 at 1000), hence 2000 steps here.


def _regime(hist, data):
    return int(
        classify_regimes(hist.noisy_train_acc[-1].numpy(), hist.test_loss[-1].numpy(), data.mu_norm)
    )


def test_regime_not_overfitting_large_signal():
    data = make_token_data(d=500, mu_norm=100.0, seed=0)
    h = train_token_attention(data, steps=1000, log_every=None)
    assert h.noisy_train_acc[-1] == 0.0  # flipped samples not memorised
    assert h.train_acc[-1] == pytest.approx(0.8)  # = 1 - eta
    assert h.test_acc[-1] >= 0.99
    assert h.attn_noisy[-1, 0] > 0.9  # noisy samples still attend to their relevant token
    assert _regime(h, data) == NOT_OVERFITTING


def test_regime_benign_default_cell():
    data = make_token_data(d=2000, mu_norm=20.0, seed=0)
    h = train_token_attention(data, steps=2000, log_every=None)
    assert h.train_acc[-1] == 1.0 and h.noisy_train_acc[-1] == 1.0  # all fitted, flipped too
    assert h.test_acc[-1] >= 0.99
    assert h.attn_clean[-1, 0] > 0.9 and h.attn_noisy[-1, 0] < 0.1  # memorised via noise tokens
    assert _regime(h, data) == BENIGN


def test_regime_harmful_weak_signal():
    data = make_token_data(d=5000, mu_norm=5.0, seed=0, n_test=300)
    h = train_token_attention(data, steps=1000, log_every=None)
    assert h.noisy_train_acc[-1] == 1.0 and h.train_acc[-1] == 1.0
    assert h.test_acc[-1] < 0.95 and h.test_loss[-1] > 0.6  # near the uniform-attention 0.65
    assert _regime(h, data) == HARMFUL


def test_low_rank_gram_equals_its_dense_form():
    from genlab.models.token_attention import LowRankGram, _rmul

    g = torch.Generator().manual_seed(0)
    m, k, B = 12, 2, 3
    base = torch.randn(m, m, generator=g, dtype=torch.float64)
    q = torch.randn(k, k, generator=g, dtype=torch.float64)
    op = LowRankGram(
        base + base.T, torch.randn(m, k, generator=g, dtype=torch.float64),
        torch.randn(k, m, generator=g, dtype=torch.float64), q + q.T,
        torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64),
    )  # fmt: skip
    dense = op.dense()
    # brute force, one cell at a time, from the formula O0 + mu (F C + C^T F^T) + mu^2 C^T Q C
    for b in range(B):
        mu = op.mu[b]
        ref = op.O0 + mu * (op.F @ op.C + op.C.T @ op.F.T) + mu**2 * op.C.T @ op.Q @ op.C
        torch.testing.assert_close(dense[b], ref)
        torch.testing.assert_close(dense[b], dense[b].T)  # symmetric up to round-off
    x = torch.randn(B, 1, m, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_rmul(x, op), torch.bmm(x, dense))
    torch.testing.assert_close(_rmul(x, dense), torch.bmm(x, dense))
