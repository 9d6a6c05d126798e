"""Which minimization rules exist for each op, and whether they may be applied.

The engine asks for a *kind* of rule on a node; the kind is read from the rule's structure (its
conclusion and side conditions), not from its name, so any rule directory that states these facts
drives the engine:

| kind          | rule shape                                                        | engine use                         |
|---------------|-------------------------------------------------------------------|------------------------------------|
| dead_row      | forward fact `y[.., c] == e`, no constant variable                | output channel with zero filter is constant |
| unused_col    | backward fact `unused x[.., c]`                                   | input channel with zero column is unused |
| fold_const    | rewrite `y = op(drop(x, a, c), ...)` under `x[.., c] == k`         | constant input channel folds into the bias |
| fold_zero     | the same under `x[.., c] == 0`                                    | zero input channel is dropped |
| drop_row      | rewrite `drop(y, a, c) = op(x, drop(param, ..), ..)`               | a producer stops computing channel c |
| drop_channel  | rewrite `drop(y, a, c) = op(drop(x, a, c), ..)`                    | a channel-local op commutes with dropping c |
| fold_chain    | rewrite over two matched nodes (e.g. batch norm into conv)         | fold batch norms first |

Side conditions on attributes and dims (`padding == [0, 0]`, `groups == c`) are evaluated on the
node; conditions on tensor entries are the channel facts the engine computes. A rule is applied only
with a current certificate (sr_ir.prover); one without is refused with an error naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import SrIrError
from ..ir.program import Node, ParamRef, ValueRef
from ..lang import ast as A
from ..lang.evaluate import EvalError, eval_cond
from ..lang.loader import RuleSet
from ..lang.rule import BackwardFact, ForwardFact, Rewrite, Rule

KINDS = ("dead_row", "unused_col", "fold_const", "fold_zero", "drop_row", "drop_channel", "fold_chain")


class UncertifiedRuleError(SrIrError):
    """A rule the engine needs has no current certificate."""


def classify(rule: Rule) -> str | None:
    """The engine kind of a rule, or None when the rule is not one the engine applies.

    A kind is only given when everything the rule assumes is something the engine checks: its
    rewrite keeps the matched op (a substitution by another op, e.g. a compensated norm, is left to
    the reductions that know it), and its conditions on tensor entries are exactly the facts of that
    kind (zero filter slices, a constant or zero input channel, an unused result channel)."""
    c = rule.conclusion
    tensor_conds = [w for w in rule.where if _is_tensor_cond(w, rule)]
    # the input: the first operand that is one tensor (not a run `us...` of a variadic operand)
    first = next((o.name for o in rule.root.operands if not o.run), None)
    if len(rule.bindings) > 1:
        ok = isinstance(c, Rewrite) and isinstance(c.value, A.Call) and c.value.fn == rule.bindings[-1].op
        return "fold_chain" if ok and not tensor_conds else None
    if isinstance(c, (ForwardFact, BackwardFact)):
        if rule.info and rule.info.values:
            return None
        if not tensor_conds or not all(_zero_of_param(w, first) for w in tensor_conds):
            return None
        return "dead_row" if isinstance(c, ForwardFact) else "unused_col"
    if not isinstance(c, Rewrite) or not (isinstance(c.value, A.Call) and c.value.fn == rule.root.op):
        return None
    if isinstance(c.target, A.Name):
        consts = _const_conds(rule)
        if not consts or len(consts) != len(tensor_conds):
            return None
        return "fold_zero" if all(isinstance(v, A.Num) and v.value == 0 for v in consts) else "fold_const"
    if isinstance(c.target, A.Call) and c.target.fn == "drop":
        dropped = {
            a.args[0].id for a in A.walk(c.value)
            if isinstance(a, A.Call) and a.fn == "drop" and a.args and isinstance(a.args[0], A.Name)
        }
        if first in dropped:
            return None if tensor_conds else "drop_channel"
        unused_result = all(isinstance(w, A.Unused) and w.target.base == rule.root.result for w in tensor_conds)
        return "drop_row" if unused_result else None
    return None


def subject_params(rule: Rule) -> set[str]:
    """The op parameters whose channel the rule is about: the unused operands of a backward fact, the
    constant input of a fold."""
    by_name = {o.name: o.param for o in rule.root.operands if o.name is not None}
    c = rule.conclusion
    if isinstance(c, BackwardFact):
        return {by_name[t.base] for t in c.targets if t.base in by_name}
    return {rule.root.operands[0].param} if rule.root.operands else set()


def _zero_of_param(w: Any, first: str | None) -> bool:
    """`p[...] == 0` on an operand other than the input."""
    return (isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Index) and w.left.base != first
            and isinstance(w.right, A.Num) and w.right.value == 0)


def _const_conds(rule: Rule) -> list[Any]:
    """Right sides of `t[.., c] == v` conditions on the matched node's first operand (its input)."""
    first = rule.root.operands[0].name if rule.root.operands else None
    out = []
    for w in rule.where:
        if isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Index) and w.left.base == first:
            out.append(w.right)
    return out


