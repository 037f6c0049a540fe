"""Sharpness and distance against explicit references."""

import math

import pytest
import torch
from torch import nn

from genlab.measures.sharpness import (
    distance_from_init,
    expected_sharpness,
    worst_case_sharpness,
    zero_one_error,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n=300):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_expected_sharpness_equals_an_explicit_loop_of_noisy_copies():
    model, (x, y) = _model(), _data()
    mask = {"0.weight": (torch.arange(64).reshape(16, 4) % 3 != 0).float()}
    with torch.no_grad():
        model[0].weight.mul_(mask["0.weight"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = expected_sharpness(model, 0.3, (x, y), samples=5, mask=mask, seed=7)
    # reference: the same draws in the same order, one deep copy per sample
    g = torch.Generator().manual_seed(7)
    errs = []
    for _ in range(5):
        copy = _model()
        copy.load_state_dict(before)
        with torch.no_grad():
            for k, p in copy.named_parameters():
                u = torch.randn(p.shape, generator=g) * 0.3
                p.add_(u * mask[k] if k in mask else u)
        errs.append(int((copy(x).argmax(1) != y).sum()) / len(y))
    clean = int((model(x).argmax(1) != y).sum()) / len(y)
    assert got.clean_error == pytest.approx(clean)
    assert got.noisy_error == pytest.approx(sum(errs) / 5)
    assert got.sharpness == pytest.approx(sum(errs) / 5 - clean)
    for k, v in model.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k])
    assert torch.all(model[0].weight[mask["0.weight"] == 0] == 0)


def test_expected_sharpness_is_zero_without_noise_and_grows_with_it():
    model, data = _model(), _data()
    assert expected_sharpness(model, 0.0, data, samples=2).sharpness == 0.0
    small = expected_sharpness(model, 0.01, data, samples=10).noisy_error
    large = expected_sharpness(model, 3.0, data, samples=10).noisy_error
    assert large > small


def test_worst_case_sharpness_matches_a_first_order_expansion_for_small_rho():
    model, (x, y) = _model(), _data()
    loss_fn = nn.functional.cross_entropy
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    gnorm = math.sqrt(sum(float(g.square().sum()) for g in grads))
    rho = 1e-3
    got = worst_case_sharpness(model.double(), loss_fn, (x.double(), y), rho=rho)
    # L(w + rho g/|g|) - L(w) = rho |g| + O(rho^2)
    assert got == pytest.approx(rho * gnorm, rel=2e-2)
    assert got > 0


def test_worst_case_sharpness_ignores_pruned_coordinates():
    model, (x, y) = _model(), _data()
    full = {"0.weight": torch.zeros(16, 4), "2.weight": torch.zeros(3, 16)}
    # everything but the biases masked: the ascent moves only biases
    got = worst_case_sharpness(model, nn.functional.cross_entropy, (x, y), rho=0.5, mask=full,
                               params=["0.weight", "2.weight"])  # fmt: skip
    assert got == pytest.approx(0.0, abs=1e-7)


def test_distance_from_init_is_the_masked_l2_norm():
    model = _model()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    mask = {"0.weight": torch.zeros(16, 4)}
    mask["0.weight"][:2] = 1
    d = distance_from_init(model, init, mask)
    n_counted = 8 + 16 + 48 + 3  # kept entries of 0.weight, then every other parameter
    assert d.l2 == pytest.approx(math.sqrt(n_counted))
    norm0 = math.sqrt(sum(float((init[k] * (mask[k] if k in mask else 1)).square().sum())
                          for k in init))  # fmt: skip
    assert d.relative == pytest.approx(math.sqrt(n_counted) / norm0)


def test_zero_one_error_in_batches_equals_one_pass():
    model, (x, y) = _model(), _data(1001)
    assert zero_one_error(model, x, y, batch=97) == pytest.approx(
        float((model(x).argmax(1) != y).float().mean())
    )
