"""The Squeeze-Release cycle: prune -> minimize (exact) -> release -> fine-tune, until no unit dies.

    from sr_ir.cycle import CycleConfig, squeeze_release
    result = squeeze_release(model, train_loader, val_loader, example_inputs=(x,), config=CycleConfig())
    result.module, result.records, result.best()
"""
from __future__ import annotations

from .channel_groups import ChannelGroup, channel_groups
from .cycle import CycleConfig, CycleResult, best_state, check_same_function, default_minimizer, squeeze_release
from .data import Splits, digits, load_dataset, mnist_subset
from .pruning import PruneSpec, prunable_parameters, prune_step
from .release import ReleaseRecord, release
from .train import TrainSpec, evaluate, fine_tune

__all__ = [
    "ChannelGroup",
    "CycleConfig",
    "CycleResult",
    "PruneSpec",
    "ReleaseRecord",
    "Splits",
    "TrainSpec",
    "best_state",
    "channel_groups",
    "check_same_function",
    "default_minimizer",
    "digits",
    "evaluate",
    "fine_tune",
    "load_dataset",
    "mnist_subset",
    "prunable_parameters",
    "prune_step",
    "release",
    "squeeze_release",
]
