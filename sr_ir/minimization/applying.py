"""Run the rewrites a plan chose: every new operand and attribute is computed from the rule's own
right-hand side, evaluated on the node's tensors.

Each node is rewritten by its sites one after another, in its current index space: a site's channels
(numbered as in the original program) are mapped to their current positions, the rule is matched
again at the node as it now is (so its conditions are checked where it runs), and its right side is
evaluated with one lane per channel:

- `drop(t, axis, pos)`: t without the positions pos names, for every lane at once;
- `bias + term(c)` (an operand or attribute plus terms): the operand plus the sum of the terms over
  the lanes (this is what applying the rule once per channel gives, since the term never reads what
  the rule changes);
- anything else, or a rule that changes the node's op or the presence of an optional operand: the
  rule is applied to the first channel, and the remaining ones are removed by its follow-up rule
  (same positions, same conditions) matched at the node it produced.

Afterwards every value must have lost the same positions at its producer and at each of its readers;
anything else is an engine error, never a silently wrong model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..errors import SrIrError
from ..ir.checker import infer_node
from ..ir.program import Node, ParamRef, Program, ValueRef, fresh_name
from ..ir.types import TensorType, normalize_dim
from ..lang.tensor_eval import Arr, Facts, RuleEvalError, lanes_value, lift
from ..rewrite.compiled import CompiledRule
from .facts import conditions, evaluator, positions
from ..rewrite.matching import Graph, Match, matches
from .planning import Plan, Site, _key_of
from ..rewrite.rulebook import RuleBook


class EngineError(SrIrError):
    """The engine could not carry out its own plan (a bug, reported instead of a wrong model)."""


@dataclass
class Removal:
    """What one pass removed from one group (for the report)."""

    group: str
    size: int
    removed: list[int]
    tensors: list[str] = field(default_factory=list)
    folded_into: list[str] = field(default_factory=list)


@dataclass
class _State:
    """A node being rewritten: its current form, its parameters' current tensors, and for every tensor
    it touches which original positions each axis still holds."""

    node: Node
    g: Graph
    op: str
    operands: list[Any]
    attrs: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # temporary parameter name -> tensor
    origin: dict[str, str | None]  # temporary parameter name -> original parameter name
    keep: dict[tuple[str, str], dict[int, torch.Tensor]]  # ("v"|"p"|"out", name) -> axis -> original positions
    folded: list[str] = field(default_factory=list)

    @staticmethod
    def of(node: Node, g: Graph) -> "_State":
        ops, tensors, origin = [], {}, {}
        for i, o in enumerate(node.operands):
            if isinstance(o, ParamRef):
                tmp = f"#{i}"
                tensors[tmp] = g.program.weights[o.name]
                origin[tmp] = o.name
                ops.append(ParamRef(tmp))
            elif isinstance(o, list):
                ops.append(list(o))
            else:
                ops.append(o)
        return _State(node, g, node.op, ops, dict(node.attrs), tensors, origin, {})

    def _kept(self, kind: str, name: str, shape: tuple) -> tuple:
        k = self.keep.get((kind, name), {})
        return tuple(int(k[a].numel()) if a in k else d for a, d in enumerate(shape))

    def value_type(self, name: str) -> TensorType:
        t = self.g.types[name]
        return TensorType(t.dtype, self._kept("v", name, t.shape))

    def out_type(self) -> TensorType:
        t = self.node.type
        return TensorType(t.dtype, self._kept("out", "", t.shape))

    def view(self) -> tuple[Node, Graph]:
        """The node as it now is, in a one-node graph the matcher can read."""
        names = {o.name for o in self.operands if isinstance(o, ValueRef)}
        for o in self.operands:
            if isinstance(o, list):
                names |= {x.name for x in o if isinstance(x, ValueRef)}
        types = {n: self.value_type(n) for n in names}
        facts: dict[str, Facts] = {}
        for n in names:
            f = self.g.facts.get(n)
            if f is None:
                continue
            k = self.keep.get(("v", n), {})
            sel = Facts(dict(f.const), dict(f.source))
            for a, idx in k.items():
                sel.select(a, idx)
            facts[n] = sel
        out = self.out_type()
        types[self.node.name] = out
        node = Node(self.node.name, self.op, list(self.operands), dict(self.attrs), out, self.node.loc, self.node.origin)
        prog = Program("view", [], {k: TensorType.of(t) for k, t in self.tensors.items()}, [node], [], [],
                       dict(self.tensors))
        return node, Graph(prog, self.g.ops, types, {}, {}, facts)

    def keep_of(self, ref: Any, axis: int, size: int) -> torch.Tensor:
        kind, name = self._ident(ref)
        return self.keep.get((kind, name), {}).get(axis, torch.arange(size))

    def _ident(self, ref: Any) -> tuple[str, str]:
        if isinstance(ref, ValueRef):
            return ("out", "") if ref.name == self.node.name else ("v", ref.name)
        if isinstance(ref, ParamRef):
            return ("p", ref.name)
        raise EngineError(f"%{self.node.name}: cannot drop channels of {ref!r}")

    def drop(self, ref: Any, axis: int, pos: torch.Tensor) -> Any:
        """Remove current positions `pos` from an axis of a tensor the node touches."""
        kind, name = self._ident(ref)
        if kind == "p":
            t = self.tensors[name]
            size = t.shape[axis]
        elif kind == "out":
            size = self.out_type().shape[axis]
        else:
            size = self.value_type(name).shape[axis]
        cur = self.keep.setdefault((kind, name), {}).get(axis, torch.arange(size))
        mask = torch.ones(size, dtype=torch.bool)
        mask[pos.reshape(-1)] = False
        if bool((~mask).sum() != pos.numel()):
            raise EngineError(f"%{self.node.name}: a rule removes one position twice")
        self.keep[(kind, name)][axis] = cur[mask]
        if kind != "p":
            return ref
        new = self.tensors[name].index_select(axis, mask.nonzero()[:, 0]).contiguous()
        tmp = name + "'"
        self.tensors[tmp] = new
        self.origin[tmp] = self.origin.get(name)
        self.keep[("p", tmp)] = dict(self.keep.pop(("p", name)))
        return ParamRef(tmp)


def _identity(ref: Any, st: _State, original: Node) -> Any:
    """What an operand of the original node is, so a re-match can be lined up with the plan's match."""
    if isinstance(ref, ParamRef):
        return ("p", st.origin.get(ref.name, ref.name) if ref.name.startswith("#") else ref.name)
    if isinstance(ref, list):
        return tuple(_identity(x, st, original) for x in ref)
    return ref


