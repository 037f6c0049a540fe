import torch

from genlab.data.base import Dataset


def test_with_train_size_takes_the_first_examples_and_leaves_the_test_split():
    ds = Dataset("toy", torch.arange(10.0)[:, None], torch.arange(10) % 3, torch.zeros(4, 1),
                 torch.zeros(4, dtype=torch.long), 3, (1,))  # fmt: skip
    small = ds.with_train_size(4)
    assert small.n_train == 4 and small.n_test == 4
    assert small.x_train[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert small.y_train.tolist() == [0, 1, 2, 0] and ds.n_train == 10  # the original unchanged
    assert ds.with_train_size(None) is ds and ds.with_train_size(50) is ds
