"""DLR-Lock (issue 13, in progress): deep low-rank residual nets that stand in for a
transformer's MLPs. Today: the DLR-Net itself, its split initialization, the concatenation
attack's weights and parameter matching (``genlab.lock.dlr``)."""

from genlab.lock.dlr import (
    DLRBlock,
    DLRNet,
    concatenate,
    matched_depth,
    mlp_parameter_count,
    parameter_count,
)

__all__ = [
    "DLRBlock",
    "DLRNet",
    "concatenate",
    "matched_depth",
    "mlp_parameter_count",
    "parameter_count",
]
