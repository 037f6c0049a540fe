"""The shared training loop's per-step time against a plain hand-written PyTorch loop.

Same model (MLP 784-200-200-10), same data (1,000 MNIST-shaped examples), same optimizer and
batch order; the two loops alternate over several rounds and the median per-step times are
compared. Target: overhead at most 5%.

    python bench/bench_train_loop.py [--steps 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genlab.losses import LOSSES
from genlab.models import build_model
from genlab.train import (
    Callback,
    EndlessSampler,
    SupervisedStepper,
    TrainLoop,
    measurement_steps,
)


def setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (1000,), generator=g)
    model = build_model("mlp", (1, 28, 28), 10, width=200, depth=2, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    return x, y, model, opt


def plain_loop(steps: int) -> float:
    x, y, model, opt = setup()
    gen = torch.Generator().manual_seed(0)
    perm, pos = torch.randperm(1000, generator=gen), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + 100 > 1000:
            perm, pos = torch.randperm(1000, generator=gen), 0
        idx = perm[pos : pos + 100]
        pos += 100
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def shared_loop(steps: int) -> float:
    x, y, model, opt = setup()
    # A realistic callback list: a measurement schedule that never fires inside the timing
    # window still gets checked every step, as in a real run.
    stepper = SupervisedStepper(model, opt, EndlessSampler(x, y, 100, seed=0), LOSSES["ce"])
    loop = TrainLoop(
        stepper,
        steps,
        callbacks=[Callback(lambda lp: None, measurement_steps(10**9, 0, 150))],
    )
    loop.step = 1  # skip the step-0 measurement
    loop.total_steps = steps + 1
    t0 = time.perf_counter()
    loop.run()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    plain_loop(200), shared_loop(200)  # warm up
    plain, shared = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(args.steps))
        shared.append(shared_loop(args.steps))
    p, s = statistics.median(plain), statistics.median(shared)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} alternating rounds of {args.steps} steps"
    )
    print(f"plain hand-written loop : {p * 1e6:8.1f} us/step")
    print(f"genlab TrainLoop        : {s * 1e6:8.1f} us/step")
    print(f"overhead                : {100 * (s / p - 1):+.1f}%  (target <= +5%)")


if __name__ == "__main__":
    main()
