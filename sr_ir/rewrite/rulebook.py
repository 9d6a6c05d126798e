"""The rules the engine may run, indexed by the op they match, each admitted only with a current
certificate.

What a rule does is read from its own tree (sr_ir.rewrite.compiled): a fact, a channel rewrite or
a substitution. Rules whose name starts with `raise.` are idiom raises the frontend applies after
lowering; the engine applies the others. A rule without a current certificate is never run: where it
would have matched it is recorded in `refused` (with `strict`, UncertifiedRuleError names it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import SrIrError, TypeCheckError
from ..lang import ast as A
from ..lang.loader import RuleSet
from ..lang.rule import RAISE_PREFIX, Rule
from .compiled import CompiledRule, compile_rule


class UncertifiedRuleError(SrIrError):
    """A rule the engine needs has no current certificate."""




def _compiled(ruleset: RuleSet, rule: Rule) -> CompiledRule | TypeCheckError:
    """`compile_rule(rule, ruleset.ops)`, or the error it raises, computed once per rule object of the
    rule set: every minimize builds a book, and compiling the library is a tenth of a small model's
    analysis. Kept in the rule set's instance dict (not a field: the fields are what was read from the
    rule files, compared and cached by the loader); an entry counts only for the very Rule and ops table it was
    compiled from, and a compiled rule is never modified after compile_rule returns it."""
    cache = ruleset.__dict__.setdefault("_compiled_rules", {})
    hit = cache.get(rule.name)
    if hit is not None and hit[0] is rule and hit[1] is ruleset.ops:
        return hit[2]
    try:
        out: CompiledRule | TypeCheckError = compile_rule(rule, ruleset.ops)
    except TypeCheckError as e:
        out = e
    cache[rule.name] = (rule, ruleset.ops, out)
    return out


@dataclass
class RuleBook:
    """`certify(rule, ruleset) -> None | str`: None when the rule has a current certificate, else why not."""

    ruleset: RuleSet
    certify: Callable[[Rule, RuleSet], str | None] | None = None
    strict: bool = False
    stage: str = "minimize"  # or "raise": which rules this book runs
    used: dict[str, int] = field(default_factory=dict)  # rule -> channels (or nodes) it was applied to
    refused: dict[str, str] = field(default_factory=dict)
    uncompiled: dict[str, str] = field(default_factory=dict)  # rule -> why the engine cannot run it
    _by_op: dict[tuple[str, str], list[CompiledRule]] = field(default_factory=dict)
    _status: dict[str, str | None] = field(default_factory=dict)
    _follow: dict[str, CompiledRule | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.certify is None:
            self.certify = default_certifier()
        for r in self.ruleset.rules:
            is_raise = r.name.startswith(RAISE_PREFIX)
            if is_raise != (self.stage == "raise"):
                continue
            cr = _compiled(self.ruleset, r)
            if isinstance(cr, TypeCheckError):
                self.uncompiled[r.name] = cr.message
                continue
            self._by_op.setdefault((r.root.op, cr.kind), []).append(cr)

    @property
    def fact_rules(self) -> list[CompiledRule]:
        """Every fact rule, in a fixed order (a fact's `source` columns index this list)."""
        if not hasattr(self, "_facts_list"):
            self._facts_list = self.kinds("fact")
            self._fact_index = {cr.rule.name: i for i, cr in enumerate(self._facts_list)}
        return self._facts_list

    def fact_index(self, cr: CompiledRule) -> int:
        self.fact_rules
        return self._fact_index[cr.rule.name]

    def record_sources(self, sources: Any) -> None:
        """Count the fact rules a rewrite's reads rested on as used (bool[lanes, R] or None)."""
        if sources is None:
            return
        hit = sources.any(0) if sources.dim() == 2 else sources
        for i in hit.nonzero().flatten().tolist():
            cr = self.fact_rules[i]
            self.used[cr.rule.name] = self.used.get(cr.rule.name, 0) + 1

    def candidates(self, op: str, kind: str) -> list[CompiledRule]:
        """Every compiled rule of this kind for `op` (certified or not: check `admit` at a match)."""
        return self._by_op.get((op, kind), [])

    def kinds(self, kind: str) -> list[CompiledRule]:
        return [cr for (_, k), crs in self._by_op.items() if k == kind for cr in crs]

    def admit(self, cr: CompiledRule) -> bool:
        """May the engine run this rule? Records a refusal (or raises, when strict)."""
        name = cr.rule.name
        if name not in self._status:
            self._status[name] = self.certify(cr.rule, self.ruleset) if self.certify else None
        why = self._status[name]
        if why is None:
            return True
        self.refused[name] = why
        if self.strict:
            where = f" ({cr.rule.loc})" if cr.rule.loc else ""
            raise UncertifiedRuleError(
                f"rule '{name}'{where} has no current certificate ({why}); run `sr-ir prove` on it "
                f"before minimizing, or remove it from the rule directory")
        return False

    def certified(self, name: str) -> bool:
        """Has the named rule a current certificate? (records a refusal when not)"""
        try:
            rule = self.ruleset.rule(name)
        except KeyError:
            self.refused[name] = "no such rule in the rule set"
            return False
        if name not in self._status:
            self._status[name] = self.certify(rule, self.ruleset) if self.certify else None
        why = self._status[name]
        if why is not None:
            self.refused[name] = why
        return why is None

    def record(self, cr: CompiledRule, count: int = 1) -> None:
        self.used[cr.rule.name] = self.used.get(cr.rule.name, 0) + count

    def equivalents(self, cr: CompiledRule, op: str) -> list[CompiledRule]:
        """Certified rules for `op` that remove the same positions as `cr` under the same conditions
        (the same rewrite for another form of the node: with or without a bias, say)."""
        return _equivalents(self, cr, op)

    def follow_up(self, cr: CompiledRule) -> CompiledRule | None:
        """For a rule that applies to one channel at a time (it changes the node's form), the
        composable rule that removes the remaining channels from the node it produces: same ties,
        same side conditions, matching the op it writes."""
        if cr.composable:
            return None
        if cr.rule.name in self._follow:
            return self._follow[cr.rule.name]
        want = _signature(cr)
        conds = [A.show(w) for w in cr.conditions]
        found = None
        for other in self.candidates(cr.op, "rewrite"):
            if other is cr or not other.composable or _signature(other) != want:
                continue
            if [A.show(w) for w in other.conditions] != conds:
                continue
            if self.admit(other):
                found = other
                break
        self._follow[cr.rule.name] = found
        return found


def _equivalents(book: "RuleBook", cr: CompiledRule, op: str) -> list[CompiledRule]:
    want = _signature(cr)
    conds = [A.show(w) for w in cr.conditions]
    out = []
    for other in book.candidates(op, "rewrite"):
        if other is cr or _signature(other) != want or [A.show(w) for w in other.conditions] != conds:
            continue
        if book.admit(other):
            out.append(other)
    return out


def _signature(cr: CompiledRule) -> tuple:
    """The (slot, axis) pairs a channel rewrite removes the channel from, in terms of the new node's
    parameters (`out` for the result), as written."""
    out = []
    if cr.target is not None:
        out.append(("out", cr.target.axis, cr.target.block is not None))
    for a in cr.args:
        for d in a.drops:
            out.append((a.param, d.axis, d.block is not None))
    return tuple(sorted(out, key=str))


def default_certifier() -> Callable[[Rule, RuleSet], str | None]:
    """Certificate status from the prover's store (`proofs/`, or DIR/proofs for a user rule directory),
    checked without a solver: a rule whose certificate is missing or stale is not applied."""
    from ..prover.certificates import certificate_status

    def status(rule: Rule, ruleset: RuleSet) -> str | None:
        st = certificate_status(rule, ruleset)
        return None if st.ok else f"{st.state}: {st.reason}"

    return status


__all__ = ["RuleBook", "UncertifiedRuleError", "default_certifier", "RAISE_PREFIX"]
