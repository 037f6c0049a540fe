"""The convolutional autoencoder that compresses images for compression-based mutual information.

Butakov et al. 2024 ("Information Bottleneck Analysis of Deep Neural Networks via Lossy
Compression", ICLR) compress X with a small autoencoder before estimating I(Z; X); Sakamoto &
Sato use the same architecture (their public code, ``information_plane/compression``). Shapes
for a 1 x 28 x 28 image and ``latent_dim`` 4 (stride-2 convolutions halve the side, rounding up):

    encoder: x (B, 1, 28, 28) -> dropout, conv 3x3/2 -> (B, 8, 14, 14) -> LeakyReLU
             -> dropout, conv 3x3/2 -> (B, 16, 7, 7) -> dropout, conv 3x3/2 -> (B, 32, 4, 4)
             -> flatten (B, 512) -> Linear 128 -> LeakyReLU -> Linear -> code (B, 4)
    decoder: code -> Linear 128 -> Linear 512 -> (B, 32, 4, 4) -> three transposed convs back
             to (B, 1, 28, 28), LeakyReLU between them

During training the code gets relative Gaussian noise, code * (1 + 0.1 N(0, 1)) (the lossy
compression), and the loss is the L1 reconstruction error; Adam, lr 1e-3, batch 256.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_out(size: int) -> int:
    return (size + 2 - 3) // 2 + 1  # kernel 3, stride 2, padding 1


class ConvAutoencoder(nn.Module):
    def __init__(
        self,
        side: int = 28,
        channels: int = 1,
        latent_dim: int = 4,
        dropout: float = 0.1,
        code_noise: float = 0.1,
    ):
        super().__init__()
        widths = [channels] + [w * (1 if channels == 1 else 2) for w in (8, 16, 32)]
        sides = [side]
        for _ in range(3):
            sides.append(_conv_out(sides[-1]))
        flat = widths[-1] * sides[-1] ** 2
        act = nn.LeakyReLU
        enc: list[nn.Module] = []
        for i in range(3):
            enc += [nn.Dropout(dropout), nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1), act()]
        self.encoder = nn.Sequential(
            *enc, nn.Flatten(), nn.Linear(flat, 128), act(), nn.Linear(128, latent_dim)
        )
        dec: list[nn.Module] = [
            nn.Linear(latent_dim, 128), act(), nn.Linear(128, flat), act(),
            nn.Unflatten(1, (widths[-1], sides[-1], sides[-1])),
        ]  # fmt: skip
        for i in range(3, 0, -1):
            # output_padding makes each transposed conv land exactly on the encoder's side.
            pad = sides[i - 1] - 2 * sides[i] + 1
            dec.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 3, 2, 1, output_padding=pad))
            if i > 1:
                dec.append(act())
        self.decoder = nn.Sequential(*dec)
        self.code_noise = code_noise

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        if self.training and self.code_noise > 0:
            code = code + self.code_noise * code * torch.randn_like(code)
        return self.decoder(code)


def train_autoencoder(
    images: torch.Tensor,
    *,
    latent_dim: int = 4,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> ConvAutoencoder:
    """Train a :class:`ConvAutoencoder` on images (N, C, H, W), H = W, with L1 loss and Adam
    (shuffled epochs of ``batch_size``, the last partial batch kept), from ``seed``; returned in
    eval mode. The global RNG is left as it was."""
    n, channels, side, _ = images.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvAutoencoder(side, channels, latent_dim)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(n).split(batch_size):
                batch = images[idx]
                loss = nn.functional.l1_loss(model(batch), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()


@torch.no_grad()
def encode(model: ConvAutoencoder, images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Codes (N, latent_dim) of images (N, C, H, W) in eval mode, ``chunk`` images at a time."""
    model.eval()
    return torch.cat([model.encode(part) for part in images.split(chunk)])


def load_or_train_autoencoder(path, images: torch.Tensor, **train_kw) -> ConvAutoencoder:
    """The autoencoder cached at ``path`` (safetensors), or one trained on ``images`` with
    :func:`train_autoencoder` and written there atomically first. ``path`` must name everything
    the weights depend on (dataset, normalization, latent size, epochs, seed)."""
    from pathlib import Path

    from safetensors.torch import load_file, save

    from genlab.runs import atomic_write_bytes

    path = Path(path)
    _, channels, side, _ = images.shape
    if path.exists():
        model = ConvAutoencoder(side, channels, train_kw.get("latent_dim", 4))
        model.load_state_dict(load_file(path))
        return model.eval()
    model = train_autoencoder(images, **train_kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return model
