"""Every library rule fires on the liveness corpus (tests/rewrite/liveness_corpus.py): each case minimizes
(with verification) to the original function, and each rule is in `rules_used` of the case FIRES names.
Rules that no model can fire are listed, with the reason, in UNREACHABLE (reported as xfail)."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from sr_ir.lang.loader import default_rules
from sr_ir.minimization import minimize

from .liveness_corpus import CASES, FIRES, NOTES, UNREACHABLE


def _library_rules() -> list[str]:
    return [r.name for r in default_rules().rules]


@functools.lru_cache(maxsize=None)
def _built(name: str):
    return CASES[name]()


@functools.lru_cache(maxsize=None)
def _minimized(name: str):
    model, inputs = _built(name)
    return minimize(model, inputs)


def _used(name: str) -> set[str]:
    return set(_minimized(name).report.rules_used)


def test_every_library_rule_has_a_case_or_a_reason():
    names = set(_library_rules())
    missing = sorted(names - set(FIRES) - set(UNREACHABLE))
    assert not missing, f"{len(missing)} library rule(s) with no case in FIRES: {', '.join(missing)}"
    unknown = sorted((set(FIRES) | set(UNREACHABLE) | set(NOTES)) - names)
    assert not unknown, f"not library rules: {', '.join(unknown)}"
    both = sorted(set(FIRES) & set(UNREACHABLE))
    assert not both, f"in FIRES and in UNREACHABLE: {', '.join(both)}"
    bad = sorted(f"{r} -> {c}" for r, c in FIRES.items() if c not in CASES)
    assert not bad, f"FIRES names cases that do not exist: {', '.join(bad)}"
    for title, rules in (("rules no model can fire", UNREACHABLE),
                         ("rules that fire only in special circumstances", NOTES)):
        if rules:
            warnings.warn(f"{title}: " + "; ".join(f"{r}: {why}" for r, why in rules.items()))
    assert set(FIRES) == names - set(UNREACHABLE)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_is_a_float64_eval_model(name):
    model, inputs = _built(name)
    assert isinstance(model, nn.Module) and not model.training
    floats = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)
    assert all(isinstance(x, torch.Tensor) for x in inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_minimizes_exactly(name):
    ver = _minimized(name).report.verification
    assert ver["float64"]["max_rel"] <= 1e-12, ver
    assert ver["float32"]["max_rel"] <= 1e-5, ver


@pytest.mark.parametrize("rule", _library_rules())
def test_rule_fires(rule):
    if rule in UNREACHABLE:
        fired = sorted(n for n in CASES if rule in _used(n))
        assert not fired, f"{rule} is listed as unreachable but fires on {', '.join(fired)}: move it to FIRES"
        pytest.xfail(f"unreachable: {UNREACHABLE[rule]}")
    case = FIRES[rule]
    used = _used(case)
    assert rule in used, (
        f"{rule} does not fire on case {case!r}; it applied: {', '.join(sorted(used))}; "
        f"refused: {_minimized(case).report.refused_rules}")
