"""`sr-ir demo`: the pipeline on the bundled LeNet-300-100 — lower, show, emit, and check the outputs."""
from __future__ import annotations

import argparse
import json
import time

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline on the bundled LeNet-300-100 and print the check",
        description="Lower the bundled LeNet-300-100 through torch.export, print the IR with its sizes, emit "
        "it back to PyTorch and compare the outputs with the original in float32 and float64.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not with the module, so that `sr-ir demo --help` does not import torch
    import torch

    from ..backend import emit
    from ..comparison import as_dtype, cast_inputs, compare
    from ..frontend import lower
    from ..models.lenet import lenet300_100
    from .show import op_sizes

    torch.manual_seed(0)
    model = lenet300_100().eval()
    x = torch.randn(64, 784)
    t0 = time.perf_counter()
    prog = lower(model, (x,))
    t_lower = time.perf_counter() - t0
    module = emit(prog)
    checks = {
        "float32": compare(model, module, (x,)),
        "float64": compare(as_dtype(model, torch.float64), as_dtype(module, torch.float64), cast_inputs((x,), torch.float64)),
    }
    ok = checks["float32"].within(1e-5) and checks["float64"].within(1e-12)
    if args.json:
        print(json.dumps({"program": prog.to_text(), "ops": op_sizes(prog), "lower_seconds": t_lower,
                          "checks": {k: v.as_dict() for k, v in checks.items()}, "ok": ok}, indent=1))
        return 0 if ok else 1
    print(prog.to_text(), end="")
    print(f"# {prog.param_count():,} parameters, {prog.param_bytes():,} bytes; lowered in {t_lower:.2f} s\n")
    print("emitted module (generated code, excerpt):")
    print("\n".join("    " + ln for ln in module.sr_ir_source.splitlines()[-8:]))
    print()
    for name, c in checks.items():
        print(f"check {name}: max abs error {c.max_abs:.3e}, max relative error {c.max_rel:.3e}")
    print("result: outputs match" if ok else "result: MISMATCH")
    return 0 if ok else 1
