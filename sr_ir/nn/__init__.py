"""Torch modules and functionals that sr-ir emits: exact compensated norms."""
from .compensated_norm import CompensatedLayerNorm, CompensatedRMSNorm
from .functional import compensated_layer_norm, compensated_rms_norm, rms_norm

__all__ = [
    "CompensatedLayerNorm",
    "CompensatedRMSNorm",
    "compensated_layer_norm",
    "compensated_rms_norm",
    "rms_norm",
]
