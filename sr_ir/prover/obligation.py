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
from typing import Any, Callable, Iterable, Mapping

from ..lang import ast as A
from ..lang.rule import BackwardFact, ForwardFact, Rewrite, Rule, run_private_dims
from ..ir.opdecl import DTYPE_CLASSES, OpDecl
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
            if any(n == c.left.id for n, _ in w.value_subst):
                w.assumptions.append(c)  # a second value for k must agree with the first (else vacuous)
            else:
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
    combo: dict[str, Any] | None = field(default=None, compare=False)  # the attribute choice it was built from
    ill_typed: str | None = field(default=None, compare=False)  # why the conclusion cannot be built here
    bools: tuple[str, ...] = ()  # operands of a free dtype (a mask: bool or additive) taken boolean here
    uniform_runs: bool = False  # the operands of a run all the same size (else each its own, see build)

    def record(self) -> dict[str, Any]:
        """The instance as JSON data (certificates list every instance a tier checked)."""
        def num(v: Any) -> Any:
            if isinstance(v, Fraction):
                return str(v) if v.denominator != 1 else int(v)
            if isinstance(v, (list, tuple)):
                return [num(x) for x in v]
            if v is None or isinstance(v, (bool, int, str)):
                return v
            return str(v)

        dims = {(f"len({k[1:]}...)" if k.startswith("#") else k): num(v) for k, v in self.dims.items()}
        out = {"dims": dims, "attrs": {k: num(v) for k, v in self.attrs.items()}, "channel": num(self.channel)}
        if self.bools:
            out["boolean"] = list(self.bools)
        return out

    def with_bools(self, names: Iterable[str]) -> "Instance":
        """The same sizes and attributes with these operands boolean (a mask that keeps or drops keys)."""
        from dataclasses import replace

        names = tuple(names)
        return replace(self, bools=names, label=f"{self.label}, boolean {', '.join(names)}")


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
                continue
            for sub in A.walk(d):  # a merged axis `[l, b * h, d]` names its factors
                if isinstance(sub, A.Name) and sub.id not in dims:
                    dims.append(sub.id)
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
    from .semantics import product_names

    fixed = [d for d in s if not isinstance(d, A.Variadic)]
    if len(fixed) != len(s) and axis >= 0:
        return None
    if not -len(s) <= axis < len(s):
        return None
    names, blk = product_names(s[axis]), product_names(block)
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
    elif axis >= len(s):  # no such axis: the rule is reported ill-typed where it is evaluated
        return None
    else:
        d = s[axis] if (not has_var or all(not isinstance(x, A.Variadic) for x in s[: axis + 1])) else None
    return d.id if isinstance(d, A.Name) else None


# Float attributes get a value of their own (distinct within an instance, varied across instances):
# one shared value would let a rule that confuses two of them (eps for s2, s1 for s2) prove.
FLOAT_POOL = (Fraction(1, 7), Fraction(3, 11), Fraction(2, 5), Fraction(5, 13), Fraction(3, 2),
              Fraction(7, 17), Fraction(4, 19), Fraction(9, 23), Fraction(5, 3), Fraction(6, 29))


def float_value(k: int, salt: int) -> Fraction:
    """The value of the k-th float attribute at the instance numbered `salt`."""
    return FLOAT_POOL[(k + 3 * salt) % len(FLOAT_POOL)]


def _list_width(decl: OpDecl) -> int:
    """How long an op's per-axis list attributes are (from the defaults that give a length)."""
    widths = [len(a.default) for a in decl.attr_params
              if a.kind == "ints" and a.has_default and isinstance(a.default, list) and a.default]
    return max(widths) if widths else 2


def _per_element(base: list[int], bumps: tuple[int, ...]) -> list[list[int]]:
    """`base`, each constant list of `bumps`, and every list that changes one element of base:
    a condition or a rewrite that reads only one element (padding[0]) meets its counter-case."""
    n = len(base)
    out = [list(base)] + [[b] * n for b in bumps if [b] * n != list(base)]
    if n >= 2:
        for i in range(n):
            for b in bumps[:1]:
                v = list(base)
                v[i] = b
                out.append(v)
        out.append([bumps[-1]] + list(bumps[:1]) * (n - 1))  # both nonzero, unequal
    seen, uniq = set(), []
    for v in out:
        if tuple(v) not in seen:
            seen.add(tuple(v))
            uniq.append(v)
    return uniq


