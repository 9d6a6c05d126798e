"""Coupled channel groups of a network, read from its IR: what must die together for a channel to go.

Minimization removes a channel only when every tensor slice that touches it lets it go: a hidden unit
of an MLP is a row of the first weight, an entry of its bias and a column of the second weight; a
residual-stream channel of ConvNeXt is a row of the stem (or downsampling) conv, the entries of every
norm, depthwise filter, layer scale and pointwise-2 row that write it, and the pointwise-1 and
downsampling columns that read it. The channel rewrites of rules/minimize/ already say which axes are
the same channel (each names the positions it removes together); lowering the model and joining those
ties over the whole graph gives these groups without knowing any layer class. The ``coupled`` pruning criterion (pruning.py) removes weak channels
of a group whole, which is what lets residual channels die and not only MLP units.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ChannelGroup:
    """Slices ``(parameter name, axis)`` that share one channel index space of ``size`` channels."""

    size: int
    slices: tuple[tuple[str, int], ...]

    def names(self) -> list[str]:
        """The parameters the group's channels cut, sorted."""
        return sorted({n for n, _ in self.slices})


def channel_groups(model: nn.Module, example_inputs: tuple) -> list[ChannelGroup]:
    """The coupled channel groups over ``model``'s trainable parameters.

    The ties come from the minimization rules themselves: every certified channel rewrite that matches
    a node says which axes lose a channel together (the engine's groups, computed with the side
    conditions on weights ignored, since they are what pruning is about to change). Groups tied to a
    program output (the logits) are left out: those channels are the function's result, never
    removable. Groups reached from a network input are kept: minimization gathers unread inputs.
    Axes related only by offsets or blocks (flatten, concat) form separate groups.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> for g in channel_groups(net, (torch.randn(2, 4),)):
    ...     print(g.size, g.slices)
    3 (('0.bias', 0), ('0.weight', 0), ('2.weight', 1))
    4 (('0.weight', 1),)
    """
    from ..frontend import lower
    from ..lang.loader import load_rules
    from ..lang.functions import function_table
    from ..minimization.api import with_input_gathers
    from ..rewrite.matching import Graph
    from ..minimization.planning import build_sites, groups_of
    from ..rewrite.rulebook import RuleBook

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    cpu = copy.deepcopy(model).cpu().eval()
    rules = load_rules()
    program = with_input_gathers(lower(cpu, tuple(x.cpu() if isinstance(x, torch.Tensor) else x for x in example_inputs)), rules)
    g = Graph.of(program, rules.ops)
    book = RuleBook(rules)
    groups, _ = groups_of(g, build_sites(g, book, function_table(rules), structural=True))
    outputs = set(program.outputs)
    out = []
    for gr in groups:
        if any(k[0] == "v" and k[1] in outputs for k, _ in gr.members):
            continue
        slices = tuple(sorted({(k[1], ax) for k, ax in gr.members if k[0] == "p" and k[1] in trainable}))
        if not slices:
            continue
        sizes = {int(program.params[n].shape[a]) for n, a in slices}
        if len(sizes) != 1:  # not one channel space (cannot happen with same-channel ties; never guess)
            continue
        out.append(ChannelGroup(sizes.pop(), slices))
    return sorted(out, key=lambda c: c.slices)


def channel_scores(params: dict[str, torch.Tensor], group: ChannelGroup) -> torch.Tensor:
    """RMS over every weight of each channel's slices (pruned weights count as zeros), shape [size]."""
    total = torch.zeros(group.size, dtype=torch.float64)
    count = 0
    for name, axis in group.slices:
        w = params[name].detach().double()
        moved = w.movedim(axis, 0).reshape(group.size, -1)
        total += moved.pow(2).sum(dim=1).cpu()
        count += moved.shape[1]
    return (total / max(count, 1)).sqrt()


def group_penalty(model: nn.Module, groups: list[ChannelGroup]) -> torch.Tensor:
    """Group lasso over coupled channels: for every group, the sum over its channels of the L2 norm of
    all their slices together, divided by sqrt(elements per channel) so wide and narrow groups weigh
    alike. Drives whole channels (stream channels included) to zero during fine-tuning."""
    params = dict(model.named_parameters())
    total = None
    for g in groups:
        sq = None
        count = 0
        for name, axis in g.slices:
            w = params[name]
            s = w.movedim(axis, 0).reshape(g.size, -1).pow(2).sum(dim=1)
            sq = s if sq is None else sq + s
            count += w.numel() // g.size
        term = (sq + 1e-12).sqrt().sum() / count**0.5
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())
