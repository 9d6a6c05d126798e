"""Turn a rule into proof obligations at one instance (sizes, attributes, channel position).

The side conditions are used three ways:
- `t[..., c, ...] == e` (a slice of a tensor) is a substitution: those entries *are* e;
- conditions over dims and attributes only choose the instance;
- `k == e` for a value variable substitutes k; everything else is an assumption (a tensor check
  sampled in the test tier, a solver assumption in the symbolic tiers).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Mapping

from ..lang import ast as A
from ..lang.rule import BackwardFact, ForwardFact, Rewrite, Rule, run_private_dims
from ..ops.decl import OpDecl
from .semantics import (
    Evaluator,
    Extent,
    InstanceError,
    NeedConcrete,
    SemanticsError,
    Tensor,
    points,
)


@dataclass
class Where:
    """A rule's side conditions, sorted by how they are used."""

    substitutions: list[tuple[A.Index, A.Expr]] = field(default_factory=list)
    static: list[A.Cond] = field(default_factory=list)
    value_subst: list[tuple[str, A.Expr]] = field(default_factory=list)
    assumptions: list[A.Cond] = field(default_factory=list)
    unused: list[A.Index] = field(default_factory=list)


def classify_where(rule: Rule, conds: tuple[A.Cond, ...] | None = None) -> Where:
    info = rule.info
    tensors = set(info.tensors)
    values = set(info.values)
    w = Where()
    # a rank-0 operand (`add(m, e: [])`, a number in the graph) is one value: `e == 0.5` fixes it
    scalars = {o.name for b in rule.bindings for o in b.operands if o.name and o.shape == ()}
    for c in rule.where if conds is None else conds:
        if isinstance(c, A.Cmp) and c.op == "==" and isinstance(c.left, A.Name) and c.left.id in scalars:
            w.substitutions.append((A.Index(c.left.id, ()), c.right))
            continue
        names = {n.id for n in A.walk(c) if isinstance(n, A.Name)}
        reads = {n.base for n in A.walk(c) if isinstance(n, A.Index)} & tensors
        if isinstance(c, A.Unused):
            w.unused.append(c.target)
        elif (
            isinstance(c, A.Cmp) and c.op == "==" and isinstance(c.left, A.Index) and c.left.base in tensors
            and info.channel is not None
            and any(isinstance(x, A.Name) and x.id == info.channel for i in c.left.indices for x in A.walk(i))
        ):
            w.substitutions.append((c.left, c.right))
        elif isinstance(c, A.Cmp) and c.op == "==" and isinstance(c.left, A.Name) and c.left.id in values:
            w.value_subst.append((c.left.id, c.right))
        elif not reads and not (names & values) and not any(isinstance(n, A.Quant) for n in A.walk(c)):
            w.static.append(c)
        else:
            w.assumptions.append(c)
    return w


@dataclass
class Instance:
    dims: dict[str, Any]  # dim -> int or Extent; "*B" -> tuple of extents
    attrs: dict[str, Any]  # rule name of an attribute -> value
    channel: Any
    label: str = ""


@dataclass
class Obligation:
    """Pairs that must be equal at one instance, and the assumptions under which."""

    instance: Instance
    pairs: list[tuple[str, Any, Any]]  # (where, lhs value, rhs value)
    assumptions: list[Any]  # truth values (exact) or sympy booleans
    env: dict[str, Any]
    leaves: dict[str, Tensor]


class Valuation:
    """Values of the leaf tensors' entries: drawn lazily (exact tiers) or symbols (symbolic tiers)."""

    def __init__(self, alg: Any, draw: Callable[[str, tuple], Any] | None = None):
        self.alg = alg
        self.draw = draw
        self.values: dict[tuple[str, tuple], Any] = {}

    def entry(self, tname: str, idx: tuple, boolean: bool) -> Any:
        key = (tname, idx)
        if key not in self.values:
            if self.draw is None:
                self.values[key] = self.alg.entry(tname, idx, boolean)
            else:
                v = self.draw(tname, idx)
                self.values[key] = Fraction(int(bool(v))) if boolean else v
        return self.values[key]


