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


Expr = Union[Num, Name, Slice, Variadic, Index, Bound, Call, BinOp, Neg, ListExpr]
Cond = Union[Cmp, BoolOp]


@dataclass
class Located:
    """A tree with the place it was written, for error messages."""

    node: Any
    loc: Loc | None = field(default=None)