# List attributes without a default, given values that follow the first operand's shape (resolved
# per instance): its trailing sizes (a normalized_shape, a pooling output size), axis lists (a
# permutation, reduced dims), reshape targets. Template checks use them; rules pin such attributes.
DERIVED = {"ints": ("last", "last2", "axes-last", "axes-tail2", "axes-rot", "axes-rev"),
           "dims": ("flat", "split")}


def attr_values(decl: OpDecl, a: Any, derived: bool = False) -> list[Any]:
    """The values the prover tries for one attribute of an op ("sym" for a float: its value is
    assigned per instance; "derived": computed from the instance's shapes)."""
    if a.kind == "float":  # an optional one (`scale: float? = none`) is also tried absent
        return ([None] if a.has_default and a.default is None else []) + [("sym", a.name)]
    if a.kind == "dims" and derived:
        return [("derived", k) for k in DERIVED["dims"]]
    if a.kind == "ints":
        d = a.default if a.has_default and a.default is not None else None
        width = _list_width(decl)
        if d is None:  # a list without a default (kernel_size): every element varied
            return _per_element([1] * width, (2,)) + ([("derived", k) for k in DERIVED["ints"]] if derived else [])
        if not d:  # `[]` (a pooling stride: the kernel size) or an explicit stride, per element
            return [[]] + _per_element([1] * width, (2,))
        if all(x == 0 for x in d):  # padding-like: one-sided and both-sided
            return _per_element(list(d), (1, 2))
        return _per_element(list(d), (2,))
    if a.kind == "int":
        if a.has_default and a.default is None:
            return [None, 2]
        if not a.has_default:
            return [1, 2, 3, 5, 7, 0, -1]
        return [a.default, 2] if a.default == 1 else [a.default]
    if a.kind == "bool":
        return [bool(a.default), not bool(a.default)]
    return [a.default]


def _attr_choices(rule: Rule, ops: Mapping[str, OpDecl], derived: bool = False) -> list[tuple[str, list[Any]]]:
    choices: list[tuple[str, list[Any]]] = []
    for name, bi, aname, req in attr_table(rule, ops):
        decl = ops[rule.bindings[bi].op]
        if req is not None:
            choices.append((name, [("ast", req)]))
        else:
            choices.append((name, attr_values(decl, decl.attr(aname), derived)))
    return choices


def attr_variants(rule: Rule, ops: Mapping[str, OpDecl], derived: bool = False,
                  where: Where | None = None) -> list[dict[str, Any]]:
    """Attribute settings that together try every value of every free attribute (the covering part
    of `_all_variants`)."""
    combos, n_cover = _all_variants(rule, ops, 64, derived, where)
    return combos[:max(n_cover, 1)]


def _vkey(v: Any) -> Any:
    return repr(v)


def _attr_only_ok(rule: Rule, ops: Mapping[str, OpDecl], combo: Mapping[str, Any], static: list) -> bool:
    """False when a condition that reads attributes only (the rule's `p[0] == 0`, an op's
    `padding[0] * 2 <= kernel_size[0]`) fails for this combination; anything that needs dims is
    left to the instance search. Conditions `name == value` are not filters: they choose the value."""
    from .algebra import Exact

    ev = Evaluator(Exact("standin"), ops)
    env = {k: v for k, v in combo.items() if not isinstance(v, tuple)}

    def holds(c: Any, env: Mapping[str, Any]) -> bool:
        try:
            return bool(ev.holds(c, env))
        except Exception:  # reads a dim or a value: not decidable here
            return True

    for s in static:
        if isinstance(s, A.Cmp) and s.op == "==" and isinstance(s.left, A.Name):
            continue
        if not holds(s, env):
            return False
    table = attr_table(rule, ops)
    for bi, b in enumerate(rule.bindings):
        local = {aname: env[name] for name, bidx, aname, _ in table if bidx == bi and name in env}
        for w in ops[b.op].where:
            if not holds(w, local):
                return False
    return True


_VARIANTS: dict[tuple, tuple[list[dict[str, Any]], int]] = {}