def apply_plan(p: Plan, book: RuleBook, functions: Mapping[str, Any]) -> tuple[Program, list[Removal]]:
    g = p.graph
    chosen = _choose(p)
    states: dict[str, _State] = {}
    for node in g.program.nodes:
        todo = chosen.get(node.name)
        if not todo:
            continue
        st = _State.of(node, g)
        # sites that cut the result first, then readers of an input: a fold may give the node a bias
        # it did not have, and the row-cutting rules were matched on the node's original form
        for s, chans in sorted(todo, key=lambda x: x[0].cr.target is None):
            _apply_site(st, s, chans, book, functions)
        # the tensors of this node's intermediate forms (rows cut, then columns) go now: kept until the
        # whole plan is applied, they held about one more copy of the model (issue 15, peak memory)
        held = {o.name for o in st.operands if isinstance(o, ParamRef)}
        st.tensors = {k: v for k, v in st.tensors.items() if k in held}
        states[node.name] = st
    prog = _materialize(g, states)
    _check_consistent(g, states)
    return prog, _removals(p, states)


def _choose(p: Plan) -> dict[str, list[tuple[Site, torch.Tensor]]]:
    """For every node, the sites that carry out the plan and their channels: each removed position is
    explained by exactly one site (the first in rule order that can)."""
    out: dict[str, list[tuple[Site, torch.Tensor]]] = {}
    claimed: dict[tuple[str, Any, int], torch.Tensor] = {}
    for s in p.sites:
        a = s.alive
        if a is None or not a.any():
            continue
        free = a.clone()
        hit_any = torch.zeros_like(a)
        for t in s.ties:
            c = claimed.get((s.node.name, t.key, t.axis))
            if c is None:
                continue
            h = c[t.pos]
            h = h if h.dim() == 1 else h.any(-1)
            hit_any |= h & a
        free &= ~hit_any
        if not free.any():
            continue
        for t in s.ties:
            key = (s.node.name, t.key, t.axis)
            size = p.groups[t.group].size
            c = claimed.setdefault(key, torch.zeros(size, dtype=torch.bool))
            c[t.pos[free].reshape(-1)] = True
        out.setdefault(s.node.name, []).append((s, free.nonzero()[:, 0]))
    # every removed position of every tensor a node touches must have been claimed (a tensor the
    # node stops reading, a concat operand that goes whole, needs no claim)
    unread: set[tuple[str, Any]] = set()
    for name, todo in out.items():
        for s, _ in todo:
            for r in s.cr.removes:
                k = _key_of(s.match, r, s.node)
                if k is not None:
                    unread.add((name, k[0]))
    for s in p.sites:
        for t in s.ties:
            if (s.node.name, t.key) in unread:
                continue
            need = p.removed[t.group]
            have = claimed.get((s.node.name, t.key, t.axis))
            if need.any() and (have is None or not torch.equal(have, need)):
                raise EngineError(f"%{s.node.name}: no single rule explains the removal of "
                                  f"{int(need.sum())} channels of {t.key[1]} (axis {t.axis})")
    return out