def _is_tensor_cond(cond: Any, rule: Rule) -> bool:
    values = set(rule.info.values if rule.info else ())
    for sub in A.walk(cond):
        if isinstance(sub, (A.Index, A.Unused)):
            return True
        if isinstance(sub, A.Name) and sub.id in values:
            return True
    return False


@dataclass
class RuleBook:
    """The rules of a rule set, indexed by (root op, kind); certificate checks cached per rule.

    `certify(rule, ruleset) -> str | None` returns None when the rule has a current certificate, or
    the reason it has not (missing, stale, refuted).
    """

    ruleset: RuleSet
    certify: Callable[[Rule, RuleSet], str | None] | None = None
    index: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    strict: bool = False
    used: dict[str, Rule] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # rule name -> why it has no certificate
    _checked: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.certify is None:
            self.certify = default_certifier()
        for r in self.ruleset.rules:
            kind = classify(r)
            if kind is not None:
                self.index.setdefault((r.root.op, kind), []).append(r)

    def rules_of(self, op: str, kind: str) -> list[Rule]:
        return self.index.get((op, kind), [])

    def find(self, node: Node, kind: str, types: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None,
             slot: str | None = None) -> Rule | None:
        """A certified rule of this kind whose attribute conditions hold on `node`, or None when the
        rule set has none or none of its applicable rules has a certificate. Rules refused for want of
        a certificate are recorded in `refused` (and raise UncertifiedRuleError when `strict`): the
        node is then left as is."""
        uncertified: list[tuple[Rule, str]] = []
        for r in self.rules_of(node.op, kind):
            if slot is not None and slot.split("#")[0] not in subject_params(r):
                continue  # the rule speaks of another operand
            if not self._attrs_hold(r, node, types or {}, attrs):
                continue
            why = self._status(r)
            if why is None:
                self.used[r.name] = r
                return r
            uncertified.append((r, why))
        for r, why in uncertified:
            self.refused[r.name] = why
        if uncertified and self.strict:
            r, why = uncertified[0]
            where = f" ({r.loc})" if r.loc else ""
            raise UncertifiedRuleError(
                f"rule '{r.name}'{where} has no current certificate ({why}); run `sr-ir prove` on it "
                f"before minimizing, or remove it from the rule directory"
            )
        return None

    def _status(self, r: Rule) -> str | None:
        if r.name not in self._checked:
            self._checked[r.name] = self.certify(r, self.ruleset) if self.certify else None
        return self._checked[r.name]

    def _attrs_hold(self, r: Rule, node: Node, types: dict[str, Any], attrs: dict[str, Any] | None) -> bool:
        if r.root.op != node.op:
            return False
        from ..ir.checker import attrs_with_defaults

        decl = self.ruleset.ops[node.op]
        attrs = attrs if attrs is not None else attrs_with_defaults(decl, node)
        env: dict[str, Any] = {}
        for name, bi, attr in (r.info.attrs if r.info else ()):
            if bi == 0 and attr in attrs:
                env[name] = attrs[attr]
        for o in r.root.operands:
            if o.name is None:
                idx = [t.name for t in decl.tensor_params].index(o.param)
                if idx < len(node.operands) and node.operands[idx] is not None:
                    return False  # the rule is for the form without this operand
        if not _ranks_fit(decl, node, r, types):
            return False
        env.update(_bind_dims(decl, node, r, types))
        for w in r.where:
            if _is_tensor_cond(w, r):
                continue
            try:
                if not eval_cond(w, env):
                    return False
            except (EvalError, TypeError, KeyError):
                return False
        return True