def _all_variants(rule: Rule, ops: Mapping[str, OpDecl], cap: int = 48, derived: bool = False,
                  where: Where | None = None) -> tuple[list[dict[str, Any]], int]:
    """Combinations of attribute values: first a covering set (every value of every attribute
    appears in at least one combination that the attribute-only conditions allow), then a
    fixed-seed sample of the others, `cap` in all. Returns (combinations, size of the covering set)."""
    static = list((where or classify_where(rule)).static)
    key = (id(ops), rule.text(), cap, derived, tuple(A.show(s) for s in static))
    if key not in _VARIANTS:
        if len(_VARIANTS) > 512:
            _VARIANTS.clear()
        _VARIANTS[key] = _variants(rule, ops, cap, derived, static)
    combos, n = _VARIANTS[key]
    return [dict(c) for c in combos], n


def _variants(rule: Rule, ops: Mapping[str, OpDecl], cap: int, derived: bool,
              static: list) -> tuple[list[dict[str, Any]], int]:
    # an attribute that a condition `name == expr` sets takes that value in every instance: its
    # other values would only multiply identical combinations
    fixed = {s.left.id for s in static if isinstance(s, A.Cmp) and s.op == "==" and isinstance(s.left, A.Name)}
    choices = [(n, c[:1] if n in fixed else c) for n, c in _attr_choices(rule, ops, derived)]
    names = [n for n, _ in choices]
    allc = [dict(zip(names, combo)) for combo in itertools.product(*[c for _, c in choices])]
    ok = [c for c in allc if _attr_only_ok(rule, ops, c, static)] or allc[:1]
    if not ok:
        return [{}], 1
    rng = random.Random(len(ok))
    pool = ok[1:]
    rng.shuffle(pool)
    pool = [ok[0]] + pool  # the defaults first
    def pairs(c: Mapping[str, Any]) -> set:
        return {(n, _vkey(c[n])) for n in names}

    uncovered = set().union(*[pairs(c) for c in pool])
    chosen: list[dict[str, Any]] = []
    while uncovered and len(chosen) < cap:
        best = max(pool, key=lambda c: len(pairs(c) & uncovered))
        gain = pairs(best) & uncovered
        if not gain:
            break
        chosen.append(best)
        uncovered -= gain
    n_cover = len(chosen)
    for c in pool:
        if len(chosen) >= cap:
            break
        if not any(c is x for x in chosen):
            chosen.append(c)
    return chosen, n_cover


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
    induction: bool = True,
) -> Obligation:
    """Evaluate both sides of the rule at one instance.

    A rule whose matched node is a recurrent op (sr_ir/lang/recurrence.py) is proved by induction over
    the steps, for every sequence length: the obligation is the conjunction of the base case (the
    initial states, stacked, satisfy the conclusion) and the step (one step from states that satisfy
    it gives an output and states that do; `_Induction`). `induction=False` unrolls the steps instead
    (a template check compares the whole sequence)."""
    args = (rule, ops, alg, inst, valuation, where, value_vars, primed, first_diff, validate_only)
    if ops[rule.root.op].recurrence is None or not induction:
        return _build(*args)
    parts = [_build(*args, recurrence=_Induction(rule, mode)) for mode in ("init", "step")]
    pairs = [(f"{mode}: {label}", a, b) for mode, ob in zip(("initial state", "step"), parts)
             for label, a, b in ob.pairs]
    leaves = {**parts[0].leaves, **parts[1].leaves}
    return Obligation(inst, pairs, parts[0].assumptions + parts[1].assumptions, parts[1].env, leaves)


