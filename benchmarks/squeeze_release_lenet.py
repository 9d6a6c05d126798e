"""LeNet-300-100 on the 5,000-image MNIST subset: dense reference, Squeeze-Release, no-release ablation.

    .venv/bin/python benchmarks/squeeze_release_lenet.py --variant unit --out benchmarks/out/lenet-unit
    .venv/bin/python benchmarks/squeeze_release_lenet.py --variant faithful --out benchmarks/out/lenet-faithful
    ... --no-release   (ablation: same schedule and epochs, zeros stay masked)

Cycle 1 of every run is the single-pass prune+minimize baseline (prune to the accuracy floor once,
minimize once). Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, evaluate, fine_tune, mnist_subset, squeeze_release
from sr_ir.cycle.cycle import best_state
from sr_ir.cycle.report import plot_cycles, table_header, table_row
from sr_ir.models.lenet import lenet300_100


VARIANTS = {
    # the paper's method as stated: unstructured global magnitude pruning, plain labels
    "faithful": dict(prune=PruneSpec(0.2, "magnitude", "global"), distill=0.0, group_lasso=0.0),
    # favours whole-unit death: unit-RMS pruning per tensor, group lasso, distillation from the dense model
    "unit": dict(prune=PruneSpec(0.1, "unit", "layer"), distill=0.7, group_lasso=5e-3),
    # unstructured magnitude pruning (leaves zeros for release) trained with group lasso and distillation
    "lasso": dict(prune=PruneSpec(0.2, "magnitude", "global"), distill=0.7, group_lasso=5e-3),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=VARIANTS, default="unit")
    ap.add_argument("--no-release", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dense-epochs", type=float, default=40)
    ap.add_argument("--prune-epochs", type=float, default=6)
    ap.add_argument("--release-epochs", type=float, default=15)
    ap.add_argument("--max-cycles", type=int, default=25)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--max-drop", type=float, default=0.8)
    ap.add_argument("--backoff", type=int, default=4)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--amount", type=float, default=None)
    ap.add_argument("--lasso", type=float, default=None)
    ap.add_argument("--distill", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-stop", action="store_true",
                    help="run all --max-cycles even when a cycle removes nothing (equal-budget ablations)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    v = dict(VARIANTS[a.variant])
    prune = v["prune"] if a.amount is None else PruneSpec(a.amount, v["prune"].criterion, v["prune"].scope)
    cfg = CycleConfig(
        max_cycles=a.max_cycles,
        max_drop=a.max_drop,
        dense_epochs=a.dense_epochs,
        prune=prune,
        prune_epochs=a.prune_epochs,
        max_prune_steps=a.max_steps,
        backoff=a.backoff,
        stop_on_no_removal=not a.no_stop,
        release_tolerance=a.tolerance,
        release=not a.no_release,
        release_epochs=a.release_epochs,
        train=TrainSpec(epochs=1, lr=1e-3, batch_size=128,
                        distill=v["distill"] if a.distill is None else a.distill,
                        group_lasso=v["group_lasso"] if a.lasso is None else a.lasso),
    )
    data = mnist_subset()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(table_header(), flush=True)
    t0 = time.perf_counter()
    res = squeeze_release(
        lenet300_100(), data.train, data.val, test=data.test, example_inputs=(data.val[:8][0],), config=cfg,
        checkpoint_dir=out / "checkpoints", resume=a.resume,
        on_cycle=lambda r: print(table_row(r), flush=True), progress=False,
    )
    wall = time.perf_counter() - t0
    # the dense reference "trained with the same budget": as many epochs as the whole run used
    budget = cfg.dense_epochs + sum(r["prune_tries"] * cfg.prune_epochs + (cfg.release_epochs if r.get("released_val_acc") is not None else 0)
                                    for r in res.records)
    same = lenet300_100()
    fine_tune(same, data.train, replace(cfg.train, epochs=budget, distill=0.0, group_lasso=0.0), seed=cfg.seed, tag="dense")
    dense_same_budget = {"epochs": budget, "val_acc": evaluate(same, data.val)[0], "test_acc": evaluate(same, data.test)[0]}
    best = best_state(res.dense_record, res.records)
    summary = {"variant": a.variant, "release": not a.no_release, "config": cfg.to_dict(), "dense": res.dense_record,
               "cycles": res.records, "stopped": res.stopped, "best": best,
               "single_pass": res.records[0] if res.records else None, "wall_s": wall,
               "dense_same_budget": dense_same_budget}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_cycles(out / "cycles.png", res.dense_record, res.records, baseline=res.records[0] if res.records else None,
                title=f"LeNet-300-100, MNIST subset ({a.variant}{'' if not a.no_release else ', no release'})")
    print(json.dumps({"best": best, "single_pass": summary["single_pass"], "dense_same_budget": dense_same_budget,
                      "wall_s": wall, "stopped": res.stopped}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
