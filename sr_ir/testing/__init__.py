"""Test support: planted models with known minimal size, and an independent reference minimization."""
from .planting import ConvNeXtPlan, Plan, plant, plant_convnext, trainable_param_count

__all__ = ["ConvNeXtPlan", "Plan", "plant", "plant_convnext", "trainable_param_count"]