def _apply_site(st: _State, s: Site, chans: torch.Tensor, book: RuleBook, functions) -> None:
    cr = s.cr
    _run(st, cr, s.match, chans, book, functions)


def _range_ref(cr: CompiledRule, m: Match) -> Any:
    return m.refs.get(cr.range.tensor) if cr.range is not None else None


def _rematch(st: _State, cr: CompiledRule, want: Match | None, functions) -> tuple[Node, Graph, Match] | None:
    node, view = st.view()
    for m in matches(cr.rule, node, view, functions):
        if want is None:
            return node, view, m
        # runs (`us...`) are not compared: an earlier rewrite may have removed an operand of one
        if all(_identity(m.refs.get(k), st, st.node) == _identity_orig(v) for k, v in want.refs.items()
               if k in m.refs and k != cr.rule.root.result and not isinstance(v, list)):
            return node, view, m
    return None


def _range_identity(cr: CompiledRule, m: Match, st: _State) -> Any:
    return _identity(m.refs.get(cr.range.tensor), st, st.node) if isinstance(m.refs.get(cr.range.tensor), ParamRef) \
        else _identity_orig(m.refs.get(cr.range.tensor))


def _matched(st: _State, cr: CompiledRule, planned: Match | None, book: RuleBook, functions):
    """The rule matched at the node as it now is. An earlier rewrite of the same node may have changed
    its form (a fold created a bias): then a rule that removes the same positions under the same
    conditions from the new form carries out the plan."""
    got = _rematch(st, cr, planned, functions)
    if got is not None:
        return cr, got
    want_range = _identity_orig(planned.refs.get(cr.range.tensor)) if planned is not None and cr.range else None
    for alt in book.equivalents(cr, st.op):
        node, view = st.view()
        for m in matches(alt.rule, node, view, functions):
            if want_range is None or _identity(m.refs.get(alt.range.tensor), st, st.node) == want_range:
                return alt, (node, view, m)
    raise EngineError(f"%{st.node.name}: rule '{cr.name}' no longer matches the node it was planned for")


def _identity_orig(ref: Any) -> Any:
    if isinstance(ref, ParamRef):
        return ("p", ref.name)
    if isinstance(ref, list):
        return tuple(_identity_orig(x) for x in ref)
    return ref


