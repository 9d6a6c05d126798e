"""`sr-ir minimize`: a masked model in, an exactly equivalent smaller model out (verified before writing)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import N_RANDOM
from .inputs import add_model_arguments, factory_model_and_inputs, rules_for, writing

if TYPE_CHECKING:  # the library (torch, sympy) is imported by the functions that run the command
    from ..lang.loader import RuleSet

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "minimize",
        help="remove every removable channel of a masked model, exactly (verified)",
        description="Find constant and unused channels through the IR (rules in rules/ plus --rules), fold "
        "constants into their consumers, drop the channels, and check the result against the original on "
        "the example inputs and random inputs in float32 and float64. Nothing is written on a mismatch.",
    )
    add_model_arguments(p)
    p.add_argument("-o", "--output", action="append", default=[], metavar="OUT",
                   help="write the minimized model: .pt2 (torch.export, dynamic batch), .sr (IR text + .safetensors "
                   "beside it), .onnx (checked with onnxruntime) or .py (standalone source + .safetensors); "
                   "repeatable. With --weights, a .safetensors OUT streams: the checkpoint is read by memory map "
                   "and never held, the result is written tensor by tensor (its program text beside it as .sr)")
    p.add_argument("--no-verify", action="store_true", help="skip the numeric comparison (not recommended)")
    p.add_argument("--random-inputs", type=int, default=N_RANDOM, metavar="K",
                   help=f"random inputs to verify on, besides the example (default {N_RANDOM})")
    p.add_argument("--strict", action="store_true",
                   help="fail when a rule that would apply has no current certificate (default: leave that node as is)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace, rules: RuleSet) -> tuple[Any, tuple[Any, ...]]:
    import torch

    from ..ir.sampling import sample_inputs

    spec = args.model
    path = Path(spec)
    if path.suffix == ".sr":
        from ..ir.persist import load

        prog = load(path, rules=rules)
        return prog, sample_inputs(prog, batch=2)
    if path.suffix == ".pt2":
        from ..frontend import load_exported

        ep = load_exported(path)
        inputs = tuple(
            torch.randn([int(d) if isinstance(d, int) else 2 for d in a.shape], dtype=a.dtype)
            if a.is_floating_point() else torch.zeros([int(d) if isinstance(d, int) else 2 for d in a.shape], dtype=a.dtype)
            for a in ep.example_inputs[0]
        ) if ep.example_inputs else ()
        return ep, inputs
    return factory_model_and_inputs(args)


def run(args: argparse.Namespace) -> int:
    from ..backend.export import check_output
    from ..minimization import minimize

    if any(Path(o).suffix == ".safetensors" for o in args.output):
        return run_streaming(args)
    for out in args.output:
        # refuse an unknown suffix or a folder before minimizing, not after (.sr and .py are also their .safetensors)
        check_output(out)
    rules = rules_for(args)
    model, inputs = _load(args, rules)
    result = minimize(model, inputs, rules=rules, verify=not args.no_verify, n_random=args.random_inputs,
                      progress=not args.quiet and sys.stderr.isatty(), strict=args.strict)
    for name, why in result.report.refused_rules.items():
        print(f"sr-ir minimize: warning: rule '{name}' not applied, no current certificate ({why})", file=sys.stderr)
    written = []
    for out in args.output:
        with writing(out):
            written.append(write_output(result, out, inputs))
    if args.json:
        d = result.report.to_dict()
        d["written"] = written
        print(json.dumps(d, indent=1))
    else:
        print(result.report.table())
        for w in written:
            print(f"wrote {w}")
    return 0


def write_output(result: Any, out: str, inputs: tuple[Any, ...]) -> str:
    """Write one output (`Minimized.save`: atomic; an .onnx file is run in onnxruntime and compared first)."""
    result.save(out, example_inputs=inputs or None)
    return out


def run_streaming(args: argparse.Namespace) -> int:
    """`sr-ir minimize pkg.mod:factory --weights big.safetensors -o small.safetensors`: the streaming path
    (`sr_ir.minimize_checkpoint`), for checkpoints larger than memory."""
    import importlib

    from ..errors import SrIrError, describe
    from ..minimization.streaming import minimize_checkpoint
    from .inputs import _import_from_current_folder, example_inputs_for

    if len(args.output) != 1 or not args.weights or ":" not in args.model:
        raise SrIrError("a .safetensors output streams a checkpoint: give pkg.module:factory, --weights FILE "
                        "and that one -o OUT.safetensors")
    mod_name, _, fn_name = args.model.partition(":")
    _import_from_current_folder()
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise SrIrError(f"cannot import {mod_name!r}: {describe(e)}") from None
    factory = getattr(mod, fn_name, None)
    if not callable(factory):
        raise SrIrError(f"{mod_name!r} has no callable {fn_name!r}")
    with writing(args.output[0]):
        result = minimize_checkpoint(factory, example_inputs_for(args, mod), weights=args.weights,
                                     out=args.output[0], rules=rules_for(args), verify=not args.no_verify,
                                     n_random=args.random_inputs, strict=args.strict,
                                     progress=not args.quiet and sys.stderr.isatty())
    for name, why in result.report.refused_rules.items():
        print(f"sr-ir minimize: warning: rule '{name}' not applied, no current certificate ({why})", file=sys.stderr)
    written = [str(p) for p in result.written]
    if args.json:
        d = result.report.to_dict()
        d["written"], d["streamed_verification"] = written, result.verification
        print(json.dumps(d, indent=1, default=str))
    else:
        print(result.report.table())
        for w in written:
            print(f"wrote {w}")
    return 0
