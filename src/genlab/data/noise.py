"""Label noise, applied to the training split only.

- ``uniform``: each label independently, with probability f, is replaced by a class drawn
  uniformly from all K classes (it may draw its own label), so the true flip rate is f(1 - 1/K).
- ``bernoulli``: each label independently, with probability f, is changed to a class drawn
  uniformly from the other K - 1 (the true flip rate is f; the benign-attention authors'
  ``add_label_noise``).
- ``flip``: exactly ceil(n f) labels are changed to a different class (drawn uniformly from the
  other K - 1), the flipped examples spread as evenly as possible over the true classes.
"""

from __future__ import annotations

import math

import torch


def uniform_noise(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Labels where a fraction ``fraction`` (in expectation) is redrawn uniformly over K classes."""
    redraw = torch.rand(y.shape[0], generator=generator) < fraction
    random_labels = torch.randint(0, num_classes, (y.shape[0],), generator=generator)
    return torch.where(redraw, random_labels, y)


def bernoulli_noise(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Each label independently, with probability ``fraction``, moved to a uniformly random
    other class."""
    flip = torch.rand(y.shape[0], generator=generator) < fraction
    # A uniform offset in 1..K-1 gives a uniformly random *other* class.
    offset = torch.randint(1, num_classes, (y.shape[0],), generator=generator)
    return torch.where(flip, (y + offset) % num_classes, y)


def flip_noise(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Exactly ceil(n * fraction) labels moved to another class, balanced across true classes."""
    n = y.shape[0]
    n_flip = min(n, math.ceil(n * fraction - 1e-12))
    # Round-robin over classes (in a random class order) picks a balanced set of victims.
    per_class = [
        c_idx[torch.randperm(len(c_idx), generator=generator)]
        for c_idx in (torch.nonzero(y == c).flatten() for c in range(num_classes))
    ]
    class_order = torch.randperm(num_classes, generator=generator).tolist()
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n_flip:
        for c in class_order:
            if depth < len(per_class[c]) and len(chosen) < n_flip:
                chosen.append(int(per_class[c][depth]))
        depth += 1
    idx = torch.tensor(sorted(chosen), dtype=torch.long)
    noisy = y.clone()
    if len(idx):
        # A uniform offset in 1..K-1 gives a uniformly random *other* class.
        offset = torch.randint(1, num_classes, (len(idx),), generator=generator)
        noisy[idx] = (y[idx] + offset) % num_classes
    return noisy


NOISE_KINDS = {"uniform": uniform_noise, "bernoulli": bernoulli_noise, "flip": flip_noise}


def apply_label_noise(
    y: torch.Tensor, fraction: float, num_classes: int, kind: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy labels and the indices that actually changed."""
    generator = torch.Generator().manual_seed(seed)
    noisy = NOISE_KINDS[kind](y, fraction, num_classes, generator)
    return noisy, torch.nonzero(noisy != y).flatten()
