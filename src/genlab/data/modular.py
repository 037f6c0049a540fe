"""Modular arithmetic tasks (a op b) mod p, the grokking literature's algorithmic datasets.

``make_modular_data(p, op, train_fraction, seed, encoding)`` enumerates every pair (a, b) with
a, b in [0, p) (for division only b != 0), labels it (a op b) mod p and splits the pairs at
random (a fixed permutation drawn from a ``torch.Generator`` seeded by ``seed``): the first
``round(train_fraction * N)`` permuted pairs train, the rest test.

Two encodings of the same pairs:

- ``"onehot-concat"``: x is float32 (N, 2p), one-hot(a) concatenated with one-hot(b) (two ones
  per row); the input of an MLP.
- ``"index"``: x is int64 (N, 3), the token triple (a, b, "=") with the "=" token id p
  (vocabulary p + 1); the input of the one-layer transformer.

Ops: ``"+"``, ``"-"``, ``"*"`` (also accepted as ``"x"``) and ``"/"`` (a * b^(p-2) mod p, the
inverse by Fermat's little theorem, so p must be prime).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.errors import ConfigError

__all__ = ["ENCODINGS", "OPS", "ModularConfigError", "ModularData", "make_modular_data"]

OPS = ("+", "-", "*", "/")
ENCODINGS = ("onehot-concat", "index")


class ModularConfigError(ConfigError, ValueError):
    """A bad option of :func:`make_modular_data`; a ``ValueError`` whose message names the field."""


@dataclass
class ModularData:
    """Train/test split of (a op b) mod p.

    ``x_*``: (N, 2p) float32 for ``"onehot-concat"`` or (N, 3) int64 for ``"index"``;
    ``y_*``: (N,) int64 in [0, p); ``pairs_*``: (N, 2) int64 (a, b), whatever the encoding.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pairs_train: torch.Tensor
    pairs_test: torch.Tensor
    p: int
    op: str
    encoding: str

    @property
    def num_classes(self) -> int:
        return self.p

    @property
    def vocab_size(self) -> int:
        """Tokens of the ``"index"`` encoding: 0..p-1 and "=" (id p)."""
        return self.p + 1

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def modular_labels(a: torch.Tensor, b: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """(a op b) mod p for int64 tensors a, b in [0, p) (b != 0 for "/")."""
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        inv = torch.tensor([pow(int(v), p - 2, p) for v in b.tolist()], dtype=torch.long)
        return (a * inv) % p
    raise ModularConfigError("op", f"unknown op {op!r}; choose from {list(OPS)}")


def encode(pairs: torch.Tensor, p: int, encoding: str) -> torch.Tensor:
    """Encode (N, 2) int64 pairs as (N, 2p) float32 two-hot rows or (N, 3) token triples."""
    if encoding == "onehot-concat":
        x = torch.zeros(pairs.shape[0], 2 * p, dtype=torch.float32)
        rows = torch.arange(pairs.shape[0])
        x[rows, pairs[:, 0]] = 1.0
        x[rows, p + pairs[:, 1]] = 1.0
        return x
    if encoding == "index":
        eq = torch.full((pairs.shape[0], 1), p, dtype=torch.long)
        return torch.cat([pairs, eq], dim=1)
    raise ModularConfigError("encoding", f"unknown encoding {encoding!r}; choose from {ENCODINGS}")


MAX_P = 512
"""The one-hot data of p^2 pairs x 2p inputs is 1 GiB of float32 at p = 512."""


def make_modular_data(
    p: int = 59,
    op: str = "+",
    train_fraction: float = 0.4,
    seed: int = 0,
    encoding: str = "onehot-concat",
) -> ModularData:
    """All pairs of (a op b) mod p, split at random into train and test (see module docstring).

    Raises :class:`ModularConfigError` (a ``ValueError``) naming the field: ``p`` (< 2, or not
    prime for "/"), ``op``, ``train_fraction`` (outside (0, 1), or leaving a split empty) or
    ``encoding``.
    """
    if op == "x":
        op = "*"
    if op not in OPS:
        raise ModularConfigError("op", f"unknown op {op!r}; choose from {list(OPS)} (or 'x')")
    if encoding not in ENCODINGS:
        raise ModularConfigError(
            "encoding", f"unknown encoding {encoding!r}; choose from {list(ENCODINGS)}"
        )
    if not isinstance(p, int) or isinstance(p, bool) or not 2 <= p <= MAX_P:
        raise ModularConfigError(
            "p", f"must be an integer in [2, {MAX_P}] (p^2 pairs of 2p inputs), got {p!r}"
        )
    if op == "/" and not _is_prime(p):
        raise ModularConfigError("p", f"must be prime for division (op '/'), got {p}")
    if not 0.0 < train_fraction < 1.0:
        raise ModularConfigError("train_fraction", f"must be in (0, 1), got {train_fraction}")

    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
    pairs = torch.stack([a, b], dim=1)  # (N, 2), row-major in (a, b)
    y = modular_labels(a, b, p, op)

    n = pairs.shape[0]
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        raise ModularConfigError(
            "train_fraction", f"{train_fraction} of {n} pairs leaves an empty train or test split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    return ModularData(
        x_train=encode(pairs[tr], p, encoding),
        y_train=y[tr],
        x_test=encode(pairs[te], p, encoding),
        y_test=y[te],
        pairs_train=pairs[tr],
        pairs_test=pairs[te],
        p=p,
        op=op,
        encoding=encoding,
    )
