"""What a proof may assume about functions, and the validation of the declared axioms.

Axioms are declared in rule files (`axiom gelu_zero: gelu(0) == 0`, see sr_ir.lang.functions) and a
rule names the ones its proof may use. Functions are uninterpreted otherwise, so a rule proved
without axioms holds for every function in that place. `Theory.of_rule(rule)` is the one object the
tiers hand to the algebras and to z3: the named axioms, read by their form (values at points,
bounds, the exp homomorphism, the two built-in softmax axioms), never by their name. Only ground
instances enter a query.

`validate()` is what `sr-ir prove --axioms` runs on exactly those declarations: each axiom against the
definitions of the functions it is about (sympy over their `means`; float64 through their torch
spellings where sympy leaves it undecided), each function's `means` against its torch spelling, and
the whole list for consistency (z3: ground instances plus `a != b` stay satisfiable; an inconsistent
library would prove everything).
"""
from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any, Iterable, NamedTuple

from ..lang import ast as A
from ..lang.functions import AxiomDecl, Bound, BuiltinForm, Definition, FunctionDecl, Homomorphism, Pin, Vocabulary


class Theory:
    """The axioms one proof may use, by form, and the function declarations (for real evaluation)."""

    def __init__(self, axioms: Iterable[AxiomDecl] = (), vocabulary: Vocabulary | None = None):
        self.axioms = tuple(axioms)
        self.names = frozenset(a.id for a in self.axioms)
        self.vocabulary = vocabulary or Vocabulary()
        self._pins: dict[str, list[Pin]] = {}
        self._bounds: dict[str, list[Bound]] = {}
        self._hom: set[str] = set()
        self._defs: dict[str, Definition] = {}
        for a in self.axioms:
            f = a.form
            if isinstance(f, Pin):
                self._pins.setdefault(f.fn, []).append(f)
            elif isinstance(f, Bound):
                self._bounds.setdefault(f.fn, []).append(f)
            elif isinstance(f, Homomorphism):
                self._hom.add(f.fn)
            elif isinstance(f, Definition):
                self._defs[f.fn] = f
        self._rational: dict[str, bool] = {}

    @classmethod
    def of_rule(cls, rule: Any) -> "Theory":
        """The axioms the rule names (as declared in the vocabulary it was loaded with)."""
        vocab = getattr(rule, "vocabulary", None)
        if vocab is None:
            return cls()
        missing = [a for a in rule.axioms if a not in vocab.axioms]
        if missing:  # (the loader rejects these; a rule built by hand may still carry one)
            from .semantics import SemanticsError

            raise SemanticsError(f"rule {rule.name!r} names undeclared axioms: {', '.join(missing)}")
        return cls([vocab.axioms[a] for a in rule.axioms], vocab)

    def __contains__(self, name: object) -> bool:  # a built-in axiom, by its declared name
        return name in self.names

    @property
    def functions(self) -> dict[str, FunctionDecl]:
        return self.vocabulary.functions

    def pin(self, fn: str, consts: list[Fraction | None]) -> Fraction | None:
        """The value a named axiom gives `fn` at these arguments (None where unknown)."""
        for p in self._pins.get(fn, ()):
            if p.matches(consts):
                return p.value
        return None

    def pins(self, fn: str | None = None) -> list[Pin]:
        if fn is not None:
            return list(self._pins.get(fn, ()))
        return [p for ps in self._pins.values() for p in ps]

    def bounds(self, fn: str | None = None) -> list[Bound]:
        if fn is not None:
            return list(self._bounds.get(fn, ()))
        return [b for bs in self._bounds.values() for b in bs]

    def homomorphic(self, fn: str) -> bool:
        return fn in self._hom

    def definition(self, fn: str) -> "Definition | None":
        return self._defs.get(fn)

    def rational(self, fn: str) -> bool:
        """Does `fn` have an exact definition in rationals (`means` over + - * / max min and such functions)?"""
        if fn not in self._rational:
            self._rational[fn] = False  # (a cycle is a loader error; this only guards the recursion)
            d = self.functions.get(fn)
            ok = d is not None and d.means is not None
            if ok:
                for sub in A.walk(d.means):
                    if isinstance(sub, A.Call) and sub.fn not in ("max", "min") and not self.rational(sub.fn):
                        ok = False
                    if isinstance(sub, A.BinOp) and sub.op == "^" and not (
                            isinstance(sub.right, A.Num) and isinstance(sub.right.value, int)):
                        ok = False
            self._rational[fn] = ok
        return self._rational[fn]


