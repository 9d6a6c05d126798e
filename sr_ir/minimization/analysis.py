"""Channel analysis over a Program: coupling groups, constant channels, removable channels.

1. Every node's `couple` clause gives ties between (tensor, axis) pairs; `same` ties are merged with
   a union-find into *groups* (one axis length; channel c means the same unit everywhere in the
   group); `block` / `offset` ties (flatten, concat) relate groups index by index.
2. Each node's role for each group it touches comes from its ties: *local* (an input axis tied to
   the result: relu, residual add, batch norm, depthwise conv, flatten), *consumer* (an input axis tied
   only to parameters: the columns of a linear/conv), *producer* (the result tied only to parameters:
   the rows). An axis a node reads without tying it pins the group (its channels stay).
3. Constant channels are computed forward in float64: a producer's channel whose tied filter slice
   is all zero (rule kind dead_row) holds op(0)[c]; a local op (drop_channel) maps constant input
   channels to the output channels that come out finite and uniform when the op is evaluated with
   unknown channels set to NaN.
4. A channel of a group can go when every consumer absorbs it: its column is zero (unused_col), or it
   is constant zero (fold_zero / fold_const) or constant with a uniform contribution (fold_const), and
   nothing pins it. Block/offset relations carry the verdict across groups to a fixpoint.
Everything is vectorized over channels; the per-node loop is over the graph, never over channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.checker import attrs_with_defaults, bind_operands
from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType
from ..lang.loader import RuleSet
from ..ops.coupling import OUT, CouplingError, Tie, node_ties
from .evaluate import eval_node
from .rulebook import RuleBook

Key = tuple[str, str, int]  # ("v" | "p", name, axis)

# Relative tolerance (float64) for "this contribution is the same at every position".
UNIFORM_RTOL = 1e-12


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, k: Any) -> Any:
        self.parent.setdefault(k, k)
        root = k
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[k] != root:
            self.parent[k], k = root, self.parent[k]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class NodeInfo:
    node: Node
    slots: dict[str, Any]  # slot -> operand (ValueRef / ParamRef / None / scalar); `out` -> ValueRef
    ties: list[Tie]
    attrs: dict[str, Any]
    order: list[str] = field(default_factory=list)  # slot of each operand position

    def tied(self) -> dict[tuple[str, int], list[tuple[str, int]]]:
        out: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for t in self.ties:
            if t.kind == "same":
                out.setdefault(t.a, []).append(t.b)
                out.setdefault(t.b, []).append(t.a)
        return out

    def key(self, slot: str, axis: int) -> Key | None:
        o = self.slots.get(slot)
        if isinstance(o, ValueRef):
            return ("v", o.name, axis)
        if isinstance(o, ParamRef):
            return ("p", o.name, axis)
        return None


@dataclass
class Consumer:
    """A node reading channel axis `axis` of value `value` whose tie ends at parameters (a contraction)."""

    info: NodeInfo
    slot: str
    value: str
    axis: int
    params: list[tuple[str, int]]  # (param name, axis) tied to the input axis
    out_axis: int | None  # the result axis the node's producer ties give (bias axis), if any


@dataclass
class Group:
    root: Key
    size: int
    members: list[Key] = field(default_factory=list)
    pinned_by: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    inputs: list[Key] = field(default_factory=list)

    @property
    def params(self) -> list[Key]:
        return [m for m in self.members if m[0] == "p"]


@dataclass
class ConstFact:
    known: torch.Tensor  # bool [C]
    value: torch.Tensor  # float64 [C] (0 where unknown)


@dataclass
class Analysis:
    program: Program
    groups: dict[Key, Group]
    group_of: dict[Key, Key]
    relations: list[tuple[Key, Key, str, int]]  # (group a, group b, kind, arg) in channel terms a -> b
    consts: dict[tuple[str, int], ConstFact]
    removable: dict[Key, torch.Tensor]  # group root -> bool [C]
    folds: dict[tuple[str, str, int], torch.Tensor]  # (node, slot, axis) -> channels folded as constants
    infos: list[NodeInfo]


def _types(p: Program) -> dict[tuple[str, str], TensorType]:
    t: dict[tuple[str, str], TensorType] = {("v", n): ty for n, ty in p.value_types().items()}
    t.update({("p", n): ty for n, ty in p.params.items()})
    return t


def node_infos(p: Program, rules: RuleSet) -> list[NodeInfo]:
    types = _types(p)
    infos = []
    for node in p.nodes:
        decl = rules.ops[node.op]
        slots: dict[str, Any] = {OUT: ValueRef(node.name)}
        slot_types: dict[str, Any] = {OUT: node.type}
        variadic: dict[str, list[str]] = {}
        order: list[str] = []
        for tp, o in bind_operands(decl, node):
            if tp.variadic:
                names = [f"{tp.name}#{i}" for i in range(len(o))]
                variadic[tp.name] = names
                order.extend(names)
                for n, x in zip(names, o):
                    slots[n] = x
                    slot_types[n] = _type_of(x, types)
            else:
                order.append(tp.name)
                slots[tp.name] = o
                slot_types[tp.name] = _type_of(o, types)
        attrs = attrs_with_defaults(decl, node)
        try:
            ties = node_ties(decl.couple, slot_types, variadic, attrs)
        except CouplingError:
            ties = []
        infos.append(NodeInfo(node, slots, ties, attrs, order[: len(node.operands)]))
    return infos


def _type_of(o: Any, types: dict[tuple[str, str], TensorType]) -> Any:
    if isinstance(o, ValueRef):
        return types[("v", o.name)]
    if isinstance(o, ParamRef):
        return types[("p", o.name)]
    return o


def analyze(p: Program, rules: RuleSet, book: RuleBook) -> Analysis:
    types = _types(p)
    infos = node_infos(p, rules)
    uf = _UnionFind()
    relations_raw: list[tuple[Key, Key, str, int]] = []
    for info in infos:
        for t in info.ties:
            ka, kb = info.key(*t.a), info.key(*t.b)
            if ka is None or kb is None:
                continue
            uf.find(ka), uf.find(kb)
            if t.kind == "same":
                uf.union(ka, kb)
            else:
                relations_raw.append((ka, kb, t.kind, t.arg))

    # Every axis of every float value and parameter belongs to some group (a singleton if untied).
    all_keys: list[Key] = []
    for (kind, name), ty in types.items():
        for ax in range(ty.rank):
            all_keys.append((kind, name, ax))
    groups: dict[Key, Group] = {}
    group_of: dict[Key, Key] = {}
    for k in all_keys:
        r = uf.find(k)
        group_of[k] = r
        if r not in groups:
            ty = types[(r[0], r[1])]
            size = ty.shape[r[2]]
            groups[r] = Group(r, size if isinstance(size, int) else -1)
        groups[r].members.append(k)
    for g in groups.values():
        if g.size < 0:
            g.pinned_by.append("symbolic size")

    def pin(k: Key, why: str) -> None:
        groups[group_of[k]].pinned_by.append(why)

    for name, ty in p.inputs:
        for ax in range(ty.rank):
            groups[group_of[("v", name, ax)]].inputs.append(("v", name, ax))
    for name, ty in zip(p.outputs, p.output_types):
        for ax in range(ty.rank):
            pin(("v", name, ax), f"network output %{name}")
    for k in all_keys:
        if k[0] == "v" and not types[(k[0], k[1])].dtype.startswith(("f", "b")):
            pin(k, "integer value")

    for info in infos:
        node = info.node
        tied: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for t in info.ties:
            tied.setdefault(t.a, []).append(t.b)
            tied.setdefault(t.b, []).append(t.a)
        # slots connected to `out` through this node's own ties
        local_uf = _UnionFind()
        for t in info.ties:
            local_uf.union(t.a, t.b)
        out_roots = {local_uf.find((OUT, j)) for j in range(node.type.rank)}
        local_keys: list[Key] = []  # axes this node ties input to output (needs a drop_channel rule)
        for slot, o in info.slots.items():
            if slot == OUT or not isinstance(o, (ValueRef, ParamRef)):
                continue
            ty = types[("v" if isinstance(o, ValueRef) else "p", o.name)]
            for ax in range(ty.rank):
                k = info.key(slot, ax)
                if (slot, ax) not in tied:
                    pin(k, f"%{node.name} = {node.op}(...) reads axis {ax} of {o} without a coupling")
                    continue
                if isinstance(o, ParamRef):
                    continue
                if local_uf.find((slot, ax)) in out_roots:
                    local_keys.append(k)
                    local_keys.extend(("v", node.name, j) for j in range(node.type.rank)
                                      if local_uf.find((OUT, j)) == local_uf.find((slot, ax)))
                    continue
                params = [
                    (info.slots[s].name, a) for s, a in _closure(tied, (slot, ax))
                    if isinstance(info.slots.get(s), ParamRef)
                ]
                g = groups[group_of[k]]
                g.consumers.append(Consumer(info, slot, o.name, ax, params, _bias_axis(info, tied)))
        if local_keys and book.find(node, "drop_channel", types, info.attrs) is None:
            for k in local_keys:
                pin(k, f"no certified drop_channel rule for {node.op}")
        for j in range(node.type.rank):
            k = ("v", node.name, j)
            if (OUT, j) not in tied:
                pin(k, f"{node.op} result axis {j} has no coupling")
            elif local_uf.find((OUT, j)) not in {local_uf.find((s, a)) for s, a in tied if isinstance(info.slots.get(s), ValueRef)}:
                if book.find(node, "drop_row", types, info.attrs) is None:
                    pin(k, f"no certified drop_row rule for {node.op}")

    relations = [(group_of[a], group_of[b], kind, arg) for a, b, kind, arg in relations_raw]
    consts = constant_channels(p, rules, book, infos, types, group_of)
    removable, folds = _removable(p, rules, book, groups, relations, consts, types)
    return Analysis(p, groups, group_of, relations, consts, removable, folds, infos)


def _closure(tied: dict[tuple[str, int], list[tuple[str, int]]], start: tuple[str, int]) -> list[tuple[str, int]]:
    seen, todo = {start}, [start]
    while todo:
        x = todo.pop()
        for y in tied.get(x, []):
            if y not in seen:
                seen.add(y)
                todo.append(y)
    seen.discard(start)
    return sorted(seen)


def _bias_axis(info: NodeInfo, tied: dict[tuple[str, int], list[tuple[str, int]]]) -> int | None:
    for j in range(info.node.type.rank):
        if (OUT, j) in tied and any(isinstance(info.slots.get(s), ParamRef) for s, _ in _closure(tied, (OUT, j))):
            return j
    return None


# ---- constants ------------------------------------------------------------------------------
def _map_shape(t: TensorType) -> list[int]:
    return [d if isinstance(d, int) else 1 for d in t.shape]


def eval_restricted(p: Program, rules: RuleSet, info: NodeInfo, types: dict[tuple[str, str], TensorType],
                    keep: dict[str, tuple[int, torch.Tensor]], values: dict[str, torch.Tensor],
                    fill: float = 0.0) -> torch.Tensor:
    """Evaluate the node (float64, batch 1) with the slots in `keep` cut to some channels of one axis.

    `values` gives maps for value operands (already cut); other value operands hold `fill` everywhere
    (cut too when in `keep`). Cutting every slot tied to a channel axis to the channels of interest
    keeps the evaluation as small as those channels, whatever the layer width."""
    ops: list[Any] = []
    for slot, o in zip(info.order, info.node.operands):
        if isinstance(o, ValueRef):
            if slot in values:
                ops.append(values[slot])
                continue
            shape = _map_shape(types[("v", o.name)])
            if slot in keep:
                shape[keep[slot][0]] = int(keep[slot][1].numel())
            ops.append(torch.full(shape, fill, dtype=torch.float64))
        elif isinstance(o, ParamRef):
            w = p.weights[o.name]
            if slot in keep:
                w = w.index_select(keep[slot][0], keep[slot][1])
            ops.append(w.to(torch.float64) if w.is_floating_point() else w)
        else:
            ops.append(o)
    node = info.node
    if keep:
        node = _resized(rules, info, types, keep)
    return eval_node(rules.ops[info.node.op], node, ops)


def _resized(rules: RuleSet, info: NodeInfo, types: dict[tuple[str, str], TensorType],
             keep: dict[str, tuple[int, torch.Tensor]]) -> Node:
    """The node with attributes that spell out channel counts (depthwise groups, reshape targets)
    following the cut."""
    from ..ops.coupling import RESIZERS

    decl = rules.ops[info.node.op]
    fns = [c for c in decl.couple if c[0] == "fn" and c[1] in RESIZERS]
    if not fns:
        return info.node
    old: dict[str, Any] = {OUT: info.node.type}
    new: dict[str, Any] = {}
    for s, o in info.slots.items():
        if s != OUT and isinstance(o, (ValueRef, ParamRef)):
            old[s] = types[("v" if isinstance(o, ValueRef) else "p", o.name)]
    out_shape = list(info.node.type.shape)
    for s, t in old.items():
        shape = list(t.shape)
        if s in keep:
            shape[keep[s][0]] = int(keep[s][1].numel())
        new[s] = TensorType(t.dtype, tuple(shape))
    for s, (a, idx) in keep.items():
        for t in info.ties:
            for end, other in ((t.a, t.b), (t.b, t.a)):
                if end == (s, a) and other[0] == OUT and t.kind == "same":
                    out_shape[other[1]] = int(idx.numel())
    new[OUT] = TensorType(info.node.type.dtype, tuple(out_shape))
    variadic: dict[str, list[str]] = {}
    for s in info.order:
        if "#" in s:
            variadic.setdefault(s.split("#")[0], []).append(s)
    attrs = dict(info.node.attrs)
    for _, fname, args in fns:
        slots = [variadic.get(a, [a]) for a in args]
        attrs.update(RESIZERS[fname](dict(attrs), old, new, slots))
    return Node(info.node.name, info.node.op, info.node.operands, attrs, new[OUT])


def _axis_closure(info: NodeInfo, start: tuple[str, int]) -> dict[str, int] | None:
    """Slots tied to `start` through this node's `same` ties, with their axis (None if a slot would
    need two axes cut at once)."""
    tied = info.tied()
    out: dict[str, int] = {start[0]: start[1]}
    for s, a in _closure(tied, start):
        if out.get(s, a) != a:
            return None
        out[s] = a
    return out


def zero_slices(p: Program, name: str, axis: int) -> torch.Tensor:
    """bool per index of `axis`: the parameter's slice there is all zero (a dead row / unused column)."""
    w = p.weights[name]
    if w.dim() == 1:
        return w == 0
    if axis == 0:  # rows: count_nonzero is several times faster than any() over a float row
        return torch.count_nonzero(w.reshape(w.shape[0], -1), dim=1) == 0
    dims = [d for d in range(w.dim()) if d != axis]
    return ~w.ne(0).any(dims[0]) if w.dim() == 2 else torch.count_nonzero(w.movedim(axis, 0).reshape(w.shape[axis], -1), dim=1) == 0


