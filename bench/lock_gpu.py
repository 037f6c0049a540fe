"""DLR-Lock on a GPU, one short run (about a minute): `python bench/lock_gpu.py [--device cuda]`.

SmolLM2-135M-Instruct, original against locked (per-block RMSNorm) at each rank, at matched
parameters: forward and backward time of a full fine-tuning step (CUDA events, best of
``--repeat``), their ratio, and the peak memory of a steady-state AdamW step
(``torch.cuda.max_memory_allocated``, parameters, gradients and moments included). Weights of
the DLR-Nets are random: times and memory do not depend on their values. Prints one table of
absolute numbers and ratios to the original. ``--device cpu`` runs the same code on the CPU
(wall clock, the profiler's peak) as a dry run.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from genlab.lock import LockConfig, inject
from genlab.lock.attacks import lm_loss
from genlab.lock.dlr import DLRNet
from genlab.measures.memory import peak_memory_bytes


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(stop) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(model, ids, device, repeat: int) -> dict[str, float]:
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    fwd, bwd, holder = [], [], {}
    for _ in range(repeat + 1):  # the first step warms up kernels and creates AdamW's moments
        fwd.append(timed(lambda: holder.update(loss=lm_loss(model, ids)), device))
        bwd.append(timed(lambda: holder.pop("loss").backward(), device))
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step():
        lm_loss(model, ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    resident = sum(t.numel() * t.element_size() for t in model.parameters())
    resident += sum(v.numel() * v.element_size() for s in opt.state.values()
                    for v in s.values() if torch.is_tensor(v))  # fmt: skip
    peak, _ = peak_memory_bytes(step, device)
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"forward": min(fwd[1:]), "backward": min(bwd[1:]), "peak": resident + peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    from genlab.models.smollm2 import load_smollm2

    original, _ = load_smollm2()
    ids = torch.randint(0, original.config.vocab_size, (args.batch, args.seq),
                        generator=torch.Generator().manual_seed(0)).to(device)  # fmt: skip
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, batch {args.batch} x {args.seq} tokens")
    print(f"{'model':>10} {'forward s':>10} {'backward s':>11} {'bwd/fwd':>8} {'peak GiB':>9} "
          f"{'fwd ratio':>10} {'bwd/fwd ratio':>14} {'peak ratio':>11}")  # fmt: skip
    base = measure(original, ids, device, args.repeat)
    rows = [("original", base)]
    for r in args.ranks:
        locked = copy.deepcopy(original)
        inject(locked, LockConfig(rank=r, norm="rms"))
        with torch.no_grad():
            for m in locked.modules():
                if isinstance(m, DLRNet):
                    for p in m.parameters():
                        p.normal_(0, 0.02)
        rows.append((f"r{r}", measure(locked, ids, device, args.repeat)))
        del locked
    for label, c in rows:
        ratio = c["backward"] / c["forward"]
        base_ratio = base["backward"] / base["forward"]
        print(f"{label:>10} {c['forward']:>10.4f} {c['backward']:>11.4f} {ratio:>8.2f} "
              f"{c['peak'] / 2**30:>9.2f} {c['forward'] / base['forward']:>9.2f}x "
              f"{ratio / base_ratio:>13.2f}x {c['peak'] / base['peak']:>10.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
