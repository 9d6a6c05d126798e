"""Rules: the stable syntax tree the prover proves and the engine applies (documented in docs/rules.md).

    rule linear.fold_const
      match y = linear(x: [*B, n], weight, bias)
      where x[*B, c] == k
      then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias + k * weight[:, c])

A rule matches one node (or a short chain of nodes, root first), states side conditions over the
node's operands, attributes and the engine's channel facts, and concludes one of three things:

- ForwardFact  `then y[*B, c] == e`: channel c of a tensor always holds the value e;
- BackwardFact `then unused x[*B, c]`: the node's output (minus channels the conditions declare
  unused) does not depend on channel c of x;
- Rewrite      `then T = E`: the matched value (or `drop(y, axis, c)`, its kept channels) equals E.

Everything here is plain data: frozen dataclasses of sr_ir.lang.ast trees plus names resolved once
(`RuleInfo`), so the engine can compile a rule without re-reading rule text.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Union

from ..errors import Loc, TypeCheckError
from ..ir.opdecl import OpDecl
from . import ast as A
from .kinds import check_rule, written_non_integer

# Rules named `raise.*` are applied while lowering (ATen chains raised into structured ops); every
# other rule is a minimization rule.
RAISE_PREFIX = "raise."


@dataclass(frozen=True)
class Operand:
    """One tensor operand of a matched op: `param` is the op's parameter, `name` the rule's name for it."""

    param: str
    name: str | None  # None: the rule requires the optional operand to be absent (`none`)
    shape: tuple[Any, ...] | None = None  # `x: [*B, n]` annotation (ast dims), None: the op's pattern
    run: bool = False  # `us...`: a run of operands of a variadic parameter (any number, possibly none)


@dataclass(frozen=True)
class Binding:
    """`y = op(operands..., attr=expr...)`: one matched node."""

    result: str
    op: str
    operands: tuple[Operand, ...]
    attrs: tuple[tuple[str, A.Expr], ...] = ()  # attribute -> name it is known by, or a required value
    result_shape: tuple[Any, ...] | None = None

    @property
    def has_runs(self) -> bool:
        return any(o.run for o in self.operands)

    def operand(self, param: str) -> Operand | None:
        for o in self.operands:
            if o.param == param:
                return o
        return None


@dataclass(frozen=True)
class ForwardFact:
    target: A.Index  # y[*B, c]
    value: A.Expr

    kind = "forward"


@dataclass(frozen=True)
class BackwardFact:
    targets: tuple[A.Index, ...]  # unused x[*B, c], ...

    kind = "backward"


@dataclass(frozen=True)
class Rewrite:
    target: A.Expr  # a result name, or drop(result, axis, c)
    value: A.Expr  # an op call over the rule's tensors (a new node)

    kind = "rewrite"


Conclusion = Union[ForwardFact, BackwardFact, Rewrite]


@dataclass(frozen=True)
class ChannelUse:
    """The channel variable indexes axis `axis` of tensor `tensor` (negative: counted from the end).

    `block` (an expression, from `drop(t, axis, c, block)`): channel c is the run of `block`
    positions c*block .. (c+1)*block - 1 of that axis (a flatten merged the channel axis with the
    axes after it); None: channel c is position c."""

    tensor: str
    axis: int
    block: Any = None


@dataclass(frozen=True)
class RuleInfo:
    """Names resolved once: what each name in the rule stands for."""

    channel: str | None  # the channel index variable (e.g. c), None for a rule without one
    channel_uses: tuple[ChannelUse, ...]
    values: tuple[str, ...]  # scalar variables bound by the conditions (k in `x[*B, c] == k`)
    tensors: tuple[str, ...]  # every tensor name: results and operands
    attrs: tuple[tuple[str, int, str], ...]  # (name in rule, binding index, attribute)
    dims: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    name: str
    bindings: tuple[Binding, ...]  # root first
    where: tuple[A.Cond, ...]  # a conjunction
    conclusion: Conclusion
    axioms: tuple[str, ...] = ()
    doc: str = ""
    info: RuleInfo | None = field(default=None, compare=False)
    loc: Loc | None = field(default=None, compare=False)
    where_locs: tuple[Loc | None, ...] = field(default=(), compare=False)
    origin: Path | None = field(default=None, compare=False)  # the rule directory it was read from
    axiom_locs: tuple[Loc | None, ...] = field(default=(), compare=False)  # where each axiom is named
    # set by the loader: the declared functions the rule's meaning depends on (through the ops it
    # uses and their `means`, transitively) and the vocabulary they and its axioms come from
    functions: tuple[str, ...] = field(default=(), compare=False)
    vocabulary: Any = field(default=None, compare=False, repr=False)

    @property
    def root(self) -> Binding:
        return self.bindings[0]

    @property
    def kind(self) -> str:
        return self.conclusion.kind

    @property
    def ops_used(self) -> tuple[str, ...]:
        """Every op whose semantics the rule's meaning depends on (matched and produced)."""
        names = [b.op for b in self.bindings]
        for node in conclusion_trees(self.conclusion):
            for sub in A.walk(node):
                if (isinstance(sub, A.Call) and sub.fn not in names and sub.fn not in BUILTINS
                        and sub.fn not in (self.functions or ())):  # a scalar function is not an op
                    names.append(sub.fn)
        return tuple(names)

    # A Rule is immutable: what matching derives from its text alone is computed once per rule (the
    # engine asks at every node of every pass)
    @cached_property
    def private_dims(self) -> dict[str, set[str]]:
        """`run_private_dims` of this rule (read-only)."""
        return run_private_dims(self)

    @cached_property
    def static_where(self) -> tuple[A.Cond, ...]:
        """The side conditions over attributes and dims only (decided once per match)."""
        return tuple(w for w in self.where if is_static(self, w))

    def text(self) -> str:
        """Normalised rule text (no comments, no positions): what certificates hash."""
        lines = [f"rule {self.name}"]
        for i, b in enumerate(self.bindings):
            args = []
            for o in b.operands:
                if o.name is None:
                    args.append("none")
                else:
                    ann = f": [{', '.join(A.show(d) for d in o.shape)}]" if o.shape is not None else ""
                    args.append(f"{o.name}{'...' if o.run else ''}{ann}")
            args += [f"{k}={A.show(v)}" for k, v in b.attrs]
            rs = f": [{', '.join(A.show(d) for d in b.result_shape)}]" if b.result_shape is not None else ""
            lines.append(f"  {'match' if i == 0 else '     '} {b.result}{rs} = {b.op}({', '.join(args)})")
        if self.where:
            lines.append("  where " + ", ".join(A.show(w) for w in self.where))
        if self.axioms:
            lines.append("  axioms " + ", ".join(self.axioms))
        lines.append("  then  " + show_conclusion(self.conclusion))
        return "\n".join(lines)


