import torch

from genlab.models.conv_autoencoder import (
    ConvAutoencoder,
    encode,
    load_or_train_autoencoder,
    train_autoencoder,
)


def test_shapes_round_trip_for_odd_and_even_sides():
    for side in (28, 9, 8):
        model = ConvAutoencoder(side=side, latent_dim=3).eval()
        x = torch.randn(5, 1, side, side)
        assert model.encode(x).shape == (5, 3)
        assert model(x).shape == x.shape  # output_padding lands on the encoder's sides


def test_training_reduces_the_reconstruction_error_and_the_cache_returns_the_same_encoder(
    tmp_path,
):
    g = torch.Generator().manual_seed(0)
    # Images on a 2-dimensional manifold: a code of 2 can reconstruct them.
    a, b = torch.rand(256, 2, generator=g).unbind(1)
    grid = torch.linspace(0, 1, 8)
    x = (a[:, None, None] * grid[None, :, None] + b[:, None, None] * grid[None, None, :])[:, None]
    untrained = ConvAutoencoder(side=8, latent_dim=2).eval()
    trained = train_autoencoder(x, latent_dim=2, epochs=30, batch_size=32, seed=1)
    with torch.no_grad():
        before = (untrained(x) - x).abs().mean()
        after = (trained(x) - x).abs().mean()
    assert after < 0.5 * before
    path = tmp_path / "ae.safetensors"
    first = load_or_train_autoencoder(path, x, latent_dim=2, epochs=2, batch_size=32)
    assert path.exists()
    again = load_or_train_autoencoder(path, x, latent_dim=2, epochs=2, batch_size=32)
    assert torch.equal(encode(first, x), encode(again, x))
