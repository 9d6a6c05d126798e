"""sympy -> z3: residual equalities, assumptions and ground axiom instances, decided by z3.

Tensor entries and aggregate atoms become real constants; named functions become z3 functions over
the reals (so congruence is z3's); softmax rows get their ground axiom instances (weights are
non-negative, zero where masked, and — under `softmax_rows` — sum to 1 when a key is kept). The
axioms a rule names about functions enter as ground instances at the applications in the query:
a declared value at its point, a declared bound at every application.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import sympy as sp
import z3


class Z3Encoder:
    def __init__(self) -> None:
        self.consts: dict[Any, Any] = {}
        self.funcs: dict[tuple[str, int], Any] = {}
        self.softmax_rows: dict[tuple, list[tuple[int, Any]]] = {}
        self.apps: dict[str, list[Any]] = {}  # function -> its applications (z3 terms), for axiom instances
        self.side: list[Any] = []  # domain facts (booleans are 0/1, sizes >= 1)

    def const(self, key: Any, name: str) -> Any:
        c = self.consts.get(key)
        if c is None:
            c = z3.Real(name)
            self.consts[key] = c
        return c

    def enc(self, e: Any) -> Any:
        if isinstance(e, (int, Fraction)):
            return z3.RealVal(str(e))
        if isinstance(e, bool):
            return z3.BoolVal(e)
        if e is sp.true:
            return z3.BoolVal(True)
        if e is sp.false:
            return z3.BoolVal(False)
        if isinstance(e, sp.Rational):
            return z3.RealVal(f"{e.p}/{e.q}")
        if isinstance(e, sp.Symbol):
            c = self.const(e, str(e))
            if e.is_integer and e.is_positive:
                self.side.append(c >= 1)
            elif e.is_integer and e.is_nonnegative:
                self.side.append(c >= 0)
            elif e.is_positive:
                self.side.append(c > 0)
            return c
        if isinstance(e, sp.Add):
            return z3.Sum([self.enc(a) for a in e.args])
        if isinstance(e, sp.Mul):
            out = self.enc(e.args[0])
            for a in e.args[1:]:
                out = out * self.enc(a)
            return out
        if isinstance(e, sp.Pow):
            base, ex = e.args
            if ex.is_Integer:
                n = int(ex)
                b = self.enc(base)
                p = b
                for _ in range(abs(n) - 1):
                    p = p * b
                if n == 0:
                    return z3.RealVal(1)
                return p if n > 0 else 1 / p
            return self.uf("pow", [base, ex])
        if isinstance(e, (sp.Max, sp.Min)):
            args = [self.enc(a) for a in e.args]
            out = args[0]
            for a in args[1:]:
                out = z3.If(a > out, a, out) if isinstance(e, sp.Max) else z3.If(a < out, a, out)
            return out
        if isinstance(e, sp.Eq):
            return self.enc(e.lhs) == self.enc(e.rhs)
        if isinstance(e, sp.Ne):
            return self.enc(e.lhs) != self.enc(e.rhs)
        if isinstance(e, (sp.StrictLessThan, sp.LessThan, sp.StrictGreaterThan, sp.GreaterThan)):
            a, b = self.enc(e.lhs), self.enc(e.rhs)
            return {sp.StrictLessThan: a < b, sp.LessThan: a <= b, sp.StrictGreaterThan: a > b,
                    sp.GreaterThan: a >= b}[type(e)]
        if isinstance(e, sp.And):
            return z3.And([self.enc(a) for a in e.args])
        if isinstance(e, sp.Or):
            return z3.Or([self.enc(a) for a in e.args])
        if isinstance(e, sp.Not):
            return z3.Not(self.enc(e.args[0]))
        if isinstance(e, sp.core.function.AppliedUndef):
            name = type(e).__name__
            if name.startswith("softmax") and name[7:].isdigit():
                return self.softmax(e, int(name[7:]))
            if name.startswith("SUM_") or any(isinstance(a, sp.Lambda) for a in e.args):
                return self.const(e, f"agg{len(self.consts)}")
            if all(a.is_Integer for a in e.args) or any(isinstance(a, sp.Symbol) and a.is_integer for a in e.args):
                # a tensor entry x(0, 1) (or x(i) at a generic index)
                if all(not a.free_symbols or (isinstance(a, sp.Symbol) and a.is_integer) for a in e.args):
                    return self.const(e, str(e))
            return self.uf(name, list(e.args))
        if isinstance(e, sp.Dummy):
            return self.const(e, str(e))
        if isinstance(e, sp.Basic) and e.is_number:
            r = sp.nsimplify(e)
            if isinstance(r, sp.Rational):
                return self.enc(r)
        raise TypeError(f"cannot encode {e!r} for z3")

    def uf(self, name: str, args: list[Any]) -> Any:
        key = (name, len(args))
        f = self.funcs.get(key)
        if f is None:
            f = z3.Function(name, *([z3.RealSort()] * (len(args) + 1)))
            self.funcs[key] = f
        term = f(*[self.enc(a) for a in args])
        self.apps.setdefault(name, []).append(term)
        return term

    def softmax(self, e: Any, n: int) -> Any:
        j = int(e.args[0])
        scores = e.args[1:1 + n]
        keeps = e.args[1 + n:]
        row = (n, tuple(scores), tuple(keeps))
        c = self.const(e, f"softmax_{len(self.consts)}")
        self.softmax_rows.setdefault(row, []).append((j, c))
        return c

    def axiom_instances(self, axioms: Any) -> list[Any]:
        """Ground instances for the softmax rows in the query (definitional facts plus named axioms) and
        for the named axioms about functions (`axioms`: a Theory)."""
        out = []
        for (n, scores, keeps), cells in self.softmax_rows.items():
            ks = [self.enc(k) for k in keeps]
            by_j = dict(cells)
            for j in range(n):
                if j not in by_j:
                    key = sp.Function(f"softmax{n}")(sp.Integer(j), *scores, *keeps)
                    by_j[j] = self.const(key, f"softmax_{len(self.consts)}")
            for j, c in by_j.items():
                out.append(c >= 0)
                out.append(z3.Implies(ks[j] == 0, c == 0))
            if "softmax_rows" in axioms:
                out.append(z3.Implies(z3.Or([k != 0 for k in ks]), z3.Sum([by_j[j] for j in range(n)]) == 1))
        out += self.function_instances(axioms)
        return out

    def function_instances(self, theory: Any) -> list[Any]:
        """Ground instances of the named axioms about functions at their applications in the query."""
        out = []
        for name, terms in self.apps.items():
            seen = set()
            for t in terms:
                if t.get_id() in seen:
                    continue
                seen.add(t.get_id())
                args = [t.arg(i) for i in range(t.num_args())]
                for p in theory.pins(name):  # f(c, x) == v at every application: f(c, t_x) == v
                    if len(p.args) != len(args):
                        continue
                    f = self.funcs[(name, len(args))]
                    point = [a if isinstance(c, str) else z3.RealVal(str(c)) for c, a in zip(p.args, args)]
                    out.append(f(*point) == z3.RealVal(str(p.value)))
                for b in theory.bounds(name):
                    if b.arity == len(args):
                        v = z3.RealVal(str(b.value))
                        out.append({">": t > v, ">=": t >= v, "<": t < v, "<=": t <= v}[b.op])
        return out


RLIMIT = 50_000_000


def decide(residuals: list[Any], assumptions: list[Any], axioms: Any, bool_atoms: set[Any],
           timeout_ms: int = 10000, seed: int = 0) -> tuple[str, dict | None]:
    """'proved' (every residual is 0 under the assumptions), 'refuted' with a model, or 'unknown'.
    `axioms` is the rule's Theory (sr_ir.prover.axioms)."""
    enc = Z3Encoder()
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.set("random_seed", seed)
    # a resource limit as well as the wall-clock timeout: the same verdict on a slower machine
    s.set("rlimit", RLIMIT)
    goal = z3.Or([enc.enc(r) != 0 for r in residuals]) if residuals else z3.BoolVal(False)
    for a in assumptions:
        s.add(enc.enc(a))
    for b in bool_atoms:
        v = enc.enc(b)
        s.add(z3.Or(v == 0, v == 1))
    s.add(goal)
    for ax in enc.axiom_instances(axioms):
        s.add(ax)
    for side in enc.side:
        s.add(side)
    r = s.check()
    if r == z3.unsat:
        return "proved", None
    if r == z3.sat:
        m = s.model()
        vals = {}
        for key, c in enc.consts.items():
            v = m.eval(c, model_completion=True)
            vals[key] = _to_fraction(v)
        return "refuted", vals
    return "unknown", {"reason": s.reason_unknown()}


def satisfiable(assumptions: list[Any], bool_atoms: set[Any], timeout_ms: int = 5000) -> str:
    enc = Z3Encoder()
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    for a in assumptions:
        s.add(enc.enc(a))
    for b in bool_atoms:
        v = enc.enc(b)
        s.add(z3.Or(v == 0, v == 1))
    for side in enc.side:
        s.add(side)
    r = s.check()
    return "sat" if r == z3.sat else "unsat" if r == z3.unsat else "unknown"


def _to_fraction(v: Any) -> Fraction:
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    if z3.is_algebraic_value(v):
        return Fraction(v.approx(20).as_decimal(20).rstrip("?"))
    try:
        return Fraction(str(v))
    except ValueError:
        return Fraction(0)
