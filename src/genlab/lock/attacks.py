"""What an attacker who knows DLR-Lock can do to fine-tune a locked model anyway.

Every attack starts from a locked model and returns something to fine-tune (or a dense model
recovered from it); :func:`finetune` trains any of them the same way and measures what it
cost. The attacks:

1. ``full``: fine-tune every parameter (the baseline; a learning-rate grid picks each model's
   best rate);
2. ``lora-attn`` / ``lora-all``: LoRA adapters (the ``peft`` package) on the attention
   projections, or on every linear layer; the frozen DLR-Nets between the loss and the lowest
   adapter still keep their activations for backward;
3. ``checkpoint-layers``: recompute each decoder layer in backward
   (``torch.utils.checkpoint`` around every layer, as ``gradient_checkpointing_enable``);
   ``checkpoint-dlr``: inside each DLR-Net keep every k-th block's input only;
4. ``offload``: ``torch.autograd.graph.save_on_cpu``: saved activations go to host memory
   (on a CPU-only machine they are already there: nothing moves);
5. ``redistill``: fit a dense MLP of the original's shape to each DLR-Net from forward passes
   on the attacker's own text (:func:`redistill`): the lock is undone at the cost of that data
   and compute, and of the capability the dense MLPs fail to copy;
6. ``concatenate``: every A_l and B_l of a DLR-Net side by side as one wide MLP
   (:func:`concatenated_model`): free; equal to the DLR-Net to first order when the blocks'
   residual updates are small, which a ``split`` initialization guarantees at the start.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from genlab.errors import ConfigError
from genlab.lock.distill import capture_mlp_io, distill, relative_error
from genlab.lock.dlr import concatenate
from genlab.lock.inject import LockedMLP, locked_modules, replace_module
from genlab.measures.capability import logits_of
from genlab.measures.memory import peak_memory_bytes, return_freed_memory, saved_activation_bytes

ATTACKS = ("full", "lora-attn", "lora-all", "checkpoint-layers", "checkpoint-dlr", "offload",
           "redistill", "concatenate")  # fmt: skip
EXACT_ATTACKS = ("checkpoint-layers", "checkpoint-dlr", "offload")
"""Attacks that change where activations live, not the arithmetic: they follow full
fine-tuning's loss curve (up to round-off) and differ only in memory and time."""


