"""Lower + emit time of ConvNeXt-Tiny as a ratio to a bare torch.export of the same model, in one run.

    .venv/bin/python benchmarks/lower_emit_convnext.py [--repeats 5] [--json]

Each repeat times (a) torch.export.export alone, (b) sr_ir.lower (which includes its own torch.export)
and (c) sr_ir.emit, on a fresh model; medians are reported with the ratio (b+c)/a. Target: <= 2x.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.export import Dim

from sr_ir.backend import emit
from sr_ir.frontend import lower
from sr_ir.models.convnext import convnext_tiny


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    export_s, lower_s, emit_s = [], [], []
    def bare_export(model):
        t = time.perf_counter()
        with torch.no_grad():
            torch.export.export(model, (x,), dynamic_shapes=({0: Dim.AUTO},), strict=False)
        return time.perf_counter() - t

    for i in range(args.repeats + 1):  # the first round warms caches and is dropped
        model = convnext_tiny(num_classes=1000).eval()
        if i % 2:  # alternate the order so neither side gains from the other's warm caches
            export_s.append(bare_export(model))
        t1 = time.perf_counter()
        prog = lower(model, (x,))
        t2 = time.perf_counter()
        module = emit(prog)
        t3 = time.perf_counter()
        if not i % 2:
            export_s.append(bare_export(model))
        lower_s.append(t2 - t1)
        emit_s.append(t3 - t2)
        del module
    export_s, lower_s, emit_s = export_s[1:], lower_s[1:], emit_s[1:]
    med = {k: statistics.median(v) for k, v in (("export", export_s), ("lower", lower_s), ("emit", emit_s))}
    ratio = statistics.median((l + e) / x for l, e, x in zip(lower_s, emit_s, export_s))
    result = {"model": "convnext_tiny", "parameters": prog.param_count(), "nodes": len(prog.nodes),
              "median_s": med, "ratio_lower_plus_emit_over_export": ratio, "repeats": args.repeats}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"ConvNeXt-Tiny ({prog.param_count():,} parameters, {len(prog.nodes)} IR nodes), median of {args.repeats}:")
    print(f"  torch.export alone     {med['export']:7.3f} s   1.00x")
    print(f"  sr_ir.lower            {med['lower']:7.3f} s   {med['lower'] / med['export']:.2f}x")
    print(f"  sr_ir.emit             {med['emit']:7.3f} s   {med['emit'] / med['export']:.2f}x")
    print(f"  lower + emit           {med['lower'] + med['emit']:7.3f} s   {ratio:.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