def show_conclusion(c: Conclusion) -> str:
    if isinstance(c, ForwardFact):
        return f"{A.show(c.target)} == {A.show(c.value)}"
    if isinstance(c, BackwardFact):
        return "unused " + ", ".join(A.show(t) for t in c.targets)
    return f"{A.show(c.target)} = {A.show(c.value)}"


def conclusion_trees(c: Conclusion) -> list[Any]:
    """The expression trees of a conclusion."""
    if isinstance(c, ForwardFact):
        return [c.target, c.value]
    if isinstance(c, BackwardFact):
        return list(c.targets)
    return [c.target, c.value]


# Functions with a fixed meaning in rule expressions (everything else called is an op or a function
# declared with `function`, uninterpreted by the prover unless the rule names an axiom about it).
BUILTINS = {
    "sum": "sum(j < n, e): sum of e over j = 0..n-1",
    "tensor": "tensor(i < n, j < m, e): the tensor whose entry [i, j] is e",
    "drop": "drop(t, axis, c[, block]): t without position c on that axis (with block: without the run "
            "c*block .. (c+1)*block - 1, channel c of a flattened axis)",
    "padded": "padded(t[...]): the entry, or 0 when an index is out of range (zero padding)",
    "dim": "dim(t, axis): the size of an axis of t",
    "opt": "opt(t[...], d): the entry, or d when the optional operand t is absent",
    "at": "at(t, [i, j, ...]): the entry of t at a computed position",
    "reshaped": "reshaped(x, shape, I): the position of x that output position I of a row-major reshape to shape reads",
    "permuted": "permuted(dims, I): the input position that permute(dims) sends to output position I",
    "replaced": "replaced(I, axis, v): the position I with its entry on axis replaced by v",
    "inserted": "inserted(I, axis, v): the position I with v inserted at axis (the input position a select reads)",
    "keep_of": "keep_of(m[...]): 1 where a boolean mask keeps the key (a missing or additive mask keeps every key)",
    "bias_of": "bias_of(m[...]): the entry of an additive (float) mask, 0 for a boolean or missing one",
    "span": "span(a, n): the n positions a .. a + n - 1 (drop several positions at once)",
    "each": "each(i < n, e): the operands e for i = 0 .. n-1 (as arguments of a variadic operand)",
    "choose": "choose(a, v, e1, e2): e1 where the attribute a equals v, else e2 (an op whose attribute selects its function)",
    "nth": "nth(I, k): entry k of a position (negative from the end)",
    "reduce_mean": "reduce_mean(x, dims, keepdim, I): the mean of x over the axes dims, at output position I",
    "step": "step(i): 1 when the index expression i >= 0, else 0",
    "either": "either(a, fallback[, i]): a (item i of it) unless a is none or an empty list, else fallback",
    "inside": "inside(t[...]): 1 when the read is inside t, else 0",
    "maxof": "maxof(p < a, q < b, t[...]): the largest entry read over the window (reads outside skipped)",
    "softmax": "softmax(t < s, score, keep, j): weight of j in a softmax over the kept t (all 0 if none kept)",
    "max": "max(a, b)",
    "min": "min(a, b)",
    "len": "len(list)",
    "last_axes": "last_axes(k): the axis list [-k, ..., -1] (the trailing k axes)",
    "width": "width(us, axis): the total length along axis of the operands of a run `us...` (0 for none)",
    "concat_at": "concat_at(xs, dim, I): the entry at position I of the operands xs concatenated along dim",
}

