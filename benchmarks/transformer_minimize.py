"""Planted transformers: exact minimization (ours) beside naive LayerNorm/RMSNorm slicing (what peers do).

For each family (pre-LN encoder, post-LN BERT-style encoder, GPT-style decoder with tied embeddings,
Llama-style decoder with RMSNorm + RoPE + GQA) the model gets planted dead heads, constant value dims,
removable query/key dims, dead MLP units and residual-stream channels on top of random sparsity; then

- `sr_ir.minimize` (lower -> minimize -> emit, verified) gives the smaller module: its parameter count is
  compared with the known minimal count and its error measured in float64 and float32;
- the same smaller architecture with the norms' statistics taken over the kept channels only (the
  independent reference minimization with `naive_norms=True`) gives the peers' error;
- parameters per component (embeddings, norms, attention q/k, attention v/o, MLP, head) before/after.

Usage: .venv/bin/python benchmarks/transformer_minimize.py [--size small|medium] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from sr_ir.minimization import minimize
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing import plant, trainable_param_count
from sr_ir.testing.reference import reference_minimize

SIZES = {
    "small": dict(d_model=32, n_layers=2, n_heads=4, d_ff=48, max_len=12, vocab=40),
    "medium": dict(d_model=128, n_layers=4, n_heads=8, d_ff=512, max_len=32, vocab=256),
}
PLANT = {
    "small": dict(dead_heads=1, v_dims=2, qk_dims=2, mlp_units=8, residual=4, sparsity=0.5),
    "medium": dict(dead_heads=2, v_dims=4, qk_dims=4, mlp_units=128, residual=24, sparsity=0.5),
}


def by_cause(plan) -> dict[str, int]:
    """Parameters removed by each planted structure, attributed in this order: heads, qk dims, v dims,
    MLP units, residual channels (each step adds one kind to the plan)."""
    steps = [("heads", "dead_heads"), ("qk dims", "qk_dims"), ("v dims", "v_dims"), ("MLP units", "mlp_units"),
             ("residual width", "residual")]
    empty = dict(dead_heads={}, qk_dims={}, v_dims={}, mlp_units={}, residual=[])
    cur = dataclasses.replace(plan, **empty)
    prev = cur.minimal_param_count()
    out = {}
    for label, fieldname in steps:
        cur = dataclasses.replace(cur, **{fieldname: getattr(plan, fieldname)})
        now = cur.minimal_param_count()
        out[label] = prev - now
        prev = now
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def run(family: str, size: str, seed: int = 0) -> dict:
    kw = dict(SIZES[size])
    if family == "llama":
        kw["n_kv_heads"] = kw["n_heads"] // 2
    cfg = small_config(family, **kw)
    model = build(family, cfg, seed=seed)
    plan = plant(model, seed=seed + 1, **PLANT[size])
    ids = example_ids(cfg, batch=2, seed=seed + 2)
    test = example_ids(cfg, batch=4, seed=seed + 3)
    t0 = time.perf_counter()
    res = minimize(model, (ids,))
    seconds = time.perf_counter() - t0
    y = model(test)
    ours64 = rel(res.module(test), y)
    m32 = build(family, cfg, seed=seed, dtype=torch.float32)
    plant(m32, seed=seed + 1, **PLANT[size])
    r32 = minimize(m32, (ids,))
    ours32 = rel(r32.module(test), m32(test).double().to(torch.float32))
    ref = reference_minimize(model, plan)
    naive = rel(ref(test, naive_norms=True), y)
    return {
        "family": family,
        "size": size,
        "params_before": trainable_param_count(model),
        "params_after": trainable_param_count(res.module),
        "params_minimal_known": plan.minimal_param_count(),
        "err_ours_f64": ours64,
        "err_ours_f32": ours32,
        "err_naive_norm_slicing_f64": naive,
        "components": plan.components(),
        "removed_by_cause": by_cause(plan),
        "attention_nodes": (res.report.ops_before.get("scaled_dot_product_attention", 0),
                            res.report.ops_after.get("scaled_dot_product_attention", 0)),
        "nodes": (sum(res.report.ops_before.values()), sum(res.report.ops_after.values())),
        "rules_used": len(res.report.rules_used),
        "passes": res.report.passes,
        "minimize_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = [run(f, args.size) for f in ("pre_ln", "post_ln", "gpt", "llama")]
    print("| family | params before | after | known minimal | ours f64 | ours f32 | naive norm slicing f64 | minimize s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['params_before']:,} | {r['params_after']:,} | {r['params_minimal_known']:,} | "
              f"{r['err_ours_f64']:.1e} | {r['err_ours_f32']:.1e} | {r['err_naive_norm_slicing_f64']:.1e} | "
              f"{r['minimize_seconds']:.2f} |")
    print()
    print("| family | " + " | ".join(rows[0]["components"]) + " |")
    print("|---|" + "---|" * len(rows[0]["components"]))
    for r in rows:
        cells = [f"{a:,} -> {b:,}" for a, b in r["components"].values()]
        print(f"| {r['family']} | " + " | ".join(cells) + " |")
    print()
    causes = list(rows[0]["removed_by_cause"])
    print("| family | parameters removed by: " + " | ".join(causes) + " |")
    print("|---|" + "---|" * len(causes))
    for r in rows:
        print(f"| {r['family']} | " + " | ".join(f"{v:,}" for v in r["removed_by_cause"].values()) + " |")
    print()
    print("| family | attention nodes (one per head) | nodes | distinct rules applied | passes |")
    print("|---|---|---|---|---|")
    for r in rows:
        (a0, a1), (n0, n1) = r["attention_nodes"], r["nodes"]
        print(f"| {r['family']} | {a0} -> {a1} | {n0} -> {n1} | {r['rules_used']} | {r['passes']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
