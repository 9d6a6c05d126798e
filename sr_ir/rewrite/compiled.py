"""A rule read for execution: what its conclusion does to a matched node, from its own syntax tree.

The prover proves `Rule` trees; the engine runs the same trees. This module only sorts the parts of a
rule by the role they play when it runs (nothing is re-stated):

- a *fact* (`then y[*B, c] == e`): channel c of y holds e, where the conditions hold;
- a *channel rewrite* (`then drop(y, a, c) = op(...)` or `then y = op(drop(x, a, c), ...)`): the
  positions the channel variable names in `drop(...)` terms are removed together; the right side's
  arguments say how each operand and attribute of the new node is computed;
- a *substitution* (a rewrite without a channel variable): the matched nodes are replaced by the
  right side (batch-norm folding, idiom raising).

An argument of the right side is one of: the matched operand itself (`bias`), that operand without
the channel (`drop(weight, 1, c)`), the operand plus a term in the channel (`bias + k * weight[:, c]`,
`s1 + k`, `g - 1`), or any other expression. The first three compose over a set of channels (drops
drop them all, terms are summed), which is what lets the engine remove many channels at once with one
evaluation; a rule with an argument of the fourth kind, or one that changes the op or the presence of
an optional operand, is applied to one channel and the node matched again (docs/minimization.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import TypeCheckError
from ..lang import ast as A
from ..lang.rule import ForwardFact, Rewrite, Rule
from ..ir.opdecl import OpDecl


@dataclass(frozen=True)
class ChannelUse:
    """Where the channel variable sits: position `pos` (an expression in the channel) on axis `axis`
    of tensor `tensor`, or the run pos*block .. (pos+1)*block - 1 when `block` is given."""

    tensor: str
    axis: int
    pos: Any
    block: Any = None

    def identity(self, channel: str | None) -> bool:
        return channel is not None and self.block is None and self.pos == A.Name(channel)


@dataclass
class Arg:
    """How one parameter of the new node is computed.

    kind: same (the matched operand/attribute `name`), drop (`name` without `drops`), acc (`name`
    plus `term`, or minus it: `sign` -1), spread (a run of operands), none (absent), expr (anything
    else: `term`)."""

    param: str
    kind: str
    name: str | None = None
    term: Any = None
    sign: int = 1
    drops: tuple[ChannelUse, ...] = ()


@dataclass
class CompiledRule:
    rule: Rule
    kind: str  # fact | rewrite | substitution
    channel: str | None
    conditions: tuple[Any, ...] = ()  # the side conditions evaluated per channel (or per match)
    range: ChannelUse | None = None  # the use whose axis the channel variable ranges over
    # facts
    fact: ChannelUse | None = None
    value: Any = None
    # rewrites
    target: ChannelUse | None = None  # drop(y, ...) on the left; None: the whole result (a consumer)
    op: str | None = None
    args: list[Arg] = field(default_factory=list)
    ties: tuple[ChannelUse, ...] = ()  # every position removed together (target and drops)
    composable: bool = False
    removes: tuple[str, ...] = ()  # matched operands the new node no longer reads (a whole operand goes)

    @property
    def name(self) -> str:
        return self.rule.name


def _channel_in(e: Any, channel: str) -> bool:
    return any(isinstance(s, A.Name) and s.id == channel for s in A.walk(e))


def _int_literal(e: Any) -> int | None:
    if isinstance(e, A.Num) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, A.Neg):
        v = _int_literal(e.operand)
        return -v if v is not None else None
    return None


def _index_use(ix: A.Index, channel: str) -> ChannelUse | None:
    """The channel's position in a read `t[.., pos, ..]` (or `t[.., block(pos, b), ..]`)."""
    var_at = [i for i, x in enumerate(ix.indices) if isinstance(x, A.Variadic)]
    found = None
    for k, x in enumerate(ix.indices):
        if isinstance(x, (A.Slice, A.Variadic)) or not _channel_in(x, channel):
            continue
        if found is not None:
            return None  # the channel on two axes: not a channel use the engine can place
        axis = k - len(ix.indices) if var_at and var_at[0] < k else k
        if isinstance(x, A.Call) and x.fn == "block" and len(x.args) == 2:
            found = ChannelUse(ix.base, axis, x.args[0], x.args[1])
        else:
            found = ChannelUse(ix.base, axis, x)
    return found


