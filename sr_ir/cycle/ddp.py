"""Distributed fine-tuning (torchrun / DistributedDataParallel) with a no-op single-process path.

Launch any cycle under ``torchrun --nproc_per_node N`` (or across machines with ``--nnodes``): the
environment variables torchrun sets are read by ``init_from_env``; gloo on CPU, NCCL on CUDA. Only
pruning's fine-tuning and the release fine-tuning run data-parallel; masks, minimization and release
are computed identically on every process from identical weights, and rank 0 alone writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns whether one was joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return active()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def wrap(model: nn.Module) -> nn.Module:
    """The module to call in a training step: DDP around ``model`` when distributed, else itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # Parameters updated in place (masks) keep their identity, so no bucket rebuild is needed.
    return DistributedDataParallel(model, device_ids=device_ids)


@torch.no_grad()
def sync_module(model: nn.Module) -> None:
    """Make every process hold rank 0's parameters and buffers (after a non-collective step)."""
    if not active():
        return
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def barrier() -> None:
    if active():
        dist.barrier()
