"""Match a rule's `match` clause at a node of a Program: which IR operands its names stand for, the
dims its shape annotations bind, the attributes it names, and whether its static side conditions
hold. One rule may match one node several ways (a run `us...` of a variadic operand); a chain
(`match y = batch_norm(z, ...); z = conv2d(x, ...)`) follows the producers of the root's operands.

A rule speaks only of what it states: an optional operand it does not mention must be absent (that
is the case the prover proved), and an annotated operand must have the annotation's rank, with one
`*B` naming the same run of dims wherever it appears.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch

from ..ir.checker import attrs_with_defaults, bind_operands
from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType, dims_equal
from ..lang import ast as A
from ..lang.rule import Binding, Rule
from ..lang.tensor_eval import Facts, LaneEval, Operand, RuleEvalError
from ..ir.opdecl import OpDecl

MAX_SPLITS = 64  # ways to split a variadic operand list over a rule's runs, per node


@dataclass
class Graph:
    """A Program with the indexes matching needs (types, producers, users, channel facts)."""

    program: Program
    ops: Mapping[str, OpDecl]
    types: dict[str, TensorType] = field(default_factory=dict)
    producer: dict[str, Node] = field(default_factory=dict)
    users: dict[str, list[Node]] = field(default_factory=dict)
    facts: dict[str, Facts] = field(default_factory=dict)
    # results rule evaluators share over one analysis of this program (LaneEval.memo): keyed by the
    # tensor's identity and version, so a weight changed in place is tested afresh
    memo: dict = field(default_factory=dict)

    @staticmethod
    def of(p: Program, ops: Mapping[str, OpDecl]) -> "Graph":
        return Graph(p, ops, p.value_types(), p.node_map(), p.users())

    def operand(self, o: Any) -> Operand:
        if isinstance(o, ValueRef):
            return Operand("value", type=self.types[o.name], facts=self.facts.get(o.name), ref=o)
        if isinstance(o, ParamRef):
            return Operand("param", type=self.program.params[o.name], tensor=self.program.weights.get(o.name), ref=o)
        if o is None:
            return Operand("absent")
        if isinstance(o, list):
            return Operand("run", items=[self.operand(x) for x in o], ref=o)
        return Operand("scalar", scalar=o, ref=o)


@dataclass
class Match:
    rule: Rule
    nodes: list[Node]  # one per binding, root first
    env: dict[str, Any]  # rule name -> Operand / attribute value / dim
    refs: dict[str, Any]  # rule tensor name -> IR operand (ValueRef, ParamRef, None, scalar, list for a run)
    slots: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # name -> (binding, operand position)

    @property
    def root(self) -> Node:
        return self.nodes[0]


def matches(rule: Rule, node: Node, g: Graph, functions: Mapping[str, Any]) -> Iterator[Match]:
    """Every way the rule's match clause binds at `node` (its root binding) with its static side
    conditions holding."""
    if node.op != rule.root.op:
        return
    for env, refs, nodes, slots in _bind_chain(rule, 0, node, g, {}, {}, [], {}):
        if not _check_dims(rule, env, refs, nodes, g):
            continue
        ev = LaneEval(env, functions, rule=rule.name, where=rule.loc)
        _solve_dims(rule, ev, env)
        try:
            ok = all(_holds_static(ev, w) for w in rule.static_where)
            ok = ok and all(_attr_required(ev, req, val) for req, val in env.pop("#required", []))
        except (RuleEvalError, TypeError, KeyError, ZeroDivisionError):
            ok = False
        if ok:
            yield Match(rule, nodes, env, refs, slots)


def _solve_dims(rule: Rule, ev: LaneEval, env: dict) -> None:
    """A dim no annotation gives on its own (`h` of `[l, b * h, d]`) from a condition `h == e // d`."""
    dims = set(rule.info.dims) if rule.info else set()
    for _ in range(2):
        for w in rule.where:
            if (isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Name) and w.left.id in dims
                    and w.left.id not in env):
                try:
                    env[w.left.id] = ev.env[w.left.id] = ev.expr(w.right)
                except (RuleEvalError, TypeError, KeyError, ZeroDivisionError):
                    continue


def _holds_static(ev: LaneEval, w: Any) -> bool:
    v = ev._bool(w)
    if isinstance(v, bool):
        return v
    return bool(v.t.all()) if hasattr(v, "t") else bool(v)


def _attr_required(ev: LaneEval, req: Any, val: Any) -> bool:
    from ..lang.tensor_eval import plain_cmp

    want = ev.expr(req)
    return plain_cmp("==", val, want)


def _bind_chain(rule: Rule, bi: int, node: Node, g: Graph, env: dict, refs: dict, nodes: list, slots: dict):
    b = rule.bindings[bi]
    for env1, refs1, slots1 in _bind_node(rule, bi, b, node, g, env, refs, slots):
        nodes1 = nodes + [node]
        if bi + 1 == len(rule.bindings):
            yield env1, refs1, nodes1, slots1
            continue
        nxt = rule.bindings[bi + 1]
        ref = refs1.get(nxt.result)
        if not isinstance(ref, ValueRef):
            continue
        prod = g.producer.get(ref.name)
        if prod is None or prod.op != nxt.op or prod in nodes1:
            continue
        yield from _bind_chain(rule, bi + 1, prod, g, env1, refs1, nodes1, slots1)


def _bind_name(env: dict, refs: dict, name: str, ref: Any, g: Graph) -> bool:
    if name in refs:
        return refs[name] == ref
    refs[name] = ref
    env[name] = g.operand(ref)
    return True


def _bind_node(rule: Rule, bi: int, b: Binding, node: Node, g: Graph, env: dict, refs: dict, slots: dict):
    decl = g.ops.get(node.op)
    if decl is None:
        return
    try:
        attrs = attrs_with_defaults(decl, node)
        pairs = bind_operands(decl, node)
    except Exception:  # an ill-formed node matches nothing (the checker reports it)
        return
    env = dict(env)
    refs = dict(refs)
    slots = dict(slots)
    if b.result in refs and refs[b.result] != ValueRef(node.name):
        return
    refs[b.result] = ValueRef(node.name)
    env[b.result] = g.operand(ValueRef(node.name))
    slots[b.result] = (bi, None)
    # attributes (renamed, required, or under their own names)
    required = list(env.get("#required", []))
    given = dict(b.attrs)
    for a in decl.attr_params:
        v = attrs.get(a.name)
        spec = given.get(a.name)
        if isinstance(spec, A.Name):
            if spec.id in env and not isinstance(env[spec.id], Operand) and env[spec.id] != v:
                return
            env[spec.id] = v
        elif spec is not None:
            required.append((spec, v))
        else:
            env.setdefault(a.name, v)
    env["#required"] = required
    # operands
    by_param: dict[str, list[Any]] = {}
    for o in b.operands:
        by_param.setdefault(o.param, []).append(o)
    variadic_choices: list[tuple[Any, list[Any], int]] = []
    pos = 0
    for tp, actual in pairs:
        ros = by_param.get(tp.name, [])
        if tp.variadic:
            variadic_choices.append((tp, ros, pos))
            pos += len(actual)
            continue
        if not ros:
            if actual is not None and tp.optional:
                return  # the rule was proved for the form without this operand
            pos += 1
            continue
        o = ros[0]
        if o.name is None:
            if actual is not None:
                return
        elif actual is None:
            return
        elif not _bind_name(env, refs, o.name, actual, g):
            return
        else:
            slots[o.name] = (bi, pos)
        pos += 1
    if not variadic_choices:
        yield env, refs, slots
        return
    (tp, ros, start), = variadic_choices
    actual = next(a for t, a in pairs if t is tp)
    for split in itertools.islice(_splits(ros, len(actual)), MAX_SPLITS):
        env2, refs2, slots2 = dict(env), dict(refs), dict(slots)
        ok = True
        i = 0
        for o, n in zip(ros, split):
            part = actual[i:i + n]
            if o.run:
                if o.name in refs2 and refs2[o.name] != part:
                    ok = False
                    break
                refs2[o.name] = part
                env2[o.name] = g.operand(part)
                slots2[o.name] = (bi, start + i)
            else:
                if not _bind_name(env2, refs2, o.name, part[0], g):
                    ok = False
                    break
                slots2[o.name] = (bi, start + i)
            i += n
        if ok:
            yield env2, refs2, slots2


def _splits(ros: list[Any], n: int) -> Iterator[list[int]]:
    """Lengths for each rule operand of a variadic list of n operands (plain: 1, run: 0 or more)."""
    runs = [i for i, o in enumerate(ros) if o.run]
    plain = len(ros) - len(runs)
    free = n - plain
    if free < 0 or (not runs and free != 0):
        return
    if not runs:
        yield [1] * len(ros)
        return
    for combo in itertools.product(range(free + 1), repeat=len(runs) - 1):
        if sum(combo) > free:
            continue
        lens = list(combo) + [free - sum(combo)]
        out, k = [], 0
        for o in ros:
            if o.run:
                out.append(lens[k])
                k += 1
            else:
                out.append(1)
        yield out


def _check_dims(rule: Rule, env: dict, refs: dict, nodes: list[Node], g: Graph) -> bool:
    """Bind the dims of shape annotations (and of the op patterns of unannotated operands) from the
    operands' types; False when an annotation does not fit (rank, or one name two lengths)."""
    dims: dict[str, Any] = {}
    annotated: set[str] = set()
    private = rule.private_dims
    for bi, b in enumerate(rule.bindings):
        decl = g.ops[b.op]
        for o in b.operands:
            if o.name is None or o.shape is None:
                continue
            annotated.add(o.name)
            for t in _types_of(env.get(o.name)):
                if o.run:  # each operand of a run has its own size for the dims only the run names
                    trial = {k: v for k, v in dims.items() if k not in private.get(o.name, ())}
                    if not _fit(o.shape, t, trial):
                        return False
                    dims.update({k: v for k, v in trial.items() if k not in private.get(o.name, ())})
                elif not _fit(o.shape, t, dims):
                    return False
        if b.result_shape is not None:
            annotated.add(b.result)
            if not _fit(b.result_shape, nodes[bi].type, dims):
                return False
    wanted = set(rule.info.dims) if rule.info else set()
    for bi, b in enumerate(rule.bindings):
        decl = g.ops[b.op]
        for o in b.operands:
            if o.name is None or o.name in annotated:
                continue
            tp = decl.tensor_param(o.param)
            for t in _types_of(env.get(o.name)):
                trial: dict[str, Any] = {}
                if _fit(tuple(tp.pattern.dims), t, trial):
                    for k, v in trial.items():
                        if (k in wanted or k.startswith("*")) and k not in dims:
                            dims[k] = v
    for k, v in dims.items():
        if k.startswith("*"):
            env.setdefault(k, v)
        elif k not in env or isinstance(env[k], Operand):
            if k not in env:
                env[k] = v
        elif not isinstance(env[k], (list, str)) and env[k] is not None and isinstance(v, int) and env[k] != v:
            pass  # an attribute of the same name: the attribute wins
    return True


