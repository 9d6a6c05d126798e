"""Torch modules and functionals that sr-ir emits: exact compensated norms and explicit-heads attention."""
from .compensated_norm import CompensatedLayerNorm, CompensatedRMSNorm
from .functional import compensated_layer_norm, compensated_rms_norm, rms_norm

__all__ = [
    "CompensatedLayerNorm",
    "CompensatedRMSNorm",
    "compensated_layer_norm",
    "compensated_rms_norm",
    "rms_norm",
]
