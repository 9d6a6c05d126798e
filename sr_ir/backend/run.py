"""Run one IR node on tensors through its op's `torch` template: the same text the emitter writes into
a generated module, so a node computed here is what the emitted module would compute. A failure in
either place is reported as one line naming the node (`node_failure`, `generated_module_failure`)."""
from __future__ import annotations

import ast
from functools import lru_cache
from typing import Any

import sympy
import torch
import torch.nn.functional as F

from ..errors import SrIrError, describe
from ..ir.checker import attrs_with_defaults, bind_operands
from ..ir.printer import format_node
from ..ir.program import Node, Program
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
    try:
        with torch.no_grad():
            return eval(_compiled(decl.torch, tuple(fields)), env)  # noqa: S307 - an op template of a rule file
    except Exception as e:
        raise node_failure(node, e) from e


def node_failure(node: Node, e: BaseException) -> SrIrError:
    """The one-line error for `node` raising `e` when run through its op's template."""
    origin = f" (from {node.origin})" if node.origin else ""
    return SrIrError(f"{format_node(node)}{origin}: fails when run: {describe(e)}", node.loc)


def generated_module_failure(e: BaseException) -> SrIrError | None:
    """`node_failure` for the IR node whose line of a generated module's forward raised `e` (innermost
    such frame); None when `e` did not come from a generated module."""
    tb, found = e.__traceback__, None
    while tb is not None:
        module = tb.tb_frame.f_locals.get("self")
        program = getattr(module, "sr_ir_program", None)
        if isinstance(program, Program) and tb.tb_frame.f_code is getattr(type(module).forward, "__code__", None):
            found = (program, module.sr_ir_source, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return None
    node = _node_at_line(*found)
    return node_failure(node, e) if node is not None else None


def _node_at_line(program: Program, source: str, lineno: int) -> Node | None:
    # emit_source writes one line per node, in program order, right before the final `return`
    last = len(source.splitlines())
    i = lineno - (last - len(program.nodes))
    return program.nodes[i] if 0 <= i < len(program.nodes) else None