def _drop_use(e: Any, channel: str, err) -> ChannelUse | None:
    """`drop(t, axis, pos[, block])` over a tensor name."""
    if not (isinstance(e, A.Call) and e.fn == "drop" and len(e.args) in (3, 4)):
        return None
    t = e.args[0]
    if not isinstance(t, A.Name):
        raise err(f"drop({A.show(t)}, ...): the engine drops channels of the rule's own tensors only")
    axis = _int_literal(e.args[1])
    if axis is None:
        raise err("drop(t, axis, c) needs a literal axis")
    if channel is not None and not _channel_in(e.args[2], channel):
        raise err(f"{A.show(e)} does not name the channel {channel!r}")
    return ChannelUse(t.id, axis, e.args[2], e.args[3] if len(e.args) == 4 else None)


def _sum_terms(e: Any) -> list[tuple[int, Any]]:
    """e as a signed sum of terms."""
    if isinstance(e, A.BinOp) and e.op in ("+", "-"):
        left = _sum_terms(e.left)
        right = _sum_terms(e.right)
        if e.op == "-":
            right = [(-s, t) for s, t in right]
        return left + right
    return [(1, e)]


def _rebuild(terms: list[tuple[int, Any]]) -> Any:
    out = None
    for s, t in terms:
        if out is None:
            out = t if s > 0 else A.Neg(t)
        else:
            out = A.BinOp("+" if s > 0 else "-", out, t)
    return out


def _mentions(e: Any, name: str) -> bool:
    for s in A.walk(e):
        if isinstance(s, A.Name) and s.id == name:
            return True
        if isinstance(s, A.Index) and s.base == name:
            return True
    return False


