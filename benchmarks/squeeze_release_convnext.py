"""ConvNeXt (Tiny depths 3-3-9-3, stride-2 stem for 28x28) on the 5,000-image MNIST subset.

    .venv/bin/python benchmarks/squeeze_release_convnext.py --out benchmarks/out/convnext            # full width
    .venv/bin/python benchmarks/squeeze_release_convnext.py --dims 16 32 64 128 --out ...             # reduced width
    .venv/bin/python benchmarks/squeeze_release_convnext.py --time-only                               # epoch cost

Full-width ConvNeXt-Tiny (27.8M parameters) costs about 90 s per training epoch on one CPU thread here;
reduced-width runs are labelled as such in benchmarks/RESULTS.md. Uses sr_ir.minimize.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, mnist_subset, squeeze_release
from sr_ir.cycle.cycle import best_state
from sr_ir.cycle.data import ImageView
from sr_ir.cycle.report import plot_cycles, table_header, table_row
from sr_ir.models.convnext import ConvNeXt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs=4, default=(96, 192, 384, 768))
    ap.add_argument("--depths", type=int, nargs=4, default=(3, 3, 9, 3))
    ap.add_argument("--out", default="benchmarks/out/convnext")
    ap.add_argument("--criterion", choices=("magnitude", "unit", "coupled"), default="unit",
                    help="coupled: whole channels of the IR's coupled groups, residual-stream channels included")
    ap.add_argument("--amount", type=float, default=0.2)
    ap.add_argument("--dense-epochs", type=float, default=8)
    ap.add_argument("--prune-epochs", type=float, default=1)
    ap.add_argument("--release-epochs", type=float, default=2)
    ap.add_argument("--max-cycles", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--max-drop", type=float, default=0.8)
    ap.add_argument("--lasso", type=float, default=1e-3)
    ap.add_argument("--distill", type=float, default=0.7)
    ap.add_argument("--no-release", action="store_true")
    ap.add_argument("--prune-only", default=None,
                    help="regex of the tensors to prune (default for --criterion unit: pwconv, the block MLPs, whose "
                         "hidden units the minimizer removes; otherwise every tensor)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--time-only", action="store_true", help="measure one training epoch and exit")
    ap.add_argument("--minimize-only", type=int, metavar="STEPS", default=0,
                    help="no training: STEPS unit-pruning steps of 30%% on the pruned tensors, then time one minimize")
    a = ap.parse_args()
    if a.prune_only is None and a.criterion == "unit":
        a.prune_only = "pwconv"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ConvNeXt(1, 10, tuple(a.depths), tuple(a.dims), stem_stride=2)
    data = mnist_subset()
    shape = (1, 28, 28)
    train, val, test = (ImageView(d, shape) for d in (data.train, data.val, data.test))
    if a.time_only:
        from sr_ir.cycle import fine_tune

        t0 = time.perf_counter()
        fine_tune(model, train, TrainSpec(epochs=0.1), seed=0, tag="time")
        per_epoch = (time.perf_counter() - t0) * 10
        print(json.dumps({"dims": a.dims, "depths": a.depths, "params": sum(p.numel() for p in model.parameters()),
                          "seconds_per_epoch": per_epoch, "threads": a.threads}))
        return 0
    if a.minimize_only:
        import copy

        from sr_ir.cycle.cycle import _excluded, default_minimizer, removed_units
        from sr_ir.cycle.metrics import size_summary
        from sr_ir.cycle.pruning import apply_masks, full_masks, prune_step

        model.eval()
        masks = full_masks(model, _excluded(model, a.prune_only))
        for _ in range(a.minimize_only):
            masks = prune_step(model, masks, PruneSpec(0.3, "unit", "layer"))
        apply_masks(model, masks)
        x = torch.stack([val[i][0] for i in range(2)])
        t0 = time.perf_counter()
        res = default_minimizer(copy.deepcopy(model), (x,))
        print(json.dumps({"minimize_s": time.perf_counter() - t0, "before": size_summary(model, (x,)),
                          "after": size_summary(res.module, (x,)), "units_removed": sum(removed_units(res.report).values())}))
        return 0
    cfg = CycleConfig(
        max_cycles=a.max_cycles, max_drop=a.max_drop, dense_epochs=a.dense_epochs,
        prune=PruneSpec(a.amount, a.criterion, "global" if a.criterion == "magnitude" else "layer"),
        prune_epochs=a.prune_epochs, max_prune_steps=a.max_steps, backoff=2, release=not a.no_release,
        release_epochs=a.release_epochs, prune_only=a.prune_only or None, train=TrainSpec(lr=1e-3, batch_size=64, distill=a.distill, group_lasso=a.lasso),
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(table_header(), flush=True)
    t0 = time.perf_counter()
    res = squeeze_release(model, train, val, test=test, example_inputs=(torch.stack([val[i][0] for i in range(4)]),),
                          config=cfg, checkpoint_dir=out / "checkpoints", resume=a.resume,
                          on_cycle=lambda r: print(table_row(r), flush=True), progress=False)
    wall = time.perf_counter() - t0
    best = best_state(res.dense_record, res.records)
    summary = {"dims": a.dims, "depths": a.depths, "config": cfg.to_dict(), "dense": res.dense_record,
               "cycles": res.records, "stopped": res.stopped, "best": best, "wall_s": wall, "threads": a.threads,
               "single_pass": res.records[0] if res.records else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_cycles(out / "cycles.png", res.dense_record, res.records, baseline=res.records[0] if res.records else None,
                title=f"ConvNeXt dims {tuple(a.dims)} depths {tuple(a.depths)}, MNIST subset")
    print(json.dumps({"best": best, "wall_s": wall, "stopped": res.stopped}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
