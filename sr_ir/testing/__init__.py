"""Test support: planted models with known minimal size, and an independent reference minimization."""
from .planting import Plan, plant, trainable_param_count

__all__ = ["Plan", "plant", "trainable_param_count"]
