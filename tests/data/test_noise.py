import math

import torch

from genlab.data.noise import apply_label_noise


def test_flip_noise_changes_exactly_ceil_nf_labels_balanced_across_classes():
    y = torch.arange(10).repeat(53)  # n = 530
    noisy, idx = apply_label_noise(y, 0.17, 10, "flip", seed=3)
    assert len(idx) == math.ceil(530 * 0.17) == 91
    assert bool((noisy[idx] != y[idx]).all())
    assert int((noisy != y).sum()) == 91
    per_class = torch.bincount(y[idx], minlength=10)
    assert int(per_class.max() - per_class.min()) <= 1


def test_uniform_noise_flip_rate_is_f_times_one_minus_one_over_k():
    y = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(0))
    _, idx = apply_label_noise(y, 0.4, 10, "uniform", seed=1)
    expected = 20000 * 0.4 * 0.9
    sd = math.sqrt(20000 * 0.36 * 0.64)
    assert abs(len(idx) - expected) < 5 * sd


def test_bernoulli_noise_moves_each_label_to_another_class_with_probability_f():
    y = torch.randint(0, 4, (40000,), generator=torch.Generator().manual_seed(0))
    noisy, idx = apply_label_noise(y, 0.3, 4, "bernoulli", seed=3)
    n, f = len(y), 0.3
    assert abs(len(idx) - n * f) < 5 * math.sqrt(n * f * (1 - f))  # every draw changes the label
    assert torch.all(noisy[idx] != y[idx])
    # the new class is uniform over the other three: each offset about a third of the moves
    offsets = torch.bincount((noisy[idx] - y[idx]) % 4, minlength=4)[1:].double()
    k = len(idx)
    assert torch.all((offsets - k / 3).abs() < 5 * math.sqrt(k * (1 / 3) * (2 / 3)))
    # with f = 0 nothing moves; with f = 1 everything does
    assert len(apply_label_noise(y, 0.0, 4, "bernoulli", 1)[1]) == 0
    assert len(apply_label_noise(y, 1.0, 4, "bernoulli", 1)[1]) == n
