"""Apply an analysis: fold constant channels into their consumers' biases, drop removed channels from
every tensor of their group, gather kept network inputs. Vectorized: one index_select per tensor axis.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType
from ..lang.loader import RuleSet
from ..ops.coupling import OUT
from .analysis import Analysis, Key, _types, fold_contribution
from .resize import update_attrs


@dataclass
class Removal:
    """What one rewrite step removed, by group and by tensor (for the report)."""

    group: str  # a readable name of the group (its first parameter, or value)
    size: int
    removed: list[int]
    tensors: list[str] = field(default_factory=list)
    folded_into: list[str] = field(default_factory=list)


def graph_copy(program: Program) -> Program:
    """A copy of the graph sharing the weight tensors: every rewrite here assigns new tensors and never
    writes into old ones, so cloning 28M parameters per pass would only cost time and memory."""
    weights = program.weights
    program.weights = {}
    try:
        p = program.copy()
    finally:
        program.weights = weights
    p.weights = dict(weights)
    return p


def plan(a: Analysis, keep_one: bool = True) -> dict[Key, torch.Tensor]:
    """Per group, the channels to remove. The last channel of a group is kept (an empty axis would
    leave the graph with zero-size tensors; the constant it carries stays exact)."""
    out = {}
    for root, m in a.removable.items():
        if not m.any():
            continue
        m = m.clone()
        if keep_one and m.all():
            m[-1] = False
            if not m.any():
                continue
        out[root] = m
    return out


def _group_name(a: Analysis, root: Key) -> str:
    g = a.groups[root]
    params = sorted(m for m in g.members if m[0] == "p")
    m = params[0] if params else root
    return f"{m[1]}.{m[2]}" if m[0] == "p" else f"%{m[1]}.{m[2]}"


def apply(a: Analysis, rules: RuleSet, removals: dict[Key, torch.Tensor]) -> tuple[Program, list[Removal]]:
    p = graph_copy(a.program)
    types = _types(a.program)
    report: list[Removal] = []
    # 1. fold constants into consumers (on the original weights, before any slicing)
    bias_updates: dict[str, torch.Tensor] = {}
    new_bias: dict[str, tuple[int, str, torch.Tensor]] = {}  # node -> (result axis, name, bias)
    folded_by_group: dict[Key, list[str]] = {}
    for root, rm in removals.items():
        g = a.groups[root]
        for c in g.consumers:
            fold = a.folds.get((c.info.node.name, c.slot, c.axis))
            if fold is None:
                continue
            chans = fold & rm
            fact = a.consts.get((c.value, c.axis))
            if not chans.any() or fact is None or not (fact.value[chans] != 0).any():
                continue
            y = fold_contribution(a.program, rules, c.info, c.slot, c.axis, fact, chans, types)
            # uniform by construction of the analysis: read one position per result channel
            contrib = y.movedim(c.out_axis, 0).reshape(y.shape[c.out_axis], -1)[:, 0]
            bias = _bias_param(c, a.program.params)
            node = c.info.node
            if bias is not None:
                bias_updates[bias] = bias_updates.get(bias, 0) + contrib
            else:
                key = node.name
                prev = new_bias.get(key)
                new_bias[key] = (c.out_axis, _new_bias_name(p, node), (prev[2] if prev else 0) + contrib)
            folded_by_group.setdefault(root, []).append(bias or node.name)
    for name, delta in bias_updates.items():
        w = p.weights[name]
        p.weights[name] = (w.to(torch.float64) + delta).to(w.dtype)
    created: list[tuple[str, str, int]] = []  # (bias param, node, result axis)
    for node_name, (out_axis, bname, contrib) in new_bias.items():
        node = next(n for n in p.nodes if n.name == node_name)
        decl = rules.ops[node.op]
        idx = _bias_slot_index(decl)
        dtype = node.type.torch_dtype
        p.weights[bname] = contrib.to(dtype)
        p.params[bname] = TensorType.of(p.weights[bname])
        while len(node.operands) <= idx:
            node.operands.append(None)
        node.operands[idx] = ParamRef(bname)
        created.append((bname, node_name, out_axis))
    # 2. slice every tensor of every group
    new_shapes: dict[tuple[str, str], list[Any]] = {}
    gathers: dict[str, dict[int, torch.Tensor]] = {}
    for root, rm in removals.items():
        g = a.groups[root]
        keep = (~rm).nonzero()[:, 0]
        rem = Removal(_group_name(a, root), g.size, rm.nonzero()[:, 0].tolist(), folded_into=folded_by_group.get(root, []))
        for kind, name, axis in g.members:
            if kind == "p":
                p.weights[name] = p.weights[name].index_select(axis, keep).contiguous()
                rem.tensors.append(f"@{name}[axis {axis}]")
            else:
                shape = new_shapes.setdefault(("v", name), list(types[("v", name)].shape))
                shape[axis] = int(keep.numel())
        for kind, name, axis in g.inputs:
            gathers.setdefault(name, {})[axis] = keep
            rem.tensors.append(f"input %{name}[axis {axis}]")
        report.append(rem)
    for bname, node_name, axis in created:  # new biases were not in any group: follow the result's
        root = a.group_of.get(("v", node_name, axis))
        if root in removals:
            p.weights[bname] = p.weights[bname].index_select(0, (~removals[root]).nonzero()[:, 0]).contiguous()
    for name in list(p.weights):
        if name in p.params:
            p.params[name] = TensorType(p.params[name].dtype, tuple(p.weights[name].shape))
    old_types = {n.name: n.type for n in p.nodes}
    for node in p.nodes:
        s = new_shapes.get(("v", node.name))
        if s is not None:
            node.type = TensorType(node.type.dtype, tuple(s))
    new_types = p.value_types()
    for name, _ in p.inputs:
        s = new_shapes.get(("v", name))
        if s is not None:
            new_types[name] = TensorType(new_types[name].dtype, tuple(s))
    for node in p.nodes:
        update_attrs(rules.ops[node.op], node, old_types, new_types, a.program.value_types())
    # 3. gather the kept channels of network inputs (the model's interface keeps its shape)
    for name, axes in gathers.items():
        _gather_input(p, name, axes, rules)
    return p, report


def _bias_param(c: Any, params: dict[str, TensorType]) -> str | None:
    """The rank-1 parameter tied (through the node's own ties) to the consumer's result channel axis."""
    from .analysis import _closure

    info = c.info
    tied: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for t in info.ties:
        tied.setdefault(t.a, []).append(t.b)
        tied.setdefault(t.b, []).append(t.a)
    for slot, _ in _closure(tied, (OUT, c.out_axis)):
        o = info.slots.get(slot)
        if isinstance(o, ParamRef) and params[o.name].rank == 1:
            return o.name
    return None


def _bias_slot_index(decl: Any) -> int:
    """Position of the op's optional rank-1 operand (where a new bias goes)."""
    for i, tp in enumerate(decl.tensor_params):
        if tp.optional and len(tp.pattern.dims) == 1:
            return i
    raise KeyError(f"{decl.name} has no optional bias operand")


def _new_bias_name(p: Program, node: Node) -> str:
    weight = next((o.name for o in node.operands if isinstance(o, ParamRef)), node.name)
    base = weight[: -len("weight")] + "bias" if weight.endswith("weight") else f"{weight}.bias"
    name, i = base, 1
    while name in p.params:
        name, i = f"{base}_{i}", i + 1
    return name


def _gather_input(p: Program, name: str, axes: dict[int, torch.Tensor], rules: RuleSet) -> None:
    cur = name
    ty = dict(p.inputs)[name]
    pre: list[Node] = []
    shape = list(ty.shape)
    for axis, keep in sorted(axes.items()):
        pname = f"{name}_kept_{axis}" if len(axes) > 1 else f"{name}_kept"
        while pname in p.params:
            pname += "_"
        p.weights[pname] = keep.to(torch.int64)
        p.params[pname] = TensorType.of(p.weights[pname])
        p.buffers.add(pname)
        shape[axis] = int(keep.numel())
        vname = f"{name}_kept" if axis == max(axes) else f"{name}_kept_{axis}"
        existing = {n.name for n in p.nodes} | {n for n, _ in p.inputs}
        while vname in existing:
            vname += "_"
        pre.append(Node(vname, "gather", [ValueRef(cur), ParamRef(pname)], {"dim": axis}, TensorType(ty.dtype, tuple(shape))))
        cur = vname
    for node in p.nodes:
        node.operands = [ValueRef(cur) if isinstance(o, ValueRef) and o.name == name else o for o in node.operands]
    p.nodes = pre + p.nodes
