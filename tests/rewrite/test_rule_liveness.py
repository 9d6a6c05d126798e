"""The rule text is what runs: for every rule the engine applies, a wrong right-hand side (forged as
certified, bypassing the prover) changes what minimize produces, or the numeric check refuses it.

    pytest -s -p no:xdist tests/rewrite/test_rule_liveness.py   # prints one line per rule

A rule whose mutant changed nothing would be a rule applied by name while Python computed the rewrite.
"""
from __future__ import annotations

import functools

import pytest

from sr_ir.lang.loader import default_rules
from sr_ir.rewrite.rulebook import RuleBook
from sr_ir.testing.forging import mutations
from sr_ir.testing.liveness import Baseline, baseline, liveness

from .liveness_corpus import CASES, FIRES, UNREACHABLE


@functools.lru_cache(maxsize=None)
def _baseline(case: str) -> Baseline:
    model, inputs = CASES[case]()
    return baseline(model, inputs, default_rules())


def _engine_rules() -> set[str]:
    rs = default_rules()
    names: set[str] = set()
    for stage in ("minimize", "raise"):
        book = RuleBook(rs, certify=lambda r, s: None, stage=stage)
        names |= {cr.name for kind in ("fact", "rewrite", "substitution") for cr in book.kinds(kind)}
    return names


def test_every_engine_rule_has_a_model_where_it_fires():
    missing = sorted(_engine_rules() - set(FIRES) - set(UNREACHABLE))  # (those fire on no case: checked)
    assert not missing, f"no liveness case for: {missing}"


def test_every_engine_rule_has_a_mutation():
    rs = default_rules()
    bare = sorted(n for n in _engine_rules() if next(mutations(rs.rule(n), rs.ops), None) is None)
    assert not bare, f"rules whose conclusion offers nothing to change: {bare}"


@pytest.mark.parametrize("rule", sorted(FIRES))
def test_rule_text_is_what_runs(rule):
    verdict = liveness(rule, _baseline(FIRES[rule]), default_rules())
    print(verdict.line())
    assert verdict.live, verdict.line()
