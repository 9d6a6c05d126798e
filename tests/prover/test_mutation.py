"""Mutation test: mutate each library rule automatically (drop a term, swap two indices, delete a
side condition, change a constant). No mutant that differs in meaning may be reported proved.

A mutant the prover proves is checked by an independent oracle: both sides run through the ops'
PyTorch templates in float64 on random inputs; a difference there would mean the prover proved a
wrong rule. The kill rate (refuted / mutants that differ in meaning) is printed.
"""
import random
from fractions import Fraction

from sr_ir.lang.loader import load_rules
from sr_ir.prover.counterexample import replay
from sr_ir.prover.mutate import mutants, resolved
from sr_ir.prover.obligation import Valuation, build, classify_where, concrete_instances
from sr_ir.prover.algebra import Exact
from sr_ir.prover.axioms import Theory
from sr_ir.prover.tiers import prove_rule

FAMILIES = ("norms.rules", "elementwise.rules", "arith.rules", "embedding.rules", "attention.rules",
            "pooling.rules", "batch_norm.rules", "conv.rules")
PER_RULE = 6


def _oracle_differs(rule, ops, seed: int) -> bool:
    """Does the float64 PyTorch replay show a difference on random inputs (several instances)?"""
    where = classify_where(rule)
    rng = random.Random(seed)
    insts = concrete_instances(rule, ops, where, lambda: Exact("standin"), [(3, "end"), (4, "middle")], seed)
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
            d = rp["max_abs_diff"]
            if d != d or d > 1e-9:
                return True
    return False


def test_no_wrong_mutant_is_proved():
    rs = load_rules()
    lib = [r for r in rs.rules if r.loc and r.loc.file.rsplit("/", 1)[-1] in FAMILIES]
    assert len(lib) >= 30
    stats = {"mutants": 0, "invalid": 0, "killed": 0, "equivalent": 0, "not proved": 0}
    wrongly_proved = []
    for r in lib:
        seen = set()
        count = 0
        for op, m in mutants(r):
            if count >= PER_RULE:
                break
            mr = resolved(m, rs.ops)
            if mr is None:
                stats["invalid"] += 1
                continue
            if mr.text() in seen or mr.text() == r.text():
                continue
            seen.add(mr.text())
            count += 1
            stats["mutants"] += 1
            res = prove_rule(mr, rs.ops, max_tier="bounded", timeout_ms=4000, configs=[(3, "end"), (4, "middle")])
            if res.status in ("refuted", "refuted-uf"):
                stats["killed"] += 1
            elif res.status == "proved":
                if _oracle_differs(mr, rs.ops, seed=count):
                    wrongly_proved.append((r.name, op, mr.text()))
                else:
                    stats["equivalent"] += 1
            else:
                stats["not proved"] += 1  # vacuous / error / unknown: never reported as proved
    different = stats["mutants"] - stats["equivalent"]
    rate = (stats["killed"] + stats["not proved"]) / max(different, 1)
    print(f"\nmutation test: {stats}; kill rate {rate:.1%} "
          f"({stats['killed']} refuted + {stats['not proved']} rejected of {different} mutants that differ)")
    assert not wrongly_proved, wrongly_proved
    assert rate == 1.0