def _run(st: _State, cr: CompiledRule, planned: Match | None, chans: torch.Tensor, book: RuleBook, functions) -> None:
    """Apply `cr` at the node for the original channels `chans`."""
    cr, (node, view, m) = _matched(st, cr, planned, book, functions)
    if cr.range is None:  # one fixed set of positions (a whole operand): one lane
        _evaluate(st, cr, m, torch.zeros(1, dtype=torch.long), book, functions)
        return
    ref = _range_ref(cr, m)
    rank = (view.types[ref.name] if isinstance(ref, ValueRef) else view.program.params[ref.name]).rank
    axis = cr.range.axis % rank
    size = (view.types[ref.name] if isinstance(ref, ValueRef) else view.program.params[ref.name]).shape[axis]
    keep = st.keep_of(ref, axis, size)
    cur = torch.searchsorted(keep, chans)
    if bool((cur >= keep.numel()).any()) or not torch.equal(keep[cur.clamp(max=keep.numel() - 1)], chans):
        raise EngineError(f"%{st.node.name}: rule '{cr.name}': a channel was removed twice")
    follow = None if cr.composable else book.follow_up(cr)
    if not cr.composable:
        if follow is None and chans.numel() > 1:
            raise EngineError(f"rule '{cr.name}' changes the node's form and has no follow-up rule")
        first, rest = chans[:1], chans[1:]
        _evaluate(st, cr, m, cur[:1], book, functions)
        if rest.numel():
            _run(st, follow, None, rest, book, functions)
        return
    _evaluate(st, cr, m, cur, book, functions)


def _evaluate(st: _State, cr: CompiledRule, m: Match, lanes: torch.Tensor, book: RuleBook, functions) -> None:
    n = int(lanes.numel())
    ev = evaluator(cr, m, functions, lanes)
    try:
        ok = conditions(ev, cr)
    except RuleEvalError as e:
        raise EngineError(f"%{st.node.name}: rule '{cr.name}': {e}") from None
    if not bool(ok.all()):
        raise EngineError(f"%{st.node.name}: rule '{cr.name}' was planned for channels where its conditions "
                          f"do not hold")
    decl = st.g.ops[cr.op]
    new_ops: dict[str, Any] = {}
    new_attrs: dict[str, Any] = {}
    drops: list[tuple[Any, int, torch.Tensor]] = []
    try:
        for a in cr.args:
            is_tensor = decl.tensor_param(a.param) is not None
            if a.kind == "none":
                val: Any = None
            elif a.kind in ("same", "spread"):
                val = m.refs[a.name] if is_tensor or a.kind == "spread" else ev.expr(_name(a.name))
            elif a.kind == "drop":
                base = m.refs[a.name]
                d = a.drops[0]
                rank = _rank_of(st, base)
                drops.append((base, d.axis % rank, positions(ev, d, n)))
                val = base
            elif a.kind == "acc":
                val = _accumulate(st, ev, a, m, n, is_tensor)
                if is_tensor:
                    st.folded.append(st.origin.get(m.refs[a.name].name) or a.name)
            else:
                v = ev.expr(a.term)
                if n != 1:
                    raise EngineError(f"rule '{cr.name}': argument {a.param} is evaluated for one channel at a time")
                val = _materialize_value(st, v, a.param, is_tensor, m, decl)
                own = _own_operand(cr, a) if is_tensor else None
                if own is not None and isinstance(m.refs.get(own), ParamRef) and isinstance(val, ParamRef):
                    # computed from its own operand alone (a recurrent weight cut on two axes): the same
                    # parameter, cut, so it keeps its name and a later rule planned on it still matches
                    src = m.refs[own].name
                    st.origin[val.name] = st.origin.get(src) if src.startswith("#") else src
            if decl.tensor_param(a.param) is not None and decl.tensor_param(a.param).variadic:
                items = new_ops.setdefault(a.param, [])
                items.extend(val if isinstance(val, list) else [val])
            elif is_tensor:
                new_ops[a.param] = val
            else:
                new_attrs[a.param] = val
    except RuleEvalError as e:
        raise EngineError(f"%{st.node.name}: rule '{cr.name}': {e}") from None
    book.record(cr, n)
    book.record_sources(ev.sources)
    # the node's new form: operands in the op's order, attributes not given are the matched node's
    operands = decl.operands_in_order(new_ops)
    attrs: dict[str, Any] = {}
    for ap in decl.attr_params:
        if ap.name in new_attrs:
            attrs[ap.name] = new_attrs[ap.name]
        elif ap.name in st.attrs:
            attrs[ap.name] = st.attrs[ap.name]
    # the removals themselves (positions were computed on the node before the rewrite)
    remap: dict[Any, Any] = {}
    done: dict[tuple[Any, int], torch.Tensor] = {}
    for base, axis, pos in drops:
        if isinstance(base, ValueRef) and (base, axis) in done:
            # one value read twice (`add(h, h)`): the rule drops it once, at the same positions
            if not torch.equal(done[(base, axis)], pos):
                raise EngineError(f"%{st.node.name}: rule '{cr.name}' drops different positions of %{base.name}, "
                                  f"which it reads twice")
            continue
        done[(base, axis)] = pos
        remap[base] = st.drop(remap.get(base, base), axis, pos)
    if cr.target is not None:
        out_axis = cr.target.axis % st.out_type().rank
        st.drop(ValueRef(st.node.name), out_axis, positions(ev, cr.target, n))
    st.op = cr.op
    st.operands = [_remapped(o, remap) for o in operands]
    st.attrs = attrs


