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
    fit_power_boundary,
    fit_snr_boundary,
    make_tasks,
    mean_interval,
    reference_losses,
    run_grid,
)

TINY = dict(steps=30, lr=0.3, n_values=(6,), n_test=30, T=4, seeds=(2,), eta=0.34)
CELL = dict(n=6, n_test=30, T=4, seed=2, eta=0.34)
EPS64, EPS32 = torch.finfo(torch.float64).eps, torch.finfo(torch.float32).eps


def _cell(mu: float, d: int):
    return make_token_data(d=d, mu_norm=mu, dtype=torch.float64, **CELL)


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
        assert local.metrics[k].shape == (1, 1, 2, 2)
        np.testing.assert_array_equal(local.metrics[k], proc.metrics[k])  # bit for bit
    # A grid cell is the single-cell model trained on make_token_data(...): check one in float64.
    g64 = run_grid([6.0], [24], dtype=torch.float64, **TINY)
    data = _cell(6.0, 24)
    ref = train_naive(data, steps=TINY["steps"], lr=TINY["lr"], log_every=None).final()
    atol = 2 * _rounding_atol(data, EPS64)  # two float64 code paths
    for k in ("train_loss", "test_loss", "noisy_train_acc", "test_acc", "attn_relevant_test"):
        assert g64.metrics[k][0, 0, 0, 0] == pytest.approx(ref[k], abs=atol)
    # float32 vs float64: the float32 rounding of one training (and of storing the result)
    assert abs(local.test_loss[0, 0, 1, 1] - ref["test_loss"]) <= _rounding_atol(data, EPS32)


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
    loose = classify_regimes(noisy_acc, test_loss, mu, fit_threshold=0.5)
    want = [NOT_OVERFITTING, NOT_OVERFITTING, BENIGN, HARMFUL, BENIGN, HARMFUL]
    assert loose.tolist() == want
    paper = classify_regimes(noisy_acc, test_loss, mu)  # default: every label fit
    assert paper.tolist() == [0, 0, BENIGN, HARMFUL, 0, 0]
    strict = classify_regimes(noisy_acc, test_loss, mu, fit_threshold=1.0, benign_gap=0.2)
    assert strict.tolist() == [0, 0, BENIGN, HARMFUL, 0, 0]
    clean = np.array([1.0, 1.0, 0.95, 1.0, 1.0, 1.0])  # one clean label lost in cell 2
    assert classify_regimes(noisy_acc, test_loss, mu, clean_train_acc=clean)[2] == 0


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
    metrics = {k: np.zeros((1, 1, 2, 2)) for k in METRICS}
    metrics["noisy_train_acc"] = np.array([[[[1.0, 1.0], [0.0, 1.0]]]])
    metrics["clean_train_acc"] = np.ones((1, 1, 2, 2))
    metrics["test_loss"] = np.array([[[[unif[0], unif[0]], [opt[1], opt[1]]]]])
    res = GridResult(np.array([20]), np.array([0]), mu, d, metrics, {"sigma": 1.0, "T": 8})
    np.testing.assert_allclose(res.n_snr2[0, 0], [[2.0, 0.1], [800.0, 40.0]])
    assert res.regimes()[0, 0].tolist() == [[HARMFUL, HARMFUL], [NOT_OVERFITTING, BENIGN]]
    fit = res.boundary()
    assert fit.errors == 0 and 40 < fit.C < 800
    again = GridResult.from_dict(res.to_dict())
    assert again.test_loss[0, 0, 1, 0] == pytest.approx(opt[1]) and again.shape == res.shape


def test_grid_over_n_and_seeds_places_each_cell_where_a_single_run_puts_it():
    both = run_grid([2.0, 6.0], [16], **{**TINY, "n_values": (6, 8), "seeds": (2, 5)})
    assert both.shape == (2, 2, 2, 1)
    for i, n in enumerate((6, 8)):
        for j, seed in enumerate((2, 5)):
            one = run_grid([2.0, 6.0], [16], **{**TINY, "n_values": (n,), "seeds": (seed,)})
            for k in METRICS:
                np.testing.assert_array_equal(both.metrics[k][i, j], one.metrics[k][0, 0])
    # seeds redraw the data: the two seeds differ somewhere
    assert not np.array_equal(both.test_loss[:, 0], both.test_loss[:, 1])