def _slice_uniform(y: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel along `axis`: (finite and the same at every position, that value)."""
    z = y.movedim(axis, 0).reshape(y.shape[axis], -1)
    first = z[:, :1]
    finite = torch.isfinite(z).all(1)
    scale = z.abs().amax(1).nan_to_num(0.0)
    same = ((z - first).abs().amax(1).nan_to_num(float("inf")) <= UNIFORM_RTOL * scale) | (z == first).all(1)
    return finite & same, torch.where(finite, first[:, 0], torch.zeros_like(first[:, 0]))


def constant_channels(p: Program, rules: RuleSet, book: RuleBook, infos: list[NodeInfo],
                      types: dict[tuple[str, str], TensorType], group_of: dict[Key, Key]) -> dict[tuple[str, int], ConstFact]:
    consts: dict[tuple[str, int], ConstFact] = {}
    for info in infos:
        node = info.node
        if not node.type.dtype.startswith(("f", "b")):
            continue
        tied: dict[tuple[str, int], set[tuple[str, int]]] = {}
        for t in info.ties:
            tied.setdefault(t.a, set()).add(t.b)
            tied.setdefault(t.b, set()).add(t.a)
        result: dict[int, ConstFact] = {}
        # dead rows: a result axis tied only to parameters, whose multi-dim tied slices are all zero
        for j in range(node.type.rank):
            partners = tied.get((OUT, j), set())
            params = [(info.slots[s].name, a) for s, a in partners if isinstance(info.slots.get(s), ParamRef)]
            if not params:
                continue  # (a local op's output channel can be dead too: a depthwise filter of zeros)
            filters = [(n, a) for n, a in params if p.params[n].rank >= 2]
            if not filters:
                continue
            dead = torch.ones(node.type.shape[j], dtype=torch.bool)
            for n, a in filters:
                dead &= zero_slices(p, n, a)
            rule = book.find(node, "dead_row", types, info.attrs) if dead.any() else None
            if rule is None:
                continue
            cut = _axis_closure(info, (OUT, j))
            idx = dead.nonzero()[:, 0]
            stated = _stated_value(rule, info, p, idx)
            if stated is not None:  # the rule's conclusion names the value (`y[.., c] == bias[c]`)
                known = dead.clone()
                value = torch.zeros(dead.shape, dtype=torch.float64)
                value[idx] = stated
            elif cut is not None:  # evaluate op(0) on the dead channels only
                keep = {s: (a, idx) for s, a in cut.items() if s != OUT}
                y = eval_restricted(p, rules, info, types, keep, {})
                ok, val = _slice_uniform(y, j)
                known = dead.clone()
                known[idx] = ok
                value = torch.zeros(dead.shape, dtype=torch.float64)
                value[idx] = torch.where(ok, val, torch.zeros_like(val))
            else:
                y = eval_restricted(p, rules, info, types, {}, {})
                ok, val = _slice_uniform(y, j)
                known = dead & ok
                value = torch.where(known, val, torch.zeros_like(val))
            result[j] = ConstFact(known, value)
        # local ops: evaluate the constant channels with every other entry NaN
        local_axes = _local_out_axes(info, tied)
        facts_in = {
            (s, ax): consts[(o.name, ax)]
            for s, o in info.slots.items() if s != OUT and isinstance(o, ValueRef)
            for ax in range(types[("v", o.name)].rank) if (o.name, ax) in consts
        }
        if facts_in and local_axes and book.find(node, "drop_channel", types, info.attrs) is not None:
            whole: list[int] = []  # axes reached through block/offset ties: evaluated on whole maps
            for j in local_axes:
                cut = _axis_closure(info, (OUT, j))
                inputs = {s: a for s, a in (cut or {}).items() if isinstance(info.slots.get(s), ValueRef)}
                if cut is None or not any((s, a) in facts_in for s, a in inputs.items()):
                    whole.append(j)
                    continue
                size = node.type.shape[j]
                any_known = torch.zeros(size, dtype=torch.bool)
                for s, a in inputs.items():
                    f = facts_in.get((s, a))
                    if f is not None:
                        any_known |= f.known
                idx = any_known.nonzero()[:, 0]
                keep = {s: (a, idx) for s, a in cut.items() if s != OUT}
                maps = {}
                for s, a in inputs.items():
                    ty = types[("v", info.slots[s].name)]
                    shape = _map_shape(ty)
                    shape[a] = int(idx.numel())
                    f = facts_in.get((s, a))
                    vals = torch.full((int(idx.numel()),), float("nan"), dtype=torch.float64)
                    if f is not None:
                        vals = torch.where(f.known[idx], f.value[idx], vals)
                    view = [1] * len(shape)
                    view[a] = -1
                    maps[s] = vals.view(view).expand(shape).contiguous()
                y = eval_restricted(p, rules, info, types, keep, maps, fill=float("nan"))
                ok, val = _slice_uniform(y, j)
                known = torch.zeros(size, dtype=torch.bool)
                known[idx] = ok
                value = torch.zeros(size, dtype=torch.float64)
                value[idx] = torch.where(ok, val, torch.zeros_like(val))
                prev = result.get(j)
                if prev is not None:
                    value = torch.where(known, value, prev.value)
                    known = known | prev.known
                result[j] = ConstFact(known, value)
            if whole:
                _whole_map_facts(p, rules, info, types, facts_in, whole, result)
        for j, f in result.items():
            if f.known.any():
                consts[(node.name, j)] = f
    return consts


def _whole_map_facts(p: Program, rules: RuleSet, info: NodeInfo, types: dict[tuple[str, str], TensorType],
                     facts_in: dict[tuple[str, int], ConstFact], axes: list[int], result: dict[int, ConstFact]) -> None:
    """Constant channels of result axes that a flatten or concat reaches: one evaluation of the node
    on whole maps (known channels filled in, everything else NaN)."""
    maps = {}
    for s, o in info.slots.items():
        if s == OUT or not isinstance(o, ValueRef):
            continue
        m = torch.full(_map_shape(types[("v", o.name)]), float("nan"), dtype=torch.float64)
        for (fs, a), f in facts_in.items():
            if fs != s or not f.known.any():
                continue
            view = [1] * m.dim()
            view[a] = -1
            filled = torch.where(f.known.view(view), f.value.view(view), m)
            m = torch.where(torch.isnan(m), filled, m)
        maps[s] = m
    y = eval_restricted(p, rules, info, types, {}, maps, fill=float("nan"))
    for j in axes:
        ok, val = _slice_uniform(y, j)
        if not ok.any():
            continue
        prev = result.get(j)
        known = ok if prev is None else ok | prev.known
        value = torch.where(ok, val, torch.zeros_like(val) if prev is None else prev.value)
        result[j] = ConstFact(known, value)


def _stated_value(rule: Any, info: NodeInfo, p: Program, idx: torch.Tensor) -> torch.Tensor | None:
    """The constant a dead_row rule concludes, read directly when it is a number or a parameter entry
    at the channel (`bias[c]`); None for anything else (the node is then evaluated)."""
    from ..lang import ast as A

    v = rule.conclusion.value
    if isinstance(v, A.Num) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool):
        return torch.full((int(idx.numel()),), float(v.value), dtype=torch.float64)
    channel = rule.info.channel if rule.info else None
    if isinstance(v, A.Index) and len(v.indices) == 1 and v.indices[0] == A.Name(channel or ""):
        operand = next((o for o in rule.root.operands if o.name == v.base), None)
        ref = info.slots.get(operand.param) if operand is not None else None
        if isinstance(ref, ParamRef) and p.weights[ref.name].dim() == 1:
            return p.weights[ref.name].to(torch.float64)[idx]
    return None


def _local_out_axes(info: NodeInfo, tied: dict[tuple[str, int], set[tuple[str, int]]]) -> list[int]:
    return [
        j for j in range(info.node.type.rank)
        if any(isinstance(info.slots.get(s), ValueRef) for s, _ in tied.get((OUT, j), ()))
    ]


# ---- removability ---------------------------------------------------------------------------
def _removable(p: Program, rules: RuleSet, book: RuleBook, groups: dict[Key, Group],
               relations: list[tuple[Key, Key, str, int]], consts: dict[tuple[str, int], ConstFact],
               types: dict[tuple[str, str], TensorType]) -> tuple[dict[Key, torch.Tensor], dict]:
    ok: dict[Key, torch.Tensor] = {}
    folds: dict[tuple[str, str, int], torch.Tensor] = {}
    related = {a for a, *_ in relations} | {b for _, b, *_ in relations}
    for root, g in groups.items():
        if g.pinned_by or g.size <= 0:
            continue
        if not g.params and not g.inputs and root not in related:
            continue
        m = torch.ones(g.size, dtype=torch.bool)
        for c in g.consumers:
            m &= _absorbs(p, rules, book, c, consts, types, folds)
            if not m.any():
                break
        ok[root] = m
    # block / offset relations: a channel goes only if its images go too, to a fixpoint
    changed = True
    while changed and relations:
        changed = False
        for a, b, kind, arg in relations:
            ma, mb = ok.get(a), ok.get(b)
            if ma is None or mb is None:
                if ma is not None and ma.any():
                    ok[a] = torch.zeros_like(ma)
                    changed = True
                if mb is not None and mb.any():
                    ok[b] = torch.zeros_like(mb)
                    changed = True
                continue
            if kind == "block":
                mb_blocks = mb.view(-1, arg)
                na = ma & mb_blocks.all(1)
                nb = mb & na.repeat_interleave(arg)
            else:  # offset
                seg = mb[arg : arg + ma.numel()]
                na = ma & seg
                nb = mb.clone()
                nb[arg : arg + ma.numel()] &= na
            if not torch.equal(na, ma) or not torch.equal(nb, mb):
                ok[a], ok[b] = na, nb
                changed = True
    return ok, folds


def _absorbs(p: Program, rules: RuleSet, book: RuleBook, c: Consumer, consts: dict[tuple[str, int], ConstFact],
             types: dict[tuple[str, str], TensorType], folds: dict) -> torch.Tensor:
    """Channels of the consumer's input axis it can do without: unused, or constant and foldable."""
    node = c.info.node
    size = types[("v", c.value)].shape[c.axis]
    m = torch.zeros(size, dtype=torch.bool)
    if c.params and book.find(node, "unused_col", types, c.info.attrs, slot=c.slot) is not None:
        unused = torch.ones(size, dtype=torch.bool)
        for n, a in c.params:
            unused &= zero_slices(p, n, a)
        m |= unused
    f = consts.get((c.value, c.axis))
    if f is None or not f.known.any():
        return m
    zero = f.known & (f.value == 0)
    if zero.any() and (book.find(node, "fold_zero", types, c.info.attrs, slot=c.slot)
                       or book.find(node, "fold_const", types, c.info.attrs, slot=c.slot)):
        m |= zero
        folds[(node.name, c.slot, c.axis)] = zero
    nonzero = f.known & (f.value != 0) & ~m
    if nonzero.any() and book.find(node, "fold_const", types, c.info.attrs, slot=c.slot) is not None:
        uniform = _uniform_contribution(p, rules, c, f, nonzero, types)
        m |= uniform
        prev = folds.get((node.name, c.slot, c.axis))
        folds[(node.name, c.slot, c.axis)] = uniform | (prev if prev is not None else torch.zeros_like(uniform))
    return m


def fold_contribution(p: Program, rules: RuleSet, info: NodeInfo, slot: str, axis: int, fact: ConstFact,
                      channels: torch.Tensor, types: dict[tuple[str, str], TensorType], scale: torch.Tensor | None = None) -> torch.Tensor:
    """op(x holding the constants on `channels`, 0 elsewhere) - op(0): what those channels add to the
    result. Evaluated with the input and its tied parameters cut to those channels."""
    idx = channels.nonzero()[:, 0]
    vals = fact.value[idx]
    if scale is not None:
        vals = vals * scale[idx]
    cut = _axis_closure(info, (slot, axis)) or {slot: axis}
    keep = {s: (a, idx) for s, a in cut.items() if s != OUT}
    ty = types[("v", info.slots[slot].name)]
    shape = _map_shape(ty)
    shape[axis] = int(idx.numel())
    view = [1] * len(shape)
    view[axis] = -1
    xmap = vals.view(view).expand(shape).contiguous()
    return (eval_restricted(p, rules, info, types, keep, {slot: xmap})
            - eval_restricted(p, rules, info, types, keep, {slot: torch.zeros_like(xmap)}))


def _uniform_contribution(p: Program, rules: RuleSet, c: Consumer, f: ConstFact, candidates: torch.Tensor,
                          types: dict[tuple[str, str], TensorType]) -> torch.Tensor:
    """Which candidate channels add the same amount at every position of the result (foldable into a
    per-channel bias). One evaluation with random positive weights per channel tests them together
    (a non-uniform channel makes the weighted sum non-uniform with probability 1); if that fails, the
    candidates are tested one by one in small batches."""
    if c.out_axis is None:
        return torch.zeros_like(candidates)
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(candidates.numel(), generator=gen, dtype=torch.float64) + 0.5  # indexed by channel
    y = fold_contribution(p, rules, c.info, c.slot, c.axis, f, candidates, types, r)
    if _slice_uniform(y, c.out_axis)[0].all():
        return candidates
    out = torch.zeros_like(candidates)
    idx = candidates.nonzero()[:, 0]
    if idx.numel() > 256:
        return out
    for j in idx.tolist():  # rare path (a padded conv reads constants): one evaluation per channel
        one = torch.zeros_like(candidates)
        one[j] = True
        y = fold_contribution(p, rules, c.info, c.slot, c.axis, f, one, types)
        out[j] = bool(_slice_uniform(y, c.out_axis)[0].all())
    return out
