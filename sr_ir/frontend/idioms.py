"""Raise framework idioms into IR ops with explicit structure, so later rules stay local.

- permute(0,2,3,1) -> layer_norm(last dim) -> permute(0,3,1,2)  ==>  layer_norm_channels (LayerNorm over
  axis 1 of an NCHW tensor, ConvNeXt's channels-first LayerNorm).
- reshape/permute that leave the type unchanged (`x.view(len(x), -1)` on an already flat input, an identity
  permutation) are removed: they carry no channel structure but would stand between a network input and the
  first layer, hiding unread input features from the gather rule.
Attention raising lives in raise_attention.py (when present) and runs after these.
"""
from __future__ import annotations

import importlib

from ..ir.program import Node, Program, ValueRef
from ..lang.loader import RuleSet


def raise_idioms(p: Program, rules: RuleSet) -> Program:
    p = _identity_views(p)
    p = _channels_first_layer_norm(p, rules)
    try:
        attention = importlib.import_module(f"{__package__}.raise_attention")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.raise_attention":
            raise
    else:
        p = attention.raise_attention(p, rules)
    return p.drop_dead()


def _channels_first_layer_norm(p: Program, rules: RuleSet) -> Program:
    if "layer_norm_channels" not in rules.ops:
        return p
    users = p.users()
    by_name = p.node_map()
    replace: dict[str, Node] = {}
    for ln in p.nodes:
        if ln.op != "layer_norm" or len(ln.attrs.get("normalized_shape", [])) != 1:
            continue
        src = next(iter(ln.value_operands()), None)
        pre = by_name.get(src.name) if src else None
        if pre is None or pre.op != "permute" or len(users[pre.name]) != 1:
            continue
        rank = pre.type.rank
        if rank < 3 or pre.attrs["dims"] != [0, *range(2, rank), 1]:
            continue
        outs = users[ln.name]
        if len(outs) != 1 or outs[0].op != "permute" or outs[0].attrs["dims"] != [0, rank - 1, *range(1, rank - 1)]:
            continue
        post = outs[0]
        x = pre.operands[0]
        replace[post.name] = Node(
            post.name, "layer_norm_channels", [x, *ln.operands[1:]], {"eps": ln.attrs.get("eps", 1e-5)},
            post.type, post.loc, ln.origin,
        )
    if not replace:
        return p
    p.nodes = [replace.get(n.name, n) for n in p.nodes]
    return p


def _identity_views(p: Program) -> Program:
    types = p.value_types()
    alias: dict[str, str] = {}
    for n in p.nodes:
        if n.op not in ("reshape", "permute") or n.name in p.outputs:
            continue
        src = n.operands[0]
        if not isinstance(src, ValueRef) or types[src.name] != n.type:
            continue
        if n.op == "permute" and list(n.attrs["dims"]) != list(range(n.type.rank)):
            continue
        alias[n.name] = alias.get(src.name, src.name)
    if alias:
        p.replace_uses(alias)
        p.nodes = [n for n in p.nodes if n.name not in alias]
    return p