class _Induction:
    """How an induction obligation reads the recurrent ops of a rule (Evaluator.recurrence).

    Mode "init": every recurrent op's result is its initial state, stacked along the step axis (one
    position per carried tensor). Mode "step": the matched op takes one step from a free state E (the
    carried tensors stacked likewise: a leaf `y@state`); where the rule concludes a fact, E satisfies
    it (the induction hypothesis); the new node of a rewrite takes one step from E transformed as its
    left side says (`drop(y, -1, c)`: E without channel c; `y`: E itself). Both results stack the
    step's output and the states after it, so the rule's own conclusion, checked on them, says that
    the output and the next states correspond: with the base case, for every step."""

    def __init__(self, rule: Rule, mode: str):
        self.rule = rule
        self.mode = mode
        self.calls = 0
        self.state: Tensor | None = None
        self.env: dict[str, Any] = {}
        self.valuation: Valuation | None = None
        self.leaves: dict[str, Tensor] = {}

    def pre_states(self, ev: Evaluator, decl: OpDecl, state_shape: tuple, axis: int) -> dict[str, Tensor]:
        self.calls += 1
        names = decl.recurrence.names
        c = self.rule.conclusion
        root = self.rule.root.result
        if self.calls == 1:  # the matched node: a free state (satisfying a concluded fact)
            shape = tuple(state_shape[:axis]) + (len(names),) + tuple(state_shape[axis:])
            tag = f"{root}@state"

            def get(idx: tuple) -> Any:
                if isinstance(c, ForwardFact):
                    bind = _match(c.target, idx, self.env, ev, len(shape))
                    if bind is not None:
                        return ev.ev(c.value, {**self.env, **bind})
                return self.valuation.entry(tag, idx, False)

            self.state = Tensor(tag, shape, get)
            self.leaves[tag] = self.state
            stacked = self.state
        elif self.calls == 2 and isinstance(c, Rewrite):
            if isinstance(c.target, A.Call):
                ax = ev.ev(c.target.args[1], self.env)
                if isinstance(ax, int) and ax % len(self.state.shape) == axis:
                    raise SemanticsError("a rule may not drop along a recurrent op's step axis")
            stacked = ev.tensor_expr(c.target, {**self.env, root: self.state})
        else:
            raise SemanticsError("a recurrent op in a rule is the matched node, or the new node of a rewrite of it")

        def state(k: int) -> Tensor:
            return Tensor(names[k], tuple(stacked.shape[:axis]) + tuple(stacked.shape[axis + 1:]),
                          lambda idx: stacked[tuple(idx[:axis]) + (k,) + tuple(idx[axis:])])

        return {n: state(k) for k, n in enumerate(names)}


def _build(
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
    recurrence: _Induction | None = None,
) -> Obligation:
    ev = Evaluator(alg, ops, inst.channel)
    if recurrence is not None:
        if isinstance(rule.conclusion, BackwardFact) or where.unused:
            raise SemanticsError("a rule about a recurrent op concludes a fact or a rewrite, without `unused`")
        if any(ops[b.op].recurrence is not None for b in rule.bindings[1:]):
            raise SemanticsError("a recurrent op in a rule is the matched node (the first binding)")
        root = rule.root.result
        if any((isinstance(x, A.Index) and x.base == root) or (isinstance(x, A.Name) and x.id == root)
               for w in rule.where for x in A.walk(w)):
            # the induction reads the result as [output, states]: a condition on it would be about both
            raise SemanticsError(f"a rule about a recurrent op states no condition on its result {root!r}")
        ev.recurrence = recurrence
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
    if recurrence is not None:  # it reads the instance's names and adds its state leaf
        recurrence.env, recurrence.valuation, recurrence.leaves = env, valuation, leaves
    shapes = shape_asts(rule, ops)
    subst_by_tensor: dict[str, list[tuple[A.Index, A.Expr]]] = {}
    for ix, val in where.substitutions:
        subst_by_tensor.setdefault(ix.base, []).append((ix, val))
    bool_tensors = _bool_tensors(rule, ops) | set(inst.bools)
    int_tensors = integer_operands(rule, ops)
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
                if k and mine and not inst.uniform_runs:
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


