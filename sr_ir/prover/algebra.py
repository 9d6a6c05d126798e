"""Scalar algebras the evaluator computes in.

- `Exact`: Python Fractions. Functions are either random stand-ins that satisfy the axioms the rule
  names (a deterministic random polynomial per function; the declared value at a declared point;
  squared and shifted under a bound; a power `base ** x` under the homomorphism) or their real
  definitions, for finding counterexamples that are real: a function defined in rationals
  (`means max(x, 0)`) exactly, any other through its torch spelling in float64. The stand-in mode
  `standin_exact` runs the functions defined in rationals exactly and stands in for the rest.
- `Sym`: sympy. Tensor entries are applied undefined functions `x(0, 1)`, functions are
  uninterpreted (arguments brought to a canonical rational form first, so equal polynomials give the
  same application), except where a named axiom gives a value (`gelu(0) == 0`) or splits a sum
  (`exp(a + b) == exp(a) * exp(b)`). With symbolic sizes, sums over the channel's axis split into
  the channel c and an aggregate `SUM(R, Lambda(j, body))` whose body is canonical (expanded, factors
  that do not depend on j pulled out, bound variable named by nesting depth).

What the axioms say comes from their declarations (a `Theory`, sr_ir.prover.axioms), never from
their names, except for the two built-in softmax axioms.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any, Callable

from .axioms import Theory
from .semantics import Extent, Joined, Merged, NeedConcrete, SemanticsError


class NotReal(ValueError):
    """A value with no real number (a negative base to a fractional power): the sample is undefined,
    as NaN is in torch; draw another."""


def _idx_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v)
    try:
        import sympy

        if isinstance(v, sympy.Integer):
            return int(v)
    except ImportError:  # pragma: no cover
        pass
    return None


# an exact power's exponent at most this large: beyond it the numbers of exact arithmetic outgrow any
# proof (x ^ 10^20 of a rational never finishes), and no rule needs one
MAX_EXPONENT = 256


def _exponent(b: Any) -> int | None:
    """`b` as an integer exponent (None when it is not an integer); SemanticsError when too large."""
    e = _idx_int(b)
    if e is not None and abs(e) > MAX_EXPONENT:
        raise SemanticsError(f"the exponent {e} is too large for exact arithmetic (at most {MAX_EXPONENT})")
    return e


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class Exact:
    """Exact rationals (or float64 where a real definition is not rational)."""

    symbolic = False

    def __init__(self, mode: str, seed: int = 0, theory: Theory | None = None):
        self.mode = mode  # "standin", "standin_exact" or "real"
        self.rng = random.Random(seed)
        self.theory = _theory(theory)
        self._coef: dict[tuple[str, int], list[Fraction]] = {}
        self._real: dict[str, Any] = {}

    def num(self, v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return v  # ints are exact already (and index arithmetic stays cheap)
        if isinstance(v, Fraction):
            return v
        if isinstance(v, float):
            return Fraction(v)
        return v

    def index(self, v: Any) -> int:
        i = _idx_int(v)
        if i is None:
            raise SemanticsError(f"index {v} is not an integer")
        return i

    def as_int(self, v: Any) -> int | None:
        return _idx_int(v)

    def size(self, ext: Any) -> Any:
        return Fraction(ext)

    def points(self, ext: int) -> range:
        return range(ext)

    def dims_of(self, v: Any) -> set[str]:
        return set()

    def binop(self, op: str, a: Any, b: Any) -> Any:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise ZeroDivisionError("division by zero")
            return Fraction(a) / b if not isinstance(a, float) and not isinstance(b, float) else a / b
        if op == "//":
            if isinstance(a, int) and isinstance(b, int):
                return a // b
            return math.floor(Fraction(a) / Fraction(b))
        if op == "%":
            if isinstance(a, int) and isinstance(b, int):
                return a % b
            return Fraction(a) % Fraction(b)
        if op == "^":
            e = _exponent(b)
            if e is None:
                if float(a) < 0:  # a real power of a negative number: outside the domain
                    raise NotReal(f"{a} ^ {b} is not real")
                try:
                    return float(a) ** float(b)
                except OverflowError:  # beyond any float: no instance a rule could be checked on
                    raise SemanticsError(f"{a} ^ {b} overflows a float") from None
            return a**e
        raise SemanticsError(f"unknown operator {op}")

    def compare(self, op: str, a: Any, b: Any) -> bool:
        if isinstance(a, list) or isinstance(b, list):
            a = [self.num(x) for x in a] if isinstance(a, list) else a
            b = [self.num(x) for x in b] if isinstance(b, list) else b
        return _CMP[op](a, b)

    def sum(self, ext: Any, body: Callable[[int], Any], depth: int) -> Any:
        total: Any = 0
        for j in range(ext):
            total = total + body(j)
        return total

    # ---- functions ------------------------------------------------------------------------------
    def call(self, fn: str, args: list[Any]) -> Any:
        if fn in ("max", "min"):
            return max(args) if fn == "max" else min(args)
        th = self.theory
        if self.mode == "real":
            return self.real(fn, args)
        d = th.definition(fn)
        if d is not None:  # a named definition: the function is its formula
            from .semantics import Evaluator

            return Evaluator(self, {}).ev(d.body, dict(zip(d.params, args)))
        # a named axiom's value at its point holds for every stand-in (also over an exact definition:
        # the proof may use exactly what is declared)
        v = th.pin(fn, [_frac(a) for a in args])
        if v is not None:
            return v
        if self.mode == "standin_exact" and th.rational(fn):
            return self.real(fn, args)
        if th.homomorphic(fn):  # f(a + b) == f(a) * f(b): a power, positive
            return self._power(fn) ** float(args[0]) if len(args) == 1 else self._poly(fn, args)
        out = self._poly(fn, args)
        bounds = th.bounds(fn)
        if bounds:
            out = _bounded(out, bounds, self._coef_for(fn, len(args))[0])
        return out

    def _coef_for(self, fn: str, n: int) -> list[Fraction]:
        key = (fn, n)
        coef = self._coef.get(key)
        if coef is None:
            coef = [Fraction(self.rng.randint(-9, 9), self.rng.randint(1, 5)) for _ in range(1 + 2 * n)]
            self._coef[key] = coef
        return coef

    def _poly(self, fn: str, args: list[Any]) -> Any:
        coef = self._coef_for(fn, len(args))
        out = coef[0]
        for i, a in enumerate(args):
            out += coef[1 + 2 * i] * a + coef[2 + 2 * i] * a * a
        return out

    def _power(self, fn: str) -> float:
        """The base of a homomorphic stand-in, so that a declared value at a point other than 0 holds."""
        for p in self.theory.pins(fn):
            c = p.args[0]
            if not isinstance(c, str) and c != 0 and p.value > 0:
                return float(p.value) ** (1 / float(c))
        return 1 + float(abs(self._coef_for(fn, 1)[1])) / 10  # in (1, 2): no overflow at any argument met

    def real(self, fn: str, args: list[Any]) -> Any:
        """The function's real value: exact where it is defined in rationals, else through its torch
        spelling in float64 (what the network computes); a value outside its domain is a ValueError."""
        th = self.theory
        d = th.functions.get(fn)
        if d is None:
            raise SemanticsError(f"no definition of function {fn!r} (declare it with `function`)")
        if th.rational(fn) or (d.torch is None and d.means is not None):
            from .semantics import Evaluator

            return Evaluator(self, {}).ev(d.means, dict(zip(d.params, args)))
        if d.torch is None:
            raise SemanticsError(f"function {fn!r} has neither a definition nor a torch spelling")
        f = self._real.get(fn)
        if f is None:
            from ..lang.functions import torch_function

            f = self._real[fn] = torch_function(d)
        v = float(f(*[float(a) for a in args]))
        if not math.isfinite(v):
            raise ValueError(f"{fn}({', '.join(str(a) for a in args)}) is not finite")
        return v

    def softmax(self, scores: list[Any], keeps: list[Any], j: int) -> Any:
        if self.mode == "real":
            kept = [float(s) for s, k in zip(scores, keeps) if k]
            if not kept:
                return 0.0
            m = max(kept)
            den = sum(math.exp(float(s) - m) for s, k in zip(scores, keeps) if k)
            return math.exp(float(scores[j]) - m) / den if keeps[j] else 0.0
        shift = "softmax_shift" in self.theory
        rows = "softmax_rows" in self.theory

        def g(u: Any, t: int) -> Any:
            a = Fraction(t + 1, 3) if not shift else Fraction(1, 3)
            return (u + a) * (u + a) + 1

        base = scores[0] if shift else 0
        w = [(g(s - base, t) if k else Fraction(0)) for t, (s, k) in enumerate(zip(scores, keeps))]
        if rows or shift:
            tot = sum(w)
            return w[j] / tot if tot else Fraction(0)
        return w[j] * (1 + Fraction(len(scores), 7) * sum(scores))


def _theory(t: Any) -> Theory:
    """A Theory, or none (no axioms); axiom names alone say nothing of what the axioms state."""
    if t is None:
        return Theory()
    if not isinstance(t, Theory):
        raise TypeError(f"the algebra takes a Theory (sr_ir.prover.axioms.Theory.of_rule(rule)), not {type(t).__name__}")
    return t


def _frac(v: Any) -> Fraction | None:
    """A number's exact value (None for anything else: a float stand-in value, a symbol)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, Fraction)):
        return Fraction(v)
    return None


