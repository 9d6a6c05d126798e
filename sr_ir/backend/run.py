"""Run one IR node on tensors through its op's `torch` template: the same text the emitter writes into
a generated module, so a node computed here is what the emitted module would compute."""
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
from ..ir.opdecl import OpDecl


@lru_cache(maxsize=1)
def prelude_helpers() -> type:
    """The emitted code's helper class `P`, built from the prelude sources the emitter copies."""
    from ..resources import prelude_sources

    ns: dict[str, Any] = {"torch": torch, "F": F}
    body = {}
    for name, src in prelude_sources().items():
        exec(compile(ast.parse(src), f"<prelude {name}>", "exec"), ns)  # noqa: S102 - the project's own prelude
        body[name] = staticmethod(ns[name])
    return type("P", (), body)


def _concrete(v: Any) -> Any:
    if isinstance(v, list):
        return [_concrete(x) for x in v]
    if isinstance(v, sympy.Basic):
        raise SrIrError(f"a symbolic attribute {v} cannot be evaluated here")
    return v


@lru_cache(maxsize=4096)
def _compiled(template: str, fields: tuple[tuple[str, str], ...]) -> Any:
    return compile(template.format(**dict(fields)), "<sr-ir op template>", "eval")


def run_node(decl: OpDecl, node: Node, operands: list[Any]) -> torch.Tensor:
    """`operands` are positional, like node.operands (tensors, numbers or None)."""
    if decl.torch is None:
        raise SrIrError(f"op {node.op!r} has no torch template to run")
    probe = Node(node.name, node.op, list(operands), node.attrs, node.type)
    env: dict[str, Any] = {"torch": torch, "F": F, "P": prelude_helpers()}
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
        env[f"_a_{k}"] = _concrete(v)
        fields.append((k, f"_a_{k}"))
    with torch.no_grad():
        return eval(_compiled(decl.torch, tuple(fields)), env)  # noqa: S307 - an op template of a rule file
