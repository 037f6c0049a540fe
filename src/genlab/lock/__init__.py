"""DLR-Lock (Sakamoto, Ablin, Danieli & Cuturi, arXiv 2605.10777, 2026; abstract only, every
detail here is genlab's design): each MLP of a pretrained transformer is replaced by a deep
low-rank residual net (DLR-Net) of about its parameter count, distilled to reproduce it, so
that inference keeps its function while fine-tuning must store activations for every block.

- ``dlr``: the DLR-Net (GELU or SwiGLU blocks, optional per-block norm), parameter matching,
  split initialization, the concatenation attack's weights;
- ``inject``: ``LockConfig``, target matching (peft's names, suffixes or a regex), injection,
  BERT-style split MLPs fused first;
- ``distill``: calibration capture (padding masked), module-wise distillation, the end-to-end
  KL pass;
- ``lock``: ``lock_model`` (teacher or student inputs; modules as executor tasks, resumable);
- ``io``: ``save_locked`` / ``load_locked`` (safetensors and JSON, no pickle);
- ``attacks``: the adaptive-attack battery (full fine-tuning, LoRA through peft,
  checkpointing, offloading, re-distillation, concatenation) and ``step_cost``;
- ``publish``: the ``genlab lock MODEL --out DIR`` command.

    model, tokenizer = genlab.models.smollm2.load_smollm2()
    lock_model(model, LockConfig(rank=32, norm="rms"), calibration_batches)
    save_locked(model, "locked/", LockConfig(rank=32, norm="rms")); load_locked("locked/")
"""

from genlab.lock.dlr import (
    DLRBlock,
    DLRNet,
    concatenate,
    matched_depth,
    mlp_parameter_count,
    parameter_count,
)
from genlab.lock.inject import LockConfig, LockedMLP, find_targets, inject, locked_modules
from genlab.lock.io import load_locked, save_locked
from genlab.lock.lock import DistillConfig, lock_model

__all__ = [
    "DLRBlock",
    "DLRNet",
    "DistillConfig",
    "LockConfig",
    "LockedMLP",
    "concatenate",
    "find_targets",
    "inject",
    "load_locked",
    "lock_model",
    "locked_modules",
    "matched_depth",
    "mlp_parameter_count",
    "parameter_count",
    "save_locked",
]
