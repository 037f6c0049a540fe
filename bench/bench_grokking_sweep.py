"""Benchmark: the grokking study's 30-member MNIST sweep, batched vs sequential.

The sweep (Sakamoto & Sato): MLP 784-200-200-10, ReLU, alpha = 8, squared error summed over
outputs, AdamW lr 1e-3, batch 100 from a 1,000-example training set, weight decay in
{0.3, 0.1, 0.03, 0.01, 0.003, 0.001} x seeds 42-46 = 30 members.

Prints, from one run:
1. time per step: the batched ensemble (one program over stacked tensors) vs the same 30
   members trained one after another (nn.Sequential + torch.optim.AdamW, fused and the default
   single-tensor path), and their ratio. The variants run in --rounds interleaved rounds of
   --steps / --rounds steps each, so a burst of load from other processes hits all of them;
   the report gives medians over rounds;
2. achieved matmul GFLOP/s of each against this machine's float32 matmul peak, measured here
   (best of several 2048^3 torch.mm);
3. the cost of the study's own measurement (``GrokkingMeter``: penultimate features of 1,000
   train + 10,000 test examples for every member, ``neural_collapse`` on both, the bound and
   nHSIC; not the MI estimate, which runs at ~10 points) at 150 logged points, as a fraction of
   a 100k-step run -- EXTRAPOLATED from the measured per-step and per-measurement times.

Usage: .venv/bin/python bench/bench_grokking_sweep.py [--steps 300] [--threads N] [--synthetic]
Timings on a shared machine are noisy (other processes compete for the same cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import torch

from genlab.ensemble import (
    MLPEnsemble,
    adamw_step_,
    build_mlp,
    count_params,
    matmul_flops_per_step,
)
from genlab.losses import LOSSES
from genlab.studies.grokking.config import MNIST_DATA, GrokkingConfig, Member, members_of
from genlab.studies.grokking.run import EnsembleStepper, GrokkingMeter, TaskData, schedule
from genlab.train import BatchSampler

SIZES = [784, 200, 200, 10]
WEIGHT_DECAYS = [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
SEEDS = [42, 43, 44, 45, 46]
# The study's own member list (weight decay outer, seed inner), without the alpha controls.
SWEEP = [
    (m.weight_decay, m.seed)
    for m in members_of(
        GrokkingConfig(
            weight_decays=tuple(WEIGHT_DECAYS), seeds=tuple(SEEDS), control_init_scale=None
        )
    )
]
BATCH, ALPHA, LR = 100, 8.0, 1e-3


def load_data(
    synthetic: bool,
) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, x_train (1000, 784), y_train (1000,), x_test (10000, 784), y_test (10000,))."""
    if not synthetic:
        try:
            from genlab.data import load_dataset

            ds = load_dataset("mnist", train_size=1000)
            x_tr, x_te = ds.x_train.reshape(1000, -1), ds.x_test.reshape(-1, 784)
            return "mnist", x_tr, ds.y_train, x_te, ds.y_test
        except Exception as err:  # noqa: BLE001 - any failure falls back to synthetic data
            print(f"(mnist unavailable: {type(err).__name__}: {err}; using synthetic tensors)")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(11000, 784, generator=g)
    y = torch.randint(0, 10, (11000,), generator=g)
    return "synthetic", x[:1000], y[:1000], x[1000:], y[1000:]


