"""Warm `minimize_program` CPU time on the benchmark's ConvNeXt-Tiny with and without the slice-test path
of the rule evaluator (`LaneEval._slice_test` returning None is the code before it), alternating, best of 3,
and whether both give the same program text.

    .venv/bin/python benchmarks/analysis_slice_test.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minimize_convnext import build  # noqa: E402

import sr_ir.lang.tensor_eval as te  # noqa: E402
from sr_ir import lower  # noqa: E402
from sr_ir.minimization import minimize_program  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    model, _ = build(0, 0.4, 0.1, 0.9)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    prog = lower(model, (x,))
    fast = te.LaneEval._slice_test
    best = {"before": float("inf"), "after": float("inf")}
    text = {}
    try:
        for _ in range(3):
            for mode in ("before", "after"):
                te.LaneEval._slice_test = (lambda self, w: None) if mode == "before" else fast
                minimize_program(prog)  # warm
                c0 = time.process_time()
                small, _ = minimize_program(prog)
                best[mode] = min(best[mode], time.process_time() - c0)
                text[mode] = small.to_text()
    finally:
        te.LaneEval._slice_test = fast
    print(f"minimize_program CPU s: before {best['before']:.3f}, after {best['after']:.3f} "
          f"({best['before'] / best['after']:.2f}x); same program: {text['before'] == text['after']}")


if __name__ == "__main__":
    main()
