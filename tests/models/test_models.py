import math

import torch

from genlab.models import build_model, weight_norm


def test_init_scale_multiplies_every_parameter():
    base = build_model("mlp", (1, 8, 8), 10, width=16, depth=2, seed=4)
    scaled = build_model("mlp", (1, 8, 8), 10, width=16, depth=2, seed=4, init_scale=8.0)
    for a, b in zip(base.parameters(), scaled.parameters()):
        assert torch.equal(a * 8.0, b)
    # float64 sums of float32 squares: both exact to ~n * 2^-53; x8 is exact in float32.
    assert math.isclose(
        weight_norm(scaled.parameters()), 8 * weight_norm(base.parameters()), rel_tol=1e-12
    )


def test_weight_norm_is_l2_norm_of_all_parameters():
    m = build_model("mlp", (3,), 2, width=4, depth=1)
    flat = [float(v) for p in m.parameters() for v in p.detach().flatten()]
    reference = math.sqrt(math.fsum(v * v for v in flat))  # exactly rounded sum of squares
    # float64 accumulation of n positive terms: off by < n eps64 relative.
    rel_tol = len(flat) * torch.finfo(torch.float64).eps
    assert math.isclose(float(weight_norm(m.parameters())), reference, rel_tol=rel_tol)


def test_stacked_weight_norm_is_each_members_norm():
    stacked = [torch.randn(3, 5, 4), torch.randn(3, 5)]
    per_member = weight_norm(stacked, stacked=True)
    for i in range(3):
        alone = weight_norm([t[i] for t in stacked])
        assert per_member.shape == (3,)
        assert math.isclose(float(per_member[i]), float(alone), rel_tol=1e-15)


def test_features_feed_the_head():
    for kind, shape in (("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("cnn", (1, 40))):
        m = build_model(kind, shape, 10, width=8, depth=2)
        x = torch.randn(5, *shape)
        assert torch.allclose(m.head(m.features(x)), m(x))
        assert m(x).shape == (5, 10)
