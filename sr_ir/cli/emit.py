"""`sr-ir emit`: a program to a PyTorch module saved as .pt2 and/or readable Python source."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SrIrError
from .inputs import add_model_arguments, load_program, rules_for, writing

if TYPE_CHECKING:  # the library (torch) is imported by the functions that run the command
    import torch

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emit",
        help="emit a program as a PyTorch module (.pt2 and/or Python source)",
        description="Emit the program as an nn.Module. --pt2 writes a torch.export archive (dynamic batch); "
        "--python writes standalone source and its weights beside it (.safetensors); --print shows the source.",
    )
    add_model_arguments(p)
    p.add_argument("--pt2", metavar="OUT.pt2", help="write a torch.export archive")
    p.add_argument("--python", metavar="OUT.py", help="write the module's standalone Python source (+ OUT.safetensors; "
                   "its load() needs torch and safetensors only)")
    p.add_argument("--print", action="store_true", help="print the generated source")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def export_module(module: torch.nn.Module, program, path: str) -> None:
    """Save `module` with torch.export (batch dim dynamic where the program has one), atomically
    (`sr_ir.backend.export.save_pt2`, kept here under its old name)."""
    from ..backend.export import save_pt2

    save_pt2(module, program, path)


def run(args: argparse.Namespace) -> int:
    from ..backend import emit
    from ..backend.export import check_output, save_pt2, save_python

    if not (args.pt2 or args.python or args.print):
        raise SrIrError("nothing to do: give --pt2, --python and/or --print")
    for out, suffix in ((args.pt2, ".pt2"), (args.python, ".py")):
        if out and Path(out).suffix != suffix:
            raise SrIrError(f"{out}: expected a file name ending in {suffix}")
        if out:
            check_output(out)  # a folder in the way is refused before the work
    rules = rules_for(args)
    prog = load_program(args, rules)
    module = emit(prog, rules)
    if args.pt2:
        with writing(args.pt2):
            save_pt2(module, prog, args.pt2)
    if args.python:
        with writing(args.python):
            save_python(module, args.python)
    if args.print:
        print(module.sr_ir_source, end="")
    if args.json:
        print(json.dumps({"graph": prog.name, "pt2": args.pt2, "python": args.python,
                          "parameters": prog.param_count()}))
    elif args.pt2 or args.python:
        print("wrote " + ", ".join(x for x in (args.pt2, args.python) if x))
    return 0
