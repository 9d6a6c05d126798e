"""Mutants of a rule, for measuring how well the prover catches wrong rules.

Four operators: drop a term (a + b -> a, a + b -> b), swap two indices of a read, delete a side
condition, change a constant (n -> n + 1). Each mutant is a new Rule (re-resolved against the op
declarations; a mutant that no longer type-checks is reported as such, not proved).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterator

from ..errors import SrIrError
from ..lang import ast as A
from ..lang.rule import BackwardFact, ForwardFact, Rewrite, Rule, resolve


def _rewrite_tree(node: Any, fn: Callable[[Any], list[Any]]) -> Iterator[Any]:
    """Every tree obtained by replacing exactly one sub-tree s of `node` with one of fn(s)."""
    for alt in fn(node):
        yield alt
    if isinstance(node, A.Index):
        for i, x in enumerate(node.indices):
            for alt in _rewrite_tree(x, fn):
                yield A.Index(node.base, node.indices[:i] + (alt,) + node.indices[i + 1:])
    elif isinstance(node, A.Call):
        for i, x in enumerate(node.args):
            for alt in _rewrite_tree(x, fn):
                yield A.Call(node.fn, node.args[:i] + (alt,) + node.args[i + 1:])
    elif isinstance(node, A.Bound):
        for alt in _rewrite_tree(node.upper, fn):
            yield A.Bound(node.var, alt)
    elif isinstance(node, A.BinOp):
        for alt in _rewrite_tree(node.left, fn):
            yield A.BinOp(node.op, alt, node.right)
        for alt in _rewrite_tree(node.right, fn):
            yield A.BinOp(node.op, node.left, alt)
    elif isinstance(node, A.Cmp):
        for alt in _rewrite_tree(node.left, fn):
            yield A.Cmp(node.op, alt, node.right)
        for alt in _rewrite_tree(node.right, fn):
            yield A.Cmp(node.op, node.left, alt)
    elif isinstance(node, A.Neg):
        for alt in _rewrite_tree(node.operand, fn):
            yield A.Neg(alt)


def _drop_term(n: Any) -> list[Any]:
    if isinstance(n, A.BinOp) and n.op in ("+", "-"):
        return [n.left, n.right]
    return []


def _swap(n: Any) -> list[Any]:
    if isinstance(n, A.Index):
        pos = [i for i, x in enumerate(n.indices) if not isinstance(x, A.Variadic)]
        for a in range(len(pos)):
            for b in range(a + 1, len(pos)):
                i, j = pos[a], pos[b]
                if n.indices[i] != n.indices[j]:
                    idx = list(n.indices)
                    idx[i], idx[j] = idx[j], idx[i]
                    return [A.Index(n.base, tuple(idx))]
    return []


def _bump(n: Any) -> list[Any]:
    if isinstance(n, A.Num) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
        return [A.Num(n.value + 1)]
    return []


def _conclusion_variants(c: Any, fn) -> Iterator[Any]:
    if isinstance(c, ForwardFact):
        for v in _rewrite_tree(c.value, fn):
            yield ForwardFact(c.target, v)
        for t in _rewrite_tree(c.target, fn):
            if isinstance(t, A.Index):
                yield ForwardFact(t, c.value)
    elif isinstance(c, BackwardFact):
        for i, t in enumerate(c.targets):
            for alt in _rewrite_tree(t, fn):
                if isinstance(alt, A.Index):
                    yield BackwardFact(c.targets[:i] + (alt,) + c.targets[i + 1:])
    elif isinstance(c, Rewrite):
        for v in _rewrite_tree(c.value, fn):
            yield Rewrite(c.target, v)


def mutants(rule: Rule) -> Iterator[tuple[str, Rule]]:
    """(operator description, mutant) pairs; unresolved (resolve() is applied by `resolved`)."""
    for op, fn in (("drop a term", _drop_term), ("swap two indices", _swap), ("change a constant", _bump)):
        for c in _conclusion_variants(rule.conclusion, fn):
            yield op, replace(rule, conclusion=c, info=None)
        for i, w in enumerate(rule.where):
            for alt in _rewrite_tree(w, fn):
                where = rule.where[:i] + (alt,) + rule.where[i + 1:]
                yield op, replace(rule, where=where, info=None)
    for i in range(len(rule.where)):
        yield "delete a side condition", replace(
            rule, where=rule.where[:i] + rule.where[i + 1:], where_locs=rule.where_locs[:i] + rule.where_locs[i + 1:],
            info=None)


def resolved(mutant: Rule, ops: dict) -> Rule | None:
    """The mutant resolved against the ops, or None when it no longer type-checks."""
    try:
        return resolve(mutant, ops)
    except SrIrError:
        return None