# The arguments each built-in takes, by kind (the evaluators of the engine and the prover read them so):
# `bound` j < n; `bounds` one or more of them; `read` a tensor read t[...]; `name` a name (a tensor, a
# run of operands, an attribute, a position); `axis` an integer literal; `int` an expression with no
# fraction, string, list or none in it (a length, a position); `expr` any other expression.
# A trailing `?` makes the argument optional.
BUILTIN_ARGS: dict[str, tuple[str, ...]] = {
    "sum": ("bound", "expr"), "tensor": ("bounds", "expr"), "drop": ("name", "axis", "expr", "int?"),
    "padded": ("read",), "dim": ("name", "int"), "opt": ("read", "expr"), "at": ("name", "expr"),
    "reshaped": ("name", "expr", "name"), "permuted": ("expr", "name"), "replaced": ("name", "int", "expr"),
    "inserted": ("name", "int", "expr"), "keep_of": ("read",), "bias_of": ("read",), "span": ("int", "int"),
    "each": ("bound", "expr"), "choose": ("name", "expr", "expr", "expr"), "nth": ("name", "int"),
    "reduce_mean": ("name", "expr", "expr", "name"), "step": ("expr",), "either": ("name", "expr", "expr?"),
    "inside": ("read",), "maxof": ("bounds", "read"), "softmax": ("bound", "expr", "expr", "expr"),
    "max": ("expr", "expr"), "min": ("expr", "expr"), "len": ("expr",), "last_axes": ("expr",),
    "width": ("name", "axis"), "concat_at": ("name", "expr", "name"),
}


