import math

import pytest
import torch

from genlab.data.tokens import (
    TokenData,
    derive_seed,
    draw_token_noise,
    make_token_data,
    num_flips,
    snr,
)
from genlab.errors import ConfigError

SMALL = dict(n=20, n_test=60, T=8, d=32)


def test_shapes_dtypes_and_defaults():
    data = make_token_data(**SMALL)
    assert isinstance(data, TokenData)
    assert data.x_train.shape == (20, 8, 32) and data.x_test.shape == (60, 8, 32)
    assert data.y_train.shape == data.clean_y_train.shape == data.noisy_mask.shape == (20,)
    assert data.y_test.shape == (60,)
    assert data.x_train.dtype == data.y_train.dtype == torch.float32
    assert data.noisy_mask.dtype == torch.bool and data.noisy_idx.dtype == torch.int64
    assert (data.n, data.T, data.d, data.n_test) == (20, 8, 32, 60)
    assert set(data.y_train.tolist()) <= {1.0, -1.0}
    assert torch.equal(data.mu_pos, 20.0 * torch.eye(32)[0])
    assert torch.equal(data.mu_neg, 20.0 * torch.eye(32)[1])
    assert float(data.mu_pos @ data.mu_neg) == 0.0
    assert torch.allclose(data.nu, (data.mu_pos - data.mu_neg) / (math.sqrt(2) * 400.0))
    # Defaults of the paper.
    full = make_token_data.__defaults__
    assert full == (20, 1000, 8, 2000, 20.0, 0.1, 0.2, 1.0, 0, torch.float32)


def test_snr_helper():
    assert snr(20.0, 2000) == pytest.approx(20 / math.sqrt(2000))
    assert snr(20.0, 2000, sigma=2.0) == pytest.approx(10 / math.sqrt(2000))
    assert make_token_data(**SMALL, mu_norm=8.0).snr == pytest.approx(8 / math.sqrt(32))


@pytest.mark.parametrize(
    "n,eta,k,k_pos",
    [(20, 0.2, 4, 2), (20, 0.25, 5, 3), (10, 0.3, 3, 2), (20, 0.0, 0, 0), (21, 0.1, 3, 2)],
)
def test_exact_flip_count_and_class_balance(n, eta, k, k_pos):
    assert num_flips(n, eta) == k
    data = make_token_data(n=n, n_test=10, T=4, d=8, eta=eta, seed=5)
    assert int(data.noisy_mask.sum()) == k == data.noisy_idx.numel()
    assert torch.equal(torch.nonzero(data.noisy_mask).flatten(), data.noisy_idx)
    flipped_from = data.clean_y_train[data.noisy_mask]
    assert int((flipped_from > 0).sum()) == k_pos  # the extra flip of an odd k goes to +1
    assert int((flipped_from < 0).sum()) == k - k_pos
    # Observed labels: flipped exactly on the noisy samples.
    assert torch.equal(data.y_train[data.noisy_mask], -data.clean_y_train[data.noisy_mask])
    assert torch.equal(data.y_train[~data.noisy_mask], data.clean_y_train[~data.noisy_mask])
    # Balanced clean labels: ceil(n/2) of +1.
    assert int((data.clean_y_train > 0).sum()) == (n + 1) // 2


def test_token_construction_is_exact():
    noise = draw_token_noise(n=12, n_test=9, T=6, d=10, seed=3)
    data = noise.with_signal(mu_norm=7.0, rho=0.25)
    diff = data.x_train - noise.xi_train  # the signal only
    assert torch.all(diff[:, :, 2:] == 0)  # signal lives on e_1, e_2
    pos = data.clean_y_train > 0
    e1, e2 = torch.tensor([7.0, 0.0]), torch.tensor([0.0, 7.0])
    for i in range(12):
        same, opp = (e1, e2) if pos[i] else (e2, e1)
        assert torch.allclose(diff[i, 0, :2], same)  # relevant: mu_{Y*}
        assert torch.allclose(diff[i, 1, :2], 0.25 * same)  # weakly relevant, same class
        assert torch.allclose(diff[i, 2, :2], 0.25 * opp)  # weakly relevant, opposite class
        assert torch.all(diff[i, 3:] == 0)  # irrelevant: noise only
    # The signal follows the *clean* label, also for the flipped samples; tests likewise.
    dt = data.x_test - noise.xi_test
    assert torch.allclose(dt[:, 0, 0], 7.0 * (data.y_test > 0).float())