def _types_of(o: Any) -> list[TensorType]:
    if not isinstance(o, Operand):
        return []
    if o.kind == "run":
        return [x.type for x in o.items if isinstance(x.type, TensorType)]
    return [o.type] if isinstance(o.type, TensorType) else []


def _fit(pattern: tuple[Any, ...], t: TensorType, dims: dict[str, Any]) -> bool:
    n_var = sum(isinstance(d, A.Variadic) for d in pattern)
    fixed = len(pattern) - n_var
    if (n_var == 0 and t.rank != fixed) or t.rank < fixed:
        return False
    shape = list(t.shape)
    i = 0
    for d in pattern:
        if isinstance(d, A.Variadic):
            k = t.rank - fixed
            run = tuple(shape[i:i + k])
            key = "*" + d.name
            if key in dims:
                prev = dims[key]
                if len(prev) != len(run) or not all(dims_equal(a, b) for a, b in zip(prev, run)):
                    return False
            else:
                dims[key] = run
            i += k
            continue
        if isinstance(d, A.Name):
            if d.id in dims:
                if not dims_equal(dims[d.id], shape[i]):
                    return False
            else:
                dims[d.id] = shape[i]
        else:
            try:
                from ..lang.evaluate import eval_expr

                want = eval_expr(d, dims)
            except Exception:
                i += 1
                continue  # an expression over dims bound later (checked by the conditions)
            if not dims_equal(want, shape[i]):
                return False
        i += 1
    return True