def _remapped(o: Any, remap: dict) -> Any:
    if isinstance(o, list):
        return [_remapped(x, remap) for x in o]
    return remap.get(o, o) if isinstance(o, (ParamRef, ValueRef)) else o


def _name(n: str) -> Any:
    from ..lang import ast as A

    return A.Name(n)


def _rank_of(st: _State, ref: Any) -> int:
    if isinstance(ref, ValueRef):
        return st.out_type().rank if ref.name == st.node.name else st.value_type(ref.name).rank
    if isinstance(ref, ParamRef):
        return st.tensors[ref.name].dim()
    raise EngineError(f"%{st.node.name}: cannot drop channels of {ref!r}")


def _accumulate(st: _State, ev, a, m: Match, n: int, is_tensor: bool) -> Any:
    term = ev.expr(a.term)
    if is_tensor:
        ref = m.refs[a.name]
        base = st.tensors[ref.name]
        total = lanes_value(term, n).to(torch.float64).sum(0)
        new = (base.to(torch.float64) + a.sign * total).to(base.dtype)
        if tuple(new.shape) != tuple(base.shape):
            raise EngineError(f"%{st.node.name}: the term added to {a.name} changes its shape")
        tmp = ref.name + "+"
        st.tensors[tmp] = new.contiguous()
        st.origin[tmp] = st.origin.get(ref.name)
        if ("p", ref.name) in st.keep:
            st.keep[("p", tmp)] = st.keep.pop(("p", ref.name))
        return ParamRef(tmp)
    base = ev.expr(_name(a.name))
    if isinstance(term, Arr):
        t = lanes_value(term, n).sum(0)
        total: Any = t.tolist() if t.dim() else t.item()
        if isinstance(total, float) and total == int(total) and isinstance(base, int):
            total = int(total)
    elif isinstance(term, list):
        total = [normalize_dim(x * n) if not isinstance(x, float) else x * n for x in term]
    else:
        total = term * n
        if not isinstance(total, float):
            total = normalize_dim(total)
    from ..lang.tensor_eval import scalar_binop

    return scalar_binop("+" if a.sign > 0 else "-", base, total)


def _own_operand(cr: CompiledRule, a: Any) -> str | None:
    """The rule's name for the matched operand of parameter `a.param`, when the expression computing the
    new operand reads that tensor and no other of the match."""
    from ..lang import ast as A

    root = cr.rule.root
    names = {o.name for o in root.operands if o.name}
    own = next((o.name for o in root.operands if o.param == a.param and o.name), None)
    reads = {x.base for x in A.walk(a.term) if isinstance(x, A.Index)}
    reads |= {x.id for x in A.walk(a.term) if isinstance(x, A.Name)}
    return own if own is not None and reads & names == {own} else None


def _materialize_value(st: _State, v: Any, param: str, is_tensor: bool, m: Match, decl) -> Any:
    if not is_tensor:
        if isinstance(v, Arr):
            t = lanes_value(v, 1)[0]
            return t.item() if t.dim() == 0 else t.tolist()
        return v
    t = lanes_value(lift(v), 1)[0]
    dtype = st.node.type.torch_dtype
    tmp = f"#new.{param}"
    while tmp in st.tensors:
        tmp += "'"
    st.tensors[tmp] = t.to(dtype).contiguous()
    st.origin[tmp] = None
    return ParamRef(tmp)