def builtin_misuse(call: A.Call) -> str | None:
    """Why a call of a built-in does not fit its arguments (BUILTIN_ARGS), or None when it does."""
    kinds = BUILTIN_ARGS.get(call.fn)
    if kinds is None:
        return None
    args = list(call.args)
    if kinds[0] == "bounds":
        n = next((i for i, a in enumerate(args) if not isinstance(a, A.Bound)), len(args))
        if n == 0:
            return f"{call.fn}(...) starts with a range `i < n`"
        args = [args[0], *args[n:]]
        kinds = ("bound", *kinds[1:])
    need = sum(1 for k in kinds if not k.endswith("?"))
    if not need <= len(args) <= len(kinds):
        return f"{BUILTINS[call.fn].split(':')[0]} takes {need}{'' if need == len(kinds) else f' to {len(kinds)}'} " \
               f"arguments, `{A.show(call)}` gives {len(args)}"
    for i, (a, k) in enumerate(zip(args, kinds)):
        why = _arg_misfit(a, k.rstrip("?"))
        if why:
            return f"argument {i + 1} of `{A.show(call)}` {why} ({BUILTINS[call.fn].split(':')[0]})"
    return None


def _arg_misfit(a: Any, kind: str) -> str | None:
    if kind == "bound":
        if not isinstance(a, A.Bound):
            return "is a range `i < n`"
        return "has a range up to a fraction" if written_non_integer(a.upper) else None
    if isinstance(a, A.Bound):
        return "is no range here"
    if isinstance(a, (A.Slice, A.Variadic, A.Spread)):
        return f"may not be `{A.show(a)}`"
    if kind == "read" and not isinstance(a, A.Index):
        return "is a tensor read t[...]"
    if kind == "name" and not isinstance(a, A.Name):
        return "is a name"
    if kind == "axis" and _int_of(a) is None:
        return "is an integer axis"
    if kind == "int" and written_non_integer(a):
        return "is an integer"
    return None


def _free_names(node: Any, bound: frozenset[str] = frozenset()) -> list[tuple[str, bool]]:
    """(name, used_as_index) for every free name in a tree, in order."""
    out: list[tuple[str, bool]] = []

    def go(n: Any, bound: frozenset[str], as_index: bool = False) -> None:
        if isinstance(n, A.Name):
            if n.id not in bound:
                out.append((n.id, as_index))
        elif isinstance(n, A.Index):
            out.append((n.base, False)) if n.base not in bound else None
            for i in n.indices:
                go(i, bound, True)
        elif isinstance(n, A.Call):
            inner = bound
            for a in n.args:
                if isinstance(a, A.Bound):
                    go(a.upper, inner)
                    inner = inner | {a.var}
            for i, a in enumerate(n.args):
                if not isinstance(a, A.Bound):
                    # drop(t, axis, c): c is a channel index of t
                    go(a, inner, (as_index and n.fn in ("max", "min")) or (n.fn == "drop" and i == 2))
        elif isinstance(n, A.Quant):
            go(n.upper, bound)
            go(n.body, bound | {n.var})
        elif isinstance(n, (A.BinOp, A.Cmp)):
            go(n.left, bound, as_index)
            go(n.right, bound, as_index)
        elif isinstance(n, A.Neg):
            go(n.operand, bound, as_index)
        elif isinstance(n, A.ListExpr):  # drop(t, axis, [c, c + h]): positions, as one
            for a in n.items:
                go(a, bound, as_index)
        elif isinstance(n, A.BoolOp):
            for a in n.operands:
                go(a, bound)
        elif isinstance(n, A.Unused):
            go(n.target, bound)

    go(node, bound)
    return out