class DenseMLP(nn.Module):
    """x -> W_out gelu(W_in x + b_in) + b_out (gelu) or W_out (silu(W_gate x) * W_in x)
    (swiglu): the dense MLP an attacker puts back in place of a DLR-Net."""

    def __init__(self, d: int, h: int, block: str = "gelu"):
        super().__init__()
        self.block = block
        bias = block == "gelu"
        self.w_in = nn.Linear(d, h, bias=bias)
        self.w_gate = nn.Linear(d, h, bias=False) if block == "swiglu" else None
        self.w_out = nn.Linear(h, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w_gate is None:
            return self.w_out(F.gelu(self.w_in(x)))
        return self.w_out(F.silu(self.w_gate(x)) * self.w_in(x))


@torch.no_grad()
def concatenated_mlp(locked: LockedMLP) -> DenseMLP:
    """The wide MLP of :func:`genlab.lock.dlr.concatenate` as a module."""
    net = locked.dlr
    weights = concatenate(net)
    mlp = DenseMLP(net.d, net.depth * net.rank, net.block_kind).to(weights[0].dtype)
    if net.block_kind == "swiglu":
        w_in, w_gate, w_out = weights
        mlp.w_gate.weight.copy_(w_gate)
    else:
        w_in, b_in, w_out, b_out = weights
        mlp.w_in.bias.copy_(b_in)
        mlp.w_out.bias.copy_(b_out)
    mlp.w_in.weight.copy_(w_in)
    mlp.w_out.weight.copy_(w_out)
    return mlp


def densified(model: nn.Module, make: Callable[[str, LockedMLP], nn.Module]) -> nn.Module:
    """A copy of ``model`` with every :class:`LockedMLP` (found by type) replaced by
    ``make(name, locked)``."""
    out = copy.deepcopy(model)
    for name, locked in locked_modules(out).items():
        replace_module(out, name, make(name, locked))
    return out


def concatenated_model(model: nn.Module) -> nn.Module:
    """The concatenation attack on every DLR-Net of ``model`` (a copy)."""
    return densified(model, lambda name, locked: concatenated_mlp(locked))


@dataclass
class RedistillReport:
    tokens: int
    """Tokens of attacker text whose DLR-Net inputs and outputs were recorded."""
    steps: int
    wall_s: float
    errors: dict[str, float] = field(default_factory=dict)
    """Per module: relative error of the dense MLP against the DLR-Net on those tokens."""


def redistill(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    steps: int,
    lr: float = 1e-3,
    batch: int = 1024,
    seed: int = 0,
) -> tuple[nn.Module, RedistillReport]:
    """Re-distillation: record each DLR-Net's inputs and outputs on the attacker's text (forward
    passes only) and fit a dense MLP of the replaced MLP's width to each, by the same relative
    error and optimizer as the lock itself. Returns the dense copy and what it cost."""
    start = time.perf_counter()
    names = list(locked_modules(model))
    io = capture_mlp_io(model, names, batches)
    dense: dict[str, nn.Module] = {}
    errors = {}
    for i, name in enumerate(names):
        locked = locked_modules(model)[name]
        net = locked.dlr
        h = net.depth * net.rank
        torch.manual_seed(seed * 100_003 + i)
        mlp = DenseMLP(net.d, h, net.block_kind).to(io[name][0].dtype)
        distill(mlp, *io[name], steps, lr=lr, batch=batch, seed=seed + i)
        errors[name] = relative_error(mlp, *io[name])
        dense[name] = mlp
    out = densified(model, lambda name, locked: dense[name])
    tokens = len(next(iter(io.values()))[0]) if io else 0
    return out, RedistillReport(tokens, steps, time.perf_counter() - start, errors)


# --- making a model trainable the attacker's way -----------------------------------------------


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers: ``h`` (genlab's GPT), ``model.layers`` (Llama),
    ``transformer.h`` (GPT-2), ``encoder.layer`` (BERT); a peft wrapper is looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("h", "model.layers", "transformer.h", "encoder.layer", "bert.encoder.layer"):
        try:
            layers = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ConfigError("model", f"{type(base).__name__}: no decoder layer stack found")


def checkpoint_layers(model: nn.Module) -> nn.Module:
    """Recompute every decoder layer during backward: only each layer's input is kept
    (``torch.utils.checkpoint``, non-reentrant, in place on ``model``)."""
    for layer in decoder_layers(model):
        forward = layer.forward
        layer.forward = lambda *a, _f=forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)
    return model


def checkpoint_dlr(model: nn.Module, every: int) -> nn.Module:
    """Inside every DLR-Net keep only every ``every``-th block's input for backward."""
    if every < 1:
        raise ConfigError("checkpoint_every", f"must be >= 1, got {every}")
    for locked in locked_modules(model).values():
        locked.dlr.checkpoint_every = every
    return model


ATTENTION_TARGETS = r".*(\.attn\.(c_attn|c_proj)|\.self_attn\.(q|k|v|o)_proj|\.attention\..*(query|key|value|dense))$"
"""The attention projections of genlab's GPT, Llama and BERT (a regex over module names)."""


def add_lora(model: nn.Module, targets: str, rank: int = 8, alpha: float = 16.0) -> nn.Module:
    """A peft LoRA model on ``targets`` (``"attention"``: :data:`ATTENTION_TARGETS`;
    ``"all-linear"``: every linear layer but the output head); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    target = ATTENTION_TARGETS if targets == "attention" else targets
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target, lora_dropout=0.0)
    return get_peft_model(model, config)


def prepare_attack(model: nn.Module, attack: str, lora_rank: int = 8,
                   checkpoint_every: int = 4) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager]]:  # fmt: skip
    """(a copy of ``model`` set up for ``attack``'s fine-tuning, a factory of the context its
    forward passes run in). ``redistill`` and ``concatenate`` produce a dense model first
    (:func:`redistill`, :func:`concatenated_model`) and are then fine-tuned with ``full``."""
    model = copy.deepcopy(model)
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    if attack in ("full", "redistill", "concatenate"):
        pass
    elif attack == "lora-attn":
        model = add_lora(model, "attention", lora_rank)
    elif attack == "lora-all":
        model = add_lora(model, "all-linear", lora_rank)
    elif attack == "checkpoint-layers":
        checkpoint_layers(model)
    elif attack == "checkpoint-dlr":
        checkpoint_dlr(model, checkpoint_every)
    elif attack == "offload":
        context = lambda: torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())  # noqa: E731
    else:
        raise ConfigError("attack", f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    return model, context


# --- fine-tuning and its cost ------------------------------------------------------------------


def lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``input_ids`` (B, T)."""
    logits = logits_of(model, {"input_ids": input_ids[:, :-1]})  # (B, T - 1, V)
    return F.cross_entropy(logits.flatten(0, 1), input_ids[:, 1:].flatten())


@torch.no_grad()
def eval_loss(model: nn.Module, blocks: torch.Tensor, batch: int = 8) -> float:
    """Mean next-token loss over the token blocks (B, T) (equal-length blocks: every block
    weighs the same)."""
    was = model.training
    model.eval()
    total = sum(float(lm_loss(model, blocks[i : i + batch])) * len(blocks[i : i + batch])
                for i in range(0, len(blocks), batch))  # fmt: skip
    model.train(was)
    return total / len(blocks)


def step_cost(model: nn.Module, input_ids: torch.Tensor,
              context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              device: str = "cpu") -> dict[str, int]:  # fmt: skip
    """What one AdamW step of ``model``'s trainable parameters on ``input_ids`` needs, measured
    on a copy: ``saved_bytes`` (activations autograd saves for backward, parameters left out;
    inside a checkpointed region only what the checkpoint keeps),
    ``peak_bytes``: the peak of a steady-state step (the second: AdamW's moments exist),
    resident parameters and moments plus the step's own high-water mark (activations,
    gradients); ``trainable``: the parameter count.

    A frozen layer saves only what its input gradient needs: a frozen DLR block keeps its
    r-wide pre-activations (L r = h per token, as the frozen MLP's h), not its d-wide input,
    so behind LoRA the lock costs no more than the MLP it replaced unless each block has a
    norm (whose backward reads z_l)."""
    try:
        return _measure_step(model, input_ids, context, device)
    finally:
        return_freed_memory()


def _measure_step(model: nn.Module, input_ids: torch.Tensor,
                  context: Callable[[], contextlib.AbstractContextManager],
                  device: str) -> dict[str, int]:  # fmt: skip
    model = copy.deepcopy(model).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # measures, never changes

    def forward():
        with context():
            return lm_loss(model, input_ids)

    # Outside ``context``: autograd's hooks nest, so save_on_cpu's would hide the tensors from
    # the count (on a CPU they stay the same bytes in the same memory).
    # [0]: the loss (and the graph it holds) is dropped here, before the step builds another
    saved = saved_activation_bytes(lambda: lm_loss(model, input_ids),
                                   exclude=list(model.parameters()))[0]  # fmt: skip
    return_freed_memory()

    def step():
        loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # AdamW allocates its moments at the first step: measure a steady-state one
    resident = sum(t.numel() * t.element_size() for t in model.parameters())
    resident += sum(v.numel() * v.element_size() for st in opt.state.values()
                    for v in st.values() if isinstance(v, torch.Tensor))  # fmt: skip
    peak, _ = peak_memory_bytes(step, device)
    return {"saved_bytes": saved, "peak_bytes": peak + resident,
            "trainable": sum(p.numel() for p in params)}  # fmt: skip


@dataclass
class FinetuneConfig:
    steps: int = 50
    lr: float = 1e-4
    batch: int = 8
    """Token blocks per step."""
    eval_every: int = 10
    weight_decay: float = 0.0
    seed: int = 0


def finetune(
    model: nn.Module,
    train_blocks: torch.Tensor,
    eval_blocks: torch.Tensor,
    config: FinetuneConfig,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    on_eval: Callable[[int, float], None] | None = None,
) -> dict[str, list]:
    """AdamW on ``model``'s trainable parameters over random batches of ``train_blocks``
    (B, T) for ``config.steps`` steps (constant rate); the held-out loss on ``eval_blocks``
    at step 0, every ``eval_every`` steps and at the end (``on_eval(step, loss)`` each time).
    Returns ``{"eval_steps", "eval_loss", "train_loss", "step_s"}`` (``step_s``: each step's
    wall time, evaluation excluded)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(config.seed)
    out: dict[str, list] = {"eval_steps": [], "eval_loss": [], "train_loss": [], "step_s": []}

    def evaluate(step: int) -> None:
        loss = eval_loss(model, eval_blocks)
        out["eval_steps"].append(step)
        out["eval_loss"].append(loss)
        if on_eval is not None:
            on_eval(step, loss)

    evaluate(0)
    model.train()
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, len(train_blocks), (config.batch,), generator=g)
        start = time.perf_counter()
        with context():
            loss = lm_loss(model, train_blocks[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out["step_s"].append(time.perf_counter() - start)
        out["train_loss"].append(float(loss.detach()))
        if not torch.isfinite(loss):
            break  # a diverged rate: its last eval is what it reached
        if step % config.eval_every == 0 or step == config.steps:
            evaluate(step)
    return out


def steps_to_reach(eval_steps: list[int], eval_loss: list[float], target: float) -> int | None:
    """The first evaluated step whose loss is <= ``target`` (None: never)."""
    for step, loss in zip(eval_steps, eval_loss):
        if loss <= target:
            return step
    return None
