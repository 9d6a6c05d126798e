"""Keep attributes that spell out channel counts (reshape targets, depthwise groups, normalized
shapes) in step with the tensors after channels were removed."""
from __future__ import annotations

from typing import Any

from ..ir.checker import bind_operands
from ..ir.program import Node, ValueRef
from ..ir.types import TensorType
from ..ops.coupling import OUT, RESIZERS
from ..ops.decl import OpDecl


def update_attrs(decl: OpDecl, node: Node, old_out: dict[str, TensorType], new_values: dict[str, TensorType],
                 old_values: dict[str, TensorType]) -> None:
    fns = [c for c in decl.couple if c[0] == "fn" and c[1] in RESIZERS]
    if not fns:
        return
    old: dict[str, Any] = {OUT: old_out[node.name]}
    new: dict[str, Any] = {OUT: node.type}
    variadic: dict[str, list[str]] = {}
    for tp, o in bind_operands(decl, node):
        items = list(enumerate(o)) if tp.variadic else [(None, o)]
        names = []
        for i, x in items:
            slot = tp.name if i is None else f"{tp.name}#{i}"
            names.append(slot)
            if isinstance(x, ValueRef):
                old[slot] = old_values.get(x.name)
                new[slot] = new_values.get(x.name)
        if tp.variadic:
            variadic[tp.name] = names
    for _, fname, args in fns:
        slots = [variadic.get(a, [a]) for a in args]
        if any(s not in old or old[s] is None for group in slots[:1] for s in group):
            continue
        node.attrs.update(RESIZERS[fname](dict(node.attrs), old, new, slots))
