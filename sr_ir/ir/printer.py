"""Canonical text of a program. `parse(print_program(p))` gives back p, and printing that gives the same text."""
from __future__ import annotations

import json
import math
from typing import Any

import sympy

from .program import Node, ParamRef, Program, ValueRef, param_text
from .types import dim_str


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if ("." in r or "e" in r) else r + ".0"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    if isinstance(v, sympy.Basic):
        return dim_str(v)
    raise TypeError(f"cannot print attribute {v!r}")


def format_operand(o: Any) -> str:
    if isinstance(o, (ValueRef, ParamRef)):
        return str(o)
    return format_attr(o)


def format_node(n: Node) -> str:
    args = [format_operand(o) for o in n.operands]
    args += [f"{k}={format_attr(v)}" for k, v in n.attrs.items()]
    return f"%{n.name} = {n.op}({', '.join(args)}) : {n.type}"


def print_program(p: Program) -> str:
    ins = ", ".join(f"%{name}: {t}" for name, t in p.inputs)
    outs = ", ".join(str(t) for t in p.output_types)
    lines = [f"graph {p.name}({ins}) -> ({outs}) {{"]
    for name, t in p.params.items():
        kind = "buffer" if name in p.buffers else "param"
        lines.append(f"  {kind} {param_text(name)}: {t}")
    for n in p.nodes:
        lines.append("  " + format_node(n))
    lines.append("  return " + ", ".join(f"%{o}" for o in p.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
