"""Raise a lowered program into the IR's structured ops by the certified `raise.*` rules.

torch.export writes RMSNorm, the tanh GELU, channels-first LayerNorm, rotary embeddings and
multi-head attention as chains of small ATen ops. The rules of rules/raise/ say, each as one proved
equation, which chain is which op (attention: one scaled-dot-product attention per head over slices
of the projections). They run here through the same substitution engine that folds batch norms;
Python adds only what every rewrite pipeline needs: folding nodes that read nothing but parameters
(a reshaped RoPE table, a mask's slice for one head) into parameters, and merging identical nodes
(the key slice that several query heads of grouped-query attention read).
"""
from __future__ import annotations

from typing import Any

import torch

from ..backend.run import run_node
from ..errors import SrIrError
from ..ir.program import Node, ParamRef, Program, ValueRef, fresh_name
from ..ir.types import TensorType
from ..lang.functions import function_table
from ..lang.loader import RuleSet
from ..rewrite.rulebook import RuleBook
from ..rewrite.substitution import substitute


def raise_program(p: Program, rules: RuleSet, book: RuleBook | None = None) -> Program:
    """Apply every certified raise rule to a fixpoint, then fold parameter-only nodes and merge
    duplicates. A raise rule without a current certificate is not applied (the plain ops still
    lower, emit and run)."""
    book = book or RuleBook(rules, stage="raise")
    if not book.kinds("substitution"):
        return p
    before = set(p.params)
    p, replaced = substitute(p.drop_dead(), book, function_table(rules), private=False)
    if not replaced:
        return p
    for name in set(p.params) - before:  # for the report's name map: no model tensor has this name
        p.origins.setdefault(name, (None, "made by a raise rule"))
    p = fold_parameter_nodes(merge_duplicates(p), rules)
    return merge_duplicates(p).drop_dead()


def fold_parameter_nodes(p: Program, rules: RuleSet) -> Program:
    """Nodes whose operands are all parameters or numbers become parameters holding their value
    (computed by the op's torch template, as the emitted module would)."""
    q = p.copy(weights=False)
    q.weights = dict(p.weights)
    known: dict[str, ParamRef] = {}
    kept: list[Node] = []
    for n in q.nodes:
        n.operands = [known.get(o.name, o) if isinstance(o, ValueRef) else o for o in n.operands]
        if n.name in q.outputs or any(isinstance(o, ValueRef) for o in n.operands) \
                or not any(isinstance(o, ParamRef) for o in n.operands):
            kept.append(n)
            continue
        args = [q.weights[o.name] if isinstance(o, ParamRef) else o for o in n.operands]
        try:
            with torch.no_grad():
                val = run_node(rules.ops[n.op], n, args)
        except SrIrError:
            kept.append(n)
            continue
        name = fresh_name(n.name, q.params)
        q.weights[name] = val.detach().contiguous()
        q.params[name] = TensorType.of(q.weights[name])
        first = next(o.name for o in n.operands if isinstance(o, ParamRef))
        key, how = q.origins.get(first, (first, ""))
        q.origins[name] = (key, f"{how}; {n.op}" if how else f"{n.op} of it")
        if all(o.name in q.buffers for o in n.operands if isinstance(o, ParamRef)):
            q.buffers.add(name)  # computed from buffers only (a RoPE table): not trainable either
        known[n.name] = ParamRef(name)
    q.nodes = kept
    q.drop_unused_params()
    return q


def merge_duplicates(p: Program) -> Program:
    """One node for each (op, operands, attributes): later copies read the first."""
    seen: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for n in p.nodes:
        n.operands = [ValueRef(alias.get(o.name, o.name)) if isinstance(o, ValueRef) else o for o in n.operands]
        if n.name in p.outputs:
            continue
        key = (n.op, tuple(_key(o) for o in n.operands), repr(sorted(n.attrs.items())))
        if key in seen:
            alias[n.name] = seen[key]
        else:
            seen[key] = n.name
    if alias:
        p.nodes = [n for n in p.nodes if n.name not in alias]
    return p


def _key(o: Any) -> Any:
    if isinstance(o, ValueRef):
        return ("v", o.name)
    if isinstance(o, ParamRef):
        return ("p", o.name)
    return ("c", repr(o))


