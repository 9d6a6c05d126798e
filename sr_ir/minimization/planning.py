"""Which channels can go: groups of positions that must leave together, and a fixpoint over the rules.

Every channel rewrite that matches a node is a *site*: for each channel c it names positions
(`drop(y, -1, c)`, `drop(weight, 0, c)`, `drop(y, 1, width(us, 1) + c)`, a block of a flattened
axis) that it removes together, where its side conditions hold. Positions that a site names as the
channel itself (`c` on an axis of the channel's length) are the *same* channel: the union of those
ties over all sites is a set of *groups*, each one index space (the rows of a linear, the elementwise
chain after it, the next linear's columns ...). Other positions (offsets, blocks) relate groups
channel by channel.

A channel p of group G can go only if every node that holds a tensor of G removes p through one of
its sites, and that site's other positions go too. That is a greatest fixpoint: start from "every
channel may go" (except the network's outputs and inputs), and repeatedly remove what some node
cannot explain, until nothing changes. Each step is vectorized over channels; the loop is over
nodes and sites only.

Parameters are tied per reader (a parameter two nodes read may end up cut differently for each;
identical results are stored once again).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..ir.program import Node, ParamRef, ValueRef
from ..lang.tensor_eval import RuleEvalError
from ..rewrite.compiled import ChannelUse, CompiledRule
from .facts import channel_range, conditions, evaluator, positions
from ..rewrite.matching import Graph, Match, matches
from ..rewrite.rulebook import RuleBook

Key = tuple  # ("v", value) | ("p", param, node, operand position)


def slot_keys(node: Node) -> list[tuple[Key, Any]]:
    """(key, IR operand) for every tensor a node reads or writes; its result last."""
    out: list[tuple[Key, Any]] = []
    for i, o in enumerate(node.operands):
        if isinstance(o, ValueRef):
            out.append((("v", o.name), o))
        elif isinstance(o, ParamRef):
            out.append((("p", o.name, node.name, i), o))
    out.append((("v", node.name), ValueRef(node.name)))
    return out


@dataclass
class Tie:
    name: str  # the rule's name for the tensor
    key: Key
    axis: int  # non-negative
    pos: torch.Tensor  # long [n] or [n, block]
    group: int = -1


@dataclass
class Site:
    node: Node
    cr: CompiledRule
    match: Match
    n: int
    ties: list[Tie]
    ok: torch.Tensor  # bool[n]: the side conditions hold
    alive: torch.Tensor | None = None  # bool[n]: chosen for removal


@dataclass
class Group:
    id: int
    size: int
    members: list[tuple[Key, int]] = field(default_factory=list)
    pinned_by: list[str] = field(default_factory=list)


@dataclass
class Plan:
    graph: Graph
    sites: list[Site]
    groups: list[Group]
    group_of: dict[tuple[Key, int], int]
    removed: list[torch.Tensor]  # per group: bool[size]
    blocked: dict[int, list[str]] = field(default_factory=dict)  # group -> why channels stay

    def any(self) -> bool:
        return any(bool(r.any()) for r in self.removed)


class _UF:
    def __init__(self) -> None:
        self.p: dict[Any, Any] = {}

    def find(self, k: Any) -> Any:
        self.p.setdefault(k, k)
        while self.p[k] != k:
            self.p[k] = self.p[self.p[k]]
            k = self.p[k]
        return k

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[rb] = ra


def _key_of(m: Match, name: str, node: Node) -> tuple[Key, Any] | None:
    ref = m.refs.get(name)
    if isinstance(ref, ValueRef):
        return ("v", ref.name), ref
    if isinstance(ref, ParamRef):
        pos = m.slots.get(name, (0, None))[1]
        return ("p", ref.name, node.name, pos), ref
    return None


def _size(g: Graph, key: Key, axis: int) -> Any:
    t = g.types[key[1]] if key[0] == "v" else g.program.params[key[1]]
    return t.shape[axis]


def _rank(g: Graph, key: Key) -> int:
    t = g.types[key[1]] if key[0] == "v" else g.program.params[key[1]]
    return t.rank


def build_sites(g: Graph, book: RuleBook, functions: Mapping[str, Any], structural: bool = False) -> list[Site]:
    """Every channel rewrite that matches a node. `structural`: ignore the side conditions on tensor
    entries (which channels a site ties together does not depend on the weights)."""
    sites: list[Site] = []
    for node in g.program.nodes:
        for cr in book.candidates(node.op, "rewrite"):
            for m in matches(cr.rule, node, g, functions):
                s = _site(cr, m, node, g, book, functions, structural)
                if s is not None:
                    sites.append(s)
    return sites


def _site(cr: CompiledRule, m: Match, node: Node, g: Graph, book: RuleBook, functions,
          structural: bool = False) -> Site | None:
    if len(m.nodes) != 1:
        return None  # channel rewrites match one node
    n = channel_range(cr, m)
    if not n:
        return None
    ev = evaluator(cr, m, functions, n, g.memo)
    ties: list[Tie] = []
    try:
        ok = torch.ones(n, dtype=torch.bool) if structural else conditions(ev, cr)
        if not ok.any():
            return None
        uses: list[ChannelUse] = list(cr.ties)
        for u in uses:
            name = u.tensor
            if cr.target is not None and u is cr.target:
                key, _ = ("v", node.name), None
            else:
                k = _key_of(m, name, node)
                if k is None:
                    return None
                key = k[0]
            rank = _rank(g, key)
            if not -rank <= u.axis < rank:
                return None
            axis = u.axis % rank
            size = _size(g, key, axis)
            if not isinstance(size, int):
                return None
            pos = positions(ev, u, n)
            inside = (pos >= 0) & (pos < size)
            inside = inside if inside.dim() == 1 else inside.all(-1)
            ok &= inside  # a lane whose positions fall outside (c - start for c before a slice) is no site
            ties.append(Tie(name, key, axis, pos.clamp(0, max(size - 1, 0))))
        if not ok.any():
            return None
    except RuleEvalError:
        return None
    if not book.admit(cr):
        return None
    if not cr.composable and book.follow_up(cr) is None:
        first = ok.nonzero()[:1, 0]
        ok = torch.zeros_like(ok)
        ok[first] = True  # one channel per pass: the node changes form
    return Site(node, cr, m, n, ties, ok)


def groups_of(g: Graph, sites: list[Site]) -> tuple[list[Group], dict[tuple[Key, int], int]]:
    """The groups the sites' same-channel ties make (every axis of every tensor is in one); the
    readers of one trainable parameter share each axis's group."""
    uf = _UF()
    readers: dict[str, Key] = {}
    for node in g.program.nodes:
        for key, _ in slot_keys(node):
            for ax in range(_rank(g, key)):
                uf.find((key, ax))
            if key[0] == "p" and key[1] not in g.program.buffers:
                # a trainable parameter several nodes read (tied weights) loses a slice only where every
                # reader loses it: cut differently it would become two tensors, a larger model than
                # before, no longer tied. A buffer (a RoPE table both q and k read) is a constant: each
                # reader may keep its own cut of it.
                first = readers.setdefault(key[1], key)
                for ax in range(_rank(g, key)):
                    uf.union((first, ax), (key, ax))
    for s in sites:
        ident = [t for t in s.ties if _is_identity(t, s.n, g)]
        for t in ident[1:]:
            uf.union((ident[0].key, ident[0].axis), (t.key, t.axis))
    ids: dict[Any, int] = {}
    groups: list[Group] = []
    group_of: dict[tuple[Key, int], int] = {}
    for k in list(uf.p):
        r = uf.find(k)
        if r not in ids:
            ids[r] = len(groups)
            size = _size(g, r[0], r[1])
            groups.append(Group(ids[r], size if isinstance(size, int) else -1))
        gid = ids[r]
        group_of[k] = gid
        groups[gid].members.append(k)
    for s in sites:
        for t in s.ties:
            t.group = group_of[(t.key, t.axis)]
    return groups, group_of


