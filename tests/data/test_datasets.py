import math

import pytest
import torch

from genlab.config import DataConfig
from genlab.data import check_data_config, load_data, load_dataset
from genlab.errors import ConfigError


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


def test_label_noise_touches_training_labels_only():
    clean = load_dataset("digits")
    ds = load_dataset("digits", label_noise=0.3, noise_kind="flip", noise_seed=5)
    assert torch.equal(ds.y_test, clean.y_test)
    assert torch.equal(ds.clean_y_train, clean.y_train)
    changed = torch.nonzero(ds.y_train != clean.y_train).flatten()
    assert torch.equal(changed, ds.noisy_idx) and len(changed) == math.ceil(1437 * 0.3)


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
