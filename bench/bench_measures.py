"""Wall time of the measures at study scale: `python bench/bench_measures.py [--device cuda]`.

Neural collapse over a 50k x 512 training set in batches (one pass plus the NC4 pass), the
bound on a 10k test set, nHSIC over 1k samples in batches of 100, and compressed MI on 5k.
"""

from __future__ import annotations

import argparse
import time

import torch

from genlab.measures import (
    NeuralCollapseAccumulator,
    generalization_bound,
    mutual_information_compressed,
    nhsic,
)


def timed(label: str, fn) -> None:
    start = time.perf_counter()
    fn()
    print(f"{label:<44s} {time.perf_counter() - start:8.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    k, d, n = args.classes, args.dim, args.n
    means = 5 * torch.randn(k, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    h = (means[y] + torch.randn(n, d, generator=g)).to(args.device)
    y = y.to(args.device)
    w = means.to(args.device)

    def nc() -> None:
        acc = NeuralCollapseAccumulator(k, d)
        for i in range(0, n, 1000):
            acc.update(h[i : i + 1000], y[i : i + 1000])
        for i in range(0, n, 1000):
            acc.update_nc4(h[i : i + 1000], h[i : i + 1000] @ w.T)
        acc.compute(weight=w)

    timed(f"neural collapse {n} x {d}, 2 passes", nc)
    timed("generalization bound 10k", lambda: generalization_bound(h[:10_000], y[:10_000], w))
    x_img = torch.randn(1000, 784, generator=g)
    timed("nhsic 1k x 784 vs 1k x 512, batch 100", lambda: nhsic(x_img, h[:1000].cpu()))
    timed(
        "compressed MI 5k (PCA)",
        lambda: mutual_information_compressed(
            torch.randn(5000, 784, generator=g), h[:5000].cpu(), y=y[:5000].cpu()
        ),
    )


if __name__ == "__main__":
    main()
