"""One Squeeze-Release ablation run on LeNet-300-100: the cycle alone, no baselines (issue 13).

    nice -n 10 .venv/bin/python benchmarks/squeeze_release_ablate.py --name cosine --preset unit \\
        --dense-epochs 15 --set schedule=cosine --set prune_epochs=1 --set release_epochs=2

The dense model is trained once per (dataset, seed, dense epochs, lr, schedule, batch size) and cached under
``benchmarks/out/ablate-dense/`` so that ablations of the cycle share it (the cycle then runs with
``dense_epochs=0`` and that model as its start and teacher, as ``squeeze_release(dense_epochs=D)`` would).
``--set KEY=VALUE`` overrides any flat CycleConfig setting (``CycleConfig.preset``'s names; VALUE is read as
JSON where it parses, else as a string). One JSON line per run is appended to ``--log``: the settings, the
dense accuracies, every cycle's size, sparsity and accuracies, the best state within the floor, the epochs
trained, the final model's weight shapes.

``--select-drop D`` picks the best state within D validation points of dense instead of the run's own floor
(``max_drop``). With ``--set max_drop=100`` every pruning step is kept, so every run spends exactly
``max_cycles * (max_prune_steps * prune_epochs + release_epochs)`` epochs (with ``stop_on_no_removal=false``):
the way to compare release with no release at equal epochs, selecting the state afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from sr_ir.cycle import CycleConfig, TrainSpec, best_state, fine_tune, load_dataset, squeeze_release
from sr_ir.cycle.cycle import PRESETS
from sr_ir.cycle.data import DATASETS
from sr_ir.cycle.train import evaluate
from sr_ir.models.lenet import LeNet300100
from sr_ir.outputs import atomic_save_with

ROOT = Path(__file__).resolve().parent


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def dense_model(data, a: argparse.Namespace) -> tuple[LeNet300100, str]:
    """The dense model for these settings, trained now or loaded from the cache; its cache key."""
    key = json.dumps({"dataset": a.dataset, "seed": a.seed, "epochs": a.dense_epochs, "lr": a.dense_lr,
                      "schedule": a.dense_schedule, "batch": a.batch_size}, sort_keys=True)
    path = ROOT / "out" / "ablate-dense" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
    torch.manual_seed(a.seed)
    model = LeNet300100(in_features=data.num_features, hidden=(300, 100), num_classes=data.num_classes)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, key
    spec = TrainSpec(epochs=a.dense_epochs, lr=a.dense_lr, batch_size=a.batch_size, schedule=a.dense_schedule)
    fine_tune(model, data.train, spec, seed=a.seed, tag="dense")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_with(path, lambda p: torch.save(model.state_dict(), p))
    return model, key


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="the ablation's label in the log")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="unit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dense-epochs", type=float, default=15)
    ap.add_argument("--dense-lr", type=float, default=1e-3)
    ap.add_argument("--dense-schedule", default="constant")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--select-drop", type=float, default=None,
                    help="best state within this many validation points of dense (default: the run's max_drop)")
    ap.add_argument("--log", default=str(ROOT / "out" / "ablations.jsonl"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    over: dict[str, Any] = {"batch_size": a.batch_size, "seed": a.seed}
    for item in a.set:
        k, _, v = item.partition("=")
        over[k] = parse_value(v)
    over["dense_epochs"] = 0.0
    cfg = CycleConfig.preset(a.preset, **over)
    data = load_dataset(a.dataset, seed=a.seed)
    t0 = time.perf_counter()
    model, key = dense_model(data, a)
    example = (torch.stack([data.val[i][0] for i in range(8)]),)
    dense_test = evaluate(model, data.test)[0]
    def show(r: dict[str, Any]) -> None:  # one line per cycle as it ends, so a long run can be watched
        print(f"  [{a.name}] cycle {r['cycle']}: {r['params']:,} params, val {r['val_acc']:.4f}, "
              f"released val {r.get('released_val_acc')}, {time.perf_counter() - t0:.0f} s", flush=True)

    res = squeeze_release(model, data.train, data.val, test=data.test, example_inputs=example, config=cfg,
                          progress=False, on_cycle=show)
    cycles = [{k: r.get(k) for k in ("cycle", "params", "compression", "params_before_minimize",
                                      "sparsity_before_minimize", "units_removed_total", "prune_steps", "prune_tries",
                                      "train_epochs", "val_acc", "test_acc", "released_val_acc", "released_test_acc")}
              for r in res.records]
    for c, r in zip(cycles, res.records):
        c["alpha"] = (r.get("release") or {}).get("alpha")
    best = res.best()
    if a.select_drop is not None:
        best = best_state({**res.dense_record, "floor": res.dense_record["val_acc"] - a.select_drop / 100.0},
                          res.records)
    shapes = {n: list(p.shape) for n, p in res.module.named_parameters() if p.dim() >= 2}
    out = {"name": a.name, "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "argv": list(argv or sys.argv[1:]),
           "dense_key": json.loads(key), "dense_val": res.dense_record["val_acc"], "dense_test": dense_test,
           "floor": res.dense_record["floor"], "cycles": cycles, "stopped": res.stopped, "best": best, "select_drop": a.select_drop,
           "cycle_epochs": sum(r["train_epochs"] for r in res.records), "wall_s": time.perf_counter() - t0,
           "final_shapes": shapes, "config": cfg.to_dict()}
    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    with open(a.log, "a") as f:  # an append-only log of runs; a torn last line is visible and harmless
        f.write(json.dumps(out) + "\n")
    b = out["best"]
    print(f"{a.name}: dense test {dense_test:.4f}; best " +
          (f"{b['params']:,} params ({b['compression']:.1f}x) val {b['val_acc']:.4f} test {b['test_acc']:.4f} "
           f"cycle {b['cycle']} {b['stage']}" if b else "none") +
          f"; {out['cycle_epochs']:.1f} cycle epochs, {out['wall_s']:.0f} s")
    for c in cycles:
        print(f"  c{c['cycle']}: {c['params']:,} ({c['compression']:.1f}x; sparsity before minimize "
              f"{c['sparsity_before_minimize']:.3f}) steps {c['prune_steps']}/{c['prune_tries']} "
              f"min val {c['val_acc']:.4f} test {c['test_acc']:.4f} | rel val {c['released_val_acc']} "
              f"test {c['released_test_acc']} alpha {c['alpha']} | {c['train_epochs']:g} epochs")
    print("  final shapes: " + ", ".join(f"{n} {tuple(v)}" for n, v in shapes.items()))
    return out


if __name__ == "__main__":
    run()
