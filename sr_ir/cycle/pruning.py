"""Pruning masks over any nn.Module, chosen by parameter name and dimensionality.

A *mask set* maps a parameter name (as in ``named_parameters()``) to a boolean tensor of the same
shape; ``True`` keeps the weight. Prunable parameters are the weight tensors with two or more
dimensions (linear and convolution kernels); biases, norm scales and layer scales are pruned only by
the ``coupled`` criterion, as parts of a channel. This works on the generated modules the minimizer
emits as well as on hand-written ones, because it never asks what class a layer is.

Criteria
--------
``magnitude`` (the faithful baseline): unstructured; the smallest ``|w|`` among the weights still
alive are removed, ranked across all prunable tensors (``scope="global"``) or within each tensor
(``scope="layer"``).

``unit`` (favours whole-unit death, reported separately): the groups are the rows (output units) and
the input-channel slices (columns) of every prunable tensor; a group's score is the RMS of its
weights *including those already pruned*, so half-dead units rank low and finish dying. The weakest
alive groups are removed whole. Rows of the output layer are protected: logits are never removed.

``coupled`` (favours whole-channel death across layers, reported separately): the groups are the
coupled channels of the network read from its IR (channel_groups.py): every slice of every parameter
that touches one channel -- for a residual stream, its writers' rows, norm and layer-scale entries and
its readers' columns in every block. A channel's score is the RMS over all those slices; the weakest
alive channels of each group (``scope="layer"``) or of all groups (``scope="global"``) are removed whole,
biases and norm entries included, so the channel holds an exact 0 that minimization removes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..constants import CRITERIA, SCOPES
from ..errors import SrIrError
from .channel_groups import ChannelGroup, channel_scores

Masks = dict[str, torch.Tensor]


def prunable_parameters(model: nn.Module, exclude: Iterable[str] = (), vectors: bool = False) -> dict[str, nn.Parameter]:
    """The tensors pruning may touch: parameters with >= 2 dimensions (every trainable parameter with
    ``vectors``, for the coupled criterion), minus ``exclude``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> sorted(prunable_parameters(net)), sorted(prunable_parameters(net, vectors=True))
    (['0.weight', '2.weight'], ['0.bias', '0.weight', '2.bias', '2.weight'])
    """
    excluded = set(exclude)
    return {
        n: p
        for n, p in model.named_parameters()
        if (vectors or p.dim() >= 2) and p.requires_grad and n not in excluded
    }


def output_parameter(model: nn.Module, example_inputs: tuple, exclude: Iterable[str] = ()) -> str | None:
    """Name of the prunable tensor that produces the logits: the last one whose row count equals the
    output width. Its rows are protected by the unit criterion. None if no tensor matches."""
    with torch.no_grad():
        out = model(*example_inputs)
    width = out.shape[-1]
    names = [n for n, p in prunable_parameters(model, exclude).items() if p.shape[0] == width]
    return names[-1] if names else None


def full_masks(model: nn.Module, exclude: Iterable[str] = (), vectors: bool = False) -> Masks:
    """All-true masks over the prunable parameters."""
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, exclude, vectors).items()}


def nonzero_masks(model: nn.Module, exclude: Iterable[str] = (), vectors: bool = False) -> Masks:
    """Masks that keep exactly the non-zero weights (how a minimized module's zeros stay pruned)."""
    return {n: p.detach() != 0 for n, p in prunable_parameters(model, exclude, vectors).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place (exact zeros, which is what minimization looks for)."""
    params = dict(model.named_parameters())
    for n, m in masks.items():
        params[n].mul_(m.to(params[n].dtype))


def sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of prunable weights removed."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(total, 1)


@dataclass(frozen=True)
class PruneSpec:
    """One pruning step: remove ``amount`` of what is still alive (weights, or groups for ``unit``)."""

    amount: float = 0.2
    criterion: str = "magnitude"
    scope: str = "global"
    min_keep: int = 1  # never empty a tensor (or, for ``unit``, never remove a tensor's last group)

    def __post_init__(self) -> None:
        if not 0.0 < self.amount < 1.0:
            raise SrIrError(f"prune amount must be in (0, 1), got {self.amount}")
        if self.criterion not in CRITERIA:
            raise SrIrError(f"unknown pruning criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.scope not in SCOPES:
            raise SrIrError(f"unknown pruning scope {self.scope!r}; choose one of {', '.join(SCOPES)}")


@torch.no_grad()
def prune_step(
    model: nn.Module, masks: Mapping[str, torch.Tensor], spec: PruneSpec, protect_rows: Iterable[str] = (),
    groups: Sequence[ChannelGroup] | None = None,
) -> Masks:
    """New masks with ``spec.amount`` of the alive weights (or groups) removed. Does not touch weights.
    The coupled criterion needs ``groups`` (channel_groups(model, example_inputs)).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net).items()}
    >>> new = prune_step(net, masks, PruneSpec(criterion="magnitude", amount=0.5))
    >>> {n: int(m.sum()) for n, m in new.items()}  # half of the 18 weights, smallest magnitude first
    {'0.weight': ..., '2.weight': ...}
    >>> sum(int(m.sum()) for m in new.values())
    9
    """
    params = dict(model.named_parameters())
    if spec.criterion == "magnitude":
        return _magnitude(params, masks, spec)
    if spec.criterion == "coupled":
        if groups is None:
            raise SrIrError("the coupled criterion needs the model's channel groups (channel_groups)")
        return _coupled(params, masks, spec, groups)
    return _unit(params, masks, spec, set(protect_rows))


def _kth_threshold(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.kthvalue(scores, k).values if k > 0 else scores.new_tensor(-float("inf"))


def _magnitude(params, masks, spec: PruneSpec) -> Masks:
    new = {n: m.clone() for n, m in masks.items()}
    if spec.scope == "layer":
        for n, m in masks.items():
            alive = params[n].detach().abs()[m]
            k = min(int(spec.amount * alive.numel()), alive.numel() - spec.min_keep)
            if k <= 0:
                continue
            # Rank strictly by magnitude; ties at the threshold resolved by index so the count is exact.
            order = torch.argsort(alive, stable=True)[:k]
            flat_idx = torch.nonzero(m.flatten(), as_tuple=True)[0][order]
            new[n].view(-1)[flat_idx] = False
        return new
    names = list(masks)
    scores = torch.cat([params[n].detach().abs()[masks[n]].flatten() for n in names])
    owners = torch.cat([torch.full((int(masks[n].sum()),), i) for i, n in enumerate(names)])
    k = int(spec.amount * scores.numel())
    if k <= 0:
        return new
    order = torch.argsort(scores, stable=True)[:k]
    # Keep each tensor's strongest min_keep weights alive so no layer is cut out by a global ranking.
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[order] = True
    for i, n in enumerate(names):
        sel = owners == i
        n_alive = int(sel.sum())
        if int(chosen[sel].sum()) > n_alive - spec.min_keep:
            local = torch.nonzero(sel, as_tuple=True)[0]
            keep = local[torch.argsort(scores[local], descending=True, stable=True)[: spec.min_keep]]
            chosen[keep] = False
    start = 0
    for i, n in enumerate(names):
        cnt = int(masks[n].sum())
        drop = chosen[start : start + cnt]
        flat_idx = torch.nonzero(masks[n].flatten(), as_tuple=True)[0][drop]
        new[n].view(-1)[flat_idx] = False
        start += cnt
    return new


def _groups(name: str, w: torch.Tensor, m: torch.Tensor, protect_rows: set[str]):
    """(kind, score, alive) per group of one tensor: rows (dim 0) and input slices (dim 1)."""
    wm = (w * m).flatten(2) if w.dim() > 2 else (w * m).unsqueeze(-1)
    alive_el = m.flatten(2) if m.dim() > 2 else m.unsqueeze(-1)
    out = []
    if name not in protect_rows:
        rms = wm.pow(2).mean(dim=(1, 2)).sqrt()
        out.append(("row", rms, alive_el.any(dim=(1, 2))))
    if w.shape[1] > 1:  # a depthwise kernel has one input slice: that group is the whole tensor
        rms = wm.pow(2).mean(dim=(0, 2)).sqrt()
        out.append(("col", rms, alive_el.any(dim=(0, 2))))
    return out


def _unit(params, masks, spec: PruneSpec, protect_rows: set[str]) -> Masks:
    new = {n: m.clone() for n, m in masks.items()}
    entries = []  # (name, kind, scores of alive groups, indices of alive groups)
    for n, m in masks.items():
        for kind, score, alive in _groups(n, params[n].detach(), m, protect_rows):
            idx = torch.nonzero(alive, as_tuple=True)[0]
            entries.append((n, kind, score[idx], idx))
    if not entries:
        return new

    def remove(n: str, kind: str, idx: torch.Tensor) -> None:
        if kind == "row":
            new[n][idx] = False
        else:
            new[n][:, idx] = False

    if spec.scope == "layer":
        for n, kind, s, idx in entries:
            k = min(int(spec.amount * s.numel()), s.numel() - spec.min_keep)
            if k > 0:
                remove(n, kind, idx[torch.argsort(s, stable=True)[:k]])
        return new
    scores = torch.cat([e[2] for e in entries])
    owner = torch.cat([torch.full((e[2].numel(),), i) for i, e in enumerate(entries)])
    k = int(spec.amount * scores.numel())
    if k <= 0:
        return new
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[torch.argsort(scores, stable=True)[:k]] = True
    for i, (n, kind, s, idx) in enumerate(entries):
        sel = torch.nonzero(owner == i, as_tuple=True)[0]
        picked = chosen[sel]
        if int(picked.sum()) > s.numel() - spec.min_keep:
            # keep the strongest min_keep groups of this tensor alive
            strongest = torch.argsort(s, descending=True, stable=True)[: spec.min_keep]
            picked[strongest] = False
        if picked.any():
            remove(n, kind, idx[picked])
    return new


def _coupled(params, masks, spec: PruneSpec, groups: Sequence[ChannelGroup]) -> Masks:
    new = {n: m.clone() for n, m in masks.items()}
    entries = []  # (group, scores of alive channels, indices of alive channels)
    for g in groups:
        if any(n not in masks for n, _ in g.slices):
            continue  # a slice pruning may not touch (prune_only): the channel cannot die whole
        alive = torch.zeros(g.size, dtype=torch.bool)
        for n, a in g.slices:
            alive |= masks[n].movedim(a, 0).reshape(g.size, -1).any(dim=1).cpu()
        idx = torch.nonzero(alive, as_tuple=True)[0]
        if idx.numel():
            masked = {n: params[n].detach() * masks[n] for n, _ in g.slices}
            entries.append((g, channel_scores(masked, g)[idx], idx))

    def remove(g: ChannelGroup, idx: torch.Tensor) -> None:
        for n, a in g.slices:
            new[n].movedim(a, 0)[idx.to(new[n].device)] = False

    if spec.scope == "layer":
        for g, s, idx in entries:
            k = min(int(spec.amount * s.numel()), s.numel() - spec.min_keep)
            if k > 0:
                remove(g, idx[torch.argsort(s, stable=True)[:k]])
        return new
    if not entries:
        return new
    scores = torch.cat([e[1] for e in entries])
    k = int(spec.amount * scores.numel())
    if k <= 0:
        return new
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[torch.argsort(scores, stable=True)[:k]] = True
    start = 0
    for g, s, idx in entries:
        picked = chosen[start : start + s.numel()].clone()
        start += s.numel()
        if int(picked.sum()) > s.numel() - spec.min_keep:
            picked[torch.argsort(s, descending=True, stable=True)[: spec.min_keep]] = False
        if picked.any():
            remove(g, idx[picked])
    return new


def group_norm_penalty(model: nn.Module, names: Iterable[str], protect_rows: Iterable[str] = ()) -> torch.Tensor:
    """Group-lasso term: the sum of L2 norms of every row and input slice of the named tensors, each
    divided by sqrt(group size) so wide and narrow layers weigh alike. Drives whole units to zero during fine-tuning (unit-death variant)."""
    params = dict(model.named_parameters())
    protected = set(protect_rows)
    total = None
    for n in names:
        w = params[n]
        w3 = w.flatten(2) if w.dim() > 2 else w.unsqueeze(-1)
        sq = w3.pow(2)
        terms = []
        if n not in protected:
            terms.append((sq.sum(dim=(1, 2)) + 1e-12).sqrt().sum() / (w3.shape[1] * w3.shape[2]) ** 0.5)
        if w.shape[1] > 1:
            terms.append((sq.sum(dim=(0, 2)) + 1e-12).sqrt().sum() / (w3.shape[0] * w3.shape[2]) ** 0.5)
        for t in terms:
            total = t if total is None else total + t
    return total if total is not None else torch.zeros(())


def l1_penalty(model: nn.Module, names: Iterable[str]) -> torch.Tensor:
    """Elementwise L1 term: the sum of ``|w|`` over every weight of the named tensors (unnormalized, so
    every weight feels the same pull ``sign(w)`` whatever its tensor's size, as the global magnitude
    ranking treats every weight alike). Fine-tuning with it drives the weights that the data do not need
    -- those of inputs that carry little signal and of units that are weak or never active -- towards 0,
    where magnitude pruning removes them; when a whole row or column goes, minimization removes the unit.

    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 0.5]]))
    >>> float(l1_penalty(net, ["weight"]))
    3.5
    """
    params = dict(model.named_parameters())
    total = None
    for n in names:
        t = params[n].abs().sum()
        total = t if total is None else total + t
    return total if total is not None else torch.zeros(())