def _materialize(g: Graph, states: dict[str, _State]) -> Program:
    """The rewritten program: new nodes, parameters (readers that cut a parameter the same way share one
    tensor again), types inferred in order."""
    p0 = g.program
    p = p0.copy(weights=False)
    p.weights = dict(p0.weights)
    versions: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for node in p0.nodes:  # parameters that readers without a rewrite keep as they are
        if node.name not in states:
            for o in node.param_operands():
                versions.setdefault(o.name, [(o.name, p0.weights[o.name])])

    def name_for(st: _State, tmp: str) -> str:
        t = st.tensors[tmp]
        orig = st.origin.get(tmp)
        if orig is not None and t is p0.weights.get(orig):
            versions.setdefault(orig, [(orig, t)])
            return orig
        base = orig or f"{st.node.name}.{tmp.split('.')[-1].strip('#+')}"
        vs = versions.setdefault(base, [])
        for nm, old in vs:
            if old is t or (old.shape == t.shape and old.dtype == t.dtype and torch.equal(old, t)):
                return nm
        nm = base if not vs and (orig is not None or base not in p.params) else fresh_name(base, p.params, {base, *(nm for nm, _ in vs)})
        vs.append((nm, t))
        return nm

    new_nodes: list[Node] = []
    for node in p.nodes:
        st = states.get(node.name)
        if st is None:
            new_nodes.append(node)
            continue
        ops: list[Any] = []
        for o in st.operands:
            if isinstance(o, ParamRef):
                nm = name_for(st, o.name)
                p.weights[nm] = st.tensors[o.name]
                p.params[nm] = TensorType.of(st.tensors[o.name])
                if st.origin.get(o.name) in p0.buffers:
                    p.buffers.add(nm)
                ops.append(ParamRef(nm))
            else:
                ops.append(o)
        new_nodes.append(Node(node.name, st.op, ops, st.attrs, node.type, node.loc, node.origin))
    p.nodes = new_nodes
    env = {n: t for n, t in p.inputs}
    for node in p.nodes:
        try:
            node.type = infer_node(g.ops[node.op], node, env, p.params)
        except Exception as e:
            raise EngineError(f"%{node.name} = {node.op}(...) after rewriting: {e}") from None
        env[node.name] = node.type
    p.output_types = [env[o] for o in p.outputs]
    p.drop_unused_params()
    return p


def _check_consistent(g: Graph, states: dict[str, _State]) -> None:
    """Every value lost the same positions where it is written and everywhere it is read."""
    produced: dict[str, dict[int, torch.Tensor]] = {}
    for name, st in states.items():
        produced[name] = st.keep.get(("out", ""), {})
    for node in g.program.nodes:
        st = states.get(node.name)
        names = {o.name for o in node.value_operands()}
        if st is not None:  # what the node reads after its rewrite
            now = [x for o in st.operands for x in (o if isinstance(o, list) else [o])]
            names &= {o.name for o in now if isinstance(o, ValueRef)}
        for v in names:
            got = st.keep.get(("v", v), {}) if st else {}
            want = produced.get(v, {})
            axes = set(got) | set(want)
            for a in axes:
                n = g.types[v].shape[a]
                x = got.get(a, torch.arange(n))
                y = want.get(a, torch.arange(n))
                if not torch.equal(x, y):
                    raise EngineError(f"%{v} axis {a}: its producer and its reader %{node.name} removed "
                                      f"different channels")


def _removals(p: Plan, states: dict[str, _State]) -> list[Removal]:
    out = []
    folded_by: dict[int, list[str]] = {}
    for s in p.sites:
        st = states.get(s.node.name)
        if st and st.folded:
            for t in s.ties:
                folded_by.setdefault(t.group, [])
                for f in st.folded:
                    if f not in folded_by[t.group]:
                        folded_by[t.group].append(f)
    for gr in p.groups:
        rm = p.removed[gr.id]
        if gr.size <= 0 or not rm.any():
            continue
        tensors = []
        params = sorted({(k[1], ax) for k, ax in gr.members if k[0] == "p"})
        for name, ax in params:
            tensors.append(f"@{name}[axis {ax}]")
        vals = sorted({(k[1], ax) for k, ax in gr.members if k[0] == "v"})
        label = f"{params[0][0]}.{params[0][1]}" if params else f"%{vals[0][0]}.{vals[0][1]}"
        out.append(Removal(label, gr.size, rm.nonzero()[:, 0].tolist(), tensors, folded_by.get(gr.id, [])))
    return out
