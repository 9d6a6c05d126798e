"""Syntax trees of the rule language's expressions and conditions (grammar/rules.lark).

One tree, two readings: shape rules and side conditions are evaluated on concrete tensors by the
engine, and semantics and rules are encoded symbolically by the prover.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import Loc


@dataclass(frozen=True)
class Num:
    value: Any  # int or float (or fractions from the prover)


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class Slice:
    """`:` in an index: every position along that axis."""


@dataclass(frozen=True)
class Variadic:
    """`*B` in an index or a shape pattern: a run of leading dims."""

    name: str


@dataclass(frozen=True)
class Spread:
    """`us...` as a call argument: the run of operands a match bound to `us` (a variadic operand)."""

    name: str


@dataclass(frozen=True)
class Index:
    base: str
    indices: tuple["Expr", ...]


@dataclass(frozen=True)
class Bound:
    """`j < n` as a call argument (the range of a sum)."""

    var: str
    upper: "Expr"


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...]


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // % ^
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Neg:
    operand: "Expr"


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class Cmp:
    op: str  # == != < <= > >=
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or / not
    operands: tuple["Cond", ...]


@dataclass(frozen=True)
class IndexEq:
    """`out[i, j] = expr` in a `means` clause."""

    target: Index
    value: "Expr"


Expr = Union[Num, Name, Slice, Variadic, Spread, Index, Bound, Call, BinOp, Neg, ListExpr]
Cond = Union[Cmp, BoolOp]


@dataclass
class Located:
    """A tree with the place it was written, for error messages."""

    node: Any
    loc: Loc | None = field(default=None)


@dataclass(frozen=True)
class Unused:
    """`unused y[*B, c]` in a side condition: the engine knows channel c of y has no reader."""

    target: Index


@dataclass(frozen=True)
class Quant:
    """`forall i < n: cond` / `exists i < n: cond` over an index range."""

    kind: str  # forall / exists
    var: str
    upper: "Expr"
    body: "Cond"


Cond = Union[Cmp, BoolOp, Unused, Quant]


def walk(node: Any):
    """Every sub-tree of an expression or condition, the node itself first."""
    yield node
    if isinstance(node, Index):
        for i in node.indices:
            yield from walk(i)
    elif isinstance(node, Bound):
        yield from walk(node.upper)
    elif isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, (BinOp, Cmp)):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Neg):
        yield from walk(node.operand)
    elif isinstance(node, ListExpr):
        for a in node.items:
            yield from walk(a)
    elif isinstance(node, BoolOp):
        for a in node.operands:
            yield from walk(a)
    elif isinstance(node, Unused):
        yield from walk(node.target)
    elif isinstance(node, Quant):
        yield from walk(node.upper)
        yield from walk(node.body)
    elif isinstance(node, IndexEq):
        yield from walk(node.target)
        yield from walk(node.value)


def show(node: Any) -> str:
    """Rule-language text of a tree (normalised spacing; used in messages and hashes)."""
    if isinstance(node, Num):
        v = node.value
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, list):
            return "[" + ", ".join(show(Num(x)) for x in v) + "]"
        return {True: "true", False: "false", None: "none"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)
    if isinstance(node, Name):
        return node.id
    if isinstance(node, Slice):
        return ":"
    if isinstance(node, Variadic):
        return "*" + node.name
    if isinstance(node, Spread):
        return node.name + "..."
    if isinstance(node, Index):
        return f"{node.base}[{', '.join(show(i) for i in node.indices)}]"
    if isinstance(node, Bound):
        return f"{node.var} < {show(node.upper)}"
    if isinstance(node, Call):
        return f"{node.fn}({', '.join(show(a) for a in node.args)})"
    if isinstance(node, BinOp):
        return f"({show(node.left)} {node.op} {show(node.right)})"
    if isinstance(node, Neg):
        return f"-{show(node.operand)}"
    if isinstance(node, ListExpr):
        return "[" + ", ".join(show(a) for a in node.items) + "]"
    if isinstance(node, Cmp):
        return f"{show(node.left)} {node.op} {show(node.right)}"
    if isinstance(node, BoolOp):
        if node.op == "not":  # (a quantifier's body would otherwise swallow what follows)
            inner = show(node.operands[0])
            return f"not ({inner})" if isinstance(node.operands[0], Quant) else f"not {inner}"
        return "(" + f" {node.op} ".join(show(a) for a in node.operands) + ")"
    if isinstance(node, Unused):
        return f"unused {show(node.target)}"
    if isinstance(node, Quant):
        return f"{node.kind} {node.var} < {show(node.upper)}: {show(node.body)}"
    if isinstance(node, IndexEq):
        return f"{show(node.target)} = {show(node.value)}"
    return repr(node)