def _is_identity(t: Tie, n: int, g: Graph) -> bool:
    return t.pos.dim() == 1 and _size(g, t.key, t.axis) == n and torch.equal(t.pos, torch.arange(n))


def plan(g: Graph, sites: list[Site], keep_one: bool = True) -> Plan:
    node_members: dict[str, list[tuple[Key, int]]] = {
        node.name: [(key, ax) for key, _ in slot_keys(node) for ax in range(_rank(g, key))]
        for node in g.program.nodes}
    groups, group_of = groups_of(g, sites)
    removed = [torch.ones(max(gr.size, 0), dtype=torch.bool) for gr in groups]
    blocked: dict[int, list[str]] = {}

    def pin(gid: int, why: str) -> None:
        removed[gid] = torch.zeros_like(removed[gid])
        blocked.setdefault(gid, []).append(why)

    for gr in groups:
        if gr.size < 0:
            pin(gr.id, "symbolic size")
    inputs = {n for n, _ in g.program.inputs}
    for (key, ax), gid in group_of.items():
        if key[0] == "v" and key[1] in g.program.outputs:
            pin(gid, f"network output %{key[1]}")
        elif key[0] == "v" and key[1] in inputs:
            pin(gid, f"network input %{key[1]}")
        elif key[0] == "v" and not g.types[key[1]].dtype.startswith(("f", "b")):
            pin(gid, f"integer value %{key[1]}")
    # coverage: for each node and each group it holds, the sites that remove exactly its positions
    by_node: dict[str, list[Site]] = {}
    for s in sites:
        by_node.setdefault(s.node.name, []).append(s)
    covers: list[tuple[str, int, list[list[tuple[Site, torch.Tensor]]]]] = []
    for node in g.program.nodes:
        held: dict[int, set] = {}
        for m in node_members[node.name]:
            held.setdefault(group_of[m], set()).add(m)
        for gid, req in held.items():
            # the node's tensors in the group split into parts that separate sites remove (a concat
            # holding two operands of one group drops channel p from each through its own site)
            parts: dict[frozenset, list[tuple[Site, torch.Tensor]]] = {}
            for s in by_node.get(node.name, []):
                ts = [t for t in s.ties if t.group == gid]
                if not ts or any(not torch.equal(t.pos, ts[0].pos) for t in ts[1:]):
                    continue
                parts.setdefault(frozenset((t.key, t.axis) for t in ts), []).append((s, ts[0].pos))
            chosen = _partition(req, parts)
            if chosen is None:
                if removed[gid].any():
                    pin(gid, f"%{node.name} = {node.op}(...) has no certified rule that removes "
                             f"{_show_members(req)} together")
                continue
            covers.append((node.name, gid, [parts[k] for k in chosen]))
    _fixpoint(sites, covers, removed)
    if keep_one:
        while True:
            full = [gr.id for gr in groups if gr.size > 0 and bool(removed[gr.id].all())]
            if not full:
                break
            for gid in full:
                removed[gid] = removed[gid].clone()
                removed[gid][-1] = False  # a zero-width tensor is not a network: keep one channel
            _fixpoint(sites, covers, removed)
    for s in sites:
        s.alive = _alive(s, removed)
    return Plan(g, sites, groups, group_of, removed, blocked)


