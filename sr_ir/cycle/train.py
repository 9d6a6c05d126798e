"""Fine-tuning under a mask: Adam, cross-entropy, optional distillation, group lasso and elementwise L1,
a constant or a per-phase cosine learning rate.

Every phase seeds its own randomness from ``(seed, tag)`` (shuffling, dropout), never from history,
so a run resumed from a checkpoint retraces the uninterrupted run exactly. Under torch.distributed
the model is wrapped in DistributedDataParallel and each process reads its shard of every global
batch (DistributedSampler); with equal shards the averaged gradient is the single-process one.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..constants import DEFAULT_BATCH_SIZE, SCHEDULES
from ..errors import SrIrError
from . import ddp
from .channel_groups import ChannelGroup, group_penalty
from .pruning import group_norm_penalty, l1_penalty


@dataclass(frozen=True)
class TrainSpec:
    """How one fine-tuning phase trains. ``batch_size`` is the global batch (over all processes);
    ``None``: the batch size of the DataLoader given to ``squeeze_release``, else ``DEFAULT_BATCH_SIZE``."""

    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int | None = None
    weight_decay: float = 0.0
    distill: float = 0.0  # weight of the KL term towards the teacher's soft labels (0: plain labels)
    temperature: float = 4.0
    group_lasso: float = 0.0  # coefficient of the group-lasso term (rows/columns, or coupled channels)
    # coefficient of the elementwise L1 term ``sum |w|`` over the masked (prunable) tensors: pulls what the
    # data do not need towards 0, so that unstructured magnitude pruning empties whole rows and columns
    l1: float = 0.0
    # "constant": ``lr`` throughout; "cosine": every phase (dense training, each pruning step's fine-tune,
    # each release fine-tune) anneals from ``lr`` to 0 over its own batches (``lr_at``), so each phase ends
    # at a low rate instead of where a flat Adam leaves the weights bouncing.
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise SrIrError(f"unknown learning-rate schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise SrIrError(f"batch_size must be a positive integer or None, got {self.batch_size!r}")
        if not self.l1 >= 0.0:
            raise SrIrError(f"l1 must be >= 0, got {self.l1!r}")


def lr_at(spec: TrainSpec, step: int, total: int) -> float:
    """The learning rate of batch ``step`` (0-based) of a phase of ``total`` batches:
    ``lr`` (constant) or ``lr * (1 + cos(pi * step / total)) / 2`` (cosine: ``lr`` at the first batch,
    decreasing to ``lr * (1 + cos(pi * (total - 1) / total)) / 2`` at the last)."""
    if spec.schedule == "cosine":
        return spec.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    return spec.lr


def batch_size_of(spec: TrainSpec) -> int:
    """The global batch size ``spec`` trains with."""
    return spec.batch_size if spec.batch_size is not None else DEFAULT_BATCH_SIZE


def phase_seed(seed: int, tag: str) -> int:
    """A 63-bit seed for one phase, a pure function of the run seed and the phase name."""
    h = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def loader_for(dataset: Dataset, batch_size: int, seed: int, epoch: int, *, shuffle: bool, like: DataLoader | None = None):
    """A loader over this process's shard; the same global order for any number of processes."""
    world, rank = ddp.world_size(), ddp.rank()
    if batch_size % world:
        raise SrIrError(f"global batch size {batch_size} is not divisible by the {world} processes")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    kw = {}
    if like is not None:
        kw = {"collate_fn": like.collate_fn, "num_workers": like.num_workers, "pin_memory": like.pin_memory}
    return DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, **kw)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def fine_tune(
    model: nn.Module,
    dataset: Dataset,
    spec: TrainSpec,
    *,
    seed: int,
    tag: str,
    masks: Mapping[str, torch.Tensor] | None = None,
    teacher: nn.Module | None = None,
    lasso_names: Iterable[str] = (),
    protect_rows: Iterable[str] = (),
    lasso_groups: Sequence[ChannelGroup] | None = None,
    like: DataLoader | None = None,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Train ``model`` in place for ``spec.epochs`` (fractions allowed); masked weights stay exactly 0.

    Group lasso acts on the rows and columns of ``lasso_names``, or on whole coupled channels when
    ``lasso_groups`` is given; the L1 term (``spec.l1``) on every weight of the tensors in ``masks``.
    Returns the mean training loss of the last epoch (regularizers included). ``progress(n)`` is called
    after every batch.

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> net = torch.nn.Linear(4, 2)
    >>> mask = {"weight": torch.tensor([[True, False, True, True]] * 2)}
    >>> with torch.no_grad():
    ...     _ = net.weight.mul_(mask["weight"])
    >>> loss = fine_tune(net, data, TrainSpec(epochs=1, batch_size=16), seed=0, tag="demo", masks=mask)
    >>> bool((net.weight[:, 1] == 0).all())  # the masked column stayed zero
    True
    """
    if spec.epochs <= 0:
        return float("nan")
    torch.manual_seed(phase_seed(seed, tag))
    device = _device_of(model)
    params = dict(model.named_parameters())
    mask_list = [(params[n], m.to(device=device, dtype=params[n].dtype)) for n, m in (masks or {}).items()]
    lasso_names = list(lasso_names)
    protect_rows = list(protect_rows)
    l1_names = list(masks or {}) if spec.l1 > 0 else []
    with torch.no_grad():
        for p, m in mask_list:
            p.mul_(m)
    net = ddp.wrap(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=spec.weight_decay)
    if teacher is not None:
        teacher.eval()
    model.train()
    sampler_seed = phase_seed(seed, tag + "/order") & 0x7FFFFFFF
    total_batches = batches_per_phase(dataset, spec)
    step = 0
    full_epochs = int(spec.epochs)
    frac = spec.epochs - full_epochs
    last_loss = float("nan")
    for epoch in range(full_epochs + (1 if frac > 0 else 0)):
        loader = loader_for(dataset, batch_size_of(spec), sampler_seed, epoch, shuffle=True, like=like)
        n_batches = len(loader) if epoch < full_epochs else max(1, int(round(frac * len(loader))))
        total, count = 0.0, 0
        for b, (x, y) in enumerate(loader):
            if b >= n_batches:
                break
            x, y = x.to(device), y.to(device)
            out = net(x)
            loss = F.cross_entropy(out, y)
            if teacher is not None and spec.distill > 0:
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / spec.temperature, dim=-1)
                kd = F.kl_div(F.log_softmax(out / spec.temperature, dim=-1), soft, reduction="batchmean")
                loss = (1 - spec.distill) * loss + spec.distill * spec.temperature**2 * kd
            if spec.group_lasso > 0 and lasso_groups is not None:
                loss = loss + spec.group_lasso * group_penalty(model, lasso_groups)
            elif spec.group_lasso > 0 and lasso_names:
                loss = loss + spec.group_lasso * group_norm_penalty(model, lasso_names, protect_rows)
            if l1_names:
                loss = loss + spec.l1 * l1_penalty(model, l1_names)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.schedule != "constant":
                for g in opt.param_groups:
                    g["lr"] = lr_at(spec, step, total_batches)
            opt.step()
            step += 1
            if mask_list:
                with torch.no_grad():
                    for p, m in mask_list:
                        p.mul_(m)
            total += float(loss.detach())
            count += 1
            if progress is not None:
                progress(1)
        last_loss = total / max(count, 1)
    model.eval()
    return last_loss


def batches_per_phase(dataset: Dataset, spec: TrainSpec) -> int:
    """How many progress ticks ``fine_tune`` will make on this process (the total of its progress bar):
    ``len(loader)`` of this process's shard per full epoch, the rounded fraction of it for a partial one."""
    if spec.epochs <= 0:
        return 0
    world = ddp.world_size()
    shard = -(-len(dataset) // world)  # type: ignore[arg-type]  # DistributedSampler pads to equal shards
    per_epoch = -(-shard // (batch_size_of(spec) // world))
    full = int(spec.epochs)
    frac = spec.epochs - full
    return full * per_epoch + (max(1, int(round(frac * per_epoch))) if frac > 0 else 0)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 1000, like: DataLoader | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the whole dataset, computed identically on every process.

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    >>> acc, loss = evaluate(torch.nn.Linear(4, 2), data)
    >>> 0.0 <= acc <= 1.0 and loss > 0
    True
    """
    device = _device_of(model)
    model.eval()
    kw = {"collate_fn": like.collate_fn} if like is not None else {}
    correct, loss, n = 0, 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, **kw):
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(-1) == y).sum())
        n += len(y)
    return correct / max(n, 1), loss / max(n, 1)