def shape_asts(rule: Rule, ops: Mapping[str, OpDecl]) -> dict[str, tuple[Any, ...]]:
    """Shape (ast dims) of every leaf operand of the match.

    An operand without an annotation takes its op's pattern, with the pattern's dim names mapped
    to the rule's names through the operands that are annotated (and, in a chain, through the shape
    of the inner node's result), so `conv2d(x, weight: [n, 1, kh, kw], bias)` gives bias [n].
    """
    results = {b.result for b in rule.bindings}
    out: dict[str, tuple[Any, ...]] = {}
    known: dict[str, tuple[Any, ...]] = {}
    # an operand read by several nodes of a chain may be annotated at any one of them
    annotated = {o.name: tuple(o.shape) for b in rule.bindings for o in b.operands
                 if o.name is not None and o.shape is not None}
    for b in reversed(rule.bindings):
        decl = ops[b.op]
        rename: dict[str, Any] = {}
        for o in b.operands:
            if o.name is None:
                continue
            shape = o.shape if o.shape is not None else annotated.get(o.name, known.get(o.name))
            if shape is not None:
                _map_names(decl.tensor_param(o.param).pattern.dims, shape, rename)
        for o in b.operands:
            if o.name is None or o.name in results or o.name in out:
                continue
            if o.shape is not None or o.name in annotated:
                out[o.name] = annotated[o.name]
            else:
                out[o.name] = _renamed(decl.tensor_param(o.param).pattern.dims, rename)
            known[o.name] = out[o.name]
            _map_names(decl.tensor_param(o.param).pattern.dims, out[o.name], rename)
        if b.result_shape is not None:
            known[b.result] = tuple(b.result_shape)
        elif not isinstance(decl.result, str):
            known[b.result] = _renamed(decl.result.dims, rename)
        else:
            first = next((o for o in b.operands if o.name), None)
            if first is not None and first.name in known:
                known[b.result] = known[first.name]
    return out


def _map_names(pattern: list[Any], shape: tuple[Any, ...], rename: dict[str, Any]) -> None:
    """Pattern dim names -> the rule's dims at the same positions (bare names and variadics only)."""
    def split(xs):
        for i, x in enumerate(xs):
            if isinstance(x, A.Variadic):
                return list(xs[:i]), x, list(xs[i + 1:])
        return list(xs), None, []

    pp, pv, ps = split(pattern)
    sp_, sv, ss = split(shape)
    pairs = list(zip(pp, sp_))
    if ps:
        tail = (sp_ + ([sv] if sv else []) + ss)[-len(ps):] if (len(sp_) + len(ss) + (1 if sv else 0)) >= len(ps) else []
        pairs += list(zip(ps, tail))
    if pv is not None and sv is not None and len(pp) == len(sp_) and len(ps) == len(ss):
        rename.setdefault("*" + pv.name, sv)
    elif pv is not None and sv is None and len(sp_) >= len(pp) + len(ps):
        rename.setdefault("*" + pv.name, tuple(sp_[len(pp):len(sp_) - len(ps)]))  # the run's dims
    for p, d in pairs:
        if isinstance(p, A.Name) and not isinstance(d, A.Variadic) and p.id not in rename:
            rename[p.id] = d


