"""Fold inference batch norms into the conv / linear that feeds them, before the channel analysis.

Applied where the rule set holds a certified two-node rule (kind fold_chain) matching
`batch_norm(<producer>(...))` and the producer's result is read by that batch norm only:
    s = gamma / sqrt(var + eps);  W' = W * s (per output channel);  b' = (b - mean) * s + beta
Without such a rule the batch norm stays; it is channel-local, so the analysis goes through it anyway.
"""
from __future__ import annotations

import torch

from ..ir.program import ParamRef, Program, ValueRef
from ..ir.types import TensorType
from ..lang.loader import RuleSet
from .rulebook import RuleBook


def _chain_rule(book: RuleBook, bn, producer_op: str, types) -> bool:
    for r in book.rules_of("batch_norm", "fold_chain"):
        if len(r.bindings) == 2 and r.bindings[1].op == producer_op:
            sub = RuleBook(book.ruleset, book.certify)
            sub.index = {("batch_norm", "fold_chain"): [r]}
            sub._checked = book._checked
            if sub.find(bn, "fold_chain", types) is not None:
                book.used[r.name] = r
                return True
    return False


def fold_batch_norms(p: Program, rules: RuleSet, book: RuleBook) -> tuple[Program, list[str]]:
    folded: list[str] = []
    if not book.rules_of("batch_norm", "fold_chain"):
        return p, folded
    users = p.users()
    by_name = p.node_map()
    types = {("v", n): t for n, t in p.value_types().items()} | {("p", n): t for n, t in p.params.items()}
    replace: dict[str, str] = {}
    drop: set[str] = set()
    from .rewrite import graph_copy

    p = graph_copy(p)
    by_name = p.node_map()
    for bn in list(p.nodes):
        if bn.op != "batch_norm" or not isinstance(bn.operands[0], ValueRef):
            continue
        prod = by_name.get(bn.operands[0].name)
        if prod is None or len(users.get(prod.name, [])) != 1 or not isinstance(prod.operands[1], ParamRef):
            continue
        if prod.op not in ("conv1d", "conv2d", "linear") or not _chain_rule(book, bn, prod.op, types):
            continue
        if prod.op == "linear" and prod.type.rank != 2:  # BatchNorm1d on [N, L, C] normalizes L, not the rows
            continue
        gamma, beta, mean, var = (bn.operands + [None] * 5)[1:5]
        eps = bn.attrs.get("eps", 1e-5)
        w = p.weights[prod.operands[1].name]
        dt = w.dtype
        rm = p.weights[mean.name].double()
        rv = p.weights[var.name].double()
        g = p.weights[gamma.name].double() if isinstance(gamma, ParamRef) else torch.ones_like(rm)
        bt = p.weights[beta.name].double() if isinstance(beta, ParamRef) else torch.zeros_like(rm)
        b_ref = prod.operands[2] if len(prod.operands) > 2 else None
        b = p.weights[b_ref.name].double() if isinstance(b_ref, ParamRef) else torch.zeros_like(rm)
        s = g / torch.sqrt(rv + eps)
        w_name = prod.operands[1].name
        p.weights[w_name] = (w.double() * s.view([-1] + [1] * (w.dim() - 1))).to(dt)
        b_name = b_ref.name if isinstance(b_ref, ParamRef) else _fresh(p, w_name)
        p.weights[b_name] = ((b - rm) * s + bt).to(dt)
        p.params[b_name] = TensorType.of(p.weights[b_name])
        while len(prod.operands) < 3:
            prod.operands.append(None)
        prod.operands[2] = ParamRef(b_name)
        replace[bn.name] = prod.name
        drop.add(bn.name)
        folded.append(bn.name)
    if not folded:
        return p, folded
    p.nodes = [n for n in p.nodes if n.name not in drop]
    p.replace_uses(replace)
    p.drop_unused_params()
    return p, folded


def _fresh(p: Program, weight: str) -> str:
    base = weight[: -len("weight")] + "bias" if weight.endswith("weight") else weight + ".bias"
    name, i = base, 1
    while name in p.params:
        name, i = f"{base}_{i}", i + 1
    return name
