import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.mlp import MLP, build_mlp, check_sizes


def test_build_mlp_is_nn_linear_default_init_times_alpha_and_keeps_the_global_rng():
    sizes = [6, 5, 3]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    net = build_mlp(sizes, seed=7, init_scale=8.0, dtype=torch.float64)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    torch.manual_seed(7)
    ref = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    for lin, r in zip((net[0], net[2]), ref):
        assert lin.weight.dtype == torch.float64
        assert torch.equal(lin.weight, (r.weight.detach() * 8.0).double())
        assert torch.equal(lin.bias, (r.bias.detach() * 8.0).double())


def test_mlp_features_are_the_penultimate_layer():
    torch.manual_seed(0)
    m = MLP(12, 4, depth=2, width=9)
    x = torch.randn(5, 3, 4)  # flattened to 12
    h = torch.relu(m.body[3](torch.relu(m.body[1](x.reshape(5, 12)))))  # explicit layers
    torch.testing.assert_close(m.features(x), h)
    torch.testing.assert_close(m(x), h @ m.head.weight.T + m.head.bias)


@pytest.mark.parametrize("sizes", [[5], [5, 0, 2], []])
def test_bad_sizes_name_the_field(sizes):
    with pytest.raises(ConfigError, match="^sizes: "):
        check_sizes(sizes)