def _pattern_dims(dims: Any) -> list[str]:
    names: list[str] = []
    for d in dims or ():
        if isinstance(d, A.Variadic):
            names.append(d.name)
        else:
            names += [n for n, _ in _free_names(d)]
    return names


def resolve(rule: Rule, ops: dict[str, OpDecl]) -> Rule:
    """Check a rule against the op declarations and resolve its names; TypeCheckError at the rule."""
    loc = rule.loc

    def err(msg: str, at: Loc | None = None) -> TypeCheckError:
        return TypeCheckError(f"rule {rule.name!r}: {msg}", at or loc)

    tensors: list[str] = []
    attrs: list[tuple[str, int, str]] = []
    dims: list[str] = []
    shapes: dict[str, tuple[Any, ...]] = {}
    results = {b.result for b in rule.bindings}
    for bi, b in enumerate(rule.bindings):
        decl = ops.get(b.op)
        if decl is None:
            raise err(f"unknown op {b.op!r}")
        if b.result in tensors and bi == 0:
            raise err(f"{b.result!r} is bound twice")
        tensors.append(b.result)
        if len(b.operands) > len(decl.tensor_params) and not any(t.variadic for t in decl.tensor_params):
            raise err(f"{b.op} takes {len(decl.tensor_params)} tensor operands, the match gives {len(b.operands)}")
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if o.name is None:
                if not p.optional:
                    raise err(f"operand {o.param!r} of {b.op} is not optional")
                continue
            if o.name not in tensors:
                tensors.append(o.name)
            if o.shape is not None:
                pat = p.pattern.dims
                if not any(isinstance(d, A.Variadic) for d in pat) and len(pat) != len(o.shape):
                    raise err(f"{o.name}: annotation has rank {len(o.shape)}, {b.op}.{o.param} has rank {len(pat)}")
                shapes[o.name] = o.shape
            elif o.name not in results and o.name not in shapes:
                shapes[o.name] = tuple(p.pattern.dims)
            for d in _pattern_dims(shapes.get(o.name)):
                if d not in dims:
                    dims.append(d)
        given = {o.param for o in b.operands}
        for p in decl.tensor_params:
            if p.name not in given and not p.optional:
                raise err(f"{b.op} needs operand {p.name!r}")
        bound_attrs = dict(b.attrs)
        for k in bound_attrs:
            if decl.attr(k) is None:
                raise err(f"{b.op} has no attribute {k!r}")
        for a in decl.attr_params:
            v = bound_attrs.get(a.name)
            name = v.id if isinstance(v, A.Name) else a.name
            if all(n != name for n, _, _ in attrs):
                attrs.append((name, bi, a.name))
        if b.result_shape is not None:
            shapes[b.result] = b.result_shape
            for d in _pattern_dims(b.result_shape):
                if d not in dims:
                    dims.append(d)
    known = set(tensors) | {n for n, _, _ in attrs} | set(dims)

    # free names of the conditions and conclusion: one channel index variable, the rest values
    trees: list[Any] = list(rule.where) + conclusion_trees(rule.conclusion)
    channel: str | None = None
    values: list[str] = []
    for t in trees:
        for n, as_index in _free_names(t):
            if n in known or n in BUILTINS:
                continue
            if as_index:
                if channel not in (None, n):
                    raise err(f"two channel variables {channel!r} and {n!r}; a rule speaks of one channel")
                channel = n
            elif n not in values:
                values.append(n)
    values = [v for v in values if v != channel]
    for t in trees:
        for sub in A.walk(t):
            if isinstance(sub, A.Index) and sub.base not in known and sub.base not in _local_names(t):
                raise err(f"unknown tensor {sub.base!r}")
            if isinstance(sub, A.Call) and sub.fn in ops and sub.fn not in BUILTINS:
                d = ops[sub.fn]
                n_t = sum(1 for a in sub.args if not (isinstance(a, A.Call) and a.fn == "_kw"))
                if n_t > len(d.param_names) and not any(tp.variadic for tp in d.tensor_params):
                    raise err(f"{sub.fn} takes {len(d.param_names)} arguments, got {n_t}")

    dimset = set(dims)
    for t, tl in zip(trees, list(rule.where_locs or [None] * len(rule.where)) + [None] * 4):
        for sub, bound in _indexes_with_binders(t):
            if sub.base in tensors:
                for i in sub.indices:
                    if isinstance(i, A.Name) and i.id in dimset and i.id not in bound:
                        raise err(f"{A.show(sub)}: {i.id!r} is a dim (the length of an axis), not a position; "
                                  f"write `:` for every position of an axis", tl)
    uses: list[ChannelUse] = []
    if channel is not None:
        for t in trees:
            for sub in A.walk(t):
                if isinstance(sub, A.Index) and sub.base in tensors:
                    _check_rank(sub, shapes.get(sub.base), err)
                    var_at = [i for i, x in enumerate(sub.indices) if isinstance(x, A.Variadic)]
                    for pos, x in enumerate(sub.indices):
                        if x == A.Name(channel):
                            axis = pos - len(sub.indices) if var_at and var_at[0] < pos else pos
                            u = ChannelUse(sub.base, axis)
                            if u not in uses:
                                uses.append(u)
                if (
                    isinstance(sub, A.Call) and sub.fn == "drop" and len(sub.args) in (3, 4)
                    and isinstance(sub.args[0], A.Name)
                    and (sub.args[2] == A.Name(channel)  # or a list of positions led by it: [c, c + h]
                         or isinstance(sub.args[2], A.ListExpr) and sub.args[2].items[:1] == (A.Name(channel),))
                ):
                    ax = _int_of(sub.args[1])
                    if ax is None:
                        raise err("drop(t, axis, c) needs a literal axis")
                    u = ChannelUse(sub.args[0].id, ax, sub.args[3] if len(sub.args) == 4 else None)
                    if u not in uses:
                        uses.append(u)
    for w, wl in zip(rule.where, rule.where_locs or [None] * len(rule.where)):
        if isinstance(w, A.BoolOp) and w.op == "or" and any(isinstance(s, A.Unused) for s in A.walk(w)):
            raise err("`unused` may not sit under `or`", wl)
    c = rule.conclusion
    if isinstance(c, ForwardFact) and c.target.base not in tensors:
        raise err(f"unknown tensor {c.target.base!r}")
    if isinstance(c, BackwardFact):
        for t in c.targets:
            if t.base not in tensors or t.base in results:
                raise err(f"`unused` names {t.base!r}, which is not an operand of the match")
    if isinstance(c, Rewrite):
        tgt = c.target
        base = tgt.id if isinstance(tgt, A.Name) else (
            tgt.args[0].id if isinstance(tgt, A.Call) and tgt.fn == "drop" and isinstance(tgt.args[0], A.Name) else None
        )
        if base != rule.root.result:
            raise err(f"a rewrite replaces the matched result {rule.root.result!r} (or drop of it)")
        if not (isinstance(c.value, A.Call) and c.value.fn in ops):
            raise err("a rewrite's right side must be an op call")
    info = RuleInfo(channel, tuple(uses), tuple(values), tuple(tensors), tuple(attrs), tuple(dims))
    resolved = replace(rule, info=info)
    check_rule(resolved, ops, loc)
    return resolved


