import dataclasses
import math

import numpy as np
import pytest
import torch

from genlab.data.tokens import make_token_data
from genlab.errors import ConfigError
from genlab.models.token_attention import train_naive
from genlab.studies.attention.grid import (
    BENIGN,
    D_VALUES,
    HARMFUL,
    METRICS,
    MU_VALUES,
    NOT_OVERFITTING,
    GridResult,
    classify_regimes,
    fit_snr_boundary,
    make_tasks,
    reference_losses,
    run_grid,
)

TINY = dict(steps=30, lr=0.3, n=6, n_test=30, T=4, seed=2, eta=0.34)
EPS64, EPS32 = torch.finfo(torch.float64).eps, torch.finfo(torch.float32).eps


def _cell(mu: float, d: int):
    kw = {k: TINY[k] for k in ("n", "n_test", "T", "seed", "eta")}
    return make_token_data(d=d, mu_norm=mu, dtype=torch.float64, **kw)


def _rounding_atol(data, eps: float) -> float:
    """Round-off allowed in one training (in a dtype of machine epsilon ``eps``) of a grid cell's
    O(1) metrics. Moving every float64 input by one ulp perturbs every step by about one
    rounding; how far that moves the metrics measures how much training amplifies rounding.
    Each step rounds reductions over the m = n T tokens and d features: up to m + d ulps."""
    g = torch.Generator().manual_seed(0)
    sign = 2.0 * torch.randint(0, 2, data.x_train.shape, generator=g, dtype=torch.float64) - 1
    moved = dataclasses.replace(data, x_train=data.x_train * (1 + EPS64 * sign))
    a, b = (
        train_naive(c, steps=TINY["steps"], lr=TINY["lr"], log_every=None) for c in (data, moved)
    )
    a, b = a.final(), b.final()
    per_ulp = max(max(abs(a[k] - b[k]) for k in a if not math.isnan(a[k])), EPS64)
    return (data.n * data.T + data.d) * per_ulp * eps / EPS64


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_default_grid_axes():
    assert len(MU_VALUES) == len(D_VALUES) == 39
    assert MU_VALUES[0] == 5.0 and MU_VALUES[-1] == 100.0 and MU_VALUES[1] == 7.5
    assert D_VALUES[0] == 250 and D_VALUES[-1] == 5000 and D_VALUES[1] == 375


def test_local_and_process_executors_agree_and_match_single_cells():
    mus, ds = [2.0, 6.0], [16, 24]
    calls = []
    local = run_grid(mus, ds, executor="local", progress=lambda a, b: calls.append((a, b)), **TINY)
    proc = run_grid(mus, ds, executor="process", workers=2, **TINY)
    assert calls[-1] == (4, 4)
    for k in METRICS:
        assert local.metrics[k].shape == (2, 2)
        np.testing.assert_array_equal(local.metrics[k], proc.metrics[k])  # bit for bit
    # A grid cell is the single-cell model trained on make_token_data(...): check one in float64.
    g64 = run_grid([6.0], [24], dtype=torch.float64, **TINY)
    data = _cell(6.0, 24)
    ref = train_naive(data, steps=TINY["steps"], lr=TINY["lr"], log_every=None).final()
    atol = 2 * _rounding_atol(data, EPS64)  # two float64 code paths
    for k in ("train_loss", "test_loss", "noisy_train_acc", "test_acc", "attn_relevant_test"):
        assert g64.metrics[k][0, 0] == pytest.approx(ref[k], abs=atol)
    # float32 vs float64: the float32 rounding of one training (and of storing the result)
    assert abs(local.test_loss[1, 1] - ref["test_loss"]) <= _rounding_atol(data, EPS32)