def _bounded(p: Any, bounds: list, salt: Fraction) -> Any:
    """A stand-in value that keeps the declared bounds `f(...) > v` (>=, <, <=): with a lower bound lo
    and an upper bound hi, lo + (hi - lo) * (p^2 + e) / (1 + p^2 + 2e); with one of them, lo + p^2 + e
    or hi - p^2 - e (e > 0 for a strict bound, else 0)."""
    lows = [b for b in bounds if b.lower]
    highs = [b for b in bounds if not b.lower]
    lo = max(lows, key=lambda b: (b.value, b.strict)) if lows else None
    hi = min(highs, key=lambda b: (b.value, not b.strict)) if highs else None
    e = Fraction(1, 7) + abs(salt) / 50
    sq = p * p
    if lo is not None and hi is not None:
        return lo.value + (hi.value - lo.value) * (sq + e) / (1 + sq + 2 * e)
    if lo is not None:
        return lo.value + sq + (e if lo.strict else 0)
    return hi.value - sq - (e if hi.strict else 0)


class Sym:
    """sympy expressions; `parametric` switches on symbolic sizes (Extents)."""

    symbolic = True

    def __init__(self, axioms: Theory | None = None, channel: Any = None):
        import sympy

        self.sp = sympy
        self.axioms = _theory(axioms)
        self.c = channel
        self.sym_dims: dict[Any, str] = {}  # symbol -> the dim it ranges over / sizes
        self.bool_atoms: set[Any] = set()
        self.bound: dict[Any, Any] = {}  # index symbol -> the length of the axis it ranges over
        self._fresh = 0
        self._funcs: dict[str, Any] = {}

    # ---- atoms --------------------------------------------------------------------------------------
    def func(self, name: str) -> Any:
        f = self._funcs.get(name)
        if f is None:
            f = self.sp.Function(name)
            self._funcs[name] = f
        return f

    def entry(self, tname: str, idx: tuple, boolean: bool = False) -> Any:
        e = self.func(tname)(*idx) if idx else self.sp.Symbol(tname)
        if boolean:
            self.bool_atoms.add(e)
        return e

    def fresh(self, dim: str) -> Any:
        self._fresh += 1
        s = self.sp.Symbol(f"{dim}_{self._fresh}", integer=True, nonnegative=True)
        self.sym_dims[s] = dim
        return s

    def num(self, v: Any) -> Any:
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, (float, Fraction)):
            return self.sp.Rational(Fraction(v))
        return v

    def index(self, v: Any) -> Any:
        if isinstance(v, tuple):  # a position on a merged axis: its digits
            return tuple(self.index(x) for x in v)
        i = _idx_int(v)
        if i is not None:
            return i
        if isinstance(v, self.sp.Symbol):
            return v
        raise NeedConcrete(self.dims_of(v))

    def as_int(self, v: Any) -> int | None:
        return _idx_int(v)

    def size(self, ext: Any) -> Any:
        if isinstance(ext, Joined):
            out = self.sp.Integer(0)
            for f in ext.parts:
                out = out + (self.size(f) if isinstance(f, (Extent, Merged, Joined)) else self.sp.Integer(f))
            return out
        if isinstance(ext, Merged):
            out = self.sp.Integer(1)
            for f in ext.factors:
                out = out * self.size(f)
            return out
        if isinstance(ext, Extent):
            if ext.part == "gen":
                s = self.sp.Symbol(ext.dim, integer=True, positive=True)
            else:
                s = self.sp.Symbol(f"{ext.dim}_r", integer=True, positive=True)
                if ext.part == "full":
                    self.sym_dims[s] = ext.dim
                    return s + 1
            self.sym_dims[s] = ext.dim
            return s
        return self.sp.Integer(ext)

    def points(self, ext: Any) -> list[Any]:
        if isinstance(ext, Joined):  # (part, position) for the representatives of every part
            return [(k, p) for k, part in enumerate(ext.parts) for p in self.points(part)]
        if isinstance(ext, Merged):  # every combination of the factors' representatives
            import itertools

            return [tuple(p) for p in itertools.product(*[self.points(f) for f in ext.factors])]
        if isinstance(ext, Extent):
            size = self.size(ext)
            pts = [self.c, self.fresh(ext.dim)] if ext.part == "full" else [self.fresh(ext.dim)]
            for p in pts:
                self.bound.setdefault(p, size)
            return pts
        return list(range(ext))

    def dims_of(self, v: Any) -> set[str]:
        syms = getattr(v, "free_symbols", set())
        out = {self.sym_dims[s] for s in syms if s in self.sym_dims}
        if self.c in syms:
            out.add("<channel>")
        return out

    def binop(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            return {"+": a + b, "-": a - b, "*": a * b}.get(op) if op in "+-*" else self._intop(op, a, b)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise ZeroDivisionError("division by zero")
            return self.sp.Integer(a) / b if isinstance(a, int) else a / b
        if op in ("//", "%"):
            ia, ib = _idx_int(a), _idx_int(b)
            if ia is None or ib is None:
                n = self.bound.get(a)
                if n is not None:
                    gap = self.sp.expand(self.sp.sympify(b) - n)
                    if gap == 0 or gap.is_nonnegative:
                        return 0 if op == "//" else a  # 0 <= a < n <= b
                q = self.sp.cancel(self.sp.sympify(a) / self.sp.sympify(b))
                if q.is_integer:  # exact division of symbolic sizes (o // groups with groups == o)
                    return (int(q) if q.is_Integer else q) if op == "//" else 0
                raise NeedConcrete(self.dims_of(a) | self.dims_of(b))
            return self._intop(op, ia, ib)
        if op == "^":
            _exponent(b)
            return a**b
        raise SemanticsError(f"unknown operator {op}")

    def _intop(self, op: str, a: int, b: int) -> Any:
        if op == "//":
            return a // b
        if op == "%":
            return a % b
        if op == "/":
            return self.sp.Rational(a, b)
        if op == "^":
            _exponent(b)
            return a**b
        raise SemanticsError(op)

    def compare(self, op: str, a: Any, b: Any) -> bool:
        if isinstance(a, list) or isinstance(b, list):
            if op not in ("==", "!="):
                raise SemanticsError("lists compare with == or != only")
            eq = [self.num(x) for x in a] == [self.num(x) for x in b] if isinstance(a, list) and isinstance(b, list) else False
            return eq if op == "==" else not eq
        if isinstance(a, (str, bool)) or isinstance(b, (str, bool)) or a is None or b is None:
            return _CMP[op](a, b)
        d = self.sp.expand(self.sp.sympify(a) - self.sp.sympify(b))
        if d.is_number:
            return _CMP[op](d, 0)
        facts = {"==": d.is_zero, "!=": (None if d.is_zero is None else not d.is_zero),
                 "<": d.is_negative, "<=": d.is_nonpositive, ">": d.is_positive, ">=": d.is_nonnegative}
        v = facts[op]
        if v is None:
            raise NeedConcrete(self.dims_of(d) or {"?"})
        return bool(v)

    # ---- canonical forms -----------------------------------------------------------------------------
    def canon(self, e: Any) -> Any:
        sp = self.sp
        if not isinstance(e, sp.Basic):
            return self.num(e)
        e = sp.expand(e)
        if e.is_polynomial() if hasattr(e, "is_polynomial") else False:
            return e
        return sp.cancel(sp.together(e))

    def sum(self, ext: Any, body: Callable[[Any], Any], depth: int) -> Any:
        sp = self.sp
        if not isinstance(ext, Extent):
            total = sp.Integer(0)
            for j in range(ext):
                total += body(j)
            return total
        total = sp.Integer(0)
        if ext.part == "full":
            total += body(self.c)
        d = sp.Dummy(f"j{depth}")
        self.sym_dims[d] = ext.dim
        part = "rest" if ext.part in ("full", "rest") else "gen"
        size = self.size(Extent(ext.dim, part))
        self.bound[d] = self.size(ext)
        expr = sp.expand(body(d))
        groups: dict[Any, Any] = {}
        for term in sp.Add.make_args(expr):
            dep, indep = [], []
            for f in sp.Mul.make_args(term):
                (dep if d in f.free_symbols else indep).append(f)
            key = sp.Mul(*dep)
            groups[key] = groups.get(key, 0) + sp.Mul(*indep)
        for key, coef in groups.items():
            if key == 1:
                total += coef * size
                continue
            level = _lambda_depth(key)
            canon_var = sp.Symbol(f"_j{level}_{ext.dim}")
            atom = self.func(f"SUM_{ext.dim}_{part}")(sp.Lambda(canon_var, key.xreplace({d: canon_var})))
            total += coef * atom
        return total

    def call(self, fn: str, args: list[Any]) -> Any:
        sp = self.sp
        args = [self.canon(a) for a in args]
        if fn in ("max", "min"):
            return sp.Max(*args) if fn == "max" else sp.Min(*args)
        th = self.axioms
        d = th.definition(fn)
        if d is not None:  # a named definition: the function is its formula
            from .semantics import Evaluator

            return Evaluator(self, {}).ev(d.body, dict(zip(d.params, args)))
        v = th.pin(fn, [Fraction(int(a.p), int(a.q)) if isinstance(a, sp.Rational) else _frac(a) for a in args])
        if v is not None:
            return self.num(v)
        if th.homomorphic(fn) and len(args) == 1 and isinstance(args[0], sp.Add):
            out = sp.Integer(1)
            for t in sp.Add.make_args(args[0]):
                out *= self.call(fn, [t])
            return out
        return self.func(fn)(*args)

    def softmax(self, scores: list[Any], keeps: list[Any], j: int) -> Any:
        sp = self.sp
        if "softmax_shift" in self.axioms:
            scores = [s - scores[0] for s in scores]
        scores = [self.canon(s) for s in scores]
        keeps = [self.canon(k) for k in keeps]
        f = self.func(f"softmax{len(scores)}")
        return f(sp.Integer(j), *scores, *keeps)


def _lambda_depth(e: Any) -> int:
    import sympy as sp

    best = 0
    for sub in sp.preorder_traversal(e):
        if isinstance(sub, sp.Lambda):
            best = max(best, 1 + _lambda_depth(sub.expr))
    return best