def _law_cells(a: float, b: float, c: float, seed: int, ns=(5, 10, 20, 40)):
    """Cells on a log grid labelled by ||mu||* = c n^a d^b, with 3% of labels flipped."""
    rng = np.random.default_rng(seed)
    n, mu, d = np.meshgrid(
        np.array(ns, float), np.geomspace(5, 100, 20), np.geomspace(250, 5000, 20), indexing="ij"
    )
    lab = np.where(mu < c * n**a * d**b, BENIGN, NOT_OVERFITTING)
    flip = rng.random(lab.shape) < 0.03
    lab = np.where(flip, BENIGN + NOT_OVERFITTING - lab, lab)
    return n, mu, d, lab


@pytest.mark.parametrize(("a", "b", "c"), [(-0.5, 0.5, 3.0), (-1.0, 1.5, 0.05), (0.5, 0.25, 2.0)])
def test_fit_power_boundary_recovers_the_exponents(a, b, c):
    n, mu, d, lab = _law_cells(a, b, c, seed=0)
    fit = fit_power_boundary(n, mu, d, lab)
    clean = fit_power_boundary(n, mu, d, np.where(mu < c * n**a * d**b, BENIGN, NOT_OVERFITTING))
    assert clean.errors == 0
    assert clean.a_range[0] <= a <= clean.a_range[1] and clean.b_range[0] <= b <= clean.b_range[1]
    # with 3% flipped labels: near the truth, and no worse than the true law itself
    truth = np.where(mu < c * n**a * d**b, BENIGN, NOT_OVERFITTING)
    assert fit.errors <= int((truth != lab).sum())
    assert abs(fit.a - a) <= 0.25 and abs(fit.b - b) <= 0.25


def test_fit_power_boundary_with_one_n_fixes_a_and_ignores_harmful_cells():
    n, mu, d, lab = _law_cells(-0.5, 0.5, 3.0, seed=1, ns=(20,))
    lab = lab.copy()
    lab[0, :3, :] = HARMFUL
    fit = fit_power_boundary(n, mu, d, lab)
    assert fit.a == 0.0 and abs(fit.b - 0.5) <= 0.15
    assert fit.n_cells == int(((lab == BENIGN) | (lab == NOT_OVERFITTING)).sum())


def _law_result(a: float, b: float, c: float, seeds=(0, 1, 2)) -> GridResult:
    """A GridResult whose regimes follow ||mu||* = c n^a d^b (3% flips per seed)."""
    cells = [_law_cells(a, b, c, seed) for seed in seeds]
    n, mu, d, _ = cells[0]
    lab = np.stack([x[3] for x in cells], 1)  # (n, seed, mu, d)
    opt, unif = reference_losses(mu[0, :, 0])
    metrics = {k: np.zeros(lab.shape) for k in METRICS}
    metrics["clean_train_acc"][:] = 1.0
    metrics["noisy_train_acc"] = (lab == BENIGN).astype(float)
    metrics["test_loss"] = np.broadcast_to(opt[None, None, :, None], lab.shape).copy()
    return GridResult(n[:, 0, 0], np.array(seeds), mu[0, :, 0], d[0, 0], metrics,
                      {"sigma": 1.0, "T": 8})  # fmt: skip


def test_power_law_over_seeds_accepts_the_true_form_and_rejects_another():
    snr_law = _law_result(-0.5, 0.5, 3.0).power_law()
    assert snr_law.identified and snr_law.holds(-0.5, 0.5) is True
    lo, hi = snr_law.b_interval
    assert lo <= 0.5 <= hi and hi - lo < 0.6  # informative: the law is pinned down
    steep = _law_result(-1.0, 1.5, 0.05).power_law()
    assert steep.holds(-0.5, 0.5) is False and steep.holds(-1.0, 1.5) is True
    one_seed = _law_result(-0.5, 0.5, 3.0, seeds=(0,)).power_law()
    assert one_seed.holds(-0.5, 0.5) is None  # no interval from one seed


def test_mean_interval_is_the_t_interval():
    mean, (lo, hi) = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(3)
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert math.isnan(mean_interval([1.0])[1][0])


def test_cells_tied_in_exact_arithmetic_are_never_split():
    # (n 5, d 250) and (n 20, d 1000) have the same n/d, so at a = -1/2, b = 1/2 the same x:
    # labelled differently, no threshold can get both right
    n = np.array([5.0, 20.0, 5.0, 20.0])
    d = np.array([250.0, 1000.0, 250.0, 1000.0])
    mu = np.array([10.0, 10.0, 100.0, 100.0])
    lab = np.array([BENIGN, NOT_OVERFITTING, NOT_OVERFITTING, NOT_OVERFITTING])
    for flip in (False, True):  # either order of the tied pair in the input
        order = [1, 0, 2, 3] if flip else [0, 1, 2, 3]
        fit = fit_power_boundary(n[order], mu[order], d[order], lab[order], (-0.5,), (0.5,))
        assert fit.errors == 1
