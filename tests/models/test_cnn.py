import torch
import torch.nn.functional as F

from genlab.models.cnn import SmallCNN


def test_small_cnn_is_its_stated_layers_on_images_and_signals():
    torch.manual_seed(0)
    for shape in ((1, 8, 8), (2, 40)):
        m = SmallCNN(shape, 10, channels=4)
        x = torch.randn(3, *shape)
        c1, c2 = m.body[0], m.body[3]
        if len(shape) == 3:  # conv3x3 -> ReLU -> pool2 -> conv3x3 -> ReLU -> global average
            h = F.max_pool2d(F.relu(F.conv2d(x, c1.weight, c1.bias, padding=1)), 2)
            h = F.relu(F.conv2d(h, c2.weight, c2.bias, padding=1)).mean(dim=(2, 3))
        else:
            h = F.max_pool1d(F.relu(F.conv1d(x, c1.weight, c1.bias, padding=1)), 2)
            h = F.relu(F.conv1d(h, c2.weight, c2.bias, padding=1)).mean(dim=2)
        assert h.shape == (3, 8)
        torch.testing.assert_close(m.features(x), h)
        torch.testing.assert_close(m(x), h @ m.head.weight.T + m.head.bias)
