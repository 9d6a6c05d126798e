"""Mutation test: mutate each library rule automatically (drop a term, swap two indices, delete a
side condition, change a constant) and prove the mutants through every tier, the parametric one
included. No mutant that differs in meaning may be reported proved.

A mutant counts as killed only when the prover says it is wrong: refuted (with or without a real
counterexample) or vacuous. `error` and `unknown` are not kills: an `error` mutant is set aside as
ill-typed only when the independent oracle cannot run it either, and an `unknown` one counts against
the kill rate. The oracle runs both sides through the ops' PyTorch templates in float64 on random
inputs: a proved mutant it finds different would mean the prover proved a wrong rule.

The mutants of each rule are sampled deterministically (the same ones on every run) to keep the
test short; the kill rate is printed.
"""
import random
import zlib
from fractions import Fraction

from sr_ir.lang.loader import load_rules
from sr_ir.prover.algebra import Exact
from sr_ir.prover.counterexample import replay
from sr_ir.prover.mutate import mutants, resolved
from sr_ir.prover.obligation import Valuation, build, classify_where, concrete_instances
from sr_ir.prover.axioms import Theory
from sr_ir.prover.tiers import CONFIGS, prove_rule

FAMILIES = ("norms.rules", "elementwise.rules", "arith.rules", "embedding.rules", "attention.rules",
            "pooling.rules", "batch_norm.rules", "conv.rules", "linear.rules", "layout.rules")
PER_RULE = 3
KILLS = ("refuted", "refuted-uf", "vacuous")


def _oracle(rule, ops, seed: int) -> str:
    """"differs" when the float64 PyTorch replay shows a difference on random inputs at some
    instance, "same" when it ran and showed none, "unevaluable" when it could not run at all."""
    try:
        where = classify_where(rule)
        insts = concrete_instances(rule, ops, where, lambda: Exact("standin"), CONFIGS, seed)
    except Exception:
        return "unevaluable"
    rng = random.Random(seed)
    ran = False
    for inst in insts:
        for _ in range(3):
            draw = lambda t, i: Fraction(rng.randint(-40, 40), 8)  # noqa: E731
            values = {v: Fraction(rng.randint(-9, 9), 4) for v in rule.info.values}
            try:
                real = Exact("real", theory=Theory.of_rule(rule))  # functions by their declared definitions
                ob = build(rule, ops, real, inst, Valuation(real, draw), where, values)
                if not all(bool(a) for a in ob.assumptions):
                    continue
                rp = replay(rule, ops, inst, ob, values)
            except Exception:
                continue
            ran = True
            d = rp["max_abs_diff"]
            if d != d or d > 1e-9:
                return "differs"
    return "same" if ran else "unevaluable"


def _sample(rule, ops) -> list:
    """Up to PER_RULE distinct well-typed mutants, chosen the same way on every run."""
    seen, pool = set(), []
    for op, m in mutants(rule):
        mr = resolved(m, ops)
        if mr is None or mr.text() == rule.text() or mr.text() in seen:
            continue
        seen.add(mr.text())
        pool.append((op, mr))
    rng = random.Random(zlib.crc32(rule.name.encode()))
    return rng.sample(pool, min(PER_RULE, len(pool)))


def test_no_wrong_mutant_is_proved():
    rs = load_rules()
    lib = [r for r in rs.rules if r.loc and r.loc.file.rsplit("/", 1)[-1] in FAMILIES]
    assert len(lib) >= 60
    stats = {"mutants": 0, "killed": 0, "equivalent": 0, "ill-typed": 0, "not killed": 0}
    wrongly_proved, not_killed = [], []
    for r in lib:
        for k, (op, mr) in enumerate(_sample(r, rs.ops)):
            stats["mutants"] += 1
            res = prove_rule(mr, rs.ops, timeout_ms=4000)
            if res.status in KILLS:
                stats["killed"] += 1
            elif res.status == "proved":
                if _oracle(mr, rs.ops, seed=k) == "differs":
                    wrongly_proved.append((r.name, op, res.tier, mr.text()))
                else:
                    stats["equivalent"] += 1
            elif res.status == "error" and _oracle(mr, rs.ops, seed=k) == "unevaluable":
                stats["ill-typed"] += 1
            else:  # unknown, timeout, or an error on a mutant that runs: not a kill
                stats["not killed"] += 1
                not_killed.append((r.name, op, res.status, res.message, mr.text()))
    different = stats["mutants"] - stats["equivalent"] - stats["ill-typed"]
    rate = stats["killed"] / max(different, 1)
    print(f"\nmutation test: {stats}; kill rate {rate:.1%} ({stats['killed']} refuted or vacuous of "
          f"{different} well-typed mutants that differ in meaning)")
    assert not wrongly_proved, wrongly_proved
    assert not not_killed, not_killed
    assert rate == 1.0