class IllTyped(InstanceError):
    """The matched nodes exist at this instance but the rule's conclusion cannot be built there
    (a new node whose operands do not fit, a channel position past the axis): the rule is wrong."""


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
        try:
            lhs = ev.tensor_expr(c.target, env)
            rhs = ev.tensor_expr(c.value, env)
        except InstanceError as e:
            # the matched nodes were built above, so the match holds here: a new node that cannot be
            # built (or a channel position past its axis) is a wrong rule, unless the channel's axis
            # has one position and dropping it leaves nothing
            cdim = channel_dim(rule, ops)
            if "empty" in str(e) or (cdim is not None and inst.dims.get(cdim) == 1):
                raise
            raise IllTyped(f"the conclusion cannot be built where the match holds: {e}") from None
        if not isinstance(rhs, Tensor) or tuple(rhs.shape) != tuple(lhs.shape):
            # the match holds here and the new node has another shape: a wrong rule, at this instance
            raise IllTyped(
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


def integer_operands(rule: Rule, ops: Mapping[str, OpDecl]) -> set[str]:
    out = set()
    for b in rule.bindings:
        decl = ops[b.op]
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if o.name and (p.pattern.dtype in ("I", "i64", "i32", "i16", "i8", "u8")):
                out.add(o.name)
    return out


def free_dtype_operands(rule: Rule, ops: Mapping[str, OpDecl]) -> list[str]:
    """Operands whose op parameter has a dtype of its own (`mask: M[*K]?`: boolean or additive): the
    prover tries them both ways, numbers by default and boolean in a copy of every instance."""
    out: list[str] = []
    for b in rule.bindings:
        decl = ops[b.op]
        dts = [t.pattern.dtype for t in decl.tensor_params]
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if (o.name and p is not None and len(p.pattern.dtype) == 1 and p.pattern.dtype.isupper()
                    and p.pattern.dtype not in ("T", *DTYPE_CLASSES) and dts.count(p.pattern.dtype) == 1
                    and o.name not in out):
                out.append(o.name)
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
# A run of dims (`*B`) has 0, 1 or 2 axes, by instance: the engine applies such a rule at any rank,
# and a rule that mixes a run with a positive axis (axis 1, dim(x, 1)) is right at one rank only.
RUN_RANKS = (1, 2, 0)
MAX_BOUNDED = 8


def concrete_instances(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg_factory: Callable[[], Any],
                       configs: list[tuple[int, str]], seed: int = 0, violate: Any = None,
                       fixed_variants: list[dict[str, Any]] | None = None, salt: int = 0,
                       cover: bool = False, derived: bool = False, max_cands: int = 12,
                       evaluate: bool = True, uniform_runs: bool = False) -> list[Instance]:
    """One valid instance per (channel dim size, channel position) config: `start`, `middle`, `end`.
    With `cover`, further instances (up to MAX_BOUNDED in all) for attribute values the configs did
    not meet, so that every value of every attribute is tried."""
    rng = random.Random(seed)
    cdim = channel_dim(rule, ops)
    dims, variadics = rule_dims(rule, ops)
    out: list[Instance] = []
    if violate is not None and fixed_variants is None:
        # several combinations of attribute values that violate the condition, so a needed condition
        # meets its counter-case (one instance per combination)
        found: list[Instance] = []
        combos = list(_all_variants(rule, ops, where=where)[0])
        random.Random(seed).shuffle(combos)
        for k, v in enumerate(combos):
            for r in range(len(RUN_RANKS) if variadics else 1):  # at every rank of the runs of dims
                found += concrete_instances(rule, ops, where, alg_factory, configs[:1], seed, violate, [v],
                                            salt=k + r, max_cands=3)
            if len(found) >= 8:
                break
        return found
    variants = attr_variants(rule, ops, derived, where)
    if fixed_variants is not None:
        variants = fixed_variants
    used: list[dict[str, Any]] = []
    ill: list[Instance] = []
    for ci, (csize, pos) in enumerate(configs):
        k = salt + ci
        degenerate = csize == 1
        attrs_choice = variants[ci % len(variants)]
        want = RUN_RANKS[k % len(RUN_RANKS)]
        for rank in [want] + [r for r in RUN_RANKS if r != want] if variadics else [0]:
            got = _one_instance(rule, ops, where, alg_factory, cdim, csize, pos, dims, variadics, rank, variants,
                                attrs_choice, fixed_variants is not None, degenerate, violate, rng, k, max_cands,
                                evaluate, ill, uniform_runs)
            if got is not None:
                out.append(got[0])
                used.append(got[1])
                break
    if cover and fixed_variants is None:
        for combo in variants:
            if len(out) >= MAX_BOUNDED:
                break
            if any(combo is u for u in used):
                continue
            extra = concrete_instances(rule, ops, where, alg_factory, [(4, "middle")], seed,
                                       fixed_variants=[combo], salt=salt + len(out), derived=derived,
                                       max_cands=max_cands, evaluate=evaluate)
            out += extra
    # last: one instance (at most) where the conclusion cannot be built, flagged `ill_typed`
    return out + [i for i in ill if not any(o.ill_typed for o in out)][:1]


def _one_instance(rule, ops, where, alg_factory, cdim, csize, pos, dims, variadics, rank, variants, attrs_choice,
                  fixed, degenerate, violate, rng, salt, max_cands=12, evaluate=True, ill=None, uniform_runs=False):
    """The cheapest valid instance for one config at one rank of the runs of dims: (instance,
    the attribute combination it uses), or None. An instance where the match holds but the
    conclusion cannot be built goes to `ill`."""
    others = [d for d in dims if d != cdim] + [f"*{v}.{i}" for v in variadics for i in range(rank)]
    tries: list[dict[str, int]] = []
    if degenerate:
        tries.append({d: 1 for d in others})
    pool = [s for s in SIZE_POOL if s != csize]
    tries.append({d: pool[i % len(pool)] for i, d in enumerate(others)})
    if not degenerate:  # every dim the channel's length: a match valid only when they agree (concat along another axis)
        tries.append({d: csize for d in others})
    for pool_ in ([2, 3], [1, 2, 3], [1, 2, 3, 4, 5]):
        for _ in range(12):
            tries.append({d: rng.choice(pool_ if not degenerate else [1, 2]) for d in others})
    cands = []
    # the config's own attribute combination at every size first; the others only if it fits none
    groups = [[attrs_choice]] + ([] if fixed else [[v for v in variants if v is not attrs_choice]])
    for group in groups:
        for t in tries:
            for av in group:
                inst = _instance(rule, ops, where, alg_factory, cdim, csize, pos, t, variadics, av, degenerate,
                                 violate, rank, salt, uniform_runs=uniform_runs)
                if inst is not None and inst.ill_typed:  # a counterexample; a valid instance may still give a replay
                    if ill is not None and not ill:
                        ill.append(inst)
                    continue
                if inst is not None:
                    cands.append((inst, av))
                    break
            if len(cands) >= max_cands:
                break
        if cands:
            break
    # the config's own attributes first; then, at a non-degenerate config, the fewest unit dims (a
    # softmax over one key tests nothing); then the cheapest
    cands.sort(key=lambda x: (x[1] is not attrs_choice, 0 if degenerate else _unit_dims(x[0]),
                              _cost(x[0]) * (1 if _distinct(x[0]) else 2)))
    for inst, av in cands:  # the cheapest candidate whose full evaluation is well defined
        if not evaluate or _evaluates(rule, ops, where, alg_factory, inst):
            if inst.ill_typed:
                if ill is not None and not ill:
                    ill.append(inst)
                continue
            return inst, av
    return None


def _distinct(inst: Instance) -> bool:
    sizes = [v for k, v in inst.dims.items() if isinstance(v, int) and v > 1 and not k.startswith("#")]
    return len(sizes) == len(set(sizes))


def _unit_dims(inst: Instance) -> int:
    return sum(1 for k, v in inst.dims.items() if not k.startswith("#") and isinstance(v, int) and v == 1)


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


def variant_instances(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg_factory, seed: int = 0,
                      cap: int = 16, derived: bool = False, max_cands: int = 4,
                      evaluate: bool = True) -> list[Instance]:
    """One instance per combination of attribute values (at most `cap`: the covering ones first),
    for the random test tier; the runs of dims take every rank across them."""
    out = []
    combos, _ = _all_variants(rule, ops, cap, derived, where)
    if len(combos) <= 1 and not rule_dims(rule, ops)[1]:
        return out
    private = any(run_private_dims(rule).values())
    for k, combo in enumerate(combos):
        got = concrete_instances(rule, ops, where, alg_factory, [(4, "middle")], seed, fixed_variants=[combo],
                                 salt=4 + k, max_cands=max_cands, evaluate=evaluate)
        if private and not got:  # a combination valid only when a run's operands agree (concat along dim 0)
            got = concrete_instances(rule, ops, where, alg_factory, [(4, "start")], seed, fixed_variants=[combo],
                                     salt=4 + k, max_cands=max_cands, evaluate=evaluate, uniform_runs=True)
        out += got
    return out


def _evaluates(rule, ops, where, alg_factory, inst) -> bool:
    alg = alg_factory()
    try:
        build(rule, ops, alg, inst, Valuation(alg, lambda t, i: Fraction(1)), where,
              {v: alg.num(1) for v in rule.info.values})
    except IllTyped as e:
        inst.ill_typed = str(e)
        return True
    except (InstanceError, ZeroDivisionError):
        return False
    return True


_UNSET = object()


def _alternatives(c: Any) -> list[tuple[A.Name, Any]] | None:
    """`x == a or x == b ...` over one name: the (x, value) choices, else None."""
    if not (isinstance(c, A.BoolOp) and c.op == "or"):
        return None
    out = []
    for o in c.operands:
        if not (isinstance(o, A.Cmp) and o.op == "==" and isinstance(o.left, A.Name)):
            return None
        out.append((o.left, o.right))
    return out if len({x.id for x, _ in out}) == 1 else None


def _instance(rule, ops, where, alg_factory, cdim, csize, pos, sizes, variadics, attrs_choice, degenerate,
              violate=None, rank=1, salt=0, channel=None, runs=None, uniform_runs=False):
    alg = alg_factory()
    dims: dict[str, Any] = {k: v for k, v in sizes.items() if not k.startswith("*")}
    if cdim is not None:
        dims[cdim] = csize
    for v in variadics:
        dims["*" + v] = tuple(sizes.get(f"*{v}.{i}", 1 if degenerate else 2) for i in range(rank))
    c = {"start": 0, "second": min(1, csize - 1), "middle": csize // 2, "end": csize - 1}[pos] \
        if cdim is not None else None
    if channel is not None and cdim is not None:
        c = channel
    # runs of operands (`us...`): none, one or two operands, varied across instances and runs
    base = {"start": 0, "second": 1, "middle": 1, "end": 2}[pos] if not degenerate else 1
    for k, r in enumerate(run_names(rule)):
        dims["#" + r] = (base + k) % 3
    dims.update(runs or {})
    ev = Evaluator(alg, ops, c)
    attrs: dict[str, Any] = {}
    env: dict[str, Any] = dict(dims)
    n_float = 0
    for name, v in attrs_choice.items():
        if isinstance(v, tuple) and v[0] == "ast":
            attrs[name] = _UNSET  # filled below from the required value
        elif isinstance(v, tuple) and v[0] == "sym":
            attrs[name] = alg.num(float_value(n_float, salt)) if not alg.symbolic else alg.sp.Symbol(name, positive=True)
            n_float += 1
        else:
            attrs[name] = v
    env.update(attrs)
    # `name == value` conditions (and required attribute values) choose the instance
    eqs = [(A.Name(n), v[1], None) for n, v in attrs_choice.items() if isinstance(v, tuple) and v[0] == "ast"]
    for k, s in enumerate(where.static):
        if isinstance(s, A.Cmp) and s.op == "==" and isinstance(s.left, A.Name):
            eqs.append((s.left, s.right, None))
        elif _alternatives(s):  # `mh == h or mh == 1`: one of the values, in turn across instances
            alts = _alternatives(s)
            lhs, rhs = alts[(salt + k + sum(1 for v in sizes.values() if v == 1)) % len(alts)]
            eqs.append((lhs, rhs, None))
    table = attr_table(rule, ops)
    for bi, b in enumerate(rule.bindings):
        # an op's constraint names its attributes as declared (groups), the rule may rename them (g)
        names = {aname: name for name, bidx, aname, _ in table if bidx == bi}
        for w in ops[b.op].where:
            if isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Name) and w.left.id in dims:
                eqs.append((w.left, w.right, names))
    for _ in range(3):
        for lhs, rhs, names in eqs:
            try:
                scope = env if not names else {**env, **{a: env[n] for a, n in names.items() if n in env}}
                val = ev.ev(rhs, scope)
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
    for name, v in attrs_choice.items():
        if isinstance(v, tuple) and v[0] == "derived":
            attrs[name] = _derived_value(rule, ops, ev, env, v[1])
            if attrs[name] is None:
                return None
            env[name] = attrs[name]
    if any(isinstance(v, int) and v < 1 for k, v in dims.items() if not k.startswith("#")):
        return None
    inst = Instance(dims, attrs, c, _label(dims, attrs, c) + (", runs of one size" if uniform_runs else ""),
                    attrs_choice, uniform_runs=uniform_runs)
    if rule.info.channel and c is not None:  # a condition on the channel's position (`c >= start`)
        env[rule.info.channel] = c
    try:
        for s in where.static:
            if not ev.holds(s, env):
                return None
        if violate is not None and ev.holds(violate, env):
            return None
        build(rule, ops, alg, inst, Valuation(alg, lambda t, i: Fraction(1)) if not alg.symbolic else Valuation(alg),
              where, {v: alg.num(1) for v in rule.info.values}, None, validate_only=True)
    except IllTyped as e:
        inst.ill_typed = str(e)
    except (InstanceError, ZeroDivisionError):
        return None
    except SemanticsError as e:
        if isinstance(e, ShapeMismatch):
            raise
        raise
    return inst


def _derived_value(rule: Rule, ops: Mapping[str, OpDecl], ev: Evaluator, env: Mapping[str, Any], kind: str) -> Any:
    """A list attribute computed from the first operand's shape (see DERIVED); None where the rank
    does not allow it."""
    shapes = shape_asts(rule, ops)
    first = next((o.name for o in rule.root.operands if o.name in shapes), None)
    if first is None:
        return None
    try:
        s = [int(x) for x in _eval_shape(shapes[first], env, ev)]
    except (SemanticsError, KeyError, TypeError, ValueError):
        return None
    r = len(s)
    table = {
        "last": s[-1:] if r >= 1 else None,
        "last2": s[-2:] if r >= 2 else None,
        "axes-last": [-1] if r >= 1 else None,
        "axes-tail2": [r - 2, r - 1] if r >= 3 else None,
        "axes-rot": list(range(1, r)) + [0] if r >= 2 else None,
        "axes-rev": list(reversed(range(r))) if r >= 2 else None,
        "flat": [-1],
        "split": [s[0], -1] if r >= 2 else None,
    }
    return table.get(kind)


def _label(dims: Mapping[str, Any], attrs: Mapping[str, Any], c: Any) -> str:
    parts = [f"{k}={v}" for k, v in dims.items() if not k.startswith(("*", "#"))]
    parts += [f"len({k[1:]}...)={v}" for k, v in dims.items() if k.startswith("#")]
    parts += [f"{k[1:]}={list(v)}" for k, v in dims.items() if k.startswith("*")]
    parts += [f"{k}={v}" for k, v in attrs.items() if not hasattr(v, "free_symbols")]
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
        elif k.startswith("*"):  # a run of dims keeps its rank; each axis its own symbolic length
            name = k[1:]
            axes = [name] if len(v) == 1 else [f"{name}_{i}" for i in range(len(v))]
            dims[k] = v if (name in concrete or concrete & set(axes)) else tuple(Extent(a, "gen") for a in axes)
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


def size_symbols(alg: Any, inst: Instance) -> dict[Any, tuple[str, int]]:
    """The symbols a parametric instance's sizes are made of: symbol -> (key in a concrete
    instance's sizes, offset); the channel's axis {c} + R has length |R| + 1."""
    out: dict[Any, tuple[str, int]] = {}
    for k, v in inst.dims.items():
        if isinstance(v, Extent):
            s = alg.size(Extent(v.dim, "rest" if v.part == "full" else v.part))
            out[s] = (k, 1 if v.part == "full" else 0)
        elif k.startswith("*") and isinstance(v, tuple):
            for i, e in enumerate(v):
                if isinstance(e, Extent):
                    out[alg.size(e)] = (f"{k}.{i}", 0)
    return out


def model_instance(rule: Rule, ops: Mapping[str, OpDecl], where: Where, alg_factory: Callable[[], Any],
                   base: Instance, par: Instance, sizes: Mapping[str, int], channel: int) -> Instance | None:
    """The concrete instance at the sizes a parametric counterexample names (dims the parametric
    tier kept concrete, attributes and runs of operands as in `base`); None when those sizes do
    not make a valid instance."""
    cdim = channel_dim(rule, ops)
    dims, variadics = rule_dims(rule, ops)
    concrete: dict[str, int] = {}
    for k, v in par.dims.items():
        if k.startswith("#"):
            continue
        if k.startswith("*"):
            for i, e in enumerate(v):
                concrete[f"{k}.{i}"] = int(sizes.get(f"{k}.{i}", e if isinstance(e, int) else 2))
        else:
            concrete[k] = int(sizes.get(k, v if isinstance(v, int) else 2))
    rank = len(par.dims.get("*" + variadics[0], ())) if variadics else 0
    csize = concrete.pop(cdim, 3) if cdim is not None else 3
    if cdim is not None and not 0 <= channel < csize:
        channel = 0
    combo = base.combo if base.combo is not None else {}
    try:
        return _instance(rule, ops, where, alg_factory, cdim, csize, "start", concrete, variadics, combo,
                         False, None, rank, 0, channel, {k: v for k, v in base.dims.items() if k.startswith("#")})
    except SemanticsError:
        return None
