"""DLR-Lock's costs, side by side in one run: `python bench/bench_lock.py [--tokens 256]`.

Against the plain baseline of the original model, on this machine's CPU:

1. One SmolLM2-shaped MLP (SwiGLU, d 576, h 1536) and its DLR-Nets at matched parameters
   (depth closest to h / r) for each rank: forward latency in eager mode and under
   ``torch.compile`` (what a publisher's users can turn on), the time of a training step
   (forward and backward), and the activations autograd saves for backward (exact bytes,
   saved-tensor hooks) -- each a ratio to the MLP's.
2. SmolLM2-135M-Instruct itself, original and locked (per-block RMSNorm, the shipped setting)
   at each rank: whole-model forward latency and the activations one full fine-tuning step
   saves, as ratios to the original's.

The issue's targets: at least 5x the saved activations and at most 2x the forward latency at
matched parameters. Timings are the best of ``--repeat`` runs; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from genlab.lock import LockConfig, inject
from genlab.lock.attacks import step_cost
from genlab.lock.dlr import DLRNet, matched_depth
from genlab.measures.memory import saved_activation_bytes


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up (allocator, compiled kernels)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class SwiGLU(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def randomized(net: DLRNet) -> DLRNet:
    """Nonzero B_l (a distilled net's shape of work; B_l = 0 would not change the timing of a
    dense matmul, but keeps the outputs honest)."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    return net


def module_part(tokens: int, ranks: list[int], repeat: int, compile_: bool) -> None:
    d, h = 576, 1536
    torch.manual_seed(0)
    x = torch.randn(tokens, d)
    mlp = SwiGLU(d, h)

    def costs(module: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            fwd = best_time(lambda: module(x), repeat)
        xg = x.clone().requires_grad_(True)
        step = best_time(lambda: module(xg).square().mean().backward(), repeat)
        saved, _ = saved_activation_bytes(lambda: module(xg), exclude=list(module.parameters()))
        out = {"forward": fwd, "step": step, "saved": saved}
        if compile_:
            compiled = torch.compile(module)
            with torch.no_grad():
                out["compiled"] = best_time(lambda: compiled(x), repeat)
        return out

    base = costs(mlp)
    print(f"\n1. One SwiGLU MLP (d {d}, h {h}) against DLR-Nets (norm rms), {tokens} tokens")
    print(f"   MLP: forward {base['forward'] * 1e3:.2f} ms, step {base['step'] * 1e3:.2f} ms, "
          f"saved {base['saved'] / tokens:.0f} B/token")  # fmt: skip
    head = f"{'rank':>5} {'depth':>5} {'params':>7} {'saved':>7} {'forward':>8} {'step':>7}"
    print(head + (f" {'compiled fwd':>13} {'compiled/MLP':>13}" if compile_ else ""))
    for r in ranks:
        depth = matched_depth(d, h, r, "swiglu")
        net = randomized(DLRNet(d, r, depth, "swiglu", "rms"))
        c = costs(net)
        params = sum(p.numel() for p in net.parameters()) / sum(p.numel() for p in mlp.parameters())
        line = (f"{r:>5} {depth:>5} {params:>7.3f} {c['saved'] / base['saved']:>6.2f}x "
                f"{c['forward'] / base['forward']:>7.2f}x {c['step'] / base['step']:>6.2f}x")  # fmt: skip
        if compile_:
            line += (f" {c['compiled'] / c['forward']:>12.2f}x "
                     f"{c['compiled'] / base['compiled']:>12.2f}x")  # fmt: skip
        print(line)


def model_part(tokens: int, ranks: list[int], repeat: int) -> None:
    from genlab.models.smollm2 import load_smollm2

    original, _ = load_smollm2()
    seq = 128
    ids = torch.randint(0, original.config.vocab_size, (max(1, tokens // seq), seq),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip

    def costs(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            fwd = best_time(lambda: model(input_ids=ids), repeat)
        saved = step_cost(model, ids)["saved_bytes"]
        return {"forward": fwd, "saved": saved}

    base = costs(original)
    print(f"\n2. SmolLM2-135M-Instruct, {ids.numel()} tokens: original forward "
          f"{base['forward']:.3f} s, a full fine-tuning step saves {base['saved'] / 2**20:.0f} MiB")  # fmt: skip
    print(f"{'rank':>5} {'depth':>5} {'params':>7} {'saved (step)':>13} {'forward':>8}")
    n0 = sum(p.numel() for p in original.parameters())
    for r in ranks:
        locked = copy.deepcopy(original)
        report = inject(locked, LockConfig(rank=r, norm="rms"))
        for m in locked.modules():
            if isinstance(m, DLRNet):
                randomized(m)
        c = costs(locked)
        depth = next(iter(report.values()))["depth"]
        params = sum(p.numel() for p in locked.parameters()) / n0
        print(f"{r:>5} {depth:>5} {params:>7.3f} {c['saved'] / base['saved']:>12.2f}x "
              f"{c['forward'] / base['forward']:>7.2f}x")  # fmt: skip
        del locked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    # rank 8 is depth 192 per MLP: one whole-model step of 256 tokens needs more than 24 GB
    parser.add_argument("--model-ranks", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile timings")
    parser.add_argument("--no-model", action="store_true", help="skip the whole-model part")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    module_part(args.tokens, args.ranks, args.repeat, not args.no_compile)
    if not args.no_model:
        model_part(args.tokens, args.model_ranks, args.repeat)


if __name__ == "__main__":
    main()
