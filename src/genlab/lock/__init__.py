"""DLR-Lock (issue 13, in progress): deep low-rank residual nets that stand in for a
transformer's MLPs. Today: the DLR-Net itself, its split initialization, the concatenation
attack's weights and parameter matching (``genlab.lock.dlr``); the config, target matching and
injection (``genlab.lock.inject``); save / load without pickle (``genlab.lock.io``); calibration
capture and module-wise distillation (``genlab.lock.distill``). Not yet: lock_model (the
executor over modules, student inputs, the end-to-end KL pass),
the attacks, the study and the `genlab lock` command."""

from genlab.lock.dlr import (
    DLRBlock,
    DLRNet,
    concatenate,
    matched_depth,
    mlp_parameter_count,
    parameter_count,
)
from genlab.lock.inject import LockConfig, LockedMLP, find_targets, inject, locked_modules

__all__ = [
    "DLRBlock",
    "DLRNet",
    "LockConfig",
    "LockedMLP",
    "concatenate",
    "find_targets",
    "inject",
    "locked_modules",
    "matched_depth",
    "mlp_parameter_count",
    "parameter_count",
]
