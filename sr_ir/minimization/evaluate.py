"""Evaluate one IR node on concrete tensors, through its op's `torch` template in rules/.

The engine computes constant channels, folded biases and uniformity checks by running the op
itself (float64, batch 1), so an op declared only in a user rule directory is evaluated the same way
as a core one. Symbolic dims in attributes (the batch N in a reshape target) are set to 1.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from typing import Any

import sympy
import torch
import torch.nn.functional as F

from ..errors import SrIrError
from ..ir.checker import attrs_with_defaults, bind_operands
from ..ir.program import Node
from ..ops.decl import OpDecl


@lru_cache(maxsize=1)
def _helpers() -> type:
    """The emitted code's helper class `P`, built from the same prelude sources the backend copies."""
    from ..backend.torch_module import _prelude_sources

    ns: dict[str, Any] = {"torch": torch, "F": F}
    body = {}
    for name, src in _prelude_sources().items():
        exec(compile(ast.parse(src), f"<prelude {name}>", "exec"), ns)
        body[name] = staticmethod(ns[name])
    return type("P", (), body)


def concrete(v: Any) -> Any:
    """Attribute values with every symbolic dim set to 1 (batch-1 evaluation)."""
    if isinstance(v, list):
        return [concrete(x) for x in v]
    if isinstance(v, sympy.Basic):
        return int(v.subs({s: 1 for s in v.free_symbols}))
    return v


@lru_cache(maxsize=4096)
def _compiled(template: str, fields: tuple[tuple[str, str], ...]) -> Any:
    return compile(template.format(**dict(fields)), "<sr-ir op template>", "eval")


def eval_node(decl: OpDecl, node: Node, operands: list[Any]) -> torch.Tensor:
    """`operands` are positional, like node.operands (tensors, scalars or None)."""
    if decl.torch is None:
        raise SrIrError(f"op {node.op!r} has no torch template to evaluate")
    probe = Node(node.name, node.op, list(operands), node.attrs, node.type)
    env: dict[str, Any] = {"torch": torch, "F": F, "P": _helpers()}
    fields: list[tuple[str, str]] = []
    for i, (tp, o) in enumerate(bind_operands(decl, probe)):
        if tp.variadic:
            names = []
            for j, x in enumerate(o):
                env[f"_v{i}_{j}"] = x
                names.append(f"_v{i}_{j}")
            fields.append((tp.name, ", ".join(names)))
        else:
            env[f"_v{i}"] = o
            fields.append((tp.name, f"_v{i}"))
    for k, v in attrs_with_defaults(decl, node).items():
        env[f"_a_{k}"] = concrete(v)
        fields.append((k, f"_a_{k}"))
    with torch.no_grad():
        return eval(_compiled(decl.torch, tuple(fields)), env)
