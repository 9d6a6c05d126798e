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
from typing import Callable, Iterable

from ..lang import ast as A
from ..lang.loader import RuleSet, parse_rule_text, resolved_rule
from ..lang.rule import ForwardFact, Rewrite, Rule
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


def mutated(rule: Rule) -> Rule | None:
    """The rule with its conclusion changed in a way that changes what it computes: a fact's value
    plus one; a rewrite's first term added to an operand (`bias + t` -> `bias + t + t + 1`) or any other
    argument computed from an expression, plus one; else its first drop of a parameter undone. None
    when the conclusion offers nothing to change."""
    c = rule.conclusion
    if isinstance(c, ForwardFact):
        return dc_replace(rule, conclusion=ForwardFact(c.target, A.BinOp("+", c.value, A.Num(1))))
    if not isinstance(c, Rewrite) or not isinstance(c.value, A.Call):
        return None
    args = list(c.value.args)
    tensors = set(rule.info.tensors if rule.info else ())
    params = {o.name for b in rule.bindings for o in b.operands if o.name}
    for i, a in enumerate(args):  # an argument that computes something: change what it computes
        if isinstance(a, (A.BinOp, A.Call)) and not (isinstance(a, A.Call) and a.fn == "drop"):
            if isinstance(a, A.Call) and a.fn not in ("tensor",) and a.fn in _op_names(rule):
                continue
            args[i] = A.BinOp("+", a, A.Num(1))
            return dc_replace(rule, conclusion=Rewrite(c.target, A.Call(c.value.fn, tuple(args))))
    for i, a in enumerate(args):  # a drop of an operand: drop nothing
        if isinstance(a, A.Call) and a.fn == "drop" and isinstance(a.args[0], A.Name) and a.args[0].id in params & tensors:
            args[i] = a.args[0]
            return dc_replace(rule, conclusion=Rewrite(c.target, A.Call(c.value.fn, tuple(args))))
    return None


def _op_names(rule: Rule) -> set[str]:
    return set(rule.ops_used)