def _indexes_with_binders(node: Any, bound: frozenset = frozenset()):
    """Every indexed read with the names bound around it (sum/tensor/forall/exists variables)."""
    if isinstance(node, A.Index):
        yield node, bound
        for i in node.indices:
            yield from _indexes_with_binders(i, bound)
    elif isinstance(node, A.Call):
        inner = bound | {a.var for a in node.args if isinstance(a, A.Bound)}
        for a in node.args:
            yield from _indexes_with_binders(a.upper if isinstance(a, A.Bound) else a, inner)
    elif isinstance(node, A.Quant):
        yield from _indexes_with_binders(node.upper, bound)
        yield from _indexes_with_binders(node.body, bound | {node.var})
    elif isinstance(node, (A.BinOp, A.Cmp)):
        yield from _indexes_with_binders(node.left, bound)
        yield from _indexes_with_binders(node.right, bound)
    elif isinstance(node, A.Neg):
        yield from _indexes_with_binders(node.operand, bound)
    elif isinstance(node, (A.ListExpr,)):
        for a in node.items:
            yield from _indexes_with_binders(a, bound)
    elif isinstance(node, A.BoolOp):
        for a in node.operands:
            yield from _indexes_with_binders(a, bound)
    elif isinstance(node, A.Unused):
        yield from _indexes_with_binders(node.target, bound)


