"""Prove one rule: random exact test, z3 bounded proof at several sizes, sympy parametric proof,
then the torch templates of the ops it uses against their semantics.

Each tier either passes (and the next is tried), finds a counterexample (the rule is refuted: at
whichever tier, a refutation is never a proof at a lower one), or is inconclusive (unknown / not
applicable, which may leave the rule proved at the tier below, and the result says so); the result
names the highest tier passed. Real arithmetic throughout: float rounding is measured elsewhere,
never assumed away here.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping

from ..lang import ast as A
from ..lang.rule import Rule
from ..ir.opdecl import OpDecl
from .algebra import NotReal, Exact, Sym
from .axioms import Theory
from .obligation import (
    Instance,
    Valuation,
    Where,
    attr_table,
    build,
    channel_dim,
    classify_where,
    concrete_instances,
    free_dtype_operands,
    parametric_instance,
    rule_dims,
    variant_instances,
)
from .obligation import ShapeMismatch
from .semantics import Extent, InstanceError, NeedConcrete, SemanticsError

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
    tested: list[dict] = field(default_factory=list)  # every instance of the test tier
    bounded: list[dict] = field(default_factory=list)  # every instance the bounded tier proved
    parametric: list[str] = field(default_factory=list)  # the run settings the parametric tier proved
    templates: dict[str, str] = field(default_factory=dict)  # op -> hash of the template check it relied on

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
        except (ZeroDivisionError, NotReal):
            continue
        if not all(bool(a) for a in ob.assumptions):
            continue
        try:
            for label, l, r in ob.pairs:
                if _differs(l, r):
                    return "mismatch", ob
        except (ZeroDivisionError, NotReal):
            continue
        return "ok", ob
    return "unsat", None


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        return abs(fa - fb) > 1e-9 * max(1.0, abs(fa), abs(fb))
    return a != b


def prove_rule(rule: Rule, ops: Mapping[str, OpDecl], max_tier: str = "parametric", seed: int = 0,
               timeout_ms: int = 20000, conds: tuple | None = None, configs=None, violate: Any = None,
               templates: Mapping[str, dict] | None = None, check_templates: bool = True,
               report: bool = True) -> Result:
    """Prove one rule. `conds` replaces the side conditions; `violate` (a condition over dims and
    attributes) keeps only instances where it is false (to test whether a condition is needed).
    A proved rule is then refuted if an op it uses has a torch template that disagrees with the op's
    semantics (`templates`: results already computed, by op name; others are checked here).
    Without `report` a refutation is not turned into a counterexample (when only the verdict counts)."""
    t0 = time.perf_counter()
    res = Result(rule.name, "unknown", None, loc=str(rule.loc or ""))
    try:
        _check_attribute_names(rule, ops)
        _prove(rule, ops, res, max_tier, seed, timeout_ms, conds, configs or CONFIGS, violate, report)
        if res.status == "proved" and check_templates and violate is None:
            _check_templates(rule, ops, res, templates or {})
    except SemanticsError as e:
        res.status, res.message = "error", str(e)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:  # a rule the evaluator cannot read
        res.status, res.message = "error", f"the rule cannot be evaluated: {type(e).__name__}: {e}"
    res.seconds = round(time.perf_counter() - t0, 4)
    return res


def _check_attribute_names(rule: Rule, ops: Mapping[str, OpDecl]) -> None:
    """Two matched nodes with an attribute of the same name, neither renamed, would share one value
    in the proof although the engine reads them separately."""
    seen: dict[str, int] = {}
    for name, bi, aname, req in attr_table(rule, ops):
        if req is not None:
            continue
        if name in seen and seen[name] != bi:
            raise SemanticsError(f"attribute {name!r} of two matched nodes ({rule.bindings[seen[name]].op} and "
                                 f"{rule.bindings[bi].op}): rename one ({aname}=NAME) so each has its own value")
        seen[name] = bi


# a condition on the channel's own position (`c < e // 2`, `c >= start`) may exclude the usual
# positions at the usual sizes: these sizes and positions are tried as well
POSITION_CONFIGS = [(4, "start"), (6, "second"), (2, "start")]


def _configs(rule: Rule, ops: Mapping[str, OpDecl], configs: list) -> list:
    if rule.info.channel is None and not rule_dims(rule, ops)[1]:
        return [(3, "start"), (1, "start")]
    ch = rule.info.channel
    if ch is not None and any(
            not any(isinstance(n, A.Index) for n in A.walk(w)) and any(n == A.Name(ch) for n in A.walk(w))
            for w in rule.where):
        return list(configs) + [c for c in POSITION_CONFIGS if c not in configs]
    return configs


def _prove(rule, ops, res: Result, max_tier, seed, timeout_ms, conds, configs, violate=None, report=True) -> None:
    axioms = Theory.of_rule(rule)  # the named axioms, as declared

    def _refute(*args, **kw) -> None:
        if report:
            _report_refutation(*args, **kw)
        else:
            res.status, res.tier = "refuted-uf", args[5]
    where = classify_where(rule, conds)
    rng = random.Random(seed)
    insts = concrete_instances(rule, ops, where, lambda: Exact("standin"), _configs(rule, ops, configs), seed,
                               violate, cover=violate is None and report)
    if not insts:
        res.status = "vacuous"
        res.message = "no sizes and attributes satisfy the side conditions and the ops' constraints"
        return

    masks = free_dtype_operands(rule, ops)
    if masks:  # a mask is boolean (keeps or drops keys) or additive: both, at every instance
        insts = insts + [i.with_bools(masks) for i in insts]

    # ---- tier 1: random exact rationals ----------------------------------------------------------
    # (also on every combination of attribute values: interactions the bounded sizes may not meet)
    # (a re-check of the rule without one condition, `report=False`, looks at the main sizes only)
    extra = variant_instances(rule, ops, where, lambda: Exact("standin"), seed) if violate is None and report else []
    if masks:
        extra = extra + [i.with_bools(masks) for i in extra]
    # an instance where the match holds but the conclusion cannot be built refutes the rule (the
    # engine would apply it there); a numeric counterexample elsewhere, with its replay, comes first
    bad = next((i for i in insts + extra if i.ill_typed), None)
    insts = [i for i in insts if not i.ill_typed]
    extra = [i for i in extra if not i.ill_typed]
    if not insts and bad is None:
        res.status = "vacuous"
        res.message = "no sizes and attributes satisfy the side conditions and the ops' constraints"
        return
    res.sizes = [i.label for i in insts]
    res.tested = [i.record() for i in insts + extra]
    any_sat = False
    for inst in insts + extra:
        # the attribute combinations (extra) are there to meet interactions: one sample each
        main = any(inst is i for i in insts)
        for mode in ("standin", "standin_exact") if main else ("standin",):
            alg = Exact(mode, seed=rng.randint(0, 10**6), theory=axioms)
            for _ in range(2 if main else 1):
                st, ob = exact_check(rule, ops, where, inst, alg, rng)
                if st == "unsat":
                    continue
                any_sat = True
                if st == "mismatch":
                    _refute(rule, ops, where, inst, res, "test", ob, None, rng, insts, timeout_ms, seed)
                    return
    if bad is not None:
        res.status, res.tier = "refuted", "test"
        res.message = f"counterexample found by the test tier ({bad.label}): {bad.ill_typed}"
        res.counterexample = {"instance": bad.label, "real": True, "at": "the conclusion",
                              "lhs": "the matched nodes", "rhs": bad.ill_typed}
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
                res.status, res.tier = "vacuous", None
                res.message = f"the side conditions cannot hold together ({inst.label})"
                return
        residuals = _residuals(alg, ob)
        if not residuals:
            continue
        need_assumptions = True
        verdict, model = z3bridge.decide(residuals, ob.assumptions, axioms, alg.bool_atoms, timeout_ms, seed)
        if verdict == "refuted":
            _refute(rule, ops, where, inst, res, "bounded", ob, model, rng, insts, timeout_ms, seed)
            return
        if verdict == "unknown":
            res.status = "unknown"
            res.message = f"z3 gave up at {inst.label}: {model.get('reason') if model else ''}"
            return
    if not any_sat and not need_assumptions:
        res.message = "no random sample satisfied the side conditions"
    res.tier = "bounded"
    res.bounded = [i.record() for i in insts]
    if max_tier == "bounded":
        res.status = "proved"
        return

    # ---- tier 3: parametric (symbolic sizes) ----------------------------------------------------------
    # once per setting of the runs the bounded tier used: run lengths of operands (`us...`) and ranks
    # of runs of dims (`*B` with 0, 1 and 2 axes), since a symbolic size is one axis, not a rank
    cdim = channel_dim(rule, ops)
    bases, seen = [], set()
    for inst in insts:
        key = tuple(sorted((k, v if k.startswith("#") else len(v)) for k, v in inst.dims.items()
                           if k.startswith(("#", "*"))))
        if key not in seen:
            seen.add(key)
            bases.append(inst)
    reached: list[tuple[Instance, set]] = []
    inconclusive: list[str] = []
    for base in bases:
        done = _parametric(rule, ops, where, axioms, rng, base, cdim, timeout_ms, seed)
        if done[0] == "refuted":  # a refutation at any tier is never a proof at a lower one
            verdict = _parametric_refutation(rule, ops, where, axioms, res, base, done, insts, rng, timeout_ms, seed,
                                             _refute)
            if verdict == "refuted":
                return
            if verdict != "spurious":
                res.status, res.tier = "unknown", "bounded"
                res.message = verdict
                return
            done = ("inconclusive", "parametric tier inconclusive: its counterexample (over aggregates) does not "
                                    "hold at the concrete sizes it names; proved for the bounded sizes only")
        if done[0] == "inconclusive":
            inconclusive.append(done[1] + (f" ({_par_label(base)})" if len(bases) > 1 else ""))
        else:
            reached.append((done[1], done[2]))
    res.status = "proved"
    if inconclusive:
        res.message = "; ".join(inconclusive)
        return
    res.tier = "parametric"
    res.parametric = [_par_label(i) for i, _ in reached]
    inst, _ = reached[0]
    concrete = set().union(*[c for _, c in reached])
    res.symbolic_dims = sorted({k for i, _ in reached for k, v in i.dims.items() if not isinstance(v, (int, tuple))}
                               | {e.dim for i, _ in reached for k, v in i.dims.items() if isinstance(v, tuple)
                                  for e in v if isinstance(e, Extent)})
    notes = []
    if concrete:
        notes.append(f"symbolic in {', '.join(res.symbolic_dims)}; concrete: {', '.join(sorted(concrete))}")
    if len(reached) > 1 or any(k.startswith(("#", "*")) for k in inst.dims):
        notes.append("runs: " + "; ".join(_par_label(i) for i, _ in reached))
    res.message = "; ".join(notes)


def _par_label(inst: Instance) -> str:
    parts = [f"len({k[1:]}...)={v}" for k, v in inst.dims.items() if k.startswith("#")]
    parts += [f"{k}: {len(v)} {'axis' if len(v) == 1 else 'axes'}" for k, v in inst.dims.items() if k.startswith("*")]
    return ", ".join(parts) or "one setting"


def _parametric(rule, ops, where, axioms, rng, base, cdim, timeout_ms, seed):
    """The parametric tier from one bounded instance: ("proved", instance, concrete dims),
    ("refuted", instance, algebra, obligation, residuals) with the solver's model still to be
    confirmed, or ("inconclusive", reason)."""
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
            dims = {_run_of(d) for d in e.dims if d not in ("?",)}
            if "<channel>" in dims or cdim in dims or not dims - concrete:
                return ("inconclusive", f"parametric tier not reached: the channel's dim must be concrete "
                                        f"({', '.join(sorted(e.dims))}); proved for the bounded sizes only")
            concrete |= dims
            continue
        except (InstanceError, ShapeMismatch, SemanticsError) as e:
            # the symbolic encoding cannot express this instance (e.g. a position on a joined axis named
            # by an offset): the bounded proof stands, the tier reached says so
            return ("inconclusive", f"parametric tier not reached: {e}; proved for the bounded sizes only")
        if residuals:
            verdict, model = z3bridge.decide(residuals, ob.assumptions, axioms, alg.bool_atoms, timeout_ms, seed)
            if verdict == "refuted":
                return ("refuted", inst, alg, ob, residuals)
            if verdict != "proved":
                return ("inconclusive", f"parametric tier inconclusive ({verdict}); proved for the bounded sizes only")
        return ("proved", inst, concrete)
    return ("inconclusive", "parametric tier not reached (too many dims must be concrete); proved for the "
                            "bounded sizes only")


def _run_of(dim: str) -> str:
    """An axis of a run of dims (`B_1`) stands for its run (`B`) when it must be concrete."""
    head, _, tail = dim.rpartition("_")
    return head if head and tail.isdigit() else dim


SIZE_BOUNDS = (6, 12)


def _parametric_refutation(rule, ops, where, axioms, res, base, found, insts, rng, timeout_ms, seed,
                           refute=None) -> str:
    """A counterexample of the parametric tier is a refutation once it holds at concrete sizes: ask
    for one with small sizes, rebuild the rule there and refute it with the bounded tier (a real
    counterexample, replayed). Returns "refuted", "spurious" (the sizes it names admit no
    counterexample: the aggregates over R are free in the parametric encoding), or the reason the
    counterexample could not be confirmed."""
    from . import z3bridge
    from .obligation import model_instance, size_symbols

    _, par, alg, ob, residuals = found
    syms = size_symbols(alg, par)
    sp = alg.sp
    for bound in SIZE_BOUNDS:
        extra = [sp.Le(s, bound) for s in syms]
        verdict, model = z3bridge.decide(residuals, list(ob.assumptions) + extra, axioms, alg.bool_atoms,
                                         timeout_ms, seed)
        if verdict == "proved":
            continue  # none this small
        if verdict != "refuted" or model is None:
            return f"the parametric tier refutes the rule but z3 gave up finding small sizes ({verdict})"
        sizes = {key: int(model.get(s, 1)) + off for s, (key, off) in syms.items()}
        chan = model.get(par.channel) if par.channel is not None else None
        inst = model_instance(rule, ops, where, lambda: Exact("standin"), base, par, sizes,
                              int(chan) if chan is not None else 0)
        if inst is None:
            return (f"the parametric tier refutes the rule at sizes {sizes} that make no valid instance; "
                    f"not confirmed")
        calg = Sym(axioms, inst.channel)
        cob = build(rule, ops, calg, inst, Valuation(calg), where, _values(rule, calg, rng))
        cres = _residuals(calg, cob)
        if not cres or (v2m := z3bridge.decide(cres, cob.assumptions, axioms, calg.bool_atoms, timeout_ms,
                                                seed))[0] == "proved":
            res.sizes = res.sizes + [inst.label]  # proved there: one more bounded instance
            res.bounded = res.bounded + [inst.record()]
            return "spurious"
        v2, m2 = v2m
        if v2 != "refuted":
            return f"the parametric tier refutes the rule; z3 gave up at the sizes it names ({inst.label})"
        res.sizes = res.sizes + [inst.label]
        (refute or _report_refutation)(rule, ops, where, inst, res, "parametric", cob, m2, rng, insts, timeout_ms,
                                       seed)
        return "refuted"
    return (f"the parametric tier refutes the rule only at sizes above {SIZE_BOUNDS[-1]}; not confirmed at "
            f"concrete sizes")


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


def _report_refutation(rule, ops, where, inst, res: Result, tier: str, ob, model, rng, insts=(), timeout_ms=20000,
                       seed=0) -> None:
    """Report a refutation: the smallest real counterexample, searched at the refuting instance first
    and then at every other instance (a stand-in may differ where the real functions cannot, as in a
    softmax over one key), each with a solver model to start from where the random search fails."""
    from .counterexample import realize

    res.tier = tier
    res.status = "refuted-uf"
    first: dict | None = None
    cex: dict | None = None
    try:
        for cand in [inst] + [i for i in insts if i is not inst]:
            got = realize(rule, ops, where, cand, rng, ob if cand is inst else None, model if cand is inst else None)
            first = first or got
            if not got.get("real") and cand is not inst:
                m = _bounded_model(rule, ops, where, cand, rng, timeout_ms, seed)
                if m:
                    got = realize(rule, ops, where, cand, rng, None, m)
            if got.get("real"):
                cex = got
                break
    except Exception as e:  # reporting must never lose the verdict
        cex = dict(first or {"instance": inst.label, "real": False})
        cex["report_error"] = f"{type(e).__name__}: {e}"
    cex = cex or first or {"instance": inst.label, "real": False}
    res.counterexample = cex
    if cex.get("real"):
        res.status = "refuted"
        res.message = f"counterexample found by the {tier} tier ({cex.get('instance', inst.label)})"
    else:
        hint = cex.get("axiom_hint")
        res.message = (f"refuted for an arbitrary function ({tier} {inst.label}); no counterexample with the real "
                       f"definitions was found at any instance" + (f"; axioms that may help: {hint}" if hint else ""))
        if cex.get("report_error"):
            res.message += f" (reporting the counterexample failed: {cex['report_error']})"


def _bounded_model(rule, ops, where, inst, rng, timeout_ms, seed) -> dict | None:
    """A z3 model of the rule's failure at one instance (None when it holds there)."""
    from . import z3bridge

    axioms = Theory.of_rule(rule)
    alg = Sym(axioms, inst.channel)
    try:
        ob = build(rule, ops, alg, inst, Valuation(alg), where, _values(rule, alg, rng))
    except (SemanticsError, InstanceError, NeedConcrete):
        return None
    residuals = _residuals(alg, ob)
    if not residuals:
        return None
    verdict, model = z3bridge.decide(residuals, ob.assumptions, axioms, alg.bool_atoms, min(timeout_ms, 5000), seed)
    return model if verdict == "refuted" else None


