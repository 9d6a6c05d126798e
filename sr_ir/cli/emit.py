"""`sr-ir emit`: a program to a PyTorch module saved as .pt2 and/or readable Python source."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..backend import emit
from ..errors import SrIrError
from ..ir.persist import atomic_save_with, atomic_write
from ..ir.sampling import sample_inputs
from .inputs import add_model_arguments, load_program, rules_for, writing


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emit",
        help="emit a program as a PyTorch module (.pt2 and/or Python source)",
        description="Emit the program as an nn.Module. --pt2 writes a torch.export archive (dynamic batch); "
        "--python writes standalone source and its weights beside it (.safetensors); --print shows the source.",
    )
    add_model_arguments(p)
    p.add_argument("--pt2", metavar="OUT.pt2", help="write a torch.export archive")
    p.add_argument("--python", metavar="OUT.py", help="write the module's Python source (+ OUT.safetensors)")
    p.add_argument("--print", action="store_true", help="print the generated source")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def export_module(module: torch.nn.Module, program, path: str) -> None:
    """Save `module` with torch.export (batch dim dynamic where the program has one), atomically."""
    from torch.export import Dim

    inputs = sample_inputs(program, batch=2)
    dynamic = tuple(
        {0: Dim.AUTO} if t.rank and not isinstance(t.shape[0], int) else None for _, t in program.inputs
    )
    ep = torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)
    atomic_save_with(path, lambda tmp: torch.export.save(ep, tmp))


def run(args: argparse.Namespace) -> int:
    if not (args.pt2 or args.python or args.print):
        raise SrIrError("nothing to do: give --pt2, --python and/or --print")
    prog = load_program(args)
    module = emit(prog, rules_for(args))
    if args.pt2:
        with writing(args.pt2):
            export_module(module, prog, args.pt2)
    if args.python:
        from safetensors.torch import save_file

        weights = Path(args.python).with_suffix(".safetensors")
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        with writing(weights):
            atomic_save_with(weights, lambda tmp: save_file(state, tmp))
        with writing(args.python):
            atomic_write(args.python, module.sr_ir_source)
    if args.print:
        print(module.sr_ir_source, end="")
    if args.json:
        print(json.dumps({"graph": prog.name, "pt2": args.pt2, "python": args.python,
                          "parameters": prog.param_count()}))
    elif args.pt2 or args.python:
        print("wrote " + ", ".join(x for x in (args.pt2, args.python) if x))
    return 0
