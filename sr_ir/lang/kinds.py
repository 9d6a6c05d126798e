"""What each name and expression of a rule or an op's `means` stands for, checked when it is loaded.

The prover and the engine evaluate a rule's expressions on tensors, numbers, lists and runs of dims;
an expression that puts one where another is read (a list in arithmetic, a value variable as an
attribute, a name that is no tensor as the tensor of `drop`, a read indexed by a run of dims its
target does not bind) would fail inside them, long after loading. Here it is a TypeCheckError at the
rule or the op.

Kinds: `tensor` (a matched or produced tensor, an operand, an intermediate of a `means`), `run` (a run
of operands, `us...`), `list` (a list attribute or literal), `str`, `none`, `dims` (a run of dims,
`*B`), `position` (a `means` target's run of indices, `*I`), `number` (dims, attributes, value
variables, tensor entries; `value` marks a rule's value variables, numbers that are no attribute).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import Loc, TypeCheckError
from ..ir.opdecl import OpDecl
from . import ast as A

NOT_A_NUMBER = ("list", "str", "none", "run", "dims", "position")
# built-ins whose first argument names a tensor (or a run of operands)
TENSOR_FIRST = {"drop": ("tensor",), "dim": ("tensor", "run"), "at": ("tensor",), "reshaped": ("tensor",),
                "reduce_mean": ("tensor",), "concat_at": ("run", "tensor"), "width": ("run", "tensor")}
# what a built-in gives (by default a number); `arg N`: the kind of its N-th argument
BUILTIN_KINDS = {"drop": "tensor", "tensor": "tensor", "each": "run", "span": "list", "last_axes": "list",
                 "permuted": "position", "replaced": "position", "inserted": "position", "reshaped": "position",
                 "sum": "arg -1", "choose": "arg 2", "either": "arg 0"}
_ATTR_KINDS = {"ints": "list", "floats": "list", "dims": "list", "str": "str"}
# pairs of kinds `==` and `!=` may compare (none with anything: an absent attribute or operand)
_COMPARABLE = {frozenset({"number"}), frozenset({"number", "tensor"}), frozenset({"tensor"}),
               frozenset({"list"}), frozenset({"str"})}

Err = Callable[[str], TypeCheckError]


def attr_kind(kind: str) -> str:
    """The kind of an attribute declared `ints`, `float`, ..."""
    return _ATTR_KINDS.get(kind, "number")


class _Kinds:
    """Infers kinds bottom-up over a tree; the first misuse is an error."""

    def __init__(self, names: Mapping[str, str], ops: Mapping[str, OpDecl], err: Err,
                 variadic: tuple[str | None, ...], integers: frozenset[str] = frozenset()):
        self.names, self.ops, self.err = dict(names), ops, err
        self.variadic = variadic  # the kinds a `*X` index of a read may have
        self.integers = integers  # attributes that hold integers (int, ints, dims)

    def of(self, e: Any, local: Mapping[str, str] | None = None) -> str:
        k = self._kind(e, local or {})
        return "number" if k == "value" else k

    def _name(self, name: str, local: Mapping[str, str]) -> str:
        k = local.get(name) or self.names.get(name)
        if k is None:
            raise self.err(f"unknown name {name!r}")
        return k

    def _kind(self, e: Any, local: Mapping[str, str]) -> str:
        if isinstance(e, A.Num):
            v = e.value
            return "none" if v is None else "str" if isinstance(v, str) else "list" if isinstance(v, list) else "number"
        if isinstance(e, A.Name):
            return self._name(e.id, local)
        if isinstance(e, A.Spread):
            return self._name(e.name, local)
        if isinstance(e, A.Index):
            return self._read(e, local)
        if isinstance(e, A.Unused):
            return self._read(e.target, local)
        if isinstance(e, A.BinOp):
            return self._arithmetic(e, [e.left, e.right], local)
        if isinstance(e, A.Neg):
            return self._arithmetic(e, [e.operand], local)
        if isinstance(e, A.ListExpr):
            for x in e.items:
                # true, false and none parse as numbers; no list of a rule (dims, ints, floats) holds one
                if self.of(x, local) != "number" or (isinstance(x, A.Num) and (x.value is None or isinstance(x.value, bool))):
                    raise self.err(f"`{A.show(e)}`: a list holds numbers, not `{A.show(x)}`")
            return "list"
        if isinstance(e, A.Call):
            return self._call(e, local)
        if isinstance(e, A.Cmp):
            return self._compare(e, local)
        if isinstance(e, A.BoolOp):
            for x in e.operands:
                self.of(x, local)
            return "number"
        if isinstance(e, A.Quant):
            self._number(e.upper, local, f"the range of `{A.show(e)}`")
            self.of(e.body, {**local, e.var: "number"})
            return "number"
        return "number"  # ranges, slices and `*X` are read by the call or the read around them

    def _number(self, e: Any, local: Mapping[str, str], where: str) -> str:
        k = self.of(e, local)
        if k in NOT_A_NUMBER:
            raise self.err(f"{where}: `{A.show(e)}` is a {k}, not a number")
        return k

    def _arithmetic(self, e: Any, operands: list[Any], local: Mapping[str, str]) -> str:
        """Numbers and tensors (entrywise), or lists with lists and numbers (elementwise: `s - [0, n]`)."""
        kinds = [self.of(x, local) for x in operands]
        if "list" in kinds:
            bad = next((x for x, k in zip(operands, kinds) if k not in ("list", "number")), None)
        else:
            bad = next((x for x, k in zip(operands, kinds) if k in NOT_A_NUMBER), None)
        if bad is not None:
            k = kinds[operands.index(bad)]
            raise self.err(f"`{A.show(e)}`: `{A.show(bad)}` is a {k}" + (", not a list or a number" if "list" in kinds
                                                                          else ", not a number"))
        return "list" if "list" in kinds else "tensor" if "tensor" in kinds else "number"

    def _compare(self, e: A.Cmp, local: Mapping[str, str]) -> str:
        a, b = self.of(e.left, local), self.of(e.right, local)
        if e.op not in ("==", "!="):
            for side, k in ((e.left, a), (e.right, b)):
                if k in NOT_A_NUMBER:
                    raise self.err(f"`{A.show(e)}` orders `{A.show(side)}`, a {k}")
        elif "none" not in (a, b) and frozenset({a, b}) not in _COMPARABLE:
            raise self.err(f"`{A.show(e)}` compares a {a} with a {b}")
        for side, other in ((e.left, e.right), (e.right, e.left)):  # an integer attribute against a fraction
            if isinstance(side, A.Name) and side.id in self.integers:
                items = other.items if isinstance(other, A.ListExpr) else (other,)
                for x in items:
                    if any((isinstance(n, A.Num) and isinstance(n.value, float))
                           or (isinstance(n, A.Name) and self._name(n.id, local) == "value") for n in A.walk(x)):
                        raise self.err(f"`{A.show(e)}`: {side.id} holds integers, `{A.show(x)}` is not one")
        return "number"

    def _read(self, e: A.Index, local: Mapping[str, str]) -> str:
        base = local.get(e.base) or self.names.get(e.base)
        if base not in ("tensor", "list"):
            raise self.err(f"`{A.show(e)}` reads {e.base!r}, which is not a tensor")
        for i in e.indices:
            if isinstance(i, A.Variadic):
                if (local.get(i.name) or self.names.get(i.name)) not in self.variadic:
                    raise self.err(f"`{A.show(e)}`: *{i.name} is not a run of "
                                   f"{'indices of the target' if self.variadic == ('position',) else 'dims'}")
            elif not isinstance(i, A.Slice):
                self._number(i, local, f"`{A.show(e)}`")
        return "number"

    def _call(self, e: A.Call, local: Mapping[str, str]) -> str:
        from .rule import BUILTINS

        inner = dict(local)
        for a in e.args:
            if isinstance(a, A.Bound):
                self._number(a.upper, inner, f"the range of `{A.show(e)}`")
                inner[a.var] = "number"
        kinds = [("number" if isinstance(a, (A.Bound, A.Slice, A.Variadic)) else self._kind(a, inner)) for a in e.args]
        if e.fn in TENSOR_FIRST and e.args and isinstance(e.args[0], A.Name) and kinds[0] not in TENSOR_FIRST[e.fn]:
            raise self.err(f"`{A.show(e)}`: {e.args[0].id!r} is not a tensor")
        if e.fn in BUILTINS:
            if e.fn in ("min", "max"):  # of numbers: a list has no order with a number
                bad = next((a for a, k in zip(e.args, kinds) if k in NOT_A_NUMBER), None)
                if bad is not None:
                    raise self.err(f"`{A.show(e)}`: {e.fn} takes numbers, `{A.show(bad)}` is a "
                                   f"{kinds[e.args.index(bad)]}")
            out = BUILTIN_KINDS.get(e.fn, "number")
            if out.startswith("arg "):
                k = kinds[int(out[4:])] if kinds else "number"
                if e.fn == "either":  # either(a, fallback[, i]): a or the fallback (item i of it)
                    k = "number" if len(kinds) > 2 else kinds[1] if k == "none" and len(kinds) > 1 else k
                out = k
            return "number" if out == "value" else out
        if e.fn in self.ops:
            self._op_args(self.ops[e.fn], e, kinds)
            return "tensor"
        for a, k in zip(e.args, kinds):  # a declared scalar function, applied entrywise
            if k in NOT_A_NUMBER:
                raise self.err(f"`{A.show(e)}`: {e.fn} takes numbers, `{A.show(a)}` is a {k}")
        return "number"

    def _op_args(self, decl: OpDecl, e: A.Call, kinds: list[str]) -> None:
        """An op applied in a conclusion: tensors to its operands, plain values to its attributes."""
        for (param, a), k in zip(decl.parameters_of(e.args), kinds):
            k = "number" if k == "value" else k
            attr = decl.attr(param) if param else None
            if attr is None:
                if k in ("list", "str", "dims", "position"):
                    raise self.err(f"`{A.show(e)}`: operand {param} of {decl.name} is a tensor, "
                                   f"`{A.show(a)}` is a {k}")
                continue
            # a value variable (a tensor's entry) is a real number: a float attribute at most
            banned = ("tensor", "run") if attr.kind in ("float", "floats") else ("tensor", "run", "value")
            bad = sorted(n for n in _value_names(a) if self.names.get(n) in banned)
            if bad:
                raise self.err(f"`{A.show(e)}`: attribute {param} of {decl.name} is computed from {bad[0]!r}, "
                               f"a {'value variable' if self.names[bad[0]] == 'value' else self.names[bad[0]]}")
            want = attr_kind(attr.kind)
            if attr.kind in ("int", "ints", "dims") and any(
                    isinstance(x, A.Num) and isinstance(x.value, (float, str)) for x in A.walk(a)):
                raise self.err(f"`{A.show(e)}`: attribute {param} of {decl.name} holds integers, `{A.show(a)}` writes a fraction")
            if k not in (want, "none"):
                raise self.err(f"`{A.show(e)}`: attribute {param} of {decl.name} is a {want}, `{A.show(a)}` is a {k}")


def written_non_integer(e: Any) -> bool:
    """A fraction, string, list or none is written somewhere in `e`."""
    return any(isinstance(x, A.Num) and (isinstance(x.value, (float, str, list)) or x.value is None)
               or isinstance(x, A.ListExpr) for x in A.walk(e))


def _value_names(e: Any) -> list[str]:
    """The names whose values an expression computes with (not those it measures: `dim(x, 1)`)."""
    if isinstance(e, A.Name):
        return [e.id]
    if isinstance(e, A.Call) and e.fn in ("dim", "width", "len"):
        return [n for a in e.args[1:] for n in _value_names(a)]
    if isinstance(e, A.Index):
        return [e.base] + [n for i in e.indices for n in _value_names(i)]
    subs = {A.Call: lambda: e.args, A.BinOp: lambda: (e.left, e.right), A.Neg: lambda: (e.operand,),
            A.ListExpr: lambda: e.items, A.Bound: lambda: (e.upper,)}
    return [n for x in subs.get(type(e), tuple)() for n in _value_names(x)]


def check_rule(rule: Any, ops: Mapping[str, OpDecl], loc: Loc | None) -> None:
    """TypeCheckError at `loc` when a resolved rule uses a name or an expression as what it is not."""
    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"rule {rule.name!r}: {msg}", loc)

    results = [b.result for b in rule.bindings]
    twice = next((r for r in results if results.count(r) > 1), None)
    if twice is not None:
        raise err(f"{twice!r} is the result of two matched nodes")
    # a chain is read root first: each node after the root produces an operand of a node before it
    for i, b in enumerate(rule.bindings):
        for o in b.operands:
            if o.name in results[:i + 1]:
                raise err(f"{o.name!r}, an operand of `{b.op}`, is the result of a node matched before it "
                          f"(each node after the first produces an operand of one before it)")
    names = _rule_names(rule, ops, err)
    integers = frozenset(n for n, bi, a in rule.info.attrs
                         if ops[rule.bindings[bi].op].attr(a).kind in ("int", "ints", "dims"))
    # a read's `*X` is a run of dims, or a new name matching the axes left (`then y[:, c, *S] == k`)
    kinds = _Kinds(names, ops, err, ("dims", None), integers)
    from .rule import conclusion_trees

    for t in list(rule.where) + conclusion_trees(rule.conclusion):
        kinds.of(t)


def _rule_names(rule: Any, ops: Mapping[str, OpDecl], err: Err) -> dict[str, str]:
    info = rule.info
    names: dict[str, str] = {n: "number" for n in info.dims}
    for b in rule.bindings:
        decl = ops[b.op]
        shapes = [b.result_shape] + [o.shape if o.shape is not None else decl.tensor_param(o.param).pattern.dims
                                     for o in b.operands if o.name is not None]
        for d in (d for s in shapes for d in s or ()):
            if isinstance(d, A.Variadic):
                names[d.name] = "dims"
    names.update({n: "tensor" for n in info.tensors})
    names.update({o.name: "run" for b in rule.bindings for o in b.operands if o.run and o.name})
    # a rank-0 operand (`c: []`, a number in the graph) is one number, an attribute's value included
    names.update({o.name: "number" for b in rule.bindings for o in b.operands if o.name and o.shape == ()})
    for n, bi, aname in info.attrs:
        kind = attr_kind(ops[rule.bindings[bi].op].attr(aname).kind)
        # one name, one value: an attribute that is also an axis length or a tensor would be both
        also = "a tensor" if n in info.tensors else "a dim" if n in info.dims or names.get(n) == "dims" else None
        if also is None and names.get(n, kind) != kind:
            also = f"a {names[n]} attribute"
        if also is not None:
            raise err(f"{n!r} names the attribute {aname} of {rule.bindings[bi].op} and also {also}")
        names[n] = kind
    if info.channel:
        names[info.channel] = "number"
    for v in info.values:
        names.setdefault(v, "value")
    return names


def check_means(decl: OpDecl, loc: Loc | None, what: str) -> None:
    """TypeCheckError at `loc` when an op's `means` reads a name or an expression as what it is not:
    tensors are its operands and the intermediates it defines, a read's `*X` is its target's."""
    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"{what}: means: {msg}", loc)

    names: dict[str, str] = {}
    for t in decl.tensor_params:
        for d in t.pattern.dims:
            if isinstance(d, A.Variadic):
                names[d.name] = "dims"
            else:
                names.update({n.id: "number" for n in A.walk(d) if isinstance(n, A.Name)})
    names.update({a.name: attr_kind(a.kind) for a in decl.attr_params})
    names.update({t.name: "run" if t.variadic else "tensor" for t in decl.tensor_params})
    names.update({m.target.base: "tensor" for m in decl.means if isinstance(m, A.IndexEq)})
    rec = getattr(decl, "recurrence", None)
    carried: set[str] = set(rec.names) if rec is not None else set()
    names.update({n: "tensor" for n in carried})
    if rec is not None:  # the step index is a number in every definition of the step
        names[rec.var] = "number"
    kinds = _Kinds(names, {}, err, ("position",))

    def where_err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"{what}: where: {msg}", loc)

    conditions = _Kinds(names, {}, where_err, ("position",))
    for w in decl.where:  # the preconditions are evaluated too (at type checking, and by the prover)
        conditions.of(w)
    targets = [m.target.base for m in decl.means if isinstance(m, A.IndexEq)]
    twice = next((t for t in targets if targets.count(t) > 1), None)
    if twice is not None:
        raise err(f"{twice!r} is defined twice")
    # a carried tensor (a recurrent op) is defined before the step: its redefinition reads the state
    defined: set[str] = set(carried)
    if rec is not None:
        for c in rec.carries:
            kinds.of(c.value, {i.id: "number" for i in c.target.indices if isinstance(i, A.Name)})
    for m in decl.means:
        if not isinstance(m, A.IndexEq):
            continue
        # each definition reads the operands and the tensors defined before it: a loop (`out[*I] =
        # out[*I]`, or two definitions reading each other) defines nothing
        ahead = next((n for n in A.walk(m.value) if (n.base if isinstance(n, A.Index) else
                      n.id if isinstance(n, A.Name) else None) in set(targets) - defined), None)
        if ahead is not None:
            name = ahead.base if isinstance(ahead, A.Index) else ahead.id
            raise err(f"{m.target.base!r} reads {name!r}, which is " +
                      ("itself" if name == m.target.base else "defined after it") +
                      " (a definition reads the operands and the tensors defined before it)")
        defined.add(m.target.base)
        local = {}
        for i in m.target.indices:
            if isinstance(i, A.Variadic):
                local[i.name] = "position"
            elif isinstance(i, A.Name):
                local[i.id] = "number"
            else:
                raise err(f"`{A.show(m.target)}`: a target is indexed by names (`i`, `*I`), not `{A.show(i)}`")
        kinds.of(m.value, local)