def _local_names(t: Any) -> set[str]:
    names = set()
    for sub in A.walk(t):
        if isinstance(sub, A.Bound):
            names.add(sub.var)
        if isinstance(sub, A.Quant):
            names.add(sub.var)
    return names


def _check_rank(ix: A.Index, shape: tuple[Any, ...] | None, err) -> None:
    if shape is None:
        return
    has_var = any(isinstance(d, A.Variadic) for d in shape)
    ix_var = any(isinstance(i, A.Variadic) for i in ix.indices)
    n_fixed = sum(1 for d in shape if not isinstance(d, A.Variadic))
    n_ix = sum(1 for i in ix.indices if not isinstance(i, A.Variadic))
    if not has_var and not ix_var and n_ix != n_fixed:
        raise err(f"{A.show(ix)}: {ix.base} has rank {n_fixed}")
    if has_var and ix_var and n_ix != n_fixed:
        raise err(f"{A.show(ix)}: {ix.base} has {n_fixed} axes after its batch dims")


def _int_of(e: Any) -> int | None:
    if isinstance(e, A.Num) and isinstance(e.value, int):
        return e.value
    if isinstance(e, A.Neg) and isinstance(e.operand, A.Num) and isinstance(e.operand.value, int):
        return -e.operand.value
    return None


def is_static(rule: Rule, w: Any) -> bool:
    """Whether side condition `w` reads only attributes and dims (no tensor entry, value variable,
    channel or `unused`)."""
    tensors = set(rule.info.tensors) if rule.info else set()
    values = set(rule.info.values) if rule.info else set()
    channel = rule.info.channel if rule.info else None
    for sub in A.walk(w):
        if isinstance(sub, (A.Unused, A.Quant)):
            return False
        if isinstance(sub, A.Index) and sub.base in tensors:
            return False
        if isinstance(sub, A.Name) and (sub.id in values or sub.id == channel):
            return False
    return True


def run_private_dims(rule: Rule) -> dict[str, set[str]]:
    """For each run `us...: [b, p]`, the dim names no other annotation uses (here p): every operand of
    the run may have its own length there (the prover instantiates them with different lengths)."""
    names: dict[str, set[str]] = {}
    for b in rule.bindings:
        for o in b.operands:
            if o.name is not None and o.shape is not None:
                names.setdefault(o.name, set()).update(_dim_names(o.shape))
        if b.result_shape is not None:
            names.setdefault(b.result, set()).update(_dim_names(b.result_shape))
    runs = {o.name for b in rule.bindings for o in b.operands if o.run and o.name}
    out = {}
    for r in runs:
        others = set().union(*[v for k, v in names.items() if k != r]) if len(names) > 1 else set()
        out[r] = names.get(r, set()) - others
    return out


def _dim_names(shape: tuple[Any, ...]) -> set[str]:
    out: set[str] = set()
    for d in shape:
        if isinstance(d, A.Variadic):
            out.add("*" + d.name)
        else:
            out |= {s.id for s in A.walk(d) if isinstance(s, A.Name)}
    return out
