"""The Squeeze-Release cycle: prune -> minimize (exact) -> release -> fine-tune, until no unit dies.

    from sr_ir.cycle import CycleConfig, squeeze_release
    cfg = CycleConfig.preset("unit", dense_epochs=0)      # the CLI's --preset unit, model already trained
    result = squeeze_release(model, train_loader, val_loader, test=test_loader, example_inputs=(x,),
                             config=cfg, checkpoint_dir="run/")   # cycles.json, cycles.png, final.pt2, ...
    print(result.table()); result.module, result.records, result.best()
"""
from __future__ import annotations

from .channel_groups import ChannelGroup, channel_groups
from .cycle import (
    PRESETS,
    CycleConfig,
    CycleResult,
    best_state,
    check_same_function,
    default_minimizer,
    resolve_batch_size,
    squeeze_release,
)
from .data import Splits, digits, fashion_mnist, load_dataset, load_npz, mnist_subset
from .pruning import PruneSpec, prunable_parameters, prune_step
from .release import ReleaseRecord, release
from .train import TrainSpec, evaluate, fine_tune

__all__ = [
    "PRESETS",
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
    "fashion_mnist",
    "fine_tune",
    "load_dataset",
    "load_npz",
    "mnist_subset",
    "prunable_parameters",
    "prune_step",
    "release",
    "resolve_batch_size",
    "squeeze_release",
]
