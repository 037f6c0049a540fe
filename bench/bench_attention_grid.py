"""Benchmark: the token-attention phase diagram, fast batched path vs naive per-cell autograd.

Usage::

    python bench/bench_attention_grid.py            # 6 x 6 side by side + extrapolated full grid
    python bench/bench_attention_grid.py --full     # ... and really run the study's grid

1. Per-step cost at a few d: the naive reference (:func:`train_naive`: ``(X W) p`` with autograd
   and ``torch.optim.SGD``, ``O(n T d^2)`` per step) vs the fast path (``gram``: ``O((nT)^2)``
   per step after an ``O(d^2 nT)`` precompute).
2. A 6 x 6 sub-grid (||mu|| spread over 5..100, d over ``--sub-d``, default 250..1000 because the
   naive path costs ``O(d^2)`` per step) trained at ``--steps`` (default 1000) by both paths,
   with the wall-time ratio and the largest difference of their final losses.
3. The study's grid, 39 x 39 cells for each n in (5, 10, 20, 40) and seeds 0, 1, 2, at
   ``--steps``: extrapolated from complete d-columns (all 39 ||mu||) at a few d (clearly
   labelled), or measured with ``--full``.

The machine is shared with other jobs, so every number here is noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from genlab.data.tokens import make_token_data
from genlab.models.token_attention import gram_descent, gram_operators, init_w0, train_naive
from genlab.studies.attention.grid import D_VALUES, MU_VALUES, run_grid

SUB_MU = [MU_VALUES[i] for i in (0, 7, 15, 23, 31, 38)]  # 5, 22.5, 42.5, 62.5, 82.5, 100


def fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


def per_step_costs(ds, steps_fast: int = 200) -> None:
    print(
        f"\n[1] per-step cost, one cell (n=20, T=8, defaults), {torch.get_num_threads()} thread(s)"
    )
    print(f"{'d':>6} {'naive ms/step':>14} {'fast ms/step':>13} {'fast precompute s':>18}")
    warm = make_token_data(d=32, n_test=10)  # first SGD step imports lazily (seconds): not timed
    train_naive(warm, steps=2, log_every=None)
    run_grid([5.0], [32], steps=2, n_test=10)
    for d in ds:
        data = make_token_data(d=d, n_test=10)
        k = 3 if d >= 3000 else 10
        t0 = time.perf_counter()
        train_naive(data, steps=k, log_every=None)
        naive = (time.perf_counter() - t0) / k
        t0 = time.perf_counter()
        ops = gram_operators(data.x_train[None], [init_w0(d, data.seed)])
        pre = time.perf_counter() - t0
        v = data.x_train[None] @ data.nu
        t0 = time.perf_counter()
        gram_descent(ops.P, ops.G, v, data.y_train[None], steps=steps_fast, lr=5e-3)
        fast = (time.perf_counter() - t0) / steps_fast
        print(f"{d:>6} {naive * 1e3:>14.2f} {fast * 1e3:>13.3f} {pre:>18.2f}")


def side_by_side(sub_d, steps: int) -> None:
    print(f"\n[2] 6 x 6 sub-grid, {steps} steps: ||mu|| = {SUB_MU}, d = {list(sub_d)}")
    t0 = time.perf_counter()
    fast = run_grid(SUB_MU, sub_d, steps=steps, executor="local")
    t_fast = time.perf_counter() - t0
    print(f"    fast batched path (local executor, 1 thread): {fmt_s(t_fast)}", flush=True)
    t0 = time.perf_counter()
    worst = 0.0
    for i, mu in enumerate(SUB_MU):
        for j, d in enumerate(sub_d):
            data = make_token_data(d=int(d), mu_norm=mu)
            h = train_naive(data, steps=steps, log_every=None).final()
            worst = max(
                worst,
                abs(h["train_loss"] - fast.train_loss[0, 0, i, j]),
                abs(h["test_loss"] - fast.test_loss[0, 0, i, j]),
            )
    t_naive = time.perf_counter() - t0
    print(f"    naive per-cell autograd ({torch.get_num_threads()} thread(s)): {fmt_s(t_naive)}")
    print(f"    speed-up naive / fast: {t_naive / t_fast:.1f}x")
    print(f"    max |final loss difference| (float32, train+test): {worst:.2e}")


STUDY_NS, STUDY_SEEDS = (5, 10, 20, 40), (0, 1, 2)  # the `grid` preset's n values and seeds


def full_grid(steps: int, run_all: bool, executor: str, workers: int) -> None:
    n_cells = len(MU_VALUES) * len(D_VALUES) * len(STUDY_NS) * len(STUDY_SEEDS)
    shape = f"{len(MU_VALUES)} x {len(D_VALUES)} x n {STUDY_NS} x seeds {STUDY_SEEDS}"
    if run_all:
        print(f"\n[3] full grid {shape}, {steps} steps, measured")
        t0 = time.perf_counter()
        res = run_grid(
            n_values=STUDY_NS, seeds=STUDY_SEEDS, steps=steps, executor=executor, workers=workers
        )
        wall = time.perf_counter() - t0
        print(f"    {n_cells} cells, executor={executor}, workers={workers}: {fmt_s(wall)}")
        reg = res.regimes()
        counts = {name: int((reg == k).sum()) for k, name in enumerate(("not", "benign", "harm"))}
        law = res.power_law()
        print(f"    regimes: {counts}; power law a = {law.a_mean:.2f} {law.a_interval}, "
              f"b = {law.b_mean:.2f} {law.b_interval}")  # fmt: skip
        return
    probe = [250, 1250, 2500, 3750, 5000]
    print(f"\n[3] full grid {shape}, EXTRAPOLATED from complete columns (39 ||mu||, seed 0) at "
          f"d = {probe}")  # fmt: skip
    est = 0.0
    for n in STUDY_NS:
        times = []
        for d in probe:
            t0 = time.perf_counter()
            run_grid(MU_VALUES, [d], n_values=(n,), steps=steps, executor="local")
            times.append(time.perf_counter() - t0)
        col = float(np.interp(D_VALUES, probe, times).sum())
        print(f"    n={n:>3}: {col:.1f} s for 39 x 39 cells (one seed)", flush=True)
        est += col * len(STUDY_SEEDS)
    print(f"    extrapolated sequential (1 core) time for {n_cells} cells: {fmt_s(est)}")
    print(f"    with {workers} process workers (ideal split): {fmt_s(est / workers)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="run the full 39 x 39 grid")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sub-d", default="250,375,500,625,750,1000", help="d of the 6 x 6 grid")
    ap.add_argument("--executor", default="process", choices=["local", "process", "ray"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-naive", action="store_true", help="skip sections 1 and 2")
    ap.add_argument(
        "--naive-threads",
        type=int,
        default=1,
        help="torch threads for sections 1-2 (default 1: like the fast path's GD loop; on a\n"
        "busy machine 2 intra-op threads make small ops far slower, not faster)",
    )
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, python {sys.version.split()[0]}")  # fmt: skip
    print("NOTE: the cores are shared with other jobs; timings are noisy.")
    if not args.skip_naive:
        outer = torch.get_num_threads()
        torch.set_num_threads(args.naive_threads)
        per_step_costs([250, 1000, 2000, 5000])
        side_by_side([int(x) for x in args.sub_d.split(",")], args.steps)
        torch.set_num_threads(outer)
    full_grid(args.steps, args.full, args.executor, args.workers)


if __name__ == "__main__":
    main()