def _check_templates(rule: Rule, ops: Mapping[str, OpDecl], res: Result, known: Mapping[str, dict]) -> None:
    """The rule is applied through the ops' torch templates: each must agree with the op's `means`,
    at the op's own instances (checked once per op) and at the matches this rule states for it."""
    from .templates import checkable, patterns_of, template_result

    for name in rule.ops_used:
        decl = ops.get(name)
        if decl is None or not checkable(decl):
            continue
        vocab = getattr(rule, "vocabulary", None)
        checks = [known.get(name) or template_result(decl, ops, vocabulary=vocab)]
        patterns = patterns_of(rule, name)
        if patterns:
            checks.append(template_result(decl, ops, patterns, vocabulary=vocab))
        res.templates[name] = [(c.get("hash") or "")[:16] for c in checks]
        for tr in checks:
            if tr["status"] in ("timeout", "error"):  # never certify through a template nobody checked
                res.status = "unknown"
                res.message = f"the check of op '{name}''s torch template did not finish: {tr.get('message', '')}"
                return
            if tr["status"] == "refuted":
                res.status, res.tier = "refuted", "template"
                res.message = (f"op '{name}' ({tr.get('loc')}) has a torch template that disagrees with its means: "
                               f"{tr.get('message', '')}")
                res.counterexample = tr.get("counterexample")
                return
        if all(tr["status"] == "unchecked" for tr in checks):
            # compared nowhere (typically a means built on a function with no real definition, which the
            # proof leaves uninterpreted): said in the result and the summary, not passed silently
            res.warnings.append(f"{decl.loc}: the torch template of op '{name}' could not be compared with its "
                                f"means: {checks[0].get('message', '')}")
