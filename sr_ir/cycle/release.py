"""Release: the exact zeros left inside a minimized network become trainable again, seeded with
calibrated noise (design: minimization.md section 5).

For every prunable tensor ``W`` with zeros at positions ``Z``: ``W[Z] = alpha * rms(W[~Z]) * z``,
``z ~ N(0, 1)``. ``alpha`` is the largest value of a geometric ladder whose relative change of the loss
on a calibration batch stays within ``tolerance``; ``alpha = 0`` if none does (the zeros are still
released: they train from zero). The same ``z`` is scaled for every rung, so the ladder measures the
scale only, and ``z`` comes from a generator seeded by the caller (resumable, identical on every process).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pruning import prunable_parameters


@dataclass(frozen=True)
class ReleaseRecord:
    """What one release did (kept in the cycle's JSON record)."""

    alpha: float
    loss_before: float
    loss_after: float
    released: int  # number of zero weights turned into trainable noise
    ladder: tuple[tuple[float, float], ...]  # (alpha, calibration loss) for every rung tried

    def to_dict(self) -> dict:
        """The record as JSON-ready data (cycles.json)."""
        d = asdict(self)
        d["ladder"] = [list(r) for r in self.ladder]
        return d


def default_ladder(top: float = 1.0, rungs: int = 9) -> tuple[float, ...]:
    """top, top/2, top/4, ... (``rungs`` values)."""
    return tuple(top / 2**i for i in range(rungs))


@torch.no_grad()
def _loss(model: nn.Module, batch) -> float:
    x, y = batch
    return float(F.cross_entropy(model(x), y))


@torch.no_grad()
def release(
    model: nn.Module,
    calibration_batch: tuple[torch.Tensor, torch.Tensor],
    *,
    seed: int,
    ladder: Sequence[float] = default_ladder(),
    tolerance: float = 0.05,
    exclude: Sequence[str] = (),
) -> ReleaseRecord:
    """Fill the zeros of ``model``'s prunable tensors with calibrated noise, in place.

    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight[0, :2].zero_()
    >>> rec = release(net, (torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), seed=0)
    >>> rec.released, bool((net[0].weight != 0).all())
    (2, True)
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    targets = []  # (param, zero mask, rms-scaled noise)
    for _, p in prunable_parameters(model, exclude).items():
        zero = p == 0
        n_zero = int(zero.sum())
        if n_zero == 0 or n_zero == p.numel():
            continue
        rms = p[~zero].pow(2).mean().sqrt()
        z = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
        targets.append((p, zero, rms * z * zero))
    before = _loss(model, calibration_batch)
    tried: list[tuple[float, float]] = []
    chosen = 0.0
    for alpha in sorted(ladder, reverse=True):
        for p, _, noise in targets:
            p.add_(alpha * noise)
        loss = _loss(model, calibration_batch)
        for p, zero, _ in targets:
            p.masked_fill_(zero, 0.0)
        tried.append((float(alpha), loss))
        if abs(loss - before) <= tolerance * max(abs(before), 1e-12):
            chosen = float(alpha)
            break
    for p, _, noise in targets:
        p.add_(chosen * noise)
    after = _loss(model, calibration_batch)
    return ReleaseRecord(chosen, before, after, sum(int(z.sum()) for _, z, _ in targets), tuple(tried))
