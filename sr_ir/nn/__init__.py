"""Torch modules and functionals that sr-ir emits: exact compensated norms, the inference-form batch norm."""
from .batch_norm import FrozenBatchNorm
from .compensated_norm import (CompensatedLayerNorm, CompensatedRMSNorm, FixedCompensatedLayerNorm,
                               FixedCompensatedRMSNorm)
from .functional import compensated_layer_norm, compensated_rms_norm, rms_norm

__all__ = [
    "CompensatedLayerNorm",
    "CompensatedRMSNorm",
    "FixedCompensatedLayerNorm",
    "FixedCompensatedRMSNorm",
    "FrozenBatchNorm",
    "compensated_layer_norm",
    "compensated_rms_norm",
    "rms_norm",
]