def matmul_peak() -> float:
    """This machine's float32 matmul throughput (GFLOP/s): best of 2048^3 torch.mm."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(8):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


class Sequential:
    """The 30 members as 30 plain programs (what ``train_mlp_reference`` runs per step:
    ``nn.Sequential`` + ``torch.optim.AdamW`` + autograd, same batch protocol), kept alive so
    that they can be stepped in rounds interleaved with the batched ensemble."""

    def __init__(self, x, y, adamw: str):
        self.x, self.y = x, y
        self.members = []
        for wd, seed in SWEEP:
            model = build_mlp(SIZES, seed=seed, init_scale=ALPHA)
            fused = adamw == "fused"
            opt = torch.optim.AdamW(
                model.parameters(),
                lr=LR,
                weight_decay=wd,
                fused=fused,
                foreach=None if fused else False,
            )
            self.members.append((model, opt, BatchSampler(x.shape[0], BATCH, [seed])))

    def run(self, steps: int) -> None:
        """``steps`` steps of every member, one member after the other."""
        for model, opt, sampler in self.members:
            for _ in range(steps):
                idx = sampler.next()[0]
                opt.zero_grad(set_to_none=True)
                LOSSES["mse_sum"](model(self.x[idx]), self.y[idx]).backward()
                opt.step()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps timed per variant")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic tensors, not MNIST")
    ap.add_argument("--total-steps", type=int, default=100_000, help="run length to extrapolate")
    ap.add_argument("--log-points", type=int, default=150, help="NC measurements per run")
    ap.add_argument("--skip-default-adamw", action="store_true", help="skip the slowest baseline")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    source, x_train, y_train, x_test, y_test = load_data(args.synthetic)
    m = len(WEIGHT_DECAYS) * len(SEEDS)
    k = max(1, args.steps // args.rounds)  # steps per variant per round
    print(f"grokking sweep benchmark: {m} members, MLP {SIZES}, batch {BATCH}, data {source}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds x "
        f"{k} steps per variant, the variants interleaved within each round; medians over rounds"
    )
    print("(shared machine: other processes may compete for the cores; numbers are noisy)\n")

    flops = m * matmul_flops_per_step(SIZES, BATCH)  # executed matmul FLOPs per sweep step
    nominal = m * 6 * BATCH * count_params(SIZES)  # the 6 * batch * params rule of thumb
    wds, seeds = [wd for wd, _ in SWEEP], [seed for _, seed in SWEEP]
    ens = MLPEnsemble(
        x_train,
        y_train,
        sizes=SIZES,
        seeds=seeds,
        weight_decays=wds,
        lr=LR,
        init_scale=ALPHA,
        batch_size=BATCH,
    )
    x_flat = x_train.reshape(x_train.shape[0], -1)
    variants = {
        "batched ensemble (fused AdamW on stacks)": lambda n: [ens.step() for _ in range(n)]
    }
    seq_fused = Sequential(x_flat, y_train, "fused")
    variants["sequential, torch.optim.AdamW(fused=True)"] = seq_fused.run
    if not args.skip_default_adamw:
        seq_default = Sequential(x_flat, y_train, "single_tensor")
        variants["sequential, torch.optim.AdamW() default"] = seq_default.run
    for run in variants.values():  # warm-up
        run(2)

    # The study's own meter at one logged point (MI excluded: it runs at ~10 points, not 150):
    # features of 1,000 train + 10,000 test examples, neural_collapse on both (two passes, NC4
    # included), the Theorem 3.2 bound and nHSIC(Z;X), nHSIC(Z;Y) on 10 test batches, for
    # every member; logging goes nowhere.
    members = [Member(ALPHA, w, sd) for w, sd in zip(wds, seeds)]
    task = TaskData(x_flat, y_train, x_test, y_test, 10)

    class NoRun:
        quiet = True

        def log(self, *args, **values) -> None:
            pass

    meter = GrokkingMeter(NoRun(), GrokkingConfig(data=MNIST_DATA), task, members, mi_steps=set())
    loop = types.SimpleNamespace(stepper=EnsembleStepper(ens), step=1)

    def measure() -> None:
        meter(loop)

    def forward_only() -> None:  # the part of the meter that any accuracy logging needs
        loop.stepper.outputs(task.x_train)
        loop.stepper.outputs(task.x_test)

    def adamw_only() -> None:
        for i in range(k):
            adamw_step_(
                ens.params, ens.grads, ens.exp_avgs, ens.exp_avg_sqs, 10**6 + i, ens.lrs, wds
            )

    per_step = {name: [] for name in variants}
    peaks, t_meas, t_adamw, t_forward, meas_frac = [], [], [], [], []
    for _ in range(args.rounds):
        peaks.append(matmul_peak())
        for name, run in variants.items():
            per_step[name].append(timed(lambda run=run: run(k)) / k)
        t_adamw.append(timed(adamw_only) / k)
        t_meas.append(timed(measure))
        t_forward.append(timed(forward_only))
        batched = per_step[next(iter(variants))][-1]
        meas_frac.append(args.log_points * t_meas[-1] / (args.total_steps * batched))

    peak = max(peaks)  # the machine's own peak: the least disturbed reading
    med = {name: statistics.median(ts) for name, ts in per_step.items()}
    names = list(variants)
    print(
        f"float32 matmul peak (2048^3 torch.mm, best of 8, once per round): best {peak:.1f}, "
        f"readings {', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s"
    )
    print(
        f"matmul FLOPs per sweep step: {flops / 1e9:.3f} G executed ({nominal / 1e9:.3f} G nominal"
    )
    print("  = 6 * batch * params; the first layer's input gradient is never computed)\n")
    head = f"{'variant':44s} {'ms/step':>8s} {'speed-up':>8s} {'GFLOP/s':>8s} {'% peak':>7s}"
    print(head)
    print("-" * len(head))
    for name in names:
        t = med[name]
        ratios = [a / b for a, b in zip(per_step[names[1]], per_step[name])]
        gf = flops / t / 1e9
        print(
            f"{name:44s} {t * 1e3:8.1f} {statistics.median(ratios):7.2f}x {gf:8.1f} {100 * gf / peak:6.1f}%"
        )
    print("  speed-up: median over rounds of (sequential fused time / this variant's time)")
    tb = med[names[0]]
    print(
        f"  batched: AdamW alone {statistics.median(t_adamw) * 1e3:.1f} ms/step; nominal-FLOP rate"
        f" {nominal / tb / 1e9:.1f} GFLOP/s = {100 * nominal / tb / 1e9 / peak:.0f}% of peak"
    )
    if len(names) > 2:
        ratios = [a / b for a, b in zip(per_step[names[2]], per_step[names[0]])]
        print(f"  batched vs sequential default AdamW: {statistics.median(ratios):.2f}x")

    tm = statistics.median(t_meas)
    study_points = len(schedule(GrokkingConfig(data=MNIST_DATA, steps=args.total_steps))[0])
    print(
        f"\nmeasurement: the study's GrokkingMeter ({m} members; features of {x_train.shape[0]} "
        f"train + {x_test.shape[0]} test examples, neural_collapse on both, bound, nHSIC): "
        f"{tm * 1e3:.0f} ms per logged point (median over rounds), of which the forward pass "
        f"for features and logits {statistics.median(t_forward) * 1e3:.0f} ms"
    )
    print(
        f"EXTRAPOLATED to {args.total_steps} steps, training {args.total_steps * tb / 3600:.2f} h: "
        f"{args.log_points} points cost {args.log_points * tm / 60:.1f} min = "
        f"{100 * statistics.median(meas_frac):.1f}% of training time (median of per-round "
        f"ratios); the study's schedule has {study_points} points (dense start): "
        f"{100 * study_points * tm / (args.total_steps * tb):.1f}%"
    )


if __name__ == "__main__":
    main()
