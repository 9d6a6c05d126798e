"""Inference time of a planted transformer before and after exact minimization (CPU, float32).

Interleaved repeats in one process (the machine is shared: the ratio is the figure to trust).
Usage: .venv/bin/python benchmarks/transformer_speed.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import time

import torch

from sr_ir.minimization import minimize
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing import plant, trainable_param_count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("| family | params before -> after | forward before | after | speed-up |")
    print("|---|---|---|---|---|")
    for fam in ("pre_ln", "llama"):
        kw = dict(d_model=256, n_layers=4, n_heads=8, d_ff=1024, max_len=64, vocab=512)
        if fam == "llama":
            kw["n_kv_heads"] = 4
        cfg = small_config(fam, **kw)
        model = build(fam, cfg, dtype=torch.float32)
        plant(model, seed=1, dead_heads=2, v_dims=8, qk_dims=8, mlp_units=256, residual=32, sparsity=0.5)
        ids = example_ids(cfg, batch=8)
        small = minimize(model, (ids,)).module
        a, b = [], []
        with torch.no_grad():
            for f in (model, small):
                f(ids)
            for _ in range(args.repeats):
                t = time.perf_counter()
                model(ids)
                a.append(time.perf_counter() - t)
                t = time.perf_counter()
                small(ids)
                b.append(time.perf_counter() - t)
        ma, mb = sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
        print(f"| {fam} | {trainable_param_count(model):,} -> {trainable_param_count(small):,} | "
              f"{ma * 1e3:.1f} ms | {mb * 1e3:.1f} ms | {ma / mb:.2f}x |")


if __name__ == "__main__":
    main()
