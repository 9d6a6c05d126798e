"""ConvNeXt-Tiny with planted residual-stream channels and dead MLP units: exact minimization (ours) beside
naive LayerNorm slicing of the same minimized architecture.

The naive variant is the minimized program with every compensated LayerNorm replaced by a LayerNorm over the
kept channels only (S1, S2 and the full width dropped): what a tool that slices gamma/beta computes.

Usage: .venv/bin/python benchmarks/transformer_convnext_tiny.py [--residual-frac 0.1] [--units 64] [--size 32]
"""
from __future__ import annotations

import argparse
import time

import torch

from sr_ir.backend import emit
from sr_ir.minimization import minimize
from sr_ir.models.convnext import convnext_tiny
from sr_ir.testing.planting import plant_convnext, trainable_param_count


def naive_norms(program):
    """The same program with compensated norms replaced by plain norms over the kept channels."""
    p = program.copy()
    for n in p.nodes:
        if n.op == "compensated_layer_norm":
            n.op = "layer_norm"
            n.attrs = {"normalized_shape": [n.type.shape[-1]], "eps": n.attrs["eps"]}
        elif n.op == "compensated_rms_norm":
            n.op = "rms_norm"
            n.attrs = {"eps": n.attrs.get("eps")}
    return p


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residual-frac", type=float, default=0.1)
    ap.add_argument("--units", type=int, default=64, help="dead MLP units per block")
    ap.add_argument("--size", type=int, default=32, help="input height/width")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = convnext_tiny(num_classes=10, small_input=True).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0.5, 0.3)
    plan = plant_convnext(model, seed=1, residual=int(args.residual_frac * 96), mlp_units=args.units, sparsity=0.5)
    x = torch.randn(2, 3, args.size, args.size, dtype=torch.float64)
    test = torch.randn(4, 3, args.size, args.size, dtype=torch.float64)
    t0 = time.perf_counter()
    res = minimize(model, (x,))
    seconds = time.perf_counter() - t0
    y = model(test)
    ours = rel(res.module(test), y)
    naive = rel(emit(naive_norms(res.program))(test), y)
    print("| model | params before | after | known minimal | ours f64 | naive LN slicing f64 | minimize s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| ConvNeXt-Tiny (10 classes, {args.size}x{args.size}) | {trainable_param_count(model):,} | "
          f"{trainable_param_count(res.module):,} | {plan.minimal_param_count():,} | {ours:.1e} | {naive:.1e} | {seconds:.1f} |")
    print("rules applied:", len(res.report.rules_used), "passes:", res.report.passes, "seconds:", {k: round(v, 2) for k, v in res.report.seconds.items()})


if __name__ == "__main__":
    main()
