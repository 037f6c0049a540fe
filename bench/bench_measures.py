"""Wall time of the measures at study scale: `python bench/bench_measures.py [--device cuda]`.

Neural collapse over a 50k x 512 float32 training set, side by side in one run: the in-memory
two-pass ``neural_collapse`` (O(N d K)), the streaming ``NeuralCollapseAccumulator`` (one pass
of d x d shifted moments plus the NC4 pass) and a plain baseline (the whole set in float64,
class means by boolean masks, Sigma_W as a dense d x d matrix, pinv of Sigma_B); then the
bound on a 10k test set alone and together with neural collapse (``collapse_and_bound``),
nHSIC over 1k samples in batches of 100, and compressed MI on 5k.
"""

from __future__ import annotations

import argparse
import time

import torch

from genlab.measures import (
    NeuralCollapseAccumulator,
    collapse_and_bound,
    generalization_bound,
    mutual_information_compressed,
    neural_collapse,
    nhsic,
)


def timed(label: str, fn, repeat: int = 3) -> float:
    """Best of ``repeat`` runs (the least disturbed reading on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<58s} {best:8.3f} s")
    return best


def plain_neural_collapse(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """The textbook computation: float64 copy, masks per class, dense Sigma_W and pinv(Sigma_B);
    returns Papyan's NC1 (the other measures follow from the same matrices)."""
    h = h.double()
    classes = torch.unique(y)
    means = torch.stack([h[y == c].mean(0) for c in classes])
    residual = h - means[torch.searchsorted(classes, y)]
    sigma_w = residual.T @ residual / h.shape[0]
    mb = means - means.mean(0)
    sigma_b = mb.T @ mb / len(classes)
    nc1 = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / len(classes)
    dists = torch.cdist(h, means)
    (dists.argmin(1) != (h @ w.double().T).argmax(1)).double().mean()
    return float(nc1)


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

    def accumulator() -> None:
        acc = NeuralCollapseAccumulator(k, d)
        for i in range(0, n, 1000):
            acc.update(h[i : i + 1000], y[i : i + 1000])
        for i in range(0, n, 1000):
            acc.update_nc4(h[i : i + 1000], h[i : i + 1000] @ w.T)
        acc.compute(weight=w)

    print(f"neural collapse, {n} x {d} float32 features, {k} classes (best of 3)")
    t_plain = timed(
        "  plain baseline (dense float64 Sigma_W, pinv Sigma_B)",
        lambda: plain_neural_collapse(h, y, w),
    )
    t_acc = timed("  NeuralCollapseAccumulator (streaming, 1k batches)", accumulator)
    t_mem = timed(
        "  neural_collapse (in memory, two O(N d K) passes)", lambda: neural_collapse(h, y, w)
    )
    print(
        f"  speed-up of neural_collapse: {t_plain / t_mem:.1f}x vs plain, {t_acc / t_mem:.1f}x vs accumulator"
    )
    print(f"  speed-up of the accumulator vs plain: {t_plain / t_acc:.1f}x\n")
    h_te, y_te = h[:10_000], y[:10_000]
    t_bound = timed("generalization bound 10k", lambda: generalization_bound(h_te, y_te, w))
    t_nc = timed("neural collapse 10k", lambda: neural_collapse(h_te, y_te, w))
    t_both = timed(
        "collapse_and_bound 10k (shared passes)", lambda: collapse_and_bound(h_te, y_te, w)
    )
    print(f"  separate / shared: {(t_bound + t_nc) / t_both:.2f}x\n")
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