def _ranks_fit(decl: Any, node: Node, r: Rule, types: dict[str, Any]) -> bool:
    """A rule applies only to operands of the ranks its shape annotations give: a rule proved for
    `batch_norm(x: [b, n, h, w])` says nothing about a 2-d batch norm, nor one proved for a concat of
    [b, n] rows about a concat of 4-d maps. `[*B, n]` fits any rank >= 1."""
    from ..ir.checker import bind_operands
    from ..ir.types import TensorType

    def fits(ann: list[Any], ref: Any) -> bool:
        t = types.get(("v", ref.name)) if isinstance(ref, ValueRef) else types.get(("p", ref.name)) if isinstance(ref, ParamRef) else None
        if not isinstance(t, TensorType):
            return False
        fixed = sum(1 for d in ann if not isinstance(d, A.Variadic))
        return t.rank == fixed if fixed == len(ann) else t.rank >= fixed

    for tp, o in bind_operands(decl, node):
        anns = [op.shape for op in r.root.operands if op.param == tp.name and op.shape is not None]
        if not anns or o is None:
            continue
        refs = o if tp.variadic else [o]
        if not all(fits(ann, ref) for ann in anns for ref in refs):
            return False
    if r.root.result_shape is not None and isinstance(node.type, TensorType):
        ann = list(r.root.result_shape)
        fixed = sum(1 for d in ann if not isinstance(d, A.Variadic))
        if (node.type.rank != fixed) if fixed == len(ann) else (node.type.rank < fixed):
            return False
    return True


def _bind_dims(decl: Any, node: Node, r: Rule, types: dict[str, Any]) -> dict[str, Any]:
    """Dim names of the rule's operand patterns, bound from the node's operand types."""
    from ..ir.checker import _match
    from ..ir.types import TensorType
    from ..ops.decl import TensorPattern

    env: dict[str, Any] = {}
    params = [t.name for t in decl.tensor_params]
    if r.root.result_shape is not None and isinstance(node.type, TensorType):
        # `match y: [b, n, h, w] = reshape(x: [b, n * h * w], ...)`: the result names the factors
        try:
            _match(TensorPattern(node.type.dtype, list(r.root.result_shape)), node.type, env, {}, r.root.result,
                   fresh=False)
        except Exception:  # a result the pattern does not fit: its dims stay unbound
            pass
    for o in r.root.operands:
        if o.name is None or o.param not in params or decl.tensor_params[params.index(o.param)].variadic:
            continue
        i = params.index(o.param)
        if i >= len(node.operands):
            continue
        ref = node.operands[i]
        t = types.get(("v", ref.name)) if isinstance(ref, ValueRef) else types.get(("p", ref.name)) if isinstance(ref, ParamRef) else None
        if not isinstance(t, TensorType):
            continue
        dims = o.shape if o.shape is not None else decl.tensor_params[i].pattern.dims
        try:
            _match(TensorPattern(t.dtype, list(dims)), t, env, {}, o.name, fresh=False)
        except Exception:  # a pattern the node does not fit: leave those dims unbound
            continue
    return {k: v for k, v in env.items() if not isinstance(v, tuple)}


def default_certifier() -> Callable[[Rule, RuleSet], str | None]:
    """Certificate status from the prover's store (`proofs/`, or DIR/proofs for a user rule directory),
    checked without a solver: a rule whose certificate is missing or stale is not applied."""
    try:
        from ..prover.certificates import certificate_status
    except ImportError:
        return lambda rule, ruleset: "this installation has no certificate store (sr_ir.prover)"

    def status(rule: Rule, ruleset: RuleSet) -> str | None:
        st = certificate_status(rule, ruleset)
        return None if st.ok else f"{st.state}: {st.reason}"

    return status
