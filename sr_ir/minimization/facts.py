"""Constant channels, computed forward through the graph by the fact rules (`then y[*B, c] == e`).

For every node, in program order, every certified fact rule that matches it is evaluated vectorized
over its channels: where its side conditions hold (zero filter rows, constant input channels known
from the nodes before, attribute conditions), channel c of the target holds the rule's value e(c),
computed from the rule's own expression (`bias[c]`, `relu(k)`, `k * scale[c]`, ...). A value that
comes out non-finite is not a fact.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..ir.program import ValueRef
from ..lang import ast as A
from ..lang.tensor_eval import Facts, LaneEval, RuleEvalError, align, lift
from ..rewrite.compiled import CompiledRule
from ..rewrite.matching import Graph, Match, matches
from ..rewrite.rulebook import RuleBook


def channel_range(cr: CompiledRule, m: Match) -> int | None:
    """How many channels the rule's channel variable ranges over at this match."""
    u = cr.range
    if u is None:  # a rule without a channel variable: one lane
        return 1
    op = m.env.get(u.tensor)
    t = getattr(op, "type", None)
    if t is None or not -t.rank <= u.axis < t.rank:
        return None
    n = t.shape[u.axis]
    return n if isinstance(n, int) else None


def positions(ev: LaneEval, use: Any, n_lanes: int) -> torch.Tensor:
    """The positions a channel use names for every lane: [lanes] or [lanes, block] (a block of a
    flattened axis, a list `[c, c + h]`, a `span(start, n)`)."""
    if isinstance(use.pos, A.ListExpr):
        parts = [positions(ev, type(use)(use.tensor, use.axis, x), n_lanes) for x in use.pos.items]
        return torch.stack(parts, -1)
    if isinstance(use.pos, A.Call) and use.pos.fn == "span" and len(use.pos.args) == 2:
        start = positions(ev, type(use)(use.tensor, use.axis, use.pos.args[0]), n_lanes)
        width = ev._int_index(use.pos.args[1])
        if not isinstance(width, int):
            raise RuleEvalError("a span's length must be the same for every channel")
        return start.unsqueeze(-1) + torch.arange(width)
    p = lift(ev._int_index(use.pos))
    (pt,), names = align(p)
    pt = pt.reshape(-1) if names == ("#c",) else pt.reshape(()).expand(n_lanes)
    if use.block is None:
        return pt
    b = ev._int_index(use.block)
    if not isinstance(b, int):
        raise RuleEvalError("a block's length must be the same for every channel")
    return pt.unsqueeze(-1) * b + torch.arange(b)


def evaluator(cr: CompiledRule, m: Match, functions: Mapping[str, Any], lanes: torch.Tensor | int,
              memo: dict | None = None) -> LaneEval:
    """The rule's evaluator at a match, its channel variable bound to `lanes` (an int n: every channel
    0..n-1); `memo` (a Graph's) shares slice tests between evaluators."""
    info = cr.rule.info
    every = isinstance(lanes, int)
    return LaneEval(m.env, functions, cr.channel, torch.arange(lanes) if every else lanes,
                    info.values if info else (), cr.rule.loc, cr.rule.name, memo=memo, all_lanes=every or None)


def conditions(ev: LaneEval, cr: CompiledRule) -> torch.Tensor:
    ok = torch.ones(ev.n_lanes, dtype=torch.bool)
    for w in cr.conditions:
        ok &= ev.holds(w)
        if not ok.any():
            break
    return ok


def propagate(g: Graph, book: RuleBook, functions: Mapping[str, Any]) -> None:
    """Fill g.facts (value name -> Facts) for the whole program."""
    g.facts = {}
    for node in g.program.nodes:
        if not node.type.dtype.startswith(("f", "b")):
            continue
        for cr in book.candidates(node.op, "fact"):
            for m in matches(cr.rule, node, g, functions):
                _apply_fact(cr, m, g, book, functions)


def _apply_fact(cr: CompiledRule, m: Match, g: Graph, book: RuleBook, functions: Mapping[str, Any]) -> None:
    n = channel_range(cr, m)
    if not n:
        return
    ref = m.refs.get(cr.fact.tensor)
    if not isinstance(ref, ValueRef):
        return
    ty = g.types[ref.name]
    axis = cr.fact.axis % ty.rank if -ty.rank <= cr.fact.axis < ty.rank else None
    if axis is None or not isinstance(ty.shape[axis], int):
        return
    ev = evaluator(cr, m, functions, n, g.memo)
    try:
        ok = conditions(ev, cr)
        if not ok.any():
            return
        if not book.admit(cr):
            return
        value = lift(ev.expr(cr.value))
        (vt,), names = align(value)
        if names not in ((), ("#c",)) or value.ndata:
            raise RuleEvalError(f"rule '{cr.name}': the fact's value is not one number per channel")
        vt = vt.to(torch.float64).reshape(-1) if names else vt.to(torch.float64).reshape(()).expand(n)
        pos = positions(ev, cr.fact, n)
    except RuleEvalError:
        return
    ok &= torch.isfinite(vt)
    size = ty.shape[axis]
    if pos.dim() == 1:
        ok &= (pos >= 0) & (pos < size)
        where, vals = pos[ok], vt[ok]
    else:
        inside = ((pos >= 0) & (pos < size)).all(-1)
        ok &= inside
        where = pos[ok].reshape(-1)
        vals = vt[ok].unsqueeze(-1).expand(-1, pos.shape[1]).reshape(-1)
    if not where.numel():
        return
    R = len(book.fact_rules)
    src = torch.zeros(n, R, dtype=torch.bool)
    src[:, book.fact_index(cr)] = True
    if ev.sources is not None:
        src |= ev.sources
    src = src[ok] if pos.dim() == 1 else src[ok].unsqueeze(1).expand(-1, pos.shape[1], -1).reshape(-1, R)
    f = g.facts.setdefault(ref.name, Facts())
    known, value_ = f.const.get(axis, (torch.zeros(size, dtype=torch.bool), torch.zeros(size, dtype=torch.float64)))
    source = f.source.get(axis, torch.zeros(size, R, dtype=torch.bool))
    new = ~known[where]
    if not new.any():
        return
    known, value_, source = known.clone(), value_.clone(), source.clone()
    known[where[new]] = True
    value_[where[new]] = vals[new]
    source[where[new]] = src[new]
    f.const[axis] = (known, value_)
    f.source[axis] = source
