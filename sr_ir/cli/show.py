"""`sr-ir show`: the program with parameter counts and bytes per op and in total."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from .inputs import add_model_arguments, load_program

if TYPE_CHECKING:  # the library (torch, sympy) is imported by the functions that run the command
    from ..ir.program import Program

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="print a program with parameter counts and bytes per op",
        description="Print the program (from .sr, .pt2 or module:factory) with the parameters and bytes "
        "each op holds, and the totals.",
    )
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def op_sizes(prog: Program) -> list[dict[str, Any]]:
    """Per node: parameters it reads (each counted at its first use) and their bytes."""
    seen: set[str] = set()
    rows = []
    for n in prog.nodes:
        count = nbytes = 0
        for ref in n.param_operands():
            if ref.name in seen:
                continue
            seen.add(ref.name)
            t = prog.params[ref.name]
            numel = t.numel()
            if isinstance(numel, int):
                count += numel
                nbytes += numel * t.torch_dtype.itemsize
        rows.append({"value": n.name, "op": n.op, "type": str(n.type), "parameters": count, "bytes": nbytes})
    return rows


def run(args: argparse.Namespace) -> int:
    prog = load_program(args)
    rows = op_sizes(prog)
    if args.json:
        print(json.dumps({"graph": prog.name, "text": prog.to_text(), "ops": rows,
                          "total_parameters": prog.param_count(), "total_bytes": prog.param_bytes()}, indent=1))
        return 0
    text_lines = prog.to_text().splitlines()
    by_value = {r["value"]: r for r in rows}
    width = max(len(line) for line in text_lines)
    for line in text_lines:
        stripped = line.strip()
        r = None
        if stripped.startswith("%") and " = " in stripped:
            r = by_value.get(stripped.split(" = ", 1)[0][1:])
        if r and r["parameters"]:
            print(f"{line.ljust(width)}  # {r['parameters']:,} params, {_fmt_bytes(r['bytes'])}")
        else:
            print(line)
    print(f"# total: {prog.param_count():,} parameters, {_fmt_bytes(prog.param_bytes())}, {len(prog.nodes)} ops")
    return 0


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


__all__ = ["op_sizes"]
