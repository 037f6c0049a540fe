"""nHSIC wall time and agreement, side by side in one run: `python bench/bench_hsic.py [--quick]`.

1. ``nhsic_batch`` (row-mean centering, one linear solve per side, the trace as an elementwise
   sum) against the direct dense form with explicit inverses, as the authors' code does:
   K, H = I - 1 1^T / m, Kc = K @ H, R = Kc @ inverse(Kc + eps m I), trace(Rx @ Rz), both in
   float64, at m in {100, 512, 2048}: time ratio (best of a few runs each) and relative
   difference. Target: ours at least as fast, agreement within 1e-6 relative.
2. At m = 8192: ``nhsic_batch`` (exact, O(m^3)) against ``nhsic_approx`` (Nystrom landmarks or
   random Fourier features, O(m D^2 + D^3)): time ratio and relative error over three feature
   seeds. Target: at least 20x faster within 2%.

Data: x ~ N(0, I_32), z = tanh(x_:16 W / 4) + 0.1 noise (16 dims), sigma = 5, eps = 1e-5. With
lam = eps m and the kernel eigenvalues growing like m, the number of eigenvalues above lam (hence
the features needed for a given relative error) hardly depends on m; it grows with the data's
intrinsic dimension, so wide, isotropic data needs more features than this.

The machine is shared with other jobs, so every timing here is noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from genlab.measures import nhsic_approx, nhsic_batch

SIGMA, EPS = 5.0, 1e-5


def best_time(fn, repeat: int) -> tuple[float, float]:
    """(best wall time of ``repeat`` runs, the value of the last run)."""
    best, value = float("inf"), float("nan")
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def dense_nhsic(x: torch.Tensor, z: torch.Tensor, sigma: float, eps: float) -> float:
    """The direct dense form with explicit matrices and inverses, in float64."""

    def normalized(a: torch.Tensor) -> torch.Tensor:
        a = a.reshape(a.shape[0], -1).double()
        m, dim = a.shape
        k = torch.exp(-torch.cdist(a, a).square() / (2 * sigma**2 * dim))
        eye = torch.eye(m, dtype=torch.float64)
        kc = k @ (eye - torch.ones(m, m, dtype=torch.float64) / m)
        return kc @ torch.inverse(kc + eps * m * eye)

    return float(torch.trace(normalized(x) @ normalized(z)))


def make_data(m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 32, generator=g)
    w = torch.randn(16, 16, generator=g)
    z = torch.tanh(x[:, :16] @ w / 4) + 0.1 * torch.randn(m, 16, generator=g)
    return x, z


def exact_vs_dense(sizes: list[int]) -> None:
    print("\n[1] nhsic_batch vs dense explicit-inverse reference (float64, best of runs)")
    print(f"{'m':>6} {'dense s':>9} {'ours s':>9} {'dense/ours':>11} {'rel diff':>10}")
    for m in sizes:
        x, z = make_data(m)
        repeat = 10 if m <= 512 else 2
        t_dense, v_dense = best_time(lambda x=x, z=z: dense_nhsic(x, z, SIGMA, EPS), repeat)
        t_ours, v_ours = best_time(lambda x=x, z=z: nhsic_batch(x, z, SIGMA, EPS), repeat)
        rel = abs(v_ours - v_dense) / abs(v_dense)
        print(f"{m:>6} {t_dense:>9.4f} {t_ours:>9.4f} {t_dense / t_ours:>10.2f}x {rel:>10.1e}")


def approx_vs_exact(m: int, configs: list[tuple[str, int]], seeds: int = 3) -> None:
    print(f"\n[2] m = {m}: nhsic_approx vs exact nhsic_batch ({seeds} feature seeds)")
    x, z = make_data(m)
    t_exact, exact = best_time(lambda: nhsic_batch(x, z, SIGMA, EPS), 1)
    print(f"    exact nhsic_batch: {exact:.4f} in {t_exact:.1f} s (one run)")
    print(
        f"{'method':>10} {'D':>6} {'best s':>8} {'exact/approx':>13} "
        f"{'mean rel err':>13} {'max rel err':>12}"
    )
    for method, num in configs:
        times, errors = [], []
        for seed in range(seeds):
            start = time.perf_counter()
            value = nhsic_approx(x, z, method, num, SIGMA, EPS, seed=seed)
            times.append(time.perf_counter() - start)
            errors.append(abs(value - exact) / exact)
        ratio = t_exact / min(times)
        print(
            f"{method:>10} {num:>6} {min(times):>8.2f} {ratio:>12.1f}x "
            f"{sum(errors) / seeds:>13.4f} {max(errors):>12.4f}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="m up to 1024, large m = 2048")
    ap.add_argument("--large-m", type=int, default=None, help="m of section 2 (default 8192)")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, python {sys.version.split()[0]}")  # fmt: skip
    print("NOTE: the cores are shared with other jobs; timings are noisy.")
    exact_vs_dense([100, 512, 1024] if args.quick else [100, 512, 2048])
    large_m = args.large_m or (2048 if args.quick else 8192)
    approx_vs_exact(large_m, [("nystrom", 512), ("nystrom", 1024), ("rff", 1024)])


if __name__ == "__main__":
    main()
