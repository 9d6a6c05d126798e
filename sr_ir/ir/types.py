"""Tensor types: a dtype and a shape whose dims are integers or integer expressions over symbols."""
from __future__ import annotations

from functools import lru_cache

from dataclasses import dataclass
from typing import Union

import sympy
import torch

Dim = Union[int, sympy.Expr]

DTYPES: dict[str, torch.dtype] = {
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "f32": torch.float32,
    "f64": torch.float64,
    "i8": torch.int8,
    "i16": torch.int16,
    "i32": torch.int32,
    "i64": torch.int64,
    "u8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = frozenset({"f16", "bf16", "f32", "f64"})
# Integers in a program are sizes, axes and counts: beyond this none is meaningful, and one of
# hundreds of digits would only make sympy or torch fail later, far from the text.
MAX_INT = 2**62


def symbol(name: str) -> sympy.Symbol:
    """Dimension symbols are positive integers (a batch of zero is not a network input)."""
    return sympy.Symbol(name, integer=True, positive=True)


def normalize_dim(d: object) -> Dim:
    """Plain ints stay ints; expressions are canonicalised so that equal dims compare equal."""
    if isinstance(d, bool):
        raise TypeError("a dim cannot be a bool")
    if isinstance(d, int):
        return d
    if isinstance(d, sympy.Basic):
        e = sympy.expand(d)
        if e.is_Integer:
            return int(e)
        return e
    raise TypeError(f"not a dim: {d!r}")


def dim_str(d: Dim) -> str:
    if isinstance(d, int):
        return str(d)
    return _expr_str(d)


def _expr_str(e: sympy.Expr) -> str:
    # sympy's str is canonical for a canonical expression; floor division prints as floor(a/b)
    # which the IR grammar spells `//`.
    if isinstance(e, sympy.floor):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        return f"({_expr_str(num) if not num.is_Integer else int(num)}) // {den}"
    if isinstance(e, sympy.Mod):
        return f"({_expr_str(e.args[0])}) % {e.args[1]}"
    if e.is_Symbol or e.is_Integer:
        return str(e)
    if e.is_Add:
        parts = []
        for i, term in enumerate(sympy.Add.make_args(e)):
            s = _term_str(term)
            if i and s.startswith("-"):
                parts.append(" - " + s[1:])
            elif i:
                parts.append(" + " + s)
            else:
                parts.append(s)
        return "".join(parts)
    return _term_str(e)


def _term_str(t: sympy.Expr) -> str:
    if t.is_Mul:
        coeff, rest = t.as_coeff_Mul()
        factors = [_atom_str(f) for f in sympy.Mul.make_args(rest)]
        body = "*".join(factors)
        if coeff == 1:
            return body
        if coeff == -1:
            return "-" + body
        return f"{int(coeff)}*{body}"
    if t.is_Pow and t.exp.is_Integer and t.exp > 0:
        return "*".join([_atom_str(t.base)] * int(t.exp))
    return _atom_str(t)


def _atom_str(a: sympy.Expr) -> str:
    if a.is_Symbol or a.is_Integer:
        return str(a)
    if isinstance(a, (sympy.floor, sympy.Mod)):
        return f"({_expr_str(a)})"
    return f"({_expr_str(a)})"


def dim_problem(d: Dim) -> str | None:
    """Why `d` cannot be the size of a tensor axis (None when it can): a size is at least 1 (a
    zero-width tensor is not a network) and at most MAX_INT; a symbolic size must not be below 1
    for every value of its symbols."""
    if isinstance(d, int):
        if d < 1:
            return f"size {d} is not positive"
        return f"size {d} is too large (at most 2**62)" if d > MAX_INT else None
    if d.has(sympy.zoo, sympy.oo, sympy.nan) or (d - 1).is_negative:
        return f"size {dim_str(d)} is not positive"
    return None


def dims_equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if a == b:  # the same expression (normalized dims compare structurally)
        return True
    return _symbolic_equal(sympy.sympify(a), sympy.sympify(b))


@lru_cache(maxsize=65536)
def _symbolic_equal(a: sympy.Expr, b: sympy.Expr) -> bool:
    # simplify is slow and the same few pairs come back for every node of a large model
    return sympy.simplify(a - b) == 0


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(normalize_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        """The number of axes."""
        return len(self.shape)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of the IR dtype name ("f32" -> torch.float32)."""
        return DTYPES[self.dtype]

    def numel(self) -> Dim:
        """The number of entries: an int, or an expression in the symbolic dims."""
        n: Dim = 1
        for d in self.shape:
            n = normalize_dim(n * d)
        return n

    def is_static(self) -> bool:
        """Whether every dim is a number (no batch symbol)."""
        return all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(dim_str(d) for d in self.shape)}]"

    @staticmethod
    def of(t: torch.Tensor) -> "TensorType":
        """The type of a tensor (its dtype and static shape)."""
        return TensorType(DTYPE_NAMES[t.dtype], tuple(int(s) for s in t.shape))
