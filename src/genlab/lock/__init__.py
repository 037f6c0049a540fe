"""DLR-Lock (issue 13, in progress): deep low-rank residual nets that stand in for a
transformer's MLPs. Today: the DLR-Net itself, its split initialization, the concatenation
attack's weights and parameter matching (``genlab.lock.dlr``); the config, target matching and
injection (``genlab.lock.inject``). Not yet: distillation, save / load, attacks, the study."""

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