def test_token_means_on_a_large_draw():
    data = make_token_data(n=4000, n_test=10, T=5, d=6, mu_norm=3.0, rho=0.5, sigma=2.0, seed=1)
    x, pos = data.x_train, data.clean_y_train > 0
    xp, xn = x[pos].mean(0), x[~pos].mean(0)  # (T, d)
    tol = 0.15  # 4 sigma / sqrt(2000) ~ 0.18 worst case per entry; means of 2000 draws
    assert torch.allclose(xp[0], torch.tensor([3.0, 0, 0, 0, 0, 0]), atol=tol)
    assert torch.allclose(xn[0], torch.tensor([0, 3.0, 0, 0, 0, 0]), atol=tol)
    assert torch.allclose(xp[1], torch.tensor([1.5, 0, 0, 0, 0, 0]), atol=tol)
    assert torch.allclose(xp[2], torch.tensor([0, 1.5, 0, 0, 0, 0]), atol=tol)  # opposite class
    assert torch.allclose(xn[2], torch.tensor([1.5, 0, 0, 0, 0, 0]), atol=tol)
    assert torch.allclose(x[:, 3:].mean(0), torch.zeros(2, 6), atol=tol)  # no signal
    assert x[:, 3:].std().item() == pytest.approx(2.0, rel=0.03)  # sigma


def test_test_labels_are_clean_and_balanced():
    data = make_token_data(n=20, n_test=101, T=4, d=8, eta=0.4)
    assert int((data.y_test > 0).sum()) == 51
    # Test token 0 carries the signal of its (clean) label.
    pos = data.y_test > 0
    assert torch.all(data.x_test[pos, 0, 0] > data.x_test[pos, 0, 1] - 10)
    assert data.x_test[pos, 0, 0].mean() > 15 and data.x_test[~pos, 0, 1].mean() > 15


def test_test_draw_is_independent_of_the_training_draw():
    data = make_token_data(n=50, n_test=50, T=8, d=16, seed=0)
    rows_tr = data.x_train.reshape(-1, 16)
    rows_te = data.x_test.reshape(-1, 16)
    assert not torch.any(torch.cdist(rows_tr, rows_te).min(1).values == 0)  # no identical rows
    # Separate streams: the test set does not depend on the training size or label noise.
    other = make_token_data(n=8, n_test=50, T=8, d=16, eta=0.5, seed=0)
    assert torch.equal(data.x_test, other.x_test) and torch.equal(data.y_test, other.y_test)
    assert derive_seed(0, "train") != derive_seed(0, "test")


def test_determinism_and_seed_dependence():
    a = make_token_data(**SMALL, seed=4)
    b = make_token_data(**SMALL, seed=4)
    c = make_token_data(**SMALL, seed=5)
    for name in ("x_train", "y_train", "noisy_mask", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.x_test, c.x_test)


def test_noise_is_shared_across_signal_strengths_and_dtypes():
    a = make_token_data(**SMALL, mu_norm=5.0)
    b = make_token_data(**SMALL, mu_norm=50.0)
    assert torch.equal(a.x_train[..., 2:], b.x_train[..., 2:])
    assert torch.equal(a.noisy_mask, b.noisy_mask)
    c = make_token_data(**SMALL, mu_norm=5.0, dtype=torch.float64)
    assert c.x_train.dtype == torch.float64
    # The same float32 noise; the float32 copy rounds the signal and the sum: 2 ulps of max |x|.
    atol = 2 * torch.finfo(torch.float32).eps * float(c.x_train.abs().max())
    assert torch.allclose(c.x_train, a.x_train.double(), rtol=0, atol=atol)


def test_invalid_settings_raise():
    with pytest.raises(ConfigError):
        make_token_data(**{**SMALL, "T": 2})
    with pytest.raises(ConfigError):
        make_token_data(**SMALL, eta=1.5)
    with pytest.raises(ConfigError):
        make_token_data(**SMALL, mu_norm=0.0)


def test_as_dataset():
    data = make_token_data(**SMALL)
    ds = data.as_dataset()
    assert ds.num_classes == 2 and ds.input_shape == (8, 32)
    assert torch.equal(ds.y_train, (data.y_train > 0).long())
    assert torch.equal(ds.noisy_idx, data.noisy_idx)
