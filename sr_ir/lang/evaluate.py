"""Evaluate rule-language expressions over plain values: dims (ints / sympy), attribute values, strings.

Used for shape patterns and `where` conditions when checking a program; the prover has its own
symbolic encoding of the same trees.
"""
from __future__ import annotations

from typing import Any, Mapping

import sympy

from ..ir.types import normalize_dim
from . import ast as A


class EvalError(Exception):
    pass


def eval_expr(e: A.Expr, env: Mapping[str, Any]) -> Any:
    if isinstance(e, A.Num):
        return e.value
    if isinstance(e, A.Name):
        if e.id not in env:
            raise EvalError(f"unknown name {e.id!r}")
        return env[e.id]
    if isinstance(e, A.Index):
        base = env.get(e.base)
        if base is None:
            raise EvalError(f"unknown name {e.base!r}")
        if len(e.indices) != 1:
            raise EvalError(f"{e.base} takes one index here")
        i = eval_expr(e.indices[0], env)
        try:
            return base[int(i)]
        except (IndexError, TypeError):
            raise EvalError(f"{e.base}[{i}] is out of range") from None
    if isinstance(e, A.Neg):
        return _norm(-eval_expr(e.operand, env))
    if isinstance(e, A.BinOp):
        a, b = eval_expr(e.left, env), eval_expr(e.right, env)
        if e.op in ("//", "%", "/") and _is_zero(b):  # a stride or a group count of 0, say
            raise EvalError(f"division by zero in {A.show(e)}")
        if e.op == "+":
            return _norm(a + b)
        if e.op == "-":
            return _norm(a - b)
        if e.op == "*":
            return _norm(a * b)
        if e.op == "//":
            if isinstance(a, int) and isinstance(b, int):
                return a // b
            return _norm(sympy.floor(sympy.sympify(a) / b))
        if e.op == "%":
            if isinstance(a, int) and isinstance(b, int):
                return a % b
            return _norm(sympy.Mod(a, b))
        if e.op == "/":
            return a / b
        if e.op == "^":
            return _norm(a**b)
    if isinstance(e, A.Call):
        args = [eval_expr(x, env) for x in e.args]
        if e.fn == "len":
            return len(args[0])
        if e.fn == "max":
            return _norm(sympy.Max(*args)) if any(isinstance(x, sympy.Basic) for x in args) else max(args)
        if e.fn == "min":
            return _norm(sympy.Min(*args)) if any(isinstance(x, sympy.Basic) for x in args) else min(args)
        raise EvalError(f"unknown function {e.fn!r} in a shape expression")
    if isinstance(e, A.ListExpr):
        return [eval_expr(x, env) for x in e.items]
    raise EvalError(f"cannot evaluate {type(e).__name__} here")


def _is_zero(v: Any) -> bool:
    return isinstance(v, (int, float, sympy.Basic)) and not isinstance(v, bool) and v == 0


def _norm(v: Any) -> Any:
    if isinstance(v, (int, sympy.Basic)) and not isinstance(v, bool):
        return normalize_dim(v)
    return v


def eval_cond(c: A.Cond, env: Mapping[str, Any]) -> bool:
    """True when the condition holds for every value of the symbols involved (proved, not sampled)."""
    if isinstance(c, A.BoolOp):
        if c.op == "and":
            return all(eval_cond(x, env) for x in c.operands)
        if c.op == "or":
            return any(eval_cond(x, env) for x in c.operands)
        return not eval_cond(c.operands[0], env)
    if isinstance(c, A.Cmp):
        a, b = eval_expr(c.left, env), eval_expr(c.right, env)
        if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
            diff = sympy.simplify(sympy.sympify(a) - sympy.sympify(b))
            if c.op == "==":
                return diff == 0
            if c.op == "!=":
                return diff != 0 and diff.is_zero is False
            rel = {"<": diff < 0, "<=": diff <= 0, ">": diff > 0, ">=": diff >= 0}[c.op]
            return bool(rel == sympy.true)
        return {
            "==": lambda: a == b,
            "!=": lambda: a != b,
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
        }[c.op]()
    raise EvalError(f"not a condition: {c!r}")