# ---- validation -----------------------------------------------------------------------------------------
class Check(NamedTuple):
    """One line of `sr-ir prove --axioms`."""

    name: str  # an axiom id, `function NAME`, or <consistency>
    ok: bool
    detail: str
    statement: str = ""
    loc: str = ""


_GRID = (-4.0, -2.5, -1.0, -0.5, -0.125, 0.0, 0.25, 0.75, 1.0, 1.5, 3.0, 4.0)


class _Undecided(Exception):
    pass


class _SympyEval:
    """Statements over sympy: functions by their `means` (primitives stay uninterpreted), softmax exact."""

    def __init__(self, functions: dict[str, FunctionDecl]):
        import sympy

        self.sp = sympy
        self.functions = functions

    def num(self, v: Any) -> Any:
        return self.sp.Rational(str(v)) if isinstance(v, float) else self.sp.Integer(v)

    def call(self, fn: str, args: list[Any]) -> Any:
        sp = self.sp
        if fn == "max":
            return sp.Max(*args)
        if fn == "min":
            return sp.Min(*args)
        d = self.functions[fn]
        if d.means is None:
            return sp.Function(fn)(*args)
        return evaluate(d.means, dict(zip(d.params, args)), self)

    def softmax(self, scores: list[Any], keeps: list[Any], j: int) -> Any:
        sp = self.sp
        den = sum((k * sp.exp(s) for s, k in zip(scores, keeps)), sp.Integer(0))
        if den == 0:
            return sp.Integer(0)
        return keeps[j] * sp.exp(scores[j]) / den

    def compare(self, op: str, a: Any, b: Any) -> bool:
        sp = self.sp
        d = sp.simplify(sp.sympify(a) - sp.sympify(b))
        if op == "==":
            if d == 0:
                return True
            if d.is_number and d.is_zero is False:
                return False
            raise _Undecided
        if op == "!=":
            return not self.compare("==", a, b)
        fact = {">": d.is_positive, ">=": d.is_nonnegative, "<": d.is_negative, "<=": d.is_nonpositive}[op]
        if fact is None:
            raise _Undecided
        return bool(fact)


