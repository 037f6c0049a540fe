"""Which modules a lock replaces and how (peft's split: ``LockConfig`` says what, ``dlr.py`` is
the layer, this file injects it).

Targets are matched as in peft: a string is a regular expression that must match a module's
full dotted name; a list matches a name exactly or as its last dotted components (``"mlp"``
matches ``model.layers.0.mlp``). Every matched module must be an MLP genlab can read:

- Llama-style: ``gate_proj``, ``up_proj``, ``down_proj`` (SwiGLU, no biases);
- GPT-style: ``c_fc`` / ``c_proj`` or ``fc1`` / ``fc2`` (GELU, biases);
- ``nn.Sequential(Linear, GELU, Linear)``;
- BERT-style encoders, whose MLP is split across two modules (``intermediate``: dense and
  activation; ``output``: dense, dropout, then LayerNorm of the residual sum):
  :func:`fuse_encoder_mlps` first moves both dense layers into one :class:`EncoderMLP` at
  ``intermediate`` and leaves an identity in ``output.dense`` (the same arithmetic in the same
  order), so ``"intermediate"`` is then an ordinary GELU MLP target. ``inject``, ``lock_model``
  and ``load_locked`` call it.

Injected modules are found again by type (``locked_modules``), never by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.lock.dlr import DLRNet, Norm, matched_depth, mlp_parameter_count, parameter_count


@dataclass
class LockConfig:
    target_modules: str | tuple[str, ...] = ("mlp",)
    """A regex over full module names, or names / name suffixes (peft's convention)."""
    rank: int = 32
    depth: int | None = None
    """None: the depth whose parameter count matches the MLP's within 5% (L r = h)."""
    norm: Norm = "none"
    init: Literal["random", "split"] = "random"
    """random: B_l = 0, the net starts at zero output (the default: nothing of the MLP's
    weights is in the lock); split: block l starts from the l-th group of r hidden units
    (a warm start that the concatenation attack undoes)."""


@dataclass(frozen=True)
class MLPWeights:
    block: Literal["gelu", "swiglu"]
    w_in: torch.Tensor
    """(h, d): GELU's first layer, SwiGLU's up projection."""
    b_in: torch.Tensor | None
    w_out: torch.Tensor
    """(d, h)"""
    b_out: torch.Tensor | None
    w_gate: torch.Tensor | None = None

    @property
    def d(self) -> int:
        return self.w_in.shape[1]

    @property
    def h(self) -> int:
        return self.w_in.shape[0]


def _weight_of(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W (out, in), b) of an nn.Linear or of GPT-2's Conv1D (weight stored (in, out))."""
    if isinstance(layer, nn.Linear):
        return layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    if type(layer).__name__ == "Conv1D":  # transformers' GPT-2 layer
        return layer.weight.detach().T, layer.bias.detach()
    raise TypeError(f"{type(layer).__name__} is not a linear layer")


def mlp_weights(module: nn.Module, name: str = "module") -> MLPWeights:
    """The weights of a supported MLP; ConfigError naming the module otherwise."""
    if all(hasattr(module, k) for k in ("gate_proj", "up_proj", "down_proj")):
        (wg, _), (wu, _), (wd, bd) = (_weight_of(getattr(module, k))
                                      for k in ("gate_proj", "up_proj", "down_proj"))  # fmt: skip
        return MLPWeights("swiglu", wu, None, wd, bd, wg)
    for first, second in (("c_fc", "c_proj"), ("fc1", "fc2")):
        if hasattr(module, first) and hasattr(module, second):
            (w1, b1), (w2, b2) = (
                _weight_of(getattr(module, first)),
                _weight_of(getattr(module, second)),
            )
            return MLPWeights("gelu", w1, b1, w2, b2)
    if (isinstance(module, nn.Sequential) and len(module) == 3
            and isinstance(module[0], nn.Linear) and isinstance(module[1], nn.GELU)
            and isinstance(module[2], nn.Linear)):  # fmt: skip
        (w1, b1), (w2, b2) = _weight_of(module[0]), _weight_of(module[2])
        return MLPWeights("gelu", w1, b1, w2, b2)
    raise ConfigError("target_modules", f"{name} ({type(module).__name__}) is not an MLP genlab "
                      "can lock (Llama gate/up/down, GPT c_fc/c_proj or fc1/fc2, or "
                      "Sequential(Linear, GELU, Linear))")  # fmt: skip


class EncoderMLP(nn.Module):
    """A BERT layer's MLP in one module: ``fc2(act(fc1(x)))``, the LayerNorm left where it
    was (after the residual sum, in the layer's ``output``)."""

    def __init__(self, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear):
        super().__init__()
        self.fc1, self.act, self.fc2 = fc1, act, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _is_exact_gelu(act: nn.Module) -> bool:
    # transformers' "gelu" is GELUActivation (erf); DLR blocks use the same exact GELU
    if isinstance(act, nn.GELU):
        return act.approximate == "none"
    return type(act).__name__ == "GELUActivation" and not getattr(act, "use_gelu_python", False)


def fuse_encoder_mlps(model: nn.Module) -> list[str]:
    """Fuse every BERT-style split MLP (a module with ``intermediate.dense`` and
    ``output.dense`` / ``output.LayerNorm``) into an :class:`EncoderMLP` at ``intermediate``,
    in place; the model computes exactly what it did. Returns the fused ``intermediate``
    names; already fused layers are left alone."""
    fused = []
    for name, layer in list(model.named_modules()):
        inter, out = getattr(layer, "intermediate", None), getattr(layer, "output", None)
        if not (isinstance(getattr(inter, "dense", None), nn.Linear)
                and isinstance(getattr(out, "dense", None), nn.Linear)
                and hasattr(out, "LayerNorm")):  # fmt: skip
            continue
        act = getattr(inter, "intermediate_act_fn", None)
        where = f"{name}.intermediate" if name else "intermediate"
        if act is None or not _is_exact_gelu(act):
            raise ConfigError("target_modules", f"{where}: activation {type(act).__name__} is "
                              "not GELU, which the DLR blocks use")  # fmt: skip
        layer.intermediate = EncoderMLP(inter.dense, act, out.dense)
        out.dense = nn.Identity()
        fused.append(where)
    return fused


def matches(name: str, targets: str | tuple[str, ...] | list[str]) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def find_targets(model: nn.Module, config: LockConfig) -> list[str]:
    """Names of the modules ``config`` targets, outermost only; ConfigError when none."""
    found: list[str] = []
    for name, _ in model.named_modules():
        if name and matches(name, config.target_modules):
            if not any(name.startswith(f + ".") for f in found):
                found.append(name)
    if not found:
        raise ConfigError("target_modules", f"{config.target_modules!r} matched no module")
    return found


class LockedMLP(nn.Module):
    """A DLR-Net where an MLP was; records the replaced MLP's shape and parameter count."""

    def __init__(self, dlr: DLRNet, mlp_parameters: int):
        super().__init__()
        self.dlr = dlr
        self.mlp_parameters = mlp_parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dlr(x)


def build_dlr(weights: MLPWeights, config: LockConfig) -> DLRNet:
    """The DLR-Net for one MLP: ``config.depth``, else (``split``) h / r blocks, one per group of
    hidden units, else the depth that matches the MLP's parameter count."""
    if config.depth is not None:
        depth = config.depth
    elif config.init == "split":
        depth = weights.h // config.rank
    else:
        depth = matched_depth(weights.d, weights.h, config.rank, weights.block)
    net = DLRNet(weights.d, config.rank, depth, weights.block, config.norm)
    net = net.to(weights.w_in.dtype)
    if config.init == "split":
        net.split_from_mlp(weights.w_in, weights.b_in, weights.w_out, weights.b_out,
                           weights.w_gate)  # fmt: skip
    return net


def inject(model: nn.Module, config: LockConfig, seed: int = 0) -> dict[str, dict]:
    """Replace every targeted MLP by a :class:`LockedMLP` (in place); returns, per replaced
    name, the block kind, d, h, rank, depth and both parameter counts."""
    report = {}
    fuse_encoder_mlps(model)
    for i, name in enumerate(find_targets(model, config)):
        mlp = model.get_submodule(name)
        w = mlp_weights(mlp, name)
        torch.manual_seed(seed * 100_003 + i)
        net = build_dlr(w, config)
        replace_module(model, name, LockedMLP(net, mlp_parameter_count(w.d, w.h, w.block)))
        report[name] = {"block": w.block, "d": w.d, "h": w.h, "rank": net.rank,
                        "depth": net.depth, "mlp_parameters": mlp_parameter_count(w.d, w.h, w.block),
                        "dlr_parameters": parameter_count(w.d, net.rank, net.depth, w.block)}  # fmt: skip
    return report


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``name`` of ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def locked_modules(model: nn.Module) -> dict[str, LockedMLP]:
    """The injected modules, found by type."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LockedMLP)}