def compile_rule(rule: Rule, ops: dict[str, OpDecl]) -> CompiledRule:
    """Sort a resolved rule's parts by the role they play when it runs; TypeCheckError when the rule
    has a shape the engine cannot run (the message says why)."""
    info = rule.info
    channel = info.channel if info else None

    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"rule '{rule.name}': {msg}", rule.loc)

    from ..lang.rule import is_static

    conditions = tuple(w for w in rule.where if not is_static(rule, w))
    c = rule.conclusion
    uses: list[ChannelUse] = []
    if channel is not None:
        for w in rule.where:
            for sub in A.walk(w):
                if isinstance(sub, A.Index):
                    u = _index_use(sub, channel)
                    if u is not None:
                        uses.append(u)
    if any(isinstance(sub, A.Unused) for w in rule.where for sub in A.walk(w)):
        raise err("the engine does not run `where unused ...` conditions: it finds unread channels "
                  "itself (a channel goes when every reader has a rule that stops reading it)")
    if isinstance(c, ForwardFact):
        if channel is None:
            raise err("a fact names a channel: `then y[*B, c] == value`")
        target = _index_use(c.target, channel)
        if target is None:
            raise err(f"{A.show(c.target)}: the fact's target must name the channel on one axis")
        cr = CompiledRule(rule, "fact", channel, conditions, fact=target, value=c.value)
        cr.range = next((u for u in [target, *uses] if u.identity(channel)), None)
        if cr.range is None:
            raise err("no read names the channel plainly (`t[.., c, ..]`): its range is unknown")
        return cr
    if not isinstance(c, Rewrite):
        raise err("the engine does not run `then unused` conclusions: it finds unread channels itself "
                  "(a channel goes when every reader has a rule that stops reading it)")
    value = c.value
    if not (isinstance(value, A.Call) and value.fn in ops):
        raise err("a rewrite's right side is an op call")
    decl = ops[value.fn]
    target = None
    if isinstance(c.target, A.Call):
        target = _drop_use(c.target, channel, err)
    args = _args(rule, decl, value.args, channel, err, ops)
    if channel is None and target is None:
        return CompiledRule(rule, "substitution", None, conditions, op=value.fn, args=args)
    ties = ([target] if target is not None else []) + [d for a in args for d in a.drops]
    if not ties:
        raise err("a rewrite with a channel variable drops it somewhere: drop(t, axis, c)")
    # without a channel variable (`drop(y, -1, span(width(us, -1), n)) = concat(us..., vs..., d)`)
    # the rule removes one fixed set of positions: one lane
    rng = next((u for u in ties if u.identity(channel)), None) or next(
        (u for u in uses if u.identity(channel)), None) or next(
        (ChannelUse(u.tensor, u.axis, u.pos.items[0]) for u in ties  # [c, c + h]: c ranges over the axis
         if isinstance(u.pos, A.ListExpr) and u.pos.items[:1] == (A.Name(channel),)), None)
    if rng is None and channel is not None:
        raise err("no drop(t, axis, c) names the channel plainly: its range is unknown")
    root = rule.root
    mentioned = {a.name for a in args if a.name is not None} | {
        n.id for a in args if a.term is not None for n in A.walk(a.term) if isinstance(n, A.Name)}
    removes = tuple(o.name for o in root.operands if o.name is not None and o.name not in mentioned
                    and not any(isinstance(x, A.Index) and x.base == o.name
                                for a in args if a.term is not None for x in A.walk(a.term)))
    same_form = value.fn == root.op and len(rule.bindings) == 1
    if same_form:
        matched = {o.param: o.name for o in root.operands}
        for a in args:
            if decl.tensor_param(a.param) is not None and decl.tensor_param(a.param).optional:
                was_absent = a.param not in matched or matched[a.param] is None
                if was_absent != (a.kind == "none"):
                    same_form = False
    composable = same_form and all(a.kind in ("same", "drop", "acc", "spread", "none") for a in args)
    return CompiledRule(rule, "rewrite", channel, conditions, range=rng, target=target, op=value.fn,
                        args=args, ties=tuple(ties), composable=composable, removes=removes)


def _args(rule: Rule, decl: OpDecl, raw: tuple[Any, ...], channel: str | None, err, ops) -> list[Arg]:
    items = decl.parameters_of(raw)
    if any(p is None for p, _ in items):
        raise err(f"{decl.name} takes {len(decl.param_names)} arguments, the right side gives {len(raw)}")
    root = rule.root
    matched_operand = {o.param: o.name for o in root.operands if o.name is not None and not o.run}
    matched_attr = {}
    for name, bi, attr in (rule.info.attrs if rule.info else ()):
        if bi == 0:
            matched_attr[attr] = name
    out: list[Arg] = []
    for param, a in items:
        is_tensor = decl.tensor_param(param) is not None
        mine = (matched_operand.get(param) if is_tensor else matched_attr.get(param)) if decl.name == root.op else None
        if is_tensor and isinstance(a, A.Num) and a.value is None:
            out.append(Arg(param, "none"))
            continue
        if isinstance(a, A.Spread):
            out.append(Arg(param, "spread", a.name))
            continue
        if isinstance(a, A.Name) and (is_tensor or a.id == mine):
            out.append(Arg(param, "same", a.id))
            continue
        if channel is not None and isinstance(a, A.Call) and a.fn == "drop":
            d = _drop_use(a, channel, err)
            out.append(Arg(param, "drop", d.tensor, drops=(d,)))
            continue
        if mine is not None and channel is not None:
            terms = _sum_terms(a)
            base = [i for i, (s, t) in enumerate(terms) if s > 0 and t == A.Name(mine)]
            rest = [t for i, t in enumerate(terms) if i not in base[:1]]
            if base and rest and not any(_mentions(t, mine) for _, t in rest):
                out.append(Arg(param, "acc", mine, _rebuild(rest)))
                continue
        out.append(Arg(param, "expr", None, a))
    return out