def _alive(s: Site, removed: list[torch.Tensor]) -> torch.Tensor:
    a = s.ok.clone()
    for t in s.ties:
        r = removed[t.group][t.pos]
        a &= r if r.dim() == 1 else r.all(-1)
    return a


def _partition(req: set, parts: dict[frozenset, list]) -> list[frozenset] | None:
    """Disjoint member sets of `parts` whose union is `req`: the whole set when one site removes it
    all, else an exact cover by several sites (a concat dropping channel p from each operand through
    its own site; a layer reading a tied weight on both axes, its rows and columns in one group)."""
    whole = frozenset(req)
    if whole in parts:
        return [whole]
    usable = sorted((k for k in parts if k <= whole), key=len, reverse=True)

    def cover(left: frozenset) -> list[frozenset] | None:
        if not left:
            return []
        first = min(left, key=repr)  # some part must hold it: try only those
        for k in usable:
            if first in k and k <= left:
                rest = cover(left - k)
                if rest is not None:
                    return [k, *rest]
        return None

    return cover(whole) if len(req) > 1 else None


def _fixpoint(sites: list[Site], covers, removed: list[torch.Tensor]) -> None:
    while True:
        alive = {id(s): _alive(s, removed) for s in sites}
        changed = False
        for _, gid, cov in covers:
            cur = removed[gid]
            if not cur.any():
                continue
            allowed = torch.ones_like(cur)
            for part in cov:
                got = torch.zeros_like(cur)
                for s, pos in part:
                    a = alive[id(s)]
                    if a.any():
                        got[pos[a].reshape(-1)] = True
                allowed &= got
            new = cur & allowed
            if not torch.equal(new, cur):
                removed[gid] = new
                changed = True
        if not changed:
            return


def _show_members(req: set) -> str:
    parts = []
    for key, ax in sorted(req, key=str):
        parts.append(f"{'%' if key[0] == 'v' else '@'}{key[1]}[axis {ax}]")
    return ", ".join(parts)


def kept_zero_channels(pl: Plan, limit: int = 200) -> list[dict[str, Any]]:
    """The channels known to be exactly zero that the final plan keeps, each with why: what pins its
    group (a network output, an op no certified rule removes it through), or the readers whose rules'
    conditions do not hold for it (a zero channel feeding a padded conv does fold; a nonzero constant does
    not). At most `limit` entries, in program order."""
    g = pl.graph
    out: list[dict[str, Any]] = []
    for node in g.program.nodes:
        facts = g.facts.get(node.name)
        if facts is None:
            continue
        for axis, (known, value) in sorted(facts.const.items()):
            zero = known & (value == 0)
            if not bool(zero.any()):
                continue
            channels = torch.nonzero(zero).flatten().tolist()
            gid = pl.group_of.get((("v", node.name), axis))
            why = list(pl.blocked.get(gid, [])) if gid is not None else ["no channel rule reaches it"]
            if not why and gid is not None:
                why = _refusing_sites(pl, gid, torch.tensor(channels))
            out.append({"value": node.name, "op": node.op, "axis": axis, "channels": channels,
                        "why": why or ["kept to leave one channel (every other one goes)"]})
            if len(out) >= limit:
                return out
    return out


def _refusing_sites(pl: Plan, gid: int, channels: torch.Tensor) -> list[str]:
    """'%node = op(...): the conditions of R do not hold' for the sites of a group whose lanes that
    remove one of `channels` are refused."""
    seen: list[str] = []
    for s in pl.sites:
        for t in s.ties:
            if t.group != gid:
                continue
            pos = t.pos if t.pos.dim() == 1 else t.pos[:, 0]
            lanes = torch.isin(pos, channels) & ~s.ok
            why = f"%{s.node.name} = {s.node.op}(...): the conditions of {s.cr.name} do not hold"
            if bool(lanes.any()) and why not in seen:
                seen.append(why)
    return seen[:3]
