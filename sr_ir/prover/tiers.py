"""Prove one rule: random exact test, z3 bounded proof at several sizes, sympy parametric proof.

Each tier either passes (and the next is tried), finds a counterexample (the rule is refuted), or is
inconclusive (unknown / not applicable); the result names the highest tier passed. Real arithmetic
throughout: float rounding is measured elsewhere, never assumed away here.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping

from ..lang.rule import Rule
from ..ops.decl import OpDecl
from .algebra import Exact, Sym
from .axioms import Theory
from .obligation import (
    Instance,
    variant_instances,
    Valuation,
    Where,
    build,
    channel_dim,
    classify_where,
    concrete_instances,
    parametric_instance,
)
from .obligation import ShapeMismatch
from .semantics import InstanceError, NeedConcrete, SemanticsError

CONFIGS = [(3, "start"), (4, "middle"), (3, "end"), (1, "start")]
TIERS = ("test", "bounded", "parametric")


@dataclass
class Result:
    rule: str
    status: str  # proved / refuted / refuted-uf / unknown / vacuous / error / timeout
    tier: str | None  # highest tier passed (proved) or the tier that found the counterexample
    seconds: float = 0.0
    sizes: list[str] = field(default_factory=list)
    symbolic_dims: list[str] = field(default_factory=list)
    message: str = ""
    counterexample: dict | None = None
    warnings: list[str] = field(default_factory=list)
    loc: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _draw(rng: random.Random, phase: str):
    def draw(t: str, idx: tuple) -> Any:
        if phase == "zero":
            return Fraction(0)
        if phase == "int":
            return Fraction(rng.randint(-2, 2))
        if phase == "bool":
            return Fraction(int(rng.random() < 0.75))
        return Fraction(rng.randint(-9, 9), rng.choice([1, 2, 3, 4, 5, 7]))

    return draw


def _values(rule: Rule, alg: Any, rng: random.Random, phase: str = "rational") -> dict[str, Any]:
    if alg.symbolic:
        return {v: alg.sp.Symbol(v) for v in rule.info.values}
    return {v: _draw(rng, phase)("", ()) for v in rule.info.values}


def exact_check(rule: Rule, ops: Mapping[str, OpDecl], where: Where, inst: Instance, alg: Exact,
                rng: random.Random, phase: str = "rational", tries: int = 25) -> tuple[str, Any]:
    """One random exact evaluation: ('ok'|'mismatch'|'unsat', obligation)."""
    for _ in range(tries):
        draw = _draw(rng, phase)
        val = Valuation(alg, draw)
        values = _values(rule, alg, rng, phase)
        try:
            ob = build(rule, ops, alg, inst, val, where, values, first_diff=True)
        except ZeroDivisionError:
            continue
        if not all(bool(a) for a in ob.assumptions):
            continue
        try:
            for label, l, r in ob.pairs:
                if _differs(l, r):
                    return "mismatch", ob
        except ZeroDivisionError:
            continue
        return "ok", ob
    return "unsat", None


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        return abs(fa - fb) > 1e-9 * max(1.0, abs(fa), abs(fb))
    return a != b


def prove_rule(rule: Rule, ops: Mapping[str, OpDecl], max_tier: str = "parametric", seed: int = 0,
               timeout_ms: int = 20000, conds: tuple | None = None, configs=None, violate: Any = None) -> Result:
    """Prove one rule. `conds` replaces the side conditions; `violate` (a condition over dims and
    attributes) keeps only instances where it is false (to test whether a condition is needed)."""
    t0 = time.perf_counter()
    res = Result(rule.name, "unknown", None, loc=str(rule.loc or ""))
    try:
        _prove(rule, ops, res, max_tier, seed, timeout_ms, conds, configs or CONFIGS, violate)
    except SemanticsError as e:
        res.status, res.message = "error", str(e)
    res.seconds = round(time.perf_counter() - t0, 4)
    return res


def _prove(rule, ops, res: Result, max_tier, seed, timeout_ms, conds, configs, violate=None) -> None:
    axioms = Theory.of_rule(rule)  # the named axioms, as declared
    where = classify_where(rule, conds)
    rng = random.Random(seed)
    if rule.info.channel is None:
        configs = [(3, "start"), (1, "start")]
    insts = concrete_instances(rule, ops, where, lambda: Exact("standin"), configs, seed, violate)
    if not insts:
        res.status = "vacuous"
        res.message = "no sizes and attributes satisfy the side conditions and the ops' constraints"
        return
    res.sizes = [i.label for i in insts]

    # ---- tier 1: random exact rationals ----------------------------------------------------------
    # (also on every combination of attribute values: interactions the bounded sizes may not meet)
    extra = variant_instances(rule, ops, where, lambda: Exact("standin"), seed) if violate is None else []
    any_sat = False
    for inst in insts + extra:
        for mode in ("standin", "standin_exact"):
            alg = Exact(mode, seed=rng.randint(0, 10**6), theory=axioms)
            for _ in range(2):
                st, ob = exact_check(rule, ops, where, inst, alg, rng)
                if st == "unsat":
                    continue
                any_sat = True
                if st == "mismatch":
                    _refute(rule, ops, where, inst, res, "test", ob, None, rng)
                    return
    res.tier = "test"
    if max_tier == "test":
        res.status = "proved" if any_sat else "unknown"
        if not any_sat:
            res.message = "no random sample satisfied the side conditions"
        return

    # ---- tier 2: bounded (z3 over symbolic reals at concrete sizes) -------------------------------
    from . import z3bridge

    need_assumptions = False
    for inst in insts:
        alg = Sym(axioms, inst.channel)
        ob = build(rule, ops, alg, inst, Valuation(alg), where, _values(rule, alg, rng))
        if ob.assumptions:
            sat = z3bridge.satisfiable(ob.assumptions, alg.bool_atoms, timeout_ms)
            if sat == "unsat":
                res.status = "vacuous"
                res.message = f"the side conditions cannot hold together ({inst.label})"
                return
        residuals = _residuals(alg, ob)
        if not residuals:
            continue
        need_assumptions = True
        verdict, model = z3bridge.decide(residuals, ob.assumptions, axioms, alg.bool_atoms, timeout_ms, seed)
        if verdict == "refuted":
            _refute(rule, ops, where, inst, res, "bounded", ob, model, rng)
            return
        if verdict == "unknown":
            res.status = "unknown"
            res.message = f"z3 gave up at {inst.label}: {model.get('reason') if model else ''}"
            return
    if not any_sat and not need_assumptions:
        res.message = "no random sample satisfied the side conditions"
    res.tier = "bounded"
    if max_tier == "bounded":
        res.status = "proved"
        return

    # ---- tier 3: parametric (symbolic sizes) ----------------------------------------------------------
    # (a rule over runs of operands `us...`: at every run-length setting the bounded tier used)
    cdim = channel_dim(rule, ops)
    bases, seen = [], set()
    for inst in insts:
        key = tuple(sorted((k, v) for k, v in inst.dims.items() if k.startswith("#")))
        if key not in seen and (key or not bases):
            seen.add(key)
            bases.append(inst)
    done = None
    for base in bases:
        done = _parametric(rule, ops, where, axioms, rng, base, cdim, timeout_ms, seed)
        if isinstance(done, str):
            res.status = "proved"
            res.message = done
            return
    inst, concrete = done
    res.status = "proved"
    res.tier = "parametric"
    res.symbolic_dims = sorted(k for k, v in inst.dims.items() if not isinstance(v, (int, tuple))) + sorted(
        k[1:] for k, v in inst.dims.items() if isinstance(v, tuple) and v and not isinstance(v[0], int))
    notes = []
    if concrete:
        notes.append(f"symbolic in {', '.join(res.symbolic_dims)}; concrete: {', '.join(sorted(concrete))}")
    runs = sorted({k for b in bases for k in b.dims if k.startswith("#")})
    if runs:
        notes.append("runs of operands: " + "; ".join(
            ", ".join(f"len({k[1:]}...)={b.dims[k]}" for k in runs) for b in bases))
    res.message = "; ".join(notes)


def _parametric(rule, ops, where, axioms, rng, base, cdim, timeout_ms, seed):
    """The parametric tier from one bounded instance: (instance, concrete dims) when proved, else the
    reason it was not reached."""
    from . import z3bridge

    concrete: set[str] = set()
    for _ in range(8):
        alg = Sym(axioms, None)
        try:
            inst = parametric_instance(rule, ops, where, alg, base, concrete)
            alg.c = inst.channel
            ob = build(rule, ops, alg, inst, Valuation(alg), where, _values(rule, alg, rng))
            residuals = _residuals(alg, ob)
        except NeedConcrete as e:
            dims = {d for d in e.dims if d not in ("?",)}
            if "<channel>" in dims or cdim in dims or not dims - concrete:
                return (f"parametric tier not reached: the channel's dim must be concrete "
                        f"({', '.join(sorted(e.dims))})")
            concrete |= dims
            continue
        except (InstanceError, ShapeMismatch, SemanticsError) as e:
            # the symbolic encoding cannot express this instance (e.g. a position on a joined axis
            # named by an offset): the bounded proof stands, the tier reached says so
            return f"parametric tier not reached: {e}"
        if residuals:
            verdict, model = z3bridge.decide(residuals, ob.assumptions, axioms, alg.bool_atoms, timeout_ms, seed)
            if verdict != "proved":
                return f"parametric tier inconclusive ({verdict}); proved for the bounded sizes only"
        return inst, concrete
    return "parametric tier not reached (too many dims must be concrete)"


def _residuals(alg: Sym, ob) -> list[Any]:
    sp = alg.sp
    out = []
    for label, l, r in ob.pairs:
        d = sp.sympify(l) - sp.sympify(r)
        d = sp.expand(d)
        if d != 0:
            d = sp.cancel(sp.together(d))
            if d != 0:
                d = sp.expand(sp.numer(d))
        if d != 0:
            out.append(d)
    return out


def _refute(rule, ops, where, inst, res: Result, tier: str, ob, model, rng) -> None:
    from .counterexample import realize

    res.tier = tier
    cex = realize(rule, ops, where, inst, rng, ob, model)
    res.counterexample = cex
    if cex.get("real"):
        res.status = "refuted"
        res.message = f"counterexample found by the {tier} tier ({inst.label})"
    else:
        res.status = "refuted-uf"
        hint = cex.get("axiom_hint")
        res.message = (f"refuted for an arbitrary function ({tier} {inst.label}); no counterexample with the real "
                       f"definitions was found" + (f"; axioms that may help: {hint}" if hint else ""))
