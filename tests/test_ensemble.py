from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from genlab.data.modular import make_modular_data
from genlab.ensemble import (
    ADAMW_IMPLS,
    MLPEnsemble,
    _check_callback_steps,
    adamw_step_,
    build_mlp,
    train_ensemble,
)
from genlab.errors import CheckpointError, ConfigError
from genlab.losses import LOSSES
from genlab.train import BatchSampler

SIZES = [20, 16, 16, 5]


# The sequential reference the batched ensemble is tested against (lives here, not in the library).
def train_mlp_reference(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    sizes: Sequence[int],
    seed: int,
    steps: int,
    weight_decay: float = 0.0,
    lr: float = 1e-3,
    init_scale: float = 1.0,
    loss: str = "mse_sum",
    batch_size: int | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    dtype: torch.dtype = torch.float32,
    adamw: str = "fused",
    callback: Callable[[nn.Module, int], object] | None = None,
    callback_steps: Sequence[int] = (),
) -> nn.Sequential:
    """One member, the plain way: ``build_mlp`` + ``torch.optim.AdamW`` (``fused=True`` for
    ``adamw="fused"``, else the default single-tensor path) + autograd, with the same batch
    protocol as :class:`MLPEnsemble`. ``callback(model, step)`` runs at ``callback_steps``."""
    if adamw not in ADAMW_IMPLS:
        raise ConfigError("adamw", f"unknown {adamw!r}; choose from {list(ADAMW_IMPLS)}")
    model = build_mlp(sizes, seed=seed, init_scale=init_scale, dtype=dtype)
    n = int(y_train.shape[0])
    x_all = x_train.reshape(n, -1).to(dtype)
    y_all = y_train.to(torch.long)
    fused = adamw == "fused"
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        fused=fused,
        foreach=False if not fused else None,
    )
    full = batch_size is None or batch_size == n
    sampler = None if full else BatchSampler(n, int(batch_size), [seed])
    targets = set(_check_callback_steps(callback_steps))
    if callback is not None and 0 in targets:
        callback(model, 0)
    for step in range(1, steps + 1):
        if sampler is None:
            xb, yb = x_all, y_all
        else:
            idx = sampler.next()[0]
            xb, yb = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        LOSSES[loss](model(xb), yb).backward()
        opt.step()
        if callback is not None and step in targets:
            callback(model, step)
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls: one thread is as fast, and immune to other processes on a shared machine
    (OpenMP threads that wait on a descheduled sibling slow these tests down ~10x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SEEDS = [1, 2, 3, 4]
WDS = [0.0, 0.1, 1.0, 0.01]


def _toy_data(n=50):
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, SIZES[0], generator=g), torch.randint(0, SIZES[-1], (n,), generator=g)


def _max_err(ens, m, model):
    mine, ref = ens.member_state_dict(m), model.state_dict()
    assert mine.keys() == ref.keys()
    return max(float((mine[k] - ref[k]).abs().max()) for k in mine)


EPS64, EPS32 = torch.finfo(torch.float64).eps, torch.finfo(torch.float32).eps


def _rounding_atol(x, y, eps, **kw) -> float:
    """Round-off allowed between the batched and the sequential training of one member (kw:
    train_mlp_reference's arguments) in a dtype of machine epsilon ``eps``. Moving every input
    by one float64 ulp perturbs every step by about one rounding; how far that moves the
    float64 parameters measures how much training amplifies rounding. Each step rounds sums
    over the batch and over a layer's inputs: up to batch + max(SIZES) ulps."""
    kw["dtype"] = torch.float64
    g = torch.Generator().manual_seed(0)
    sign = 2.0 * torch.randint(0, 2, x.shape, generator=g, dtype=torch.float64) - 1
    a = train_mlp_reference(x.double(), y, **kw).state_dict()
    b = train_mlp_reference(x.double() * (1 + EPS64 * sign), y, **kw).state_dict()
    scale = max(float(v.abs().max()) for v in a.values())
    per_ulp = max(max(float((a[k] - b[k]).abs().max()) for k in a), EPS64 * scale)
    reductions = (kw.get("batch_size") or len(y)) + max(SIZES)
    return 2 * reductions * per_ulp * eps / EPS64


def _abs_forward(net, x):
    """The forward pass with inputs, weights and biases replaced by their absolute values: an
    entrywise bound on the sums of |terms| that the outputs' round-off is relative to."""
    a = x.abs()
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            a = a @ layer.weight.detach().abs().T + layer.bias.detach().abs()
    return a


def _forward_atol(net, x) -> float:
    """Two float32 evaluations (batched vs per member, chunked or not) of net: each layer's
    dot products of n_in terms round at <= n_in eps of the absolute chain above."""
    n_in = sum(layer.in_features for layer in net if isinstance(layer, torch.nn.Linear))
    return 2 * n_in * EPS32 * float(_abs_forward(net, x).max())


