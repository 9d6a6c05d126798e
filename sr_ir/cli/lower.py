"""`sr-ir lower`: a PyTorch model to IR text + safetensors weights."""
from __future__ import annotations

import argparse
import json

from .inputs import add_model_arguments, load_program, writing

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lower",
        help="lower a PyTorch model (.pt2 or module:factory) to sr-ir text + weights",
        description="Lower a model through torch.export into the sr-ir IR and write OUT (.sr) and its "
        "weights (OUT with .safetensors) atomically. Without -o, print the IR text.",
    )
    add_model_arguments(p)
    p.add_argument("-o", "--output", metavar="OUT.sr", help="where to write the program")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prog = load_program(args)
    if args.output:
        with writing(args.output):
            prog.save(args.output)
    if args.json:
        print(json.dumps({"graph": prog.name, "nodes": len(prog.nodes), "parameters": prog.param_count(),
                          "bytes": prog.param_bytes(), "output": args.output}))
    elif args.output:
        print(f"wrote {args.output} ({len(prog.nodes)} nodes, {prog.param_count():,} parameters)")
    else:
        print(prog.to_text(), end="")
    return 0
