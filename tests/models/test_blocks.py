"""Block networks: Z_l by composition, the auxiliary heads' pooling, the CPU-sized layouts."""

from __future__ import annotations

import pytest
import torch

from genlab.models import BLOCK_MODELS, AuxHead, block_shapes
from genlab.models.blocks import pooled_size


@pytest.mark.parametrize(
    "name, width, shapes",
    [
        ("lenet5", 0, [(6, 14, 14), (16, 5, 5), (120,), (84,)]),
        ("vgg8b", 8, [(16, 28, 28), (32, 14, 14), (32, 14, 14), (64, 7, 7), (64, 3, 3),
                      (64, 1, 1), (128,)]),
        ("resnet18", 16, [(16, 28, 28)] * 3 + [(32, 14, 14)] * 2 + [(64, 7, 7)] * 2
                         + [(128, 4, 4)] * 2),
    ],
)  # fmt: skip
def test_block_outputs_compose_to_the_forward_pass(name, width, shapes):
    torch.manual_seed(0)
    model = BLOCK_MODELS[name]((1, 28, 28), 10, width).eval()
    assert block_shapes(model, (1, 28, 28)) == shapes
    x = torch.randn(3, 1, 28, 28)
    outs = model.block_outputs(x)
    h = x
    for block, z in zip(model.blocks, outs):
        h = block(h)
        assert torch.equal(h, z)
    assert torch.equal(model.head(outs[-1]), model(x))


def test_aux_head_pools_conv_maps_to_at_most_max_features():
    # 16 x 28 x 28 = 12,544 numbers: pooled to 16 x 11 x 11 = 1,936 <= 2048 (12 x 12 would
    # be 2,304)
    assert pooled_size((16, 28, 28), 2048) == 11
    assert pooled_size((128, 4, 4), 2048) == 4  # 2,048: kept whole
    assert pooled_size((512, 4, 4), 2048) == 2
    assert pooled_size((4096, 2, 2), 2048) == 1  # never below one value per channel
    assert pooled_size((84,), 2048) == 0  # flat outputs are not pooled
    head = AuxHead((16, 28, 28), 10)
    assert head.linear.in_features == 1936
    z = torch.randn(2, 16, 28, 28)
    # adaptive average pooling: each output cell is the mean of its input window
    pooled = head.pooled(z).reshape(2, 16, 11, 11)
    assert torch.allclose(pooled[:, :, 0, 0], z[:, :, 0:3, 0:3].mean((-1, -2)), atol=1e-6)
    assert head(z).shape == (2, 10)