@pytest.mark.parametrize(
    "lrs, wds",
    [
        ([1e-3, 3e-3, 1e-3], [0.5, 0.0, 0.01]),  # every member its own (lr, wd), one wd 0
        ([1e-3, 1e-3, 1e-3], [0.3, 0.3, 0.1]),  # runs of members sharing them
    ],
)
@pytest.mark.parametrize("impl", ["fused", "single_tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamw_matches_torch_adamw_bitwise(impl, dtype, lrs, wds):
    """Per-member lr and weight decay over 3 steps, on stacks of 2-D and 1-D tensors."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 7, 5), (3, 7)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads_seq = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(3)]
    refs = []
    for m in range(3):
        ps = [torch.nn.Parameter(p[m].clone()) for p in params]
        opt = torch.optim.AdamW(
            ps,
            lr=lrs[m],
            weight_decay=wds[m],
            betas=(0.9, 0.98),
            fused=impl == "fused",
            foreach=False if impl != "fused" else None,
        )
        for grads in grads_seq:
            for p, gr in zip(ps, grads):
                p.grad = gr[m].clone()
            opt.step()
        refs.append(ps)
    exp_avgs = [torch.zeros_like(p) for p in params]
    exp_avg_sqs = [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_seq, start=1):
        adamw_step_(
            params, grads, exp_avgs, exp_avg_sqs, step, lrs, wds, betas=(0.9, 0.98), impl=impl
        )
    for m in range(3):
        for p, ref in zip(params, refs[m]):
            assert torch.equal(p[m], ref.detach())


def test_init_is_nn_linear_default_times_alpha():
    x, y = _toy_data()
    ens = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=0.0, init_scale=8.0)
    for m, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]
        for l, lin in enumerate(layers):
            assert torch.equal(ens.weights[l][m], lin.weight.detach() * 8.0)
            assert torch.equal(ens.biases[l][m], lin.bias.detach() * 8.0)
    assert torch.equal(build_mlp(SIZES, seed=2)[0].weight, build_mlp(SIZES, seed=2)[0].weight)


def test_init_scale_per_member():
    x, y = _toy_data()
    alphas = [8.0, 1.0, 0.5, 8.0]
    ens = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=0.0, init_scale=alphas)
    for m, (seed, alpha) in enumerate(zip(SEEDS, alphas)):
        net = build_mlp(SIZES, seed=seed, init_scale=alpha)
        assert torch.equal(ens.weights[-1][m], net[-1].weight.detach())
    with pytest.raises(ConfigError, match="init_scale"):
        MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=0.0, init_scale=[1.0, 2.0])


@pytest.mark.parametrize(
    "loss, batch_size, lr",
    [
        ("mse_sum", 16, 1e-3),  # 50 % 16 != 0: exercises the dropped partial batch
        ("ce", None, 1e-3),  # full batch
        ("ce", 10, [1e-3, 2e-3, 1e-3, 5e-3]),  # per-member learning rates
    ],
)
@pytest.mark.parametrize("impl", ["fused", "single_tensor"])
def test_batched_equals_sequential_float64(loss, batch_size, lr, impl):
    x, y = _toy_data()
    kw = dict(sizes=SIZES, init_scale=2.0, loss=loss, batch_size=batch_size, dtype=torch.float64)
    ens = MLPEnsemble(x, y, seeds=SEEDS, weight_decays=WDS, lr=lr, adamw=impl, **kw)
    losses = [ens.step() for _ in range(200)]
    assert torch.stack(losses)[-1].max() < torch.stack(losses)[0].min()  # it learns
    lrs = lr if isinstance(lr, list) else [lr] * len(SEEDS)
    for m, seed in enumerate(SEEDS):
        member = dict(seed=seed, steps=200, weight_decay=WDS[m], lr=lrs[m], adamw=impl, **kw)
        ref = train_mlp_reference(x, y, **member)
        assert _max_err(ens, m, ref) <= _rounding_atol(x, y, EPS64, **member)  # 5e-16 vs 1e-14


def test_batched_equals_sequential_float32():
    x, y = _toy_data()
    kw = dict(sizes=SIZES, init_scale=2.0, batch_size=16)
    ens = train_ensemble(MLPEnsemble(x, y, seeds=SEEDS, weight_decays=WDS, **kw), 200)
    for m, seed in enumerate(SEEDS):
        member = dict(seed=seed, steps=200, weight_decay=WDS[m], **kw)
        ref = train_mlp_reference(x, y, **member)
        # matmul rounding only; observed <= 6e-8 (float32 vs float64 itself ~4e-6), atol ~1e-5
        assert _max_err(ens, m, ref) <= _rounding_atol(x, y, EPS32, **member)


def _roundtrip(state):
    """Through safetensors and through torch.save + torch.load(weights_only=True)."""
    state = st_load(st_save(state))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("batch_size", [16, None])
def test_resume_from_state_dict_is_exact(batch_size):
    x, y = _toy_data()
    kw = dict(sizes=SIZES, seeds=SEEDS, weight_decays=WDS, batch_size=batch_size, init_scale=2.0)
    full = train_ensemble(MLPEnsemble(x, y, **kw), 70)
    half = train_ensemble(MLPEnsemble(x, y, **kw), 33)  # stops mid-epoch
    resumed = MLPEnsemble(x, y, **kw)
    resumed.load_state_dict(_roundtrip(half.state_dict()))
    assert resumed.step_count == 33
    train_ensemble(resumed, 70)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_load_state_dict_rejects_another_configuration():
    x, y = _toy_data()
    state = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=WDS).state_dict()
    other = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=0.5)
    with pytest.raises(CheckpointError, match="weight_decays"):
        other.load_state_dict(state)
    minibatch = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=WDS, batch_size=10)
    with pytest.raises(CheckpointError, match="missing"):
        minibatch.load_state_dict(state)


def test_features_and_logits_match_member_modules():
    x, y = _toy_data()
    ens = train_ensemble(MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS, weight_decays=WDS), 20)
    feats, logits = ens.features(x, chunk_size=7)
    assert feats.shape == (4, 50, SIZES[-2]) and logits.shape == (4, 50, SIZES[-1])
    nets = [ens.member_module(m) for m in range(4)]
    atol = max(_forward_atol(net, x) for net in nets)
    torch.testing.assert_close(logits, ens.forward(x), rtol=0, atol=atol)
    for m, net in enumerate(nets):
        torch.testing.assert_close(feats[m], net[:-1](x), rtol=0, atol=_forward_atol(net[:-1], x))
        torch.testing.assert_close(logits[m], net(x), rtol=0, atol=_forward_atol(net, x))
    per_member = ens.forward(x[:6].expand(4, 6, -1), per_member=True)
    torch.testing.assert_close(per_member, logits[:, :6], rtol=0, atol=atol)
    ev = ens.evaluate(x, y)
    assert ev["loss"].shape == ev["accuracy"].shape == (4,)


def test_callback_steps_and_early_stop():
    x, y = _toy_data()
    seen = []
    ens = MLPEnsemble(x, y, sizes=SIZES, seeds=SEEDS[:2], weight_decays=0.1, batch_size=10)
    train_ensemble(ens, 30, callback=lambda e: seen.append(e.step_count), callback_steps=[0, 5, 30])
    assert seen == [0, 5, 30]
    seen.clear()
    train_ensemble(ens, 60, callback=lambda e: seen.append(e.step_count), callback_steps=[30, 40])
    assert seen == [40]  # 30 already happened before the resume
    stop = train_ensemble(ens, 100, callback=lambda e: True, callback_steps=[65, 70])
    assert stop.step_count == 65
    with pytest.raises(ConfigError, match="callback_steps"):
        train_ensemble(ens, 100, callback=print, callback_steps=[50, 50])


# The `smoke` preset of the grokking study: a modular-addition MLP that groks in seconds.
SMOKE = dict(p=59, train_fraction=0.4, data_seed=0, seed=0, hidden=256, loss="mse_sum", lr=3e-3)
SMOKE.update(weight_decay=1.0, steps=2000, eval_every=20)


def test_smoke_mlp_groks_modular_addition():
    """Train accuracy reaches 100% long before test accuracy moves; test later passes 95%."""
    s = SMOKE
    d = make_modular_data(p=s["p"], train_fraction=s["train_fraction"], seed=s["data_seed"])
    ens = MLPEnsemble(
        d.x_train,
        d.y_train,
        sizes=[2 * s["p"], s["hidden"], s["p"]],
        seeds=[s["seed"]],
        weight_decays=s["weight_decay"],
        lr=s["lr"],
        loss=s["loss"],
    )
    test_acc_at_fit = None
    for step in range(1, s["steps"] + 1):
        ens.step()
        if step % s["eval_every"] == 0 and test_acc_at_fit is None:
            if float(ens.evaluate(d.x_train, d.y_train)["accuracy"][0]) == 1.0:
                test_acc_at_fit = float(ens.evaluate(d.x_test, d.y_test)["accuracy"][0])
    assert test_acc_at_fit is not None and test_acc_at_fit < 0.5  # observed 0.003 at step 100
    assert float(ens.evaluate(d.x_test, d.y_test)["accuracy"][0]) > 0.95  # passes 95% at 1340
