"""The axiom library: facts about functions that rules may name (`axioms relu_zero, softmax_rows`).

Functions are uninterpreted unless a rule names an axiom, so a rule proved without axioms holds for
every activation. Only ground instances of an axiom enter a query. `validate()` checks each axiom
against the function's exact definition (sympy) and the library for consistency (z3): an
inconsistent library would prove everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Axiom:
    id: str
    statement: str
    check: Callable[[], bool]  # validates the statement against the exact definition


def _relu_zero() -> bool:
    import sympy as sp

    return sp.Max(0, sp.Integer(0)) == 0


def _gelu_zero() -> bool:
    import sympy as sp

    x = sp.Integer(0)
    return sp.simplify(x / 2 * (1 + sp.erf(x / sp.sqrt(2)))) == 0


def _silu_zero() -> bool:
    import sympy as sp

    x = sp.Integer(0)
    return sp.simplify(x / (1 + sp.exp(-x))) == 0


def _tanh_zero() -> bool:
    import sympy as sp

    return sp.tanh(0) == 0


def _sigmoid_half() -> bool:
    import sympy as sp

    return sp.simplify(1 / (1 + sp.exp(-sp.Integer(0)))) == sp.Rational(1, 2)


def _hardswish_zero() -> bool:
    import sympy as sp

    x = sp.Integer(0)
    return x * sp.Min(sp.Max(x + 3, 0), 6) / 6 == 0


def _mish_zero() -> bool:
    import sympy as sp

    x = sp.Integer(0)
    return sp.simplify(x * sp.tanh(sp.log(1 + sp.exp(x)))) == 0


def _exp_zero() -> bool:
    import sympy as sp

    return sp.exp(0) == 1


def _exp_add() -> bool:
    import sympy as sp

    a, b = sp.symbols("a b", real=True)
    return sp.simplify(sp.exp(a + b) - sp.exp(a) * sp.exp(b)) == 0


def _exp_pos() -> bool:
    import sympy as sp

    a = sp.Symbol("a", real=True)
    return bool(sp.exp(a).is_positive)


def _softmax_rows(n: int = 4) -> bool:
    import sympy as sp

    s = sp.symbols(f"s0:{n}", real=True)
    keep = [1, 0, 1, 1][:n]
    den = sum(k * sp.exp(x) for k, x in zip(keep, s))
    w = [k * sp.exp(x) / den for k, x in zip(keep, s)]
    return sp.simplify(sum(w) - 1) == 0 and all(w[j] == 0 for j in range(n) if not keep[j])


def _softmax_shift(n: int = 3) -> bool:
    import sympy as sp

    s = sp.symbols(f"s0:{n}", real=True)
    d = sp.Symbol("d", real=True)
    keep = [1, 1, 0][:n]

    def sm(v, j):
        den = sum(k * sp.exp(x) for k, x in zip(keep, v))
        return keep[j] * sp.exp(v[j]) / den

    return all(sp.simplify(sm([x + d for x in s], j) - sm(s, j)) == 0 for j in range(n))


LIBRARY: dict[str, Axiom] = {
    a.id: a
    for a in [
        Axiom("relu_zero", "relu(0) = 0", _relu_zero),
        Axiom("gelu_zero", "gelu(0) = 0", _gelu_zero),
        Axiom("silu_zero", "silu(0) = 0", _silu_zero),
        Axiom("tanh_zero", "tanh(0) = 0", _tanh_zero),
        Axiom("sigmoid_half", "sigmoid(0) = 1/2", _sigmoid_half),
        Axiom("hardswish_zero", "hardswish(0) = 0", _hardswish_zero),
        Axiom("mish_zero", "mish(0) = 0", _mish_zero),
        Axiom("exp_zero", "exp(0) = 1", _exp_zero),
        Axiom("exp_add", "exp(a + b) = exp(a) * exp(b)", _exp_add),
        Axiom("exp_pos", "exp(a) > 0", _exp_pos),
        Axiom("softmax_rows", "a row of softmax weights sums to 1 when at least one key is kept "
                              "(weights are >= 0 and 0 where masked by definition)", _softmax_rows),
        Axiom("softmax_shift", "softmax(s + d) = softmax(s) for a shift d common to the row", _softmax_shift),
    ]
}


def statement(ids: tuple[str, ...] | list[str]) -> str:
    """The text of the named axioms (what certificates hash)."""
    return "; ".join(f"{i}: {LIBRARY[i].statement}" if i in LIBRARY else f"{i}: <unknown>" for i in sorted(ids))


def validate() -> list[tuple[str, bool, str]]:
    """(axiom, ok, detail) for every axiom, then the consistency check of the whole library."""
    out = []
    for a in LIBRARY.values():
        try:
            ok = bool(a.check())
            out.append((a.id, ok, "agrees with the exact definition" if ok else "DISAGREES with the exact definition"))
        except Exception as e:  # a check that cannot run is a failed check
            out.append((a.id, False, f"check failed: {type(e).__name__}: {e}"))
    ok, detail = consistent()
    out.append(("<consistency>", ok, detail))
    return out


def consistent() -> tuple[bool, str]:
    """Ground instances of every axiom plus `a != b` for fresh reals must stay satisfiable."""
    import z3

    s = z3.Solver()
    s.set("timeout", 5000)
    R = z3.RealSort()
    fns = {n: z3.Function(n, R, R) for n in ("relu", "gelu", "silu", "tanh", "sigmoid", "hardswish", "mish", "exp")}
    zero = z3.RealVal(0)
    s.add(fns["relu"](zero) == 0, fns["gelu"](zero) == 0, fns["silu"](zero) == 0, fns["tanh"](zero) == 0)
    s.add(fns["sigmoid"](zero) == z3.RealVal("1/2"), fns["hardswish"](zero) == 0, fns["mish"](zero) == 0)
    s.add(fns["exp"](zero) == 1)
    a, b, d = z3.Reals("a b d")
    s.add(fns["exp"](a + b) == fns["exp"](a) * fns["exp"](b), fns["exp"](a) > 0, fns["exp"](b) > 0)
    # a softmax row of 3 with key 1 masked, and the same row shifted by d
    w = [z3.Real(f"w{j}") for j in range(3)]
    w2 = [z3.Real(f"v{j}") for j in range(3)]
    keep = [1, 0, 1]
    for ws in (w, w2):
        s.add(*[x >= 0 for x in ws], *[ws[j] == 0 for j in range(3) if not keep[j]], z3.Sum(ws) == 1)
    s.add(*[w[j] == w2[j] for j in range(3)])
    s.add(a != b)
    r = s.check()
    if r == z3.sat:
        return True, "the library's ground instances with a != b are satisfiable"
    return False, f"the library is inconsistent or undecided ({r})"
