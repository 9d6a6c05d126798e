"""Forged rules, for showing that the engine runs a rule's text: replace a rule of a rule set by other
text under the same name and vouch for it without the prover.

    rs = replaced(default_rules(), "channels.linear.fold_const",
                  "rule channels.linear.fold_const match y = linear(x: [*B, n], weight, bias) "
                  "where x[*B, c] == k then y = linear(drop(x, -1, c), drop(weight, 1, c), bias)")
    book = RuleBook(rs, certify=trusting({"channels.linear.fold_const"}))

Only tests use this: a forged rule is exactly what a certificate exists to keep out.
"""
from __future__ import annotations

from dataclasses import replace as dc_replace
from typing import Any, Callable, Iterable, Iterator

from ..lang import ast as A
from ..lang.loader import RuleSet, parse_rule_text, resolved_rule
from ..lang.rule import ForwardFact, Rewrite, Rule
from ..ir.opdecl import OpDecl
from ..rewrite.rulebook import default_certifier


def replaced(rs: RuleSet, name: str, text: str) -> RuleSet:
    """A copy of `rs` whose rule `name` is the rule written in `text` (which must declare `name`)."""
    items = [x for x in parse_rule_text(text, f"<forged {name}>") if isinstance(x, Rule)]
    if len(items) != 1 or items[0].name != name:
        raise ValueError(f"the forged text must declare exactly the rule {name!r}")
    old = rs.rule(name)
    new = resolved_rule(items[0], rs)
    new = dc_replace(new, origin=old.origin)
    return with_rule(rs, name, new)


def with_rule(rs: RuleSet, name: str, new: Rule) -> RuleSet:
    """A copy of `rs` (ops, functions, axioms shared) with rule `name` replaced by `new`."""
    return dc_replace(rs, rules=[new if r.name == name else r for r in rs.rules])


def trusting(names: Iterable[str]) -> Callable[[Rule, RuleSet], str | None]:
    """A certifier that vouches for the named rules and checks every other one's certificate."""
    trusted = set(names)
    base = default_certifier()

    def certify(rule: Rule, ruleset: RuleSet) -> str | None:
        return None if rule.name in trusted else base(rule, ruleset)

    return certify


def mutations(rule: Rule, ops: dict[str, OpDecl]) -> Iterator[tuple[str, Rule]]:
    """Every way this module knows to make the rule's conclusion compute something else, most
    telling first, each with a one-line description: a fact's value plus one; in the right-hand side,
    a float attribute plus one, an operand computed from an expression plus one (`bias + t` ->
    `bias + t + 1`), a drop of a matched operand undone, two operands swapped, an integer attribute
    plus one, a flag or a mode flipped; last, the left side's dropped channel moved by one. A mutant may be ill-typed or fail to apply; callers keep the
    first one that the engine applies."""
    c = rule.conclusion
    if isinstance(c, ForwardFact):
        yield f"{A.show(c.value)} -> {A.show(c.value)} + 1", dc_replace(
            rule, conclusion=ForwardFact(c.target, A.BinOp("+", c.value, A.Num(1))))
        return
    if not isinstance(c, Rewrite) or not isinstance(c.value, A.Call):
        return
    matched = {o.name for b in rule.bindings for o in b.operands if o.name} | {b.result for b in rule.bindings}
    found: list[tuple[int, str, Any]] = []  # (rank, description, new right-hand side)
    for path, call in _op_calls(c.value, ops):
        decl = ops[call.fn]
        for i, (param, a) in enumerate(decl.parameters_of(call.args)):
            if param is None:
                continue
            at = path + (i,)
            attr = decl.attr(param)
            if attr is not None:
                if isinstance(a, A.Num) and a.value is None:
                    continue
                if attr.kind == "float":
                    found.append((0, f"{call.fn} {param}: {A.show(a)} -> {A.show(a)} + 1", _put(c.value, at, A.BinOp("+", a, A.Num(1)))))
                elif attr.kind == "int":
                    found.append((4, f"{call.fn} {param}: {A.show(a)} -> {A.show(a)} + 1", _put(c.value, at, A.BinOp("+", a, A.Num(1)))))
                elif attr.kind == "bool" and isinstance(a, A.Num):
                    found.append((5, f"{call.fn} {param}: {a.value} -> {not a.value}", _put(c.value, at, A.Num(not a.value))))
                elif attr.kind == "str" and isinstance(a, A.Num) and isinstance(a.value, str):
                    other = "none" if a.value != "none" else "tanh"
                    found.append((5, f"{call.fn} {param}: {a.value!r} -> {other!r}", _put(c.value, at, A.Num(other))))
                continue
            if isinstance(a, A.Call) and a.fn == "drop" and isinstance(a.args[0], A.Name) and a.args[0].id in matched:
                found.append((2, f"{A.show(a)} -> {a.args[0].id}", _put(c.value, at, a.args[0])))
            elif _computed(a, ops):
                found.append((1, f"{A.show(a)} -> {A.show(a)} + 1", _put(c.value, at, A.BinOp("+", a, A.Num(1)))))
        tensor_args = [(i, a) for i, (param, a) in enumerate(decl.parameters_of(call.args))
                       if (isinstance(a, (A.Name, A.Spread)) or isinstance(a, A.Call) and a.fn in ops)
                       and (param is None or decl.attr(param) is None)]
        for (i, a), (j, b) in zip(tensor_args, tensor_args[1:]):
            if a != b:
                swapped = _put(_put(c.value, path + (i,), b), path + (j,), a)
                found.append((3, f"{call.fn}: {A.show(a)} and {A.show(b)} swapped", swapped))
    for _, why, value in sorted(found, key=lambda f: f[0]):
        yield why, dc_replace(rule, conclusion=Rewrite(c.target, value))
    t = c.target
    if isinstance(t, A.Call) and t.fn == "drop" and len(t.args) >= 3 and isinstance(t.args[2], (A.Name, A.BinOp)):
        # the channels the left side says go: one further on than those the right side stops computing
        moved = A.BinOp("+", t.args[2], A.Num(1))
        yield f"{A.show(t)}: channel {A.show(t.args[2])} -> {A.show(moved)}", dc_replace(
            rule, conclusion=Rewrite(A.Call("drop", t.args[:2] + (moved,) + t.args[3:]), c.value))


def mutated(rule: Rule, ops: dict[str, OpDecl]) -> Rule | None:
    """The first of `mutations(rule, ops)`, or None when the conclusion offers nothing to change."""
    return next((m for _, m in mutations(rule, ops)), None)


def _op_calls(e: Any, ops: dict[str, OpDecl], path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], A.Call]]:
    """Op calls of a right-hand side, outermost first, each with the argument path that reaches it
    (through `each(i < n, body)`, whose body is argument 1)."""
    if not isinstance(e, A.Call):
        return
    if e.fn in ops:
        yield path, e
    for i, a in enumerate(e.args):
        if isinstance(a, A.Call) and (a.fn in ops or a.fn == "each"):
            yield from _op_calls(a, ops, path + (i,))


def _computed(a: Any, ops: dict[str, OpDecl]) -> bool:
    """An operand the engine evaluates (a new parameter), not one it wires (a matched value, an op)."""
    if isinstance(a, A.Call):
        return a.fn not in ops and a.fn not in ("drop", "each")
    return isinstance(a, (A.BinOp, A.Neg, A.Index))


def _put(e: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    args = list(e.args)
    args[path[0]] = _put(args[path[0]], path[1:], new)
    return A.Call(e.fn, tuple(args))