def test_chunking_changes_only_float_rounding():
    a = run_grid([2.0, 4.0, 6.0], [16], **TINY)
    b = run_grid([2.0, 4.0, 6.0], [16], max_cells_per_task=2, **TINY)
    assert b.config["n_tasks"] == 2
    # Two float32 trainings of each cell: batched BLAS calls of another batch size may round
    # differently.
    atol = 2 * max(_rounding_atol(_cell(mu, 16), EPS32) for mu in (2.0, 4.0, 6.0))
    for k in METRICS:
        np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=0, atol=atol)
    tasks = make_tasks(MU_VALUES, D_VALUES, memory_budget_bytes=2e8)
    assert tasks[0].d == 5000 and sum(len(t.mus) for t in tasks) == 39 * 39


def test_unknown_executor_is_a_config_error():  # Ray's absence: tests/test_executor.py
    with pytest.raises(ConfigError, match="executor"):
        run_grid([2.0], [16], executor="threads", **TINY)


def test_reference_losses():
    opt, unif = reference_losses(np.array([1e6, 5.0]))
    assert opt[0] == pytest.approx(math.log1p(math.exp(-1 / math.sqrt(2))), abs=1e-6)
    assert unif[0] == pytest.approx(math.log1p(math.exp(-1 / (8 * math.sqrt(2)))), abs=1e-6)
    assert np.all(opt < unif) and opt[1] > opt[0]  # noise in the values costs a little


def test_classify_regimes_on_synthetic_points():
    opt, unif = (float(v) for v in reference_losses(20.0))
    noisy_acc = np.array([0.0, 0.25, 1.0, 1.0, 0.5, 0.75])
    test_loss = np.array([opt, unif, opt + 0.01, unif - 0.01, opt + 0.3 * (unif - opt), unif])
    mu = np.full(6, 20.0)
    got = classify_regimes(noisy_acc, test_loss, mu)
    want = [NOT_OVERFITTING, NOT_OVERFITTING, BENIGN, HARMFUL, BENIGN, HARMFUL]
    assert got.tolist() == want
    strict = classify_regimes(noisy_acc, test_loss, mu, fit_threshold=1.0, benign_gap=0.2)
    assert strict.tolist() == [0, 0, BENIGN, HARMFUL, 0, 0]


def test_fit_snr_boundary_recovers_the_threshold():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(np.log(0.1), np.log(1000), 400))
    lab = np.where(x < 30.0, BENIGN, NOT_OVERFITTING)
    fit = fit_snr_boundary(x, lab)
    lo, hi = x[x < 30].max(), x[x >= 30].min()
    assert fit.errors == 0 and lo < fit.C < hi and fit.n_cells == 400
    # label noise and ignored harmful cells
    noisy = lab.copy()
    noisy[:10] = np.where(noisy[:10] == BENIGN, NOT_OVERFITTING, BENIGN)
    noisy[10:20] = HARMFUL
    fit2 = fit_snr_boundary(x, noisy)
    assert fit2.n_cells == 390 and fit2.errors <= 10 and 10 < fit2.C < 90
    assert fit2.accuracy == pytest.approx(1 - fit2.errors / 390)
    assert fit2.snr_at(20) == pytest.approx(math.sqrt(fit2.C / 20))


def test_grid_result_helpers():
    mu = np.array([5.0, 100.0])
    d = np.array([250, 5000])
    opt, unif = reference_losses(mu)
    metrics = {k: np.zeros((2, 2)) for k in METRICS}
    metrics["noisy_train_acc"] = np.array([[1.0, 1.0], [0.0, 1.0]])
    metrics["test_loss"] = np.array([[unif[0], unif[0]], [opt[1], opt[1]]])
    res = GridResult(mu, d, metrics, {"n": 20, "sigma": 1.0, "T": 8})
    np.testing.assert_allclose(res.n_snr2, [[2.0, 0.1], [800.0, 40.0]])
    assert res.regimes().tolist() == [[HARMFUL, HARMFUL], [NOT_OVERFITTING, BENIGN]]
    fit = res.boundary()
    assert fit.errors == 0 and 40 < fit.C < 800
    assert res.to_dict()["metrics"]["test_loss"][1][0] == pytest.approx(opt[1])
