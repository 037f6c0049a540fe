"""Locked models on disk, without pickle: ``model.safetensors`` (every tensor, shared ones
once), ``lock.json`` (the lock config and, per replaced module, its DLR-Net's shape) and the
base model's ``config.json`` with its class name (a Hugging Face class, or genlab's GPT).

``load_locked(dir)`` rebuilds the base model from its config (a Hugging Face model comes back
as the same class), puts DLR-Nets of the recorded shapes where the MLPs were, and loads the
weights: a round trip gives identical outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from genlab.lock.dlr import DLRNet
from genlab.lock.inject import (
    LockConfig,
    LockedMLP,
    fuse_encoder_mlps,
    locked_modules,
    replace_module,
)
from genlab.models.gpt import GPT, GPTConfig
from genlab.runs import atomic_write_json

WEIGHTS, LOCK, CONFIG = "model.safetensors", "lock.json", "config.json"
GENLAB_GPT = "genlab.models.gpt.GPT"


def _base_config(model: nn.Module) -> dict:
    """The base model's config and class: a Hugging Face model's ``config``, or genlab's GPT's
    ``GPTConfig``."""
    if hasattr(model, "config") and hasattr(model.config, "to_dict"):
        return {**model.config.to_dict(), "genlab_class": type(model).__name__}
    if isinstance(model, GPT):
        return {**dataclasses.asdict(model.cfg), "genlab_class": GENLAB_GPT}
    raise TypeError("save_locked needs a Hugging Face model (with .config) or genlab's GPT")


def save_locked(model: nn.Module, folder: str | Path, config: LockConfig) -> Path:
    """Write a locked model (Hugging Face, or genlab's GPT) to ``folder``."""
    folder = Path(folder)
    base = _base_config(model)
    folder.mkdir(parents=True, exist_ok=True)
    modules = {
        name: {"d": m.dlr.d, "rank": m.dlr.rank, "depth": m.dlr.depth, "block": m.dlr.block_kind,
               "norm": _norm_kind(m.dlr), "mlp_parameters": m.mlp_parameters}
        for name, m in locked_modules(model).items()
    }  # fmt: skip
    if not modules:
        raise ValueError("the model has no locked module: lock it first (genlab.lock.inject)")
    tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
    save_model(model, str(tmp))
    tmp.replace(folder / WEIGHTS)  # atomic: a crash never leaves half a weights file
    atomic_write_json(folder / CONFIG, base)
    atomic_write_json(folder / LOCK, {"config": dataclasses.asdict(config), "modules": modules})
    return folder


def load_locked(folder: str | Path) -> nn.Module:
    """The locked model saved in ``folder``, in eval mode."""
    import transformers

    folder = Path(folder)
    lock = json.loads((folder / LOCK).read_text())
    raw = json.loads((folder / CONFIG).read_text())
    name = raw.pop("genlab_class")
    if name == GENLAB_GPT:
        model = GPT(GPTConfig(**raw))
    else:
        cls = getattr(transformers, name, None)
        # the class name comes from a file: only a transformers model class is constructed
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise ValueError(f"{folder / CONFIG}: genlab_class {name!r} is not a transformers "
                             "model class")  # fmt: skip
        model = cls(transformers.AutoConfig.for_model(**raw))
    fuse_encoder_mlps(model)  # a BERT-style model was saved with its MLPs fused
    for name, m in lock["modules"].items():
        net = DLRNet(m["d"], m["rank"], m["depth"], m["block"], m["norm"])
        replace_module(model, name, LockedMLP(net, m["mlp_parameters"]))
    load_model(model, str(folder / WEIGHTS))
    return model.eval()


def _norm_kind(net: DLRNet) -> str:
    norm = net.blocks[0].norm
    return {"RMSNorm": "rms", "LayerNorm": "layer"}.get(type(norm).__name__, "none")
