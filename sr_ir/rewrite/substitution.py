"""Rewrites without a channel variable: the matched node (and the chain under it) is replaced by the
rule's right side, built from the rule's own expressions.

    rule batch_norm.fold_linear
      match y = batch_norm(z, gamma, beta, running_mean, running_var, eps=e); z = linear(x: [b, m], weight: [n, m], bias)
      then  y = linear(x, tensor(o < n, i < m, weight[o, i] * gamma[o] * rsqrt(running_var[o] + e)), ...)

The inner nodes of a chain must be read only by the chain (otherwise the rewrite would compute them
twice). Tensor-valued arguments become new parameters; nested op calls become new nodes. Applied to a
fixpoint, in program order.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import SrIrError, TypeCheckError
from ..ir.checker import infer_node
from ..ir.program import Node, ParamRef, Program, ValueRef, fresh_name
from ..ir.types import TensorType
from ..ir.shape_functions import ShapeError
from ..lang import ast as A
from ..lang.tensor_eval import Arr, LaneEval, RuleEvalError, lift
from .compiled import CompiledRule
from .matching import Graph, Match, matches
from .rulebook import RuleBook


def substitute(p: Program, book: RuleBook, functions: Mapping[str, Any], max_rounds: int = 200,
               private: bool = True) -> tuple[Program, list[str]]:
    """Apply every certified substitution rule to a fixpoint. Returns the program and the names of the
    nodes that were replaced. `private`: a chain's inner nodes must be read only inside it (a fold
    would otherwise compute them twice); raising reads through shared layout nodes (the three parts
    of a packed projection), which stay for their other readers."""
    rules = book.kinds("substitution")
    replaced: list[str] = []
    if not rules:
        return p, replaced
    by_op: dict[str, list[CompiledRule]] = {}
    for cr in rules:
        by_op.setdefault(cr.rule.root.op, []).append(cr)
    for _ in range(max_rounds):
        g = Graph.of(p, book.ruleset.ops)
        done = False
        for node in list(p.nodes):
            for cr in by_op.get(node.op, []):
                for m in matches(cr.rule, node, g, functions):
                    if private and not _private(m, g):
                        continue
                    new = _build(cr, m, g, book, functions)
                    if new is None:
                        continue
                    try:
                        p = _splice(p, node, new, book.ruleset.ops)
                    except ShapeError as e:  # a proved rule cannot do this; a forged or edited one can
                        raise TypeCheckError(f"rule '{cr.rule.name}' rewrote %{node.name} into an ill-typed "
                                             f"graph: {e}", node.loc) from None
                    book.record(cr)
                    replaced.append(node.name)
                    done = True
                    break
                if done:
                    break
            if done:
                break
        if not done:
            return p, replaced
    raise SrIrError(f"substitutions did not reach a fixpoint in {max_rounds} rounds")


def _private(m: Match, g: Graph) -> bool:
    """The chain's inner results are read only inside the chain (and are not network outputs)."""
    inside = {n.name for n in m.nodes}
    for n in m.nodes[1:]:
        if n.name in g.program.outputs:
            return False
        if any(u.name not in inside for u in g.users.get(n.name, [])):
            return False
    return True


class _New:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.params: dict[str, torch.Tensor] = {}


def _build(cr: CompiledRule, m: Match, g: Graph, book: RuleBook, functions) -> tuple[Node, _New] | None:
    ev = LaneEval(m.env, functions, None, None, cr.rule.info.values if cr.rule.info else (), cr.rule.loc,
                  cr.rule.name)
    try:
        for w in cr.conditions:
            if not bool(ev.holds(w).all()):
                return None
    except RuleEvalError:
        return None
    if not book.admit(cr):
        return None
    new = _New()
    root = m.root
    try:
        node = _call(cr.rule.conclusion.value, ev, m, g, root, new, top=True)
    except RuleEvalError:
        return None
    return node, new


