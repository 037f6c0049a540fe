"""Locked models on disk, without pickle: ``model.safetensors`` (every tensor, shared ones
once), ``lock.json`` (the lock config and, per replaced module, its DLR-Net's shape) and the
base model's ``config.json`` with its class name.

``load_locked(dir)`` rebuilds the base model from its config (a Hugging Face model comes back
as the same class), puts DLR-Nets of the recorded shapes where the MLPs were, and loads the
weights: a round trip gives identical outputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from genlab.lock.dlr import DLRNet
from genlab.lock.inject import LockConfig, LockedMLP, locked_modules, replace_module
from genlab.runs import atomic_write_json

WEIGHTS, LOCK, CONFIG = "model.safetensors", "lock.json", "config.json"


def save_locked(model: nn.Module, folder: str | Path, config: LockConfig) -> Path:
    """Write a locked Hugging Face model (one with a ``config`` attribute) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise TypeError("save_locked needs a Hugging Face model (with .config)")
    modules = {
        name: {"d": m.dlr.d, "rank": m.dlr.rank, "depth": m.dlr.depth, "block": m.dlr.block_kind,
               "norm": _norm_kind(m.dlr), "mlp_parameters": m.mlp_parameters}
        for name, m in locked_modules(model).items()
    }  # fmt: skip
    if not modules:
        raise ValueError("the model has no locked module: lock it first (genlab.lock.inject)")
    save_model(model, str(folder / WEIGHTS))
    atomic_write_json(folder / CONFIG, {**model.config.to_dict(),
                                        "genlab_class": type(model).__name__})  # fmt: skip
    atomic_write_json(folder / LOCK, {"config": dataclasses.asdict(config), "modules": modules})
    return folder


def load_locked(folder: str | Path) -> nn.Module:
    """The locked model saved in ``folder``, in eval mode."""
    import transformers

    folder = Path(folder)
    lock = json.loads((folder / LOCK).read_text())
    raw = json.loads((folder / CONFIG).read_text())
    cls = getattr(transformers, raw.pop("genlab_class"))
    hf_config = transformers.AutoConfig.for_model(**raw)
    model = cls(hf_config)
    for name, m in lock["modules"].items():
        net = DLRNet(m["d"], m["rank"], m["depth"], m["block"], m["norm"])
        replace_module(model, name, LockedMLP(net, m["mlp_parameters"]))
    load_model(model, str(folder / WEIGHTS))
    return model.eval()


def _norm_kind(net: DLRNet) -> str:
    norm = net.blocks[0].norm
    return {"RMSNorm": "rms", "LayerNorm": "layer"}.get(type(norm).__name__, "none")