def _renamed(dims: list[Any], rename: dict[str, Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for d in dims:
        r = _rename(d, rename)
        if isinstance(r, tuple):
            out.extend(r)
            continue
        out.append(r)
    return tuple(out)


def _rename(d: Any, rename: dict[str, Any]) -> Any:
    if isinstance(d, A.Variadic):
        r = rename.get("*" + d.name)
        return r if r is not None else d
    if isinstance(d, A.Name):
        return rename.get(d.id, d)
    if isinstance(d, A.BinOp):
        return A.BinOp(d.op, _rename(d.left, rename), _rename(d.right, rename))
    return d


def rule_dims(rule: Rule, ops: Mapping[str, OpDecl]) -> tuple[list[str], list[str]]:
    """(dims, variadic runs) the prover sizes: every name in the leaf operands' shapes."""
    dims: list[str] = []
    runs: list[str] = []
    for s in shape_asts(rule, ops).values():
        for d in s:
            if isinstance(d, A.Variadic):
                if d.name not in runs:
                    runs.append(d.name)
                continue
            for sub in A.walk(d):
                if isinstance(sub, A.Name) and sub.id not in dims:
                    dims.append(sub.id)
    for b in rule.bindings:
        for d in b.result_shape or ():
            if isinstance(d, A.Variadic):
                if d.name not in runs:
                    runs.append(d.name)
            elif isinstance(d, A.Name) and d.id not in dims:
                dims.append(d.id)
    return dims, runs


def attr_table(rule: Rule, ops: Mapping[str, OpDecl]) -> list[tuple[str, int, str, Any]]:
    """(name in rule, binding index, attribute, required value ast or None)."""
    rows = []
    for bi, b in enumerate(rule.bindings):
        decl = ops[b.op]
        bound = dict(b.attrs)
        for a in decl.attr_params:
            v = bound.get(a.name)
            name = v.id if isinstance(v, A.Name) else a.name
            req = v if (v is not None and not isinstance(v, A.Name)) else None
            rows.append((name, bi, a.name, req))
    return rows


def channel_dim(rule: Rule, ops: Mapping[str, OpDecl]) -> str | None:
    """The dim whose axis the channel variable indexes."""
    shapes = shape_asts(rule, ops)
    for b in rule.bindings:  # an annotated result (`match y: [b, m] = reshape(...)`) names its dims too
        if b.result_shape is not None:
            shapes.setdefault(b.result, tuple(b.result_shape))
    for u in rule.info.channel_uses:
        s = shapes.get(u.tensor)
        if s is None:
            continue
        if u.block is not None:  # drop(t, axis, c, block): the axis is (channel dim) * block
            d = _block_channel_dim(s, u.axis, u.block)
        else:
            d = _axis_dim(s, u.axis)
        if d is not None:
            return d
    return None


def _block_channel_dim(s: tuple[Any, ...], axis: int, block: Any) -> str | None:
    """The channel dim of a block use: the axis's annotation `n * h * w` without the block's `h * w`."""
    from .semantics import _product_names

    fixed = [d for d in s if not isinstance(d, A.Variadic)]
    if len(fixed) != len(s) and axis >= 0:
        return None
    if not -len(s) <= axis < len(s):
        return None
    names, blk = _product_names(s[axis]), _product_names(block)
    if names is None or blk is None:
        return None
    rest = list(names)
    for b in blk:
        if b not in rest:
            return None
        rest.remove(b)
    return rest[0] if len(rest) == 1 else None


def _axis_dim(s: tuple[Any, ...], axis: int) -> str | None:
    if not -len(s) <= axis < len(s):
        return None
    fixed = [d for d in s if not isinstance(d, A.Variadic)]
    has_var = len(fixed) != len(s)
    if axis < 0:
        d = s[axis] if -axis <= len(s) else None
    else:
        d = s[axis] if (not has_var or all(not isinstance(x, A.Variadic) for x in s[: axis + 1])) else None
    return d.id if isinstance(d, A.Name) else None


def attr_variants(rule: Rule, ops: Mapping[str, OpDecl], symbolic: bool, alg: Any) -> list[dict[str, Any]]:
    """A few attribute settings that together try each interesting value of each free attribute."""
    table = attr_table(rule, ops)
    choices: list[tuple[str, list[Any]]] = []
    for name, bi, aname, req in table:
        decl = ops[rule.bindings[bi].op]
        a = decl.attr(aname)
        if req is not None:
            choices.append((name, [("ast", req)]))
            continue
        if a.kind == "float":
            choices.append((name, [("sym", name)]))
        elif a.kind == "ints":
            d = a.default if a.has_default and a.default is not None else [1, 1]
            if not d:
                choices.append((name, [d]))
            elif all(x == 0 for x in d):
                choices.append((name, [list(d), [1] * len(d), [2] * len(d)]))
            else:
                choices.append((name, [list(d), [2] * len(d)]))
        elif a.kind == "int":
            if a.has_default and a.default is None:
                choices.append((name, [None, 2]))
            elif not a.has_default:
                choices.append((name, [1, 2, 3, 5, 7]))
            else:
                d = a.default
                choices.append((name, [d, 2] if d == 1 else [d]))
        elif a.kind == "bool":
            choices.append((name, [bool(a.default), not bool(a.default)]))
        else:
            choices.append((name, [a.default]))
    n = max([len(c) for _, c in choices] + [1])
    return [{name: c[i % len(c)] for name, c in choices} for i in range(n)]


def build(
    rule: Rule,
    ops: Mapping[str, OpDecl],
    alg: Any,
    inst: Instance,
    valuation: Valuation,
    where: Where,
    value_vars: Mapping[str, Any],
    primed: str | None = None,
    first_diff: bool = False,
    validate_only: bool = False,
) -> Obligation:
    """Evaluate both sides of the rule at one instance."""
    ev = Evaluator(alg, ops, inst.channel)
    info = rule.info
    env: dict[str, Any] = {}
    for k, v in inst.dims.items():
        env[k] = v
    env.update(inst.attrs)
    env["__attrs__"] = {a: inst.attrs[n] for n, bi, a, _ in attr_table(rule, ops) if bi == 0 and n in inst.attrs}
    env.update(value_vars)
    if info.channel:
        env[info.channel] = inst.channel
    for name, e in where.value_subst:
        env[name] = ev.ev(e, env)
    leaves: dict[str, Tensor] = {}
    shapes = shape_asts(rule, ops)
    subst_by_tensor: dict[str, list[tuple[A.Index, A.Expr]]] = {}
    for ix, val in where.substitutions:
        subst_by_tensor.setdefault(ix.base, []).append((ix, val))
    bool_tensors = _bool_tensors(rule, ops)
    int_tensors = _int_tensors(rule, ops)
    small = min([v for v in inst.dims.values() if isinstance(v, int)] + [2])

    conflicts: list[Any] = []
    busy: set = set()

    def make_leaf(name: str, shape: tuple, tag: str) -> Tensor:
        subs = subst_by_tensor.get(name, [])
        boolean = name in bool_tensors

        def get(idx: tuple) -> Any:
            key = (name, idx)
            if key in busy:  # a condition reading the entry it defines: the entry is free
                return valuation.entry(tag, idx, boolean)
            busy.add(key)
            try:
                return _get(idx)
            finally:
                busy.discard(key)

        def _get(idx: tuple) -> Any:
            found = []
            for pat, val in subs:
                bind = _match(pat, idx, env, ev, len(shape))
                if bind is not None:
                    found.append(ev.ev(val, {**env, **bind}))
            if found:
                # two conditions fixing the same entry must agree (else the conditions are vacuous)
                for other in found[1:]:
                    conflicts.append(alg.sp.Eq(found[0], other) if alg.symbolic else found[0] == other)
                return found[0]
            if name in int_tensors:  # integer operands (indices) are concrete positions or generic ones
                if alg.symbolic:
                    return alg.sp.Symbol(f"{tag}{list(idx)}", integer=True, nonnegative=True)
                return (sum(i * 7 + 3 for i in idx if isinstance(i, int))) % small
            return valuation.entry(tag, idx, boolean)

        return Tensor(name, shape, get, "bool" if boolean else "T")

    runs = run_names(rule)
    private = run_private_dims(rule)
    for name, s in shapes.items():
        shape = _eval_shape(s, env, ev)
        if name in runs:  # a run of operands `us...`: inst.dims["#us"] of them, each of this shape
            # dims only the run names differ from operand to operand (the engine matches a run of
            # operands of different widths), so each one gets its own length there
            items = []
            mine = private.get(name, set())
            for k in range(int(inst.dims.get("#" + name, 1))):
                shape_k = shape
                if k and mine:
                    env_k = {**env, **{d: env[d] + k for d in mine if isinstance(env.get(d), int)}}
                    shape_k = _eval_shape(s, env_k, ev)
                leaves[f"{name}#{k}"] = make_leaf(name, shape_k, f"{name}#{k}")
                items.append(leaves[f"{name}#{k}"])
            env[name] = items
            continue
        leaves[name] = make_leaf(name, shape, name)
        env[name] = leaves[name]
    # inner bindings first: each result feeds the binding before it
    for b in reversed(rule.bindings):
        env[b.result] = _apply_binding(rule, b, ops, ev, env, inst)
    _check_channel_axes(rule, ops, env, inst, ev)
    pairs: list[tuple[str, Any, Any]] = []
    if first_diff:  # exact evaluation: stop at the first differing position
        class _Pairs(list):
            def append(self, item):
                super().append(item)
                if item[1] != item[2]:
                    raise _Stop

        pairs = _Pairs()
    if validate_only:  # shapes and op constraints only: one pair is enough
        class _One(list):
            def append(self, item):
                super().append(item)
                raise _Stop

        pairs = _One()
    c = rule.conclusion
    try:
        _conclude(rule, ops, alg, ev, env, leaves, valuation, bool_tensors, where, c, pairs, inst)
    except _Stop:
        pass
    assumptions = [cond_value(a, env, ev) for a in where.assumptions]
    assumptions += [cond_value(w, local, ev) for w, local in ev.assumed]
    assumptions += conflicts
    return Obligation(inst, list(pairs), assumptions, env, leaves)


class _Stop(Exception):
    pass


def _conclude(rule, ops, alg, ev, env, leaves, valuation, bool_tensors, where, c, pairs, inst) -> None:
    root = env[rule.root.result]
    excluded = [u for u in where.unused]

    def skip(name: str, idx: tuple, shape: tuple) -> bool:
        for u in excluded:
            if u.base == name and _match(u, idx, env, ev, len(shape)) is not None:
                return True
        return False

    if isinstance(c, ForwardFact):
        t = env.get(c.target.base)
        if not isinstance(t, Tensor):
            raise SemanticsError(f"{c.target.base} is not a tensor")
        covered = 0
        for idx in points(t.shape, alg):
            bind = _match(c.target, idx, env, ev, len(t.shape))
            if bind is None:
                continue
            covered += 1
            pairs.append((f"{c.target.base}{_fmt(idx)}", t[idx], ev.ev(c.value, {**env, **bind})))
        if not covered:
            raise SemanticsError(f"the conclusion {A.show(c.target)} names no position of {c.target.base}")
    elif isinstance(c, BackwardFact):
        # the same match with the named channels replaced by other values
        env2 = dict(env)
        for tgt in c.targets:
            orig = leaves[tgt.base]

            def get2(idx: tuple, orig=orig, tgt=tgt) -> Any:
                if _match(tgt, idx, env, ev, len(orig.shape)) is not None:
                    return valuation.entry(tgt.base + "'", idx, tgt.base in bool_tensors)
                return orig[idx]

            env2[tgt.base] = Tensor(tgt.base + "'", orig.shape, get2)
        for b in reversed(rule.bindings):
            env2[b.result] = _apply_binding(rule, b, ops, ev, env2, inst)
        root2 = env2[rule.root.result]
        for idx in points(root.shape, alg):
            if skip(rule.root.result, idx, root.shape):
                continue
            pairs.append((f"{rule.root.result}{_fmt(idx)}", root[idx], root2[idx]))
        env["__primed__"] = env2
    elif isinstance(c, Rewrite):
        lhs = ev.tensor_expr(c.target, env)
        rhs = ev.tensor_expr(c.value, env)
        if not isinstance(rhs, Tensor) or tuple(rhs.shape) != tuple(lhs.shape):
            raise ShapeMismatch(
                f"the rewrite's shapes differ: {A.show(c.target)} is {_fmt(lhs.shape)}, the new node gives "
                f"{_fmt(getattr(rhs, 'shape', ()))}")
        env["__rhs__"] = rhs
        for idx in points(lhs.shape, alg):
            full = idx
            if isinstance(c.target, A.Call):  # drop(y, axis, c): map back to y's positions for `unused`
                full = None
            if full is not None and skip(rule.root.result, full, root.shape):
                continue
            pairs.append((f"{A.show(c.target)}{_fmt(idx)}", lhs[idx], rhs[idx]))


class ShapeMismatch(SemanticsError):
    pass


def _check_channel_axes(rule: Rule, ops: Mapping[str, OpDecl], env: Mapping[str, Any], inst: Instance,
                        ev: Evaluator) -> None:
    """Every axis the channel variable indexes must have the channel dim's length (times the block of
    a block use)."""
    cdim = channel_dim(rule, ops)
    if cdim is None or cdim not in inst.dims:
        return
    want = inst.dims[cdim]
    for u in rule.info.channel_uses:
        t = env.get(u.tensor)
        if not isinstance(t, Tensor) or not t.shape or not -len(t.shape) <= u.axis < len(t.shape):
            if isinstance(t, Tensor):
                raise ShapeMismatch(f"the channel variable indexes axis {u.axis} of {u.tensor}, which has rank "
                                    f"{len(t.shape)}")
            continue
        if u.block is not None:
            from .semantics import Merged

            ext, blk = t.shape[u.axis], ev.alg.as_int(ev.ev(u.block, env))
            if isinstance(ext, int) and isinstance(want, int) and blk is not None and ext == want * blk:
                continue
            if isinstance(ext, Merged) and ext.factors[0] == want:
                continue
            raise ShapeMismatch(f"the channel variable indexes blocks of {A.show(u.block)} on axis {u.axis} of "
                                f"{u.tensor} (length {ext}) and the channel axis of length {want}")
        if t.shape[u.axis] != want:
            raise ShapeMismatch(f"the channel variable indexes axis {u.axis} of {u.tensor} (length "
                                f"{t.shape[u.axis]}) and the channel axis of length {want}: one rule, one channel axis")


def _int_tensors(rule: Rule, ops: Mapping[str, OpDecl]) -> set[str]:
    out = set()
    for b in rule.bindings:
        decl = ops[b.op]
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if o.name and (p.pattern.dtype in ("I", "i64", "i32", "i16", "i8", "u8")):
                out.add(o.name)
    return out


def _bool_tensors(rule: Rule, ops: Mapping[str, OpDecl]) -> set[str]:
    out = set()
    for b in rule.bindings:
        decl = ops[b.op]
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if o.name and p.pattern.dtype in ("bool",):
                out.add(o.name)
    return out


def run_names(rule: Rule) -> list[str]:
    """Names the match binds to runs of operands (`us...`)."""
    return [o.name for b in rule.bindings for o in b.operands if o.run and o.name]


def _apply_binding(rule: Rule, b: Any, ops: Mapping[str, OpDecl], ev: Evaluator, env: dict, inst: Instance) -> Tensor:
    decl = ops[b.op]
    tensors: dict[str, Any] = {}
    for o in b.operands:
        p = decl.tensor_param(o.param)
        if p is not None and p.variadic:  # the operands in order, runs expanded
            v = env[o.name]
            tensors.setdefault(o.param, []).extend(v if isinstance(v, list) else [v])
        else:
            tensors[o.param] = env[o.name] if o.name else None
    attrs: dict[str, Any] = {}
    bi = rule.bindings.index(b)
    for name, bidx, aname, req in attr_table(rule, ops):
        if bidx == bi:
            attrs[aname] = inst.attrs[name] if name in inst.attrs else env.get(name)
    return ev.op(decl, tensors, attrs)


def _eval_shape(s: tuple[Any, ...], env: Mapping[str, Any], ev: Evaluator) -> tuple:
    out: list[Any] = []
    for d in s:
        if isinstance(d, A.Variadic):
            out.extend(env["*" + d.name])
        else:
            out.append(ev.shape_value(d, env))
    return tuple(out)


def _match(pat: A.Index, idx: tuple, env: Mapping[str, Any], ev: Evaluator, rank: int) -> dict | None:
    """Does position idx fall in the slice `pat` (with `*B`, `:`, c, constants)? Returns bindings."""
    bind: dict[str, Any] = {}
    n_fixed = sum(1 for i in pat.indices if not isinstance(i, A.Variadic))
    if n_fixed == len(pat.indices) and n_fixed != rank:
        return None  # a pattern of another rank names no position
    pos = 0
    for i in pat.indices:
        if isinstance(i, A.Variadic):
            k = rank - n_fixed
            bind["*" + i.name] = tuple(idx[pos:pos + k])
            pos += k
            continue
        if pos >= len(idx):
            return None
        v = idx[pos]
        pos += 1
        if isinstance(i, A.Slice):
            continue
        want = ev.alg.index(ev.ev(i, {**env, **bind}))
        if want is v or want == v:
            continue
        if getattr(ev.alg, "symbolic", False) and not (isinstance(want, int) and isinstance(v, int)):
            # a generic index stands for positions other than the channel
            return None
        return None
    return bind


def cond_value(c: A.Cond, env: Mapping[str, Any], ev: Evaluator) -> Any:
    """A side condition's truth (exact tiers) or a sympy boolean (symbolic tiers)."""
    alg = ev.alg
    if isinstance(c, A.BoolOp):
        vals = [cond_value(x, env, ev) for x in c.operands]
        if not alg.symbolic:
            return all(vals) if c.op == "and" else any(vals) if c.op == "or" else not vals[0]
        sp = alg.sp
        return sp.And(*vals) if c.op == "and" else sp.Or(*vals) if c.op == "or" else sp.Not(vals[0])
    if isinstance(c, A.Quant):
        ext = ev.extent_of(c.upper, env)
        if isinstance(ext, Extent):
            raise NeedConcrete({ext.dim})
        vals = [cond_value(c.body, {**env, c.var: i}, ev) for i in range(ext)]
        if not alg.symbolic:
            return all(vals) if c.kind == "forall" else any(vals)
        sp = alg.sp
        return sp.And(*vals) if c.kind == "forall" else sp.Or(*vals)
    if isinstance(c, A.Cmp):
        a, b = ev.ev(c.left, env), ev.ev(c.right, env)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return _tensor_cmp(c.op, a, b, ev)
        if not alg.symbolic:
            return alg.compare(c.op, a, b)
        sp = alg.sp
        a, b = sp.sympify(a), sp.sympify(b)
        return {"==": sp.Eq, "!=": sp.Ne, "<": sp.Lt, "<=": sp.Le, ">": sp.Gt, ">=": sp.Ge}[c.op](a, b)
    if isinstance(c, A.Unused):
        return True if not alg.symbolic else alg.sp.true
    raise SemanticsError(f"cannot use {A.show(c)} as a condition")


def _tensor_cmp(op: str, a: Any, b: Any, ev: Evaluator) -> Any:
    alg = ev.alg
    t = a if isinstance(a, Tensor) else b
    vals = []
    for idx in points(t.shape, alg):
        x = a[idx] if isinstance(a, Tensor) else a
        y = b[idx] if isinstance(b, Tensor) else b
        if alg.symbolic:
            sp = alg.sp
            vals.append({"==": sp.Eq, "!=": sp.Ne, "<": sp.Lt, "<=": sp.Le, ">": sp.Gt, ">=": sp.Ge}[op](x, y))
        else:
            vals.append(alg.compare(op, x, y))
    if alg.symbolic:
        return alg.sp.And(*vals)
    return all(vals)


def _fmt(idx: tuple) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]"


# ---- instances ------------------------------------------------------------------------------------
SIZE_POOL = (2, 4, 1, 5)


def concrete_instances(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg_factory: Callable[[], Any],
                       configs: list[tuple[int, str]], seed: int = 0, violate: Any = None,
                       fixed_variants: list[dict[str, Any]] | None = None) -> list[Instance]:
    """One valid instance per (channel dim size, channel position) config: `start`, `middle`, `end`."""
    rng = random.Random(seed)
    cdim = channel_dim(rule, ops)
    dims, variadics = rule_dims(rule, ops)
    out: list[Instance] = []
    if violate is not None and fixed_variants is None:
        # several combinations of attribute values that violate the condition, so a needed condition
        # meets its counter-case (one instance per combination)
        found: list[Instance] = []
        combos = _all_variants(rule, ops)
        random.Random(seed).shuffle(combos)
        for v in combos:
            found += concrete_instances(rule, ops, where, alg_factory, configs[:1], seed, violate, [v])
            if len(found) >= 6:
                break
        return found
    variants = attr_variants(rule, ops, False, None)
    if fixed_variants is not None:
        variants = fixed_variants
    for ci, (csize, pos) in enumerate(configs):
        degenerate = csize == 1
        attrs_choice = variants[ci % len(variants)]
        found = None
        others = [d for d in dims if d != cdim]
        tries: list[dict[str, int]] = []
        if degenerate:
            tries.append({d: 1 for d in others})
        pool = [s for s in SIZE_POOL if s != csize]
        tries.append({d: pool[i % len(pool)] for i, d in enumerate(others)})
        for pool_ in ([2, 3], [1, 2, 3], [1, 2, 3, 4, 5]):
            for _ in range(20):
                tries.append({d: rng.choice(pool_ if not degenerate else [1, 2]) for d in others})
        cands = []
        for t in tries:
            for av in ([attrs_choice] + ([] if fixed_variants else [v for v in variants if v is not attrs_choice])):
                inst = _instance(rule, ops, where, alg_factory, cdim, csize, pos, t, variadics, av, degenerate,
                                 violate)
                if inst is not None:
                    cands.append((inst, av is attrs_choice))
                    break
            if len(cands) >= 12:
                break
        cands.sort(key=lambda x: (not x[1], _cost(x[0]) * (1 if _distinct(x[0]) else 2)))
        for inst, _ in cands:  # the cheapest candidate whose full evaluation is well defined
            if _evaluates(rule, ops, where, alg_factory, inst):
                found = inst
                break
        if found is not None:
            out.append(found)
    return out


def _distinct(inst: Instance) -> bool:
    sizes = [v for k, v in inst.dims.items() if isinstance(v, int) and v > 1 and not k.startswith("#")]
    return len(sizes) == len(set(sizes))


def _cost(inst: Instance) -> int:
    n = 1
    for k, v in inst.dims.items():
        if k.startswith("#"):
            continue
        if isinstance(v, int):
            n *= max(v, 1)
        elif isinstance(v, tuple):
            for x in v:
                n *= x if isinstance(x, int) else 1
    return n


def _is_variadic_name(rule: Rule, ops: Mapping[str, OpDecl], name: str) -> bool:
    for s in shape_asts(rule, ops).values():
        for d in s:
            if isinstance(d, A.Variadic) and d.name == name:
                return True
    for b in rule.bindings:
        for d in b.result_shape or ():
            if isinstance(d, A.Variadic) and d.name == name:
                return True
    return False


def _all_variants(rule: Rule, ops: Mapping[str, OpDecl], cap: int = 48) -> list[dict[str, Any]]:
    zipped = attr_variants(rule, ops, False, None)
    names = list(zipped[0]) if zipped else []
    choices = []
    for n in names:
        vals = []
        for v in zipped:
            if v[n] not in vals:
                vals.append(v[n])
        choices.append(vals)
    out = [dict(zip(names, combo)) for combo in itertools.product(*choices)]
    if len(out) > cap:  # a fixed-seed sample, so every value of every attribute is likely to appear
        out = [out[0]] + random.Random(len(out)).sample(out[1:], cap - 1)
    return out if out else [{}]


def variant_instances(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg_factory, seed: int = 0,
                      cap: int = 16) -> list[Instance]:
    """One instance per combination of attribute values (at most `cap`), for the random test tier."""
    out = []
    combos = _all_variants(rule, ops, cap)
    if len(combos) <= 1:
        return out
    for combo in combos:
        out += concrete_instances(rule, ops, where, alg_factory, [(4, "middle")], seed, fixed_variants=[combo])
    return out


def _evaluates(rule, ops, where, alg_factory, inst) -> bool:
    alg = alg_factory()
    try:
        build(rule, ops, alg, inst, Valuation(alg, lambda t, i: Fraction(1)), where,
              {v: alg.num(1) for v in rule.info.values})
    except (InstanceError, ZeroDivisionError):
        return False
    return True


_UNSET = object()


def _instance(rule, ops, where, alg_factory, cdim, csize, pos, sizes, variadics, attrs_choice, degenerate,
              violate=None):
    alg = alg_factory()
    dims: dict[str, Any] = dict(sizes)
    if cdim is not None:
        dims[cdim] = csize
    for v in variadics:
        dims["*" + v] = (1,) if degenerate else (2,)
    c = {"start": 0, "middle": csize // 2, "end": csize - 1}[pos] if cdim is not None else None
    # runs of operands (`us...`): none, one or two operands, varied across instances and runs
    base = {"start": 0, "middle": 1, "end": 2}[pos] if not degenerate else 1
    for k, r in enumerate(run_names(rule)):
        dims["#" + r] = (base + k) % 3
    ev = Evaluator(alg, ops, c)
    attrs: dict[str, Any] = {}
    env: dict[str, Any] = dict(dims)
    for name, v in attrs_choice.items():
        if isinstance(v, tuple) and v[0] == "ast":
            attrs[name] = _UNSET  # filled below from the required value
        elif isinstance(v, tuple) and v[0] == "sym":
            attrs[name] = alg.num(Fraction(1, 10 ** 5)) if not alg.symbolic else alg.sp.Symbol(name, positive=True)
        else:
            attrs[name] = v
    env.update(attrs)
    # `name == value` conditions (and required attribute values) choose the instance
    eqs = [(A.Name(n), v[1]) for n, v in attrs_choice.items() if isinstance(v, tuple) and v[0] == "ast"]
    for s in where.static:
        if isinstance(s, A.Cmp) and s.op == "==" and isinstance(s.left, A.Name):
            eqs.append((s.left, s.right))
    for b in rule.bindings:
        for w in ops[b.op].where:
            if isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Name) and w.left.id in dims:
                eqs.append((w.left, w.right))
    for _ in range(3):
        for lhs, rhs in eqs:
            try:
                val = ev.ev(rhs, env)
            except (SemanticsError, KeyError, TypeError):
                continue
            if isinstance(val, list):
                val = [int(x) if alg.as_int(x) is not None else x for x in val]
            elif alg.as_int(val) is not None:
                val = alg.as_int(val)
            if lhs.id == cdim:
                continue
            env[lhs.id] = val
            if lhs.id in dims:
                dims[lhs.id] = val
            else:
                attrs[lhs.id] = val
    if any(v is _UNSET for v in attrs.values()):
        return None
    if any(isinstance(v, int) and v < 1 for k, v in dims.items() if not k.startswith("#")):
        return None
    inst = Instance(dims, attrs, c, _label(dims, attrs, c))
    try:
        for s in where.static:
            if not ev.holds(s, env):
                return None
        if violate is not None and ev.holds(violate, env):
            return None
        build(rule, ops, alg, inst, Valuation(alg, lambda t, i: Fraction(1)) if not alg.symbolic else Valuation(alg),
              where, {v: alg.num(1) for v in rule.info.values}, None, validate_only=True)
    except (InstanceError, ZeroDivisionError):
        return None
    except SemanticsError as e:
        if isinstance(e, ShapeMismatch):
            raise
        raise
    return inst


def _label(dims: Mapping[str, Any], attrs: Mapping[str, Any], c: Any) -> str:
    parts = [f"{k}={v}" for k, v in dims.items() if not k.startswith(("*", "#"))]
    parts += [f"len({k[1:]}...)={v}" for k, v in dims.items() if k.startswith("#")]
    parts += [f"{k[1:]}={list(v)}" for k, v in dims.items() if k.startswith("*")]
    parts += [f"{k}={v}" for k, v in attrs.items() if not hasattr(v, "free_symbols") and not isinstance(v, Fraction)]
    if c is not None:
        parts.append(f"c={c}")
    return ", ".join(parts)


def parametric_instance(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg: Any, base: Instance,
                        concrete: set[str]) -> Instance:
    """Symbolic sizes: the channel dim as {c} + R, other dims generic, `concrete` ones from `base`."""
    cdim = channel_dim(rule, ops)
    dims: dict[str, Any] = {}
    for k, v in base.dims.items():
        if k.startswith("#"):  # the length of a run of operands stays as it is
            dims[k] = v
        elif k.startswith("*"):
            name = k[1:]
            dims[k] = v if name in concrete else (Extent(name, "gen"),)
        elif k in concrete:
            dims[k] = v
        elif k == cdim:
            dims[k] = Extent(k, "full")
        else:
            dims[k] = Extent(k, "gen")
    attrs = {}
    for k, v in base.attrs.items():
        attrs[k] = alg.sp.Symbol(k, positive=True) if isinstance(v, Fraction) else v
        if isinstance(v, int) and k in base.dims:
            attrs[k] = v
    # an attribute tied to a dim (n_total = n) follows the dim; a list of dims (a reshape's target
    # shape [b, n * h * w]) is evaluated over the symbolic sizes
    from .semantics import Evaluator

    for s in where.static:
        if isinstance(s, A.Cmp) and s.op == "==" and isinstance(s.left, A.Name) and s.left.id in attrs:
            if isinstance(s.right, A.Name) and s.right.id in dims:
                attrs[s.left.id] = dims[s.right.id]
            elif isinstance(s.right, A.ListExpr) and any(
                isinstance(n, A.Name) and n.id in dims for n in A.walk(s.right)
            ):
                attrs[s.left.id] = Evaluator(alg, ops).ev(s.right, {**dims, **attrs})
    c = alg.sp.Symbol("c", integer=True, nonnegative=True) if cdim is not None else None
    if cdim in concrete:
        raise NeedConcrete({cdim})
    return Instance(dims, attrs, c, _label({k: v for k, v in dims.items()}, attrs, "c"))
