import math

import torch

from genlab.models import build_model, weight_norm


def test_init_scale_multiplies_every_parameter():
    base = build_model("mlp", (1, 8, 8), 10, width=16, depth=2, seed=4)
    scaled = build_model("mlp", (1, 8, 8), 10, width=16, depth=2, seed=4, init_scale=8.0)
    for a, b in zip(base.parameters(), scaled.parameters()):
        assert torch.equal(a * 8.0, b)
    assert math.isclose(weight_norm(scaled), 8 * weight_norm(base), rel_tol=1e-6)


def test_weight_norm_is_l2_norm_of_all_parameters():
    m = build_model("mlp", (3,), 2, width=4, depth=1)
    flat = torch.cat([p.detach().flatten() for p in m.parameters()])
    # Per-parameter float32 sums of squares vs one float32 norm of all n of them: positive
    # terms, so each sum is off by < n eps relative (halved by the square root).
    rel_tol = flat.numel() * torch.finfo(torch.float32).eps
    assert math.isclose(weight_norm(m), float(flat.norm()), rel_tol=rel_tol)


def test_features_feed_the_head():
    for kind, shape in (("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("cnn", (1, 40))):
        m = build_model(kind, shape, 10, width=8, depth=2)
        x = torch.randn(5, *shape)
        assert torch.allclose(m.head(m.features(x)), m(x))
        assert m(x).shape == (5, 10)