class _TorchEval:
    """Statements in float64 on a grid of points, every function through its torch spelling."""

    def __init__(self, functions: dict[str, FunctionDecl]):
        import torch

        from ..lang.functions import torch_function

        self.torch = torch
        self.functions = functions
        self._fns = {}
        self._make = torch_function

    def num(self, v: Any) -> Any:
        return self.torch.tensor(float(v), dtype=self.torch.float64)

    def call(self, fn: str, args: list[Any]) -> Any:
        t = self.torch
        if fn in ("max", "min"):
            a, b = args
            return t.maximum(a, b) if fn == "max" else t.minimum(a, b)
        if fn not in self._fns:
            d = self.functions[fn]
            if d.torch is None:  # a function known only by its definition
                self._fns[fn] = lambda *xs, d=d: evaluate(d.means, dict(zip(d.params, xs)), self)
            else:
                self._fns[fn] = self._make(d)
        return self._fns[fn](*args)

    def softmax(self, scores, keeps, j):  # pragma: no cover - built-in axioms are validated in sympy
        raise _Undecided

    def compare(self, op: str, a: Any, b: Any) -> bool:
        t = self.torch
        a, b = t.as_tensor(a, dtype=t.float64), t.as_tensor(b, dtype=t.float64)
        if op == "==":
            return bool(t.isclose(a, b, rtol=1e-9, atol=1e-12).all())
        if op == "!=":
            return bool((a != b).all())
        return bool({">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op].all())


def evaluate(e: Any, env: dict[str, Any], be: Any) -> Any:
    """A statement or scalar expression of the rule language, in one of the backends above."""
    if isinstance(e, A.Num):
        if isinstance(e.value, bool) or not isinstance(e.value, (int, float)):
            raise _Undecided
        return be.num(e.value)
    if isinstance(e, A.Name):
        return env[e.id]
    if isinstance(e, A.Index):
        t = env[e.base]
        return t[tuple(int(evaluate(i, env, be)) for i in e.indices)]
    if isinstance(e, A.Neg):
        return -evaluate(e.operand, env, be)
    if isinstance(e, A.BinOp):
        a, b = evaluate(e.left, env, be), evaluate(e.right, env, be)
        if e.op == "+":
            return a + b
        if e.op == "-":
            return a - b
        if e.op == "*":
            return a * b
        if e.op == "/":
            return a / b
        if e.op == "^":
            return a**b
        raise _Undecided
    if isinstance(e, A.Call):
        if e.fn == "sum":
            bnd, body = e.args
            return sum((evaluate(body, {**env, bnd.var: k}, be) for k in range(int(evaluate(bnd.upper, env, be)))),
                       be.num(0))
        if e.fn == "softmax":
            bnd, score, keep, j = e.args
            n = int(evaluate(bnd.upper, env, be))
            scores = [evaluate(score, {**env, bnd.var: k}, be) for k in range(n)]
            keeps = [evaluate(keep, {**env, bnd.var: k}, be) for k in range(n)]
            return be.softmax(scores, keeps, int(evaluate(j, env, be)))
        return be.call(e.fn, [evaluate(a, env, be) for a in e.args])
    if isinstance(e, A.Cmp):
        return be.compare(e.op, evaluate(e.left, env, be), evaluate(e.right, env, be))
    if isinstance(e, A.BoolOp):
        vals = [evaluate(x, env, be) for x in e.operands]
        return {"and": all, "or": any}[e.op](vals) if e.op != "not" else not vals[0]
    if isinstance(e, A.Quant):
        n = int(evaluate(e.upper, env, be))
        vals = [evaluate(e.body, {**env, e.var: k}, be) for k in range(n)]
        return all(vals) if e.kind == "forall" else any(vals)
    raise _Undecided


def _variables(statement: Any) -> list[str]:
    names: list[str] = []
    for sub in A.walk(statement):
        if isinstance(sub, A.Name) and sub.id not in names:
            names.append(sub.id)
    return names


def _check_scalar(a: AxiomDecl, functions: dict[str, FunctionDecl]) -> tuple[bool, str]:
    """A scalar axiom against the definitions: exactly where sympy decides it, else in float64."""
    import sympy

    names = _variables(a.statement)
    fns = ", ".join(a.functions)
    try:
        ok = evaluate(a.statement, {n: sympy.Symbol(n, real=True) for n in names}, _SympyEval(functions))
        if ok:
            return True, f"agrees with the definition of {fns} (exact, sympy)"
        sides = []
        if isinstance(a.statement, A.Cmp):
            be = _SympyEval(functions)
            sides = [sympy.simplify(evaluate(x, {n: sympy.Symbol(n, real=True) for n in names}, be))
                     for x in (a.statement.left, a.statement.right)]
        shown = f": {A.show(a.statement.left)} is {sides[0]}" if sides else ""
        return False, f"DISAGREES with the definition of {fns}{shown}"
    except _Undecided:
        pass
    import torch

    be = _TorchEval(functions)
    pts = list(itertools.product(_GRID, repeat=len(names)))
    env = {n: torch.tensor([p[i] for p in pts], dtype=torch.float64) for i, n in enumerate(names)}
    try:
        ok = evaluate(a.statement, env, be)
    except _Undecided:
        return False, "cannot be checked: neither sympy nor a float64 evaluation decides it"
    if ok:
        return True, (f"agrees with {fns} in float64 through the torch spelling at {len(pts)} point(s) "
                      f"(the definition does not settle it in sympy)")
    return False, f"DISAGREES with {fns} in float64 through the torch spelling{_first_failure(a, env, be, pts)}"


def _first_failure(a: AxiomDecl, env: dict, be: "_TorchEval", pts: list[tuple]) -> str:
    """Where a statement fails on the grid (for the message)."""
    import torch

    st = a.statement
    if not isinstance(st, A.Cmp):
        return ""
    left = torch.as_tensor(evaluate(st.left, env, be), dtype=torch.float64).reshape(-1).expand(len(pts))
    right = torch.as_tensor(evaluate(st.right, env, be), dtype=torch.float64).reshape(-1).expand(len(pts))
    for i, p in enumerate(pts):
        if not be.compare(st.op, left[i], right[i]):
            at = ", ".join(f"{k} = {v:g}" for k, v in zip(env, p))
            return (f" ({'at ' + at + ': ' if at else ''}{A.show(st.left)} = {float(left[i]):.6g}, "
                    f"{A.show(st.right)} = {float(right[i]):.6g})")
    return ""


def _check_builtin(a: AxiomDecl, functions: dict[str, FunctionDecl]) -> tuple[bool, str]:
    """A softmax axiom over every row of up to 3 keys and every mask, exactly (sympy)."""
    import sympy

    be = _SympyEval(functions)
    cases = 0
    for s in (1, 2, 3):
        for keep in itertools.product((0, 1), repeat=s):
            for j in range(s):
                env = {"s": sympy.Integer(s), "j": sympy.Integer(j), "d": sympy.Symbol("d", real=True),
                       "keep": {(t,): sympy.Integer(k) for t, k in enumerate(keep)},
                       "score": {(t,): sympy.Symbol(f"score{t}", real=True) for t in range(s)}}
                try:
                    ok = evaluate(a.statement, env, be)
                except _Undecided:
                    return False, f"cannot be decided for a row of {s} with mask {list(keep)}"
                if not ok:
                    return False, f"DISAGREES with the definition of softmax (a row of {s}, mask {list(keep)}, j = {j})"
                cases += 1
    return True, f"agrees with the definition of softmax (exact, sympy; {cases} rows of up to 3 keys, every mask)"


def _check_function(d: FunctionDecl, functions: dict[str, FunctionDecl]) -> tuple[bool, str]:
    """A function's `means` against its torch spelling, in float64 on a grid."""
    import torch

    be = _TorchEval(functions)
    pts = list(itertools.product(_GRID, repeat=len(d.params)))
    args = [torch.tensor([p[i] for p in pts], dtype=torch.float64) for i in range(len(d.params))]
    try:
        means = torch.as_tensor(evaluate(d.means, dict(zip(d.params, args)), be), dtype=torch.float64)
        spelled = torch.as_tensor(be.call(d.name, args), dtype=torch.float64)
    except Exception as e:  # a template that does not run is a failed check
        return False, f"cannot evaluate: {type(e).__name__}: {e}"
    close = torch.isclose(means, spelled, rtol=1e-9, atol=1e-12, equal_nan=True)
    if bool(close.all()):
        return True, f"`means` and the torch spelling agree in float64 at {len(pts)} point(s)"
    i = int((~close).reshape(-1).nonzero()[0])
    at = ", ".join(f"{p} = {pts[i][k]:g}" for k, p in enumerate(d.params))
    return False, (f"`means` and the torch spelling DISAGREE at {at}: {float(means.reshape(-1)[i]):.6g} "
                   f"vs {float(spelled.reshape(-1)[i]):.6g}")


def validate(vocabulary: Vocabulary | None = None) -> list[Check]:
    """Every declared axiom, every function with both a definition and a torch spelling, then the
    consistency of all axioms together (the bundled rule set's vocabulary by default)."""
    if vocabulary is None:
        from ..lang.loader import default_rules

        vocabulary = default_rules().vocabulary
    fns = vocabulary.functions
    out: list[Check] = []
    for a in vocabulary.axioms.values():
        try:
            ok, detail = _check_builtin(a, fns) if a.builtin else _check_scalar(a, fns)
        except Exception as e:  # a check that cannot run is a failed check
            ok, detail = False, f"check failed: {type(e).__name__}: {e}"
        out.append(Check(a.id, ok, detail, A.show(a.statement), str(a.loc or "")))
    for d in fns.values():
        if d.means is not None and d.torch is not None:
            ok, detail = _check_function(d, fns)
            out.append(Check(f"function {d.name}", ok, detail, d.text(), str(d.loc or "")))
    ok, detail = consistent(vocabulary)
    out.append(Check("<consistency>", ok, detail))
    return out


def consistent(vocabulary: Vocabulary) -> tuple[bool, str]:
    """Ground instances of every declared axiom plus `a != b` for fresh reals must stay satisfiable."""
    import z3

    s = z3.Solver()
    s.set("timeout", 5000)
    R = z3.RealSort()
    a, b = z3.Reals("a b")
    s.add(a != b)
    axioms = list(vocabulary.axioms.values())

    def val(v: Fraction) -> Any:
        return z3.RealVal(f"{v.numerator}/{v.denominator}")

    # a definition names a new function by an expression: it cannot make the library inconsistent
    scalar = [x.form for x in axioms if not x.builtin and not isinstance(x.form, Definition)]
    arity: dict[str, int] = {}
    for f in scalar:
        arity[f.fn] = len(f.args) if isinstance(f, Pin) else f.arity if isinstance(f, Bound) else 1
    fz = {n: z3.Function(n, *([R] * (k + 1))) for n, k in arity.items()}
    n_inst = 0
    for name, k in arity.items():
        base = [a, b] + [val(p.args[i]) for p in (f for f in scalar if isinstance(f, Pin) and f.fn == name)
                         for i in range(k) if not isinstance(p.args[i], str)]
        points = list(base)
        if any(isinstance(f, Homomorphism) and f.fn == name for f in scalar):
            for x, y in itertools.product(base, repeat=2):
                s.add(fz[name](x + y) == fz[name](x) * fz[name](y))
                points.append(x + y)
                n_inst += 1
        tuples = list(itertools.islice(itertools.product(points, repeat=k), 64))
        for f in scalar:
            if f.fn != name:
                continue
            if isinstance(f, Pin):
                for vs in itertools.product((a, b), repeat=sum(isinstance(x, str) for x in f.args)):
                    it = iter(vs)
                    args = [next(it) if isinstance(x, str) else val(x) for x in f.args]
                    s.add(fz[name](*args) == val(f.value))
                    n_inst += 1
            elif isinstance(f, Bound):
                for args in tuples:
                    t = fz[name](*args)
                    s.add({">": t > val(f.value), ">=": t >= val(f.value), "<": t < val(f.value),
                           "<=": t <= val(f.value)}[f.op])
                    n_inst += 1
    names = {x.form.name for x in axioms if isinstance(x.form, BuiltinForm)}
    if names:
        # a softmax row of 3 with key 1 masked, and the same row shifted by a common d
        w = [z3.Real(f"w{j}") for j in range(3)]
        w2 = [z3.Real(f"v{j}") for j in range(3)]
        keep = [1, 0, 1]
        for ws in (w, w2):
            s.add(*[x >= 0 for x in ws], *[ws[j] == 0 for j in range(3) if not keep[j]])
            if "softmax_rows" in names:
                s.add(z3.Sum(ws) == 1)
        if "softmax_shift" in names:
            s.add(*[w[j] == w2[j] for j in range(3)])
        n_inst += len(names)
    r = s.check()
    if r == z3.sat:
        return True, f"the axioms' ground instances ({n_inst}) with a != b are satisfiable"
    return False, f"the axioms are inconsistent together or undecided ({r}): an inconsistent library proves anything"

