"""The cost of measuring in the layerwise study: information-plane measurement as a share of
training time at a preset's schedule, measured side by side in one run.

For each mode (E2E, simultaneous layer-wise), the median time of a training step and of one
measurement (:class:`InfoPlaneMeter`: nHSIC and CKA of every layer on the preset's fixed test
mini-batches, plus test accuracy on ``test_eval_size`` test samples; the last one on the full
test split) are timed in this process; the share is (measuring time) / (steps x step time +
measuring time) with the preset's step and measurement counts. Target: under 15%.

    python bench/bench_layerwise.py [--preset lenet-mnist] [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from genlab.data import load_data
from genlab.losses import cross_entropy
from genlab.studies.layerwise.config import PRESETS
from genlab.studies.layerwise.run import InfoPlaneMeter, _optimizer, build
from genlab.train import (
    EndlessSampler,
    LayerwiseStepper,
    SupervisedStepper,
    TrainLoop,
    measurement_steps,
)


class _Discard:
    """Stands in for a Run: the meter's records are not kept."""

    def log(self, *args, **kwargs) -> None:
        pass


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lenet-mnist", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per mode")
    parser.add_argument("--measurements", type=int, default=3)
    args = parser.parse_args()
    cfg = PRESETS[args.preset]()
    ds = load_data(cfg.data)
    steps_per_epoch = ds.n_train // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    n_meas = len(measurement_steps(total, log_points=cfg.measure_points))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {args.preset}: "
          f"{cfg.model} on {cfg.data.name}, {total} steps, {n_meas} measurements")  # fmt: skip
    print(f"{'mode':>12} {'step ms':>9} {'measure s':>10} {'last s':>9} {'share':>7}")
    for mode in ("e2e", "layerwise"):
        model, heads = build(cfg, ds, 0, "ce")
        sampler = EndlessSampler(ds.x_train, ds.y_train, cfg.batch_size, seed=0)
        if mode == "e2e":
            opt, sched = _optimizer(cfg, model.parameters(), total)
            stepper = SupervisedStepper(model, opt, sampler, cross_entropy, sched)
        else:
            opt, sched = _optimizer(cfg, [*model.parameters(), *heads.parameters()], total)
            stepper = LayerwiseStepper(model, heads, opt, sampler, "ce", ds.num_classes, sched)
        model.train()
        for _ in range(5):  # warm-up
            stepper.step()
        t_step = median_time(stepper.step, args.steps)
        meter = InfoPlaneMeter(_Discard(), cfg, ds, {"mode": mode, "seed": 0})
        loop = TrainLoop(stepper, total)
        t_meas = median_time(partial(meter, loop), args.measurements)
        loop.step = total  # the last measurement tests on the whole test split
        t_last = median_time(partial(meter, loop), 1)
        measuring = (n_meas - 1) * t_meas + t_last
        share = measuring / (total * t_step + measuring)
        print(f"{mode:>12} {1e3 * t_step:9.2f} {t_meas:10.2f} {t_last:9.2f} {share:7.1%}")


if __name__ == "__main__":
    main()
