"""DLR-Lock (issue 13, in progress): deep low-rank residual nets that stand in for a
transformer's MLPs. Today: the DLR-Net itself, its split initialization, the concatenation
attack's weights and parameter matching (``genlab.lock.dlr``); the config, target matching and
injection (``genlab.lock.inject``); save / load without pickle (``genlab.lock.io``); calibration
capture and module-wise distillation (``genlab.lock.distill``); ``lock_model`` with teacher
inputs (modules distilled as executor tasks) or student inputs (``genlab.lock.lock``). Not
yet: the end-to-end KL pass, modules as resumable run stages, the attacks, the study and the
`genlab lock` command."""

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