def _call(e: A.Call, ev: LaneEval, m: Match, g: Graph, root: Node, new: _New, top: bool) -> Node:
    decl = g.ops[e.fn]
    var = next((t.name for t in decl.tensor_params if t.variadic), None)
    items = decl.parameters_of(e.args)
    ops: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    same_op = next((n for n in m.nodes if n.op == e.fn), None)
    for param, a in items:
        if decl.tensor_param(param) is not None:
            if param == var and isinstance(a, A.Call) and a.fn == "each":  # each(i < n, e): n operands
                b, body = a.args[0], a.args[1]
                n = ev.expr(b.upper)
                saved = ev.env.get(b.var)
                try:
                    for i in range(int(n)):
                        ev.env[b.var] = i
                        val = _tensor_arg(body, ev, m, g, root, new, _hint(same_op, decl, param, root))
                        ops.setdefault(param, []).append(val)
                finally:
                    if saved is None:
                        ev.env.pop(b.var, None)
                    else:
                        ev.env[b.var] = saved
                continue
            vals = _tensor_arg(a, ev, m, g, root, new, _hint(same_op, decl, param, root))
            if param == var:
                ops.setdefault(param, []).extend(vals if isinstance(vals, list) else [vals])
            else:
                ops[param] = vals
        else:
            v = ev.expr(a)
            attrs[param] = _plain(v)
    operands = decl.operands_in_order(ops)
    for ap in decl.attr_params:  # attributes the right side does not give are the matched node's
        if ap.name not in attrs and ap.name in root.attrs and e.fn == root.op:
            attrs[ap.name] = root.attrs[ap.name]
    name = root.name if top else f"{root.name}_{e.fn}_{len(new.nodes)}"
    node = Node(name, e.fn, operands, attrs, root.type, root.loc, root.origin)
    if not top:
        new.nodes.append(node)
    return node


def _hint(same_op: Node | None, decl, param: str, root: Node) -> str:
    """A readable name for a new parameter: the one it replaces (the matched node of the same op held
    it), or beside that node's other parameters (`conv1.weight` -> `conv1.bias`)."""
    if same_op is not None:
        idx = [t.name for t in decl.tensor_params].index(param)
        o = same_op.operands[idx] if idx < len(same_op.operands) else None
        if isinstance(o, ParamRef):
            return o.name
        sib = next((x.name for x in same_op.operands if isinstance(x, ParamRef)), None)
        if sib is not None and "." in sib:
            return sib.rsplit(".", 1)[0] + "." + param
    return f"{root.name}.{param}"


def _tensor_arg(a: Any, ev: LaneEval, m: Match, g: Graph, root: Node, new: _New, hint: str) -> Any:
    if isinstance(a, A.Num) and a.value is None:
        return None
    if isinstance(a, A.Name) and a.id in m.refs:
        return m.refs[a.id]
    if isinstance(a, A.Spread):
        return list(m.refs[a.name])
    if isinstance(a, A.Call) and a.fn in g.ops:
        n = _call(a, ev, m, g, root, new, top=False)
        return ValueRef(n.name)
    v = lift(ev.expr(a))
    if v.names:
        raise RuleEvalError("a new parameter depends on an index variable outside its `tensor(...)`")
    tmp = f"#sub{len(new.params)}|{hint}"
    new.params[tmp] = v.t.to(root.type.torch_dtype).contiguous()
    return ParamRef(tmp)


def _plain(v: Any) -> Any:
    if isinstance(v, Arr):
        if v.names or v.t.dim():
            return v.t.tolist()
        return v.t.item()
    return v


def _splice(p: Program, root: Node, built: tuple[Node, _New], ops) -> Program:
    node, new = built
    q = p.copy(weights=False)
    q.weights = dict(p.weights)
    idx = next(i for i, n in enumerate(q.nodes) if n.name == root.name)
    taken = {n.name for n in q.nodes} | {n for n, _ in q.inputs}
    rename: dict[str, str] = {}
    for n in new.nodes:
        nm = fresh_name(n.name, taken)
        taken.add(nm)
        rename[n.name] = nm
        n.name = nm
    all_new = new.nodes + [node]
    for n in all_new:
        n.operands = [ValueRef(rename.get(o.name, o.name)) if isinstance(o, ValueRef) else o for o in n.operands]
    q.nodes = q.nodes[:idx] + all_new + q.nodes[idx + 1:]
    q = q.drop_dead()
    used = {r.name for n in q.nodes for r in n.param_operands()}
    pname: dict[str, str] = {}
    for tmp, t in new.params.items():
        base = tmp.split("|", 1)[1]
        nm = fresh_name(base, used, pname.values())
        pname[tmp] = nm
        q.weights[nm] = t
        q.params[nm] = TensorType.of(t)
    for n in all_new:
        n.operands = [ParamRef(pname[o.name]) if isinstance(o, ParamRef) and o.name in pname else o for o in n.operands]
    env = {n: t for n, t in q.inputs}
    for n in q.nodes:
        if n in all_new or any(n is x for x in all_new):
            n.type = infer_node(ops[n.op], n, env, q.params)
        env[n.name] = n.type
    q.drop_unused_params()
    return q
