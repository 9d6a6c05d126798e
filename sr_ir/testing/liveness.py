"""Is a rule's text what runs? Change the rule's right-hand side, vouch for the changed rule without
the prover, minimize a model on which the rule fires, and see whether the result changes (or the
numeric check refuses it). A rule the engine applied by name while computing the rewrite itself would
come out unchanged: that is what this catches.

Only tests use this: a forged rule is exactly what a certificate exists to keep out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..backend import emit
from ..errors import SrIrError, VerificationError
from ..frontend import lower
from ..ir.program import Program
from ..lang.loader import RuleSet
from ..minimization.api import minimize_program
from ..minimization.verify import same_function
from ..rewrite.rulebook import RAISE_PREFIX, RuleBook
from .forging import mutations, trusting, with_rule


@dataclass(frozen=True)
class Verdict:
    """What changing one rule did on one model."""

    rule: str
    mutation: str  # the change made to its right-hand side ("" when none applied)
    outcome: str  # "changed", "refused: <why>", or "not live: <why>"

    @property
    def live(self) -> bool:
        return not self.outcome.startswith("not live")

    def line(self) -> str:
        return f"{self.rule:<48} {self.mutation:<60} {self.outcome}"


@dataclass
class Baseline:
    """A model lowered and minimized with the rules as they are: what every mutant is compared with."""

    model: nn.Module
    inputs: tuple[Any, ...]
    lowered: Program
    minimized: Program
    used: frozenset[str]


def baseline(model: nn.Module, inputs: Sequence[Any], rules: RuleSet) -> Baseline:
    book = RuleBook(rules, stage="raise")
    lowered = lower(model, tuple(inputs), rules=rules, raise_book=book)
    minimized, report = minimize_program(lowered, rules)
    return Baseline(model, tuple(inputs), lowered, minimized, frozenset(report.rules_used) | set(book.used))


def liveness(rule_name: str, base: Baseline, rules: RuleSet, max_tries: int = 8) -> Verdict:
    """Try the rule's mutations in turn until one that the engine applies makes a difference: the
    minimized program differs from the baseline's, or lowering, type checking or the numeric
    comparison with the original model refuses it. Not live when no applied mutation does."""
    if rule_name not in base.used:
        return Verdict(rule_name, "", "not live: the rule does not fire on this model")
    rule = rules.rule(rule_name)
    tried = 0
    unchanged: list[str] = []
    for why, mutant in mutations(rule, rules.ops):
        if tried == max_tries:
            break
        tried += 1
        forged = with_rule(rules, rule_name, mutant)
        admitted: list[str] = []
        vouch = trusting({rule_name})

        def certify(r, rs, _vouch=vouch, _seen=admitted):
            if r.name == rule_name:
                _seen.append(r.name)
            return _vouch(r, rs)

        is_raise = rule_name.startswith(RAISE_PREFIX)
        book = RuleBook(forged, certify=certify, stage="raise" if is_raise else "minimize")
        if rule_name in book.uncompiled:
            continue
        try:
            if is_raise:
                program = lower(base.model, base.inputs, rules=forged, raise_book=book)
                result, _ = minimize_program(program, forged)
            else:
                result, _ = minimize_program(base.lowered, forged, book=book)
            if not admitted:  # it never matched: this mutant says nothing
                continue
            module = emit(result, forged)
            same_function(base.model, module, list(base.inputs), n_random=1)
        except VerificationError as e:
            return Verdict(rule_name, why, f"refused: {_first_line(e)}")
        except SrIrError as e:
            if not admitted:
                continue
            return Verdict(rule_name, why, f"refused: {_first_line(e)}")
        if not _same(result, base.minimized):
            return Verdict(rule_name, why, "changed")
        if rule_name in book.used:
            unchanged.append(why)
    if unchanged:
        return Verdict(rule_name, unchanged[0], f"not live: the result is the same with {len(unchanged)} "
                                                 f"applied mutation(s)")
    return Verdict(rule_name, "", f"not live: none of {tried} mutations was applied")


def _same(a: Program, b: Program) -> bool:
    if a.to_text() != b.to_text() or a.weights.keys() != b.weights.keys():
        return False
    return all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else type(e).__name__


__all__ = ["Baseline", "Verdict", "baseline", "liveness"]
