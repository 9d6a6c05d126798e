"""`sr-ir minimize`: a masked model in, an exactly equivalent smaller model out (verified before writing)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..comparison import difference, flat_outputs
from ..errors import SrIrError, VerificationError
from ..ir.persist import atomic_save_with, check_save_path
from ..ir.sampling import sample_inputs
from ..outputs import check_target
from .inputs import add_model_arguments, factory_model_and_inputs, rules_for, writing

OUTPUT_KINDS = (".pt2", ".sr", ".onnx")


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
                   help="write the minimized model: .pt2 (torch.export), .sr (IR text + .safetensors beside it) "
                   "or .onnx (checked with onnxruntime); repeatable")
    p.add_argument("--no-verify", action="store_true", help="skip the numeric comparison (not recommended)")
    p.add_argument("--random-inputs", type=int, default=3, metavar="K", help="random inputs to verify on (default 3)")
    p.add_argument("--strict", action="store_true",
                   help="fail when a rule that would apply has no current certificate (default: leave that node as is)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[Any, tuple[Any, ...]]:
    spec = args.model
    path = Path(spec)
    if path.suffix == ".sr":
        from ..ir.persist import load

        prog = load(path)
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
    from ..minimization import minimize

    for out in args.output:
        if Path(out).suffix not in OUTPUT_KINDS:
            raise SrIrError(f"{out}: output must end in {', '.join(OUTPUT_KINDS)}")
        # refuse a folder before minimizing, not after (a .sr output is also its .safetensors)
        (check_save_path if Path(out).suffix == ".sr" else check_target)(out)
    model, inputs = _load(args)
    rules = rules_for(args)
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
    """Write one output format atomically; ONNX files are run in onnxruntime and compared first."""
    suffix = Path(out).suffix
    if suffix == ".sr":
        result.program.save(out)
        return out
    if suffix == ".pt2":
        from .emit import export_module

        export_module(result.module, result.program, out)
        return out
    return _write_onnx(result, out, inputs)


def _write_onnx(result: Any, out: str, inputs: tuple[Any, ...]) -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SrIrError("writing .onnx needs onnx and onnxruntime (pip install 'sr-ir[onnx]')") from None
    module = result.module.eval()
    xs = tuple(inputs) if inputs else sample_inputs(result.program, batch=2)
    names = [n for n, _ in result.program.inputs]
    dynamic = {n: {0: "batch"} for n, t in result.program.inputs if t.rank and not isinstance(t.shape[0], int)}

    def writer(tmp: str) -> None:
        torch.onnx.export(module, xs, tmp, input_names=names, output_names=[f"out{i}" for i in range(len(result.program.outputs))],
                          dynamic_axes=dynamic or None, dynamo=False)
        sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        feeds = {n: x.detach().numpy() for n, x in zip(names, xs)}
        got = sess.run(None, feeds)
        with torch.no_grad():
            want = module(*xs)
        d = difference(flat_outputs(want), [torch.from_numpy(g) for g in got])
        if not d.within(1e-9 if module_dtype(module) == torch.float64 else 1e-4):
            raise VerificationError(f"{out}: onnxruntime output {d.worst_output} differs from the module by "
                                    f"{d.max_rel:.3g} (relative); not written")

    atomic_save_with(out, writer)
    return out


def module_dtype(m: torch.nn.Module) -> torch.dtype:
    for p in m.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
