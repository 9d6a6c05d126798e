"""`sr-ir squeeze-release`: prune -> minimize -> release -> fine-tune until no unit can be removed.

Defaults run the bundled LeNet-300-100 on the offline 5,000-image MNIST subset in a few minutes on
CPU. Under ``torchrun --nproc_per_node N -m sr_ir.cli.main squeeze-release ...`` the fine-tuning runs
data-parallel (gloo on CPU, NCCL on CUDA); rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..cycle.pruning import CRITERIA, SCOPES
from ..errors import SrIrError

if TYPE_CHECKING:
    from ..cycle import CycleConfig

MODELS = ("lenet300-100", "convnext-tiny", "convnext-test")

# Presets: "faithful" is the method as the paper states it; "unit" adds criteria that favour whole-unit
# death (reported separately). Explicit flags override the preset's values.
PRESETS = {
    "faithful": dict(criterion="magnitude", scope="global", distill=0.0, group_lasso=0.0, prune_amount=0.2,
                     prune_epochs=2.0, release_epochs=4.0, max_cycles=8, max_prune_steps=20),
    "unit": dict(criterion="unit", scope="layer", distill=0.7, group_lasso=5e-3, prune_amount=0.1,
                 prune_epochs=6.0, release_epochs=15.0, max_cycles=25, max_prune_steps=40),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "squeeze-release",
        help="iterate prune -> minimize -> release -> fine-tune until no unit can be removed",
        description="Run the Squeeze-Release cycle on a bundled model and offline dataset. Writes one "
        "checkpoint per cycle (atomically) to OUT/checkpoints, the per-cycle records to OUT/cycles.json, a "
        "plot to OUT/cycles.png and the final module's weights (OUT/final.safetensors) and torch.export "
        "program (OUT/final.pt2). --resume continues an interrupted run with identical results. OUT is locked "
        "for the run (OUT/.sr-ir.lock): a second run on it refuses.",
    )
    p.add_argument("--model", choices=MODELS, default="lenet300-100", help="bundled model (default %(default)s)")
    p.add_argument("--dataset", choices=("mnist-subset", "digits"), default="mnist-subset",
                   help="offline dataset with its fixed split (default %(default)s)")
    p.add_argument("--out", default="out/squeeze-release", help="output folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoints are in OUT")
    p.add_argument("--preset", choices=PRESETS, default="unit",
                   help="faithful: global magnitude pruning (the paper's method); unit: unit-RMS pruning, "
                   "group lasso and distillation from the dense model (default %(default)s)")
    g = p.add_argument_group("schedule")
    g.add_argument("--max-cycles", type=int, help="stop after this many cycles (preset)")
    g.add_argument("--max-drop", type=float, default=1.0,
                   help="validation accuracy points a pruning step may lose vs dense (default %(default)s)")
    g.add_argument("--dense-epochs", type=float, default=20, help="dense training epochs (default %(default)s)")
    g.add_argument("--prune-amount", type=float,
                   help="fraction of the alive weights (or units) removed per step (preset)")
    g.add_argument("--criterion", choices=CRITERIA,
                   help="pruning criterion (preset); coupled: whole channels of the network's coupled groups "
                   "(residual-stream channels included), read from its IR")
    g.add_argument("--scope", choices=SCOPES, help="rank globally, or per tensor (per group for coupled) (preset)")
    g.add_argument("--prune-epochs", type=float, help="fine-tuning after each step (preset)")
    g.add_argument("--max-prune-steps", type=int, help="pruning steps per cycle (preset)")
    g.add_argument("--backoff", type=int, default=2,
                   help="after a failed pruning step, halve the step and retry this many times (default %(default)s)")
    g.add_argument("--release", action=argparse.BooleanOptionalAction, default=True,
                   help="release the zeros after each minimization (--no-release: the ablation)")
    g.add_argument("--release-epochs", type=float, help="fine-tuning after release (preset)")
    g.add_argument("--release-tolerance", type=float, default=0.05,
                   help="allowed relative change of the calibration loss (default %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    t.add_argument("--batch-size", type=int, default=128, help="global batch size (default %(default)s)")
    t.add_argument("--distill", type=float, help="weight of distillation from the dense model (preset)")
    t.add_argument("--group-lasso", type=float,
                   help="group-lasso coefficient on rows and columns (on coupled channels with --criterion coupled) (preset)")
    t.add_argument("--seed", type=int, default=0, help="seed of every random choice (default %(default)s)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the run summary as JSON (the table goes to stderr)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _model_and_data(name: str, dataset: str):
    from ..cycle.data import ImageView, load_dataset
    from ..models import convnext, lenet

    data = load_dataset(dataset)
    if name == "lenet300-100":
        torch.manual_seed(0)
        model = lenet.LeNet300100(in_features=data.num_features, num_classes=data.num_classes)
        return model, data.train, data.val, data.test
    if dataset != "mnist-subset":
        raise SrIrError(f"{name} needs 28x28 images; use --dataset mnist-subset")
    torch.manual_seed(0)
    if name == "convnext-tiny":
        model = convnext.convnext_tiny(in_chans=1, num_classes=10, small_input=True)
    else:
        model = convnext.convnext_small_test(in_chans=1, num_classes=10, stem_stride=2)
    shape = (1, 28, 28)
    return model, ImageView(data.train, shape), ImageView(data.val, shape), ImageView(data.test, shape)


def build_config(args: argparse.Namespace):
    from ..cycle import CycleConfig, PruneSpec, TrainSpec

    preset = PRESETS[args.preset]
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else preset[key]  # noqa: E731
    for key in ("max_drop", "release_tolerance", "lr"):
        if getattr(args, key) < 0:
            raise SrIrError(f"--{key.replace('_', '-')} must be >= 0")
    for key in ("max_cycles", "prune_amount", "prune_epochs", "max_prune_steps", "release_epochs"):
        setattr(args, key, pick(key))
    if args.max_cycles < 1 or args.batch_size < 1 or args.backoff < 0:
        raise SrIrError("--max-cycles and --batch-size must be >= 1, --backoff >= 0")
    return CycleConfig(
        max_cycles=args.max_cycles,
        max_drop=args.max_drop,
        dense_epochs=args.dense_epochs,
        prune=PruneSpec(args.prune_amount, pick("criterion"), pick("scope")),
        prune_epochs=args.prune_epochs,
        max_prune_steps=args.max_prune_steps,
        backoff=args.backoff,
        release=args.release,
        release_epochs=args.release_epochs,
        release_tolerance=args.release_tolerance,
        train=TrainSpec(lr=args.lr, batch_size=args.batch_size, distill=pick("distill"), group_lasso=pick("group_lasso")),
        seed=args.seed,
    )


def _export(module, example_inputs, path: Path) -> str | None:
    """Write the final module as a torch.export program; a reason string if it cannot be exported."""
    from ..outputs import atomic_save_with

    try:
        ep = torch.export.export(module.eval(), example_inputs)
        atomic_save_with(path, lambda tmp: torch.export.save(ep, tmp))
        return None
    except Exception as e:  # export limits are torch's; the weights are saved regardless
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run(args: argparse.Namespace) -> int:
    from ..cycle import ddp
    from ..outputs import run_lock

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    distributed = ddp.init_from_env()
    cfg = build_config(args)
    out = Path(args.out)
    # One run per folder, claimed before any work: a second run would overwrite this one's files.
    with run_lock(out) if ddp.is_main() else nullcontext():
        return _run(args, cfg, out, distributed)


def _run(args: argparse.Namespace, cfg: CycleConfig, out: Path, distributed: bool) -> int:
    """The run itself, with OUT claimed (by the main process, which alone writes there)."""
    from safetensors.torch import save_file

    from ..cycle import ddp, squeeze_release
    from ..cycle.checkpoint import write_json
    from ..cycle.cycle import best_state
    from ..cycle.report import format_units, plot_cycles, table_header, table_row
    from ..outputs import atomic_save_with

    main = ddp.is_main()
    model, train, val, test = _model_and_data(args.model, args.dataset)
    example = (torch.stack([val[i][0] for i in range(8)]),)
    table = sys.stderr if args.json else sys.stdout

    history: list[dict] = []

    def on_cycle(r: dict) -> None:
        if not main:
            return
        history.append(r)  # cycles.json grows with the run, so a long run can be watched
        write_json(out / "cycles.json", {"model": args.model, "dataset": args.dataset, "config": cfg.to_dict(),
                                         "dense": history[0], "cycles": history[1:], "running": True})
        if r["cycle"] == 0:
            print(table_header(), file=table, flush=True)
        print(table_row(r), file=table, flush=True)
        if r["cycle"] > 0:
            print(f"{'':>10}  units removed: {format_units(r)}", file=table, flush=True)

    t0 = time.perf_counter()
    res = squeeze_release(model, train, val, test=test, example_inputs=example, config=cfg,
                          checkpoint_dir=out / "checkpoints", resume=args.resume, on_cycle=on_cycle,
                          progress=not args.no_progress)
    wall = time.perf_counter() - t0
    best = best_state(res.dense_record, res.records)
    summary = {
        "model": args.model, "dataset": args.dataset, "processes": ddp.world_size(), "config": cfg.to_dict(),
        "dense": res.dense_record, "cycles": res.records, "stopped": res.stopped, "best": best,
        "single_pass": res.records[0] if res.records else None, "wall_s": wall,
    }
    if main:
        write_json(out / "cycles.json", summary)
        plot_cycles(out / "cycles.png", res.dense_record, res.records,
                    baseline=res.records[0] if res.records else None,
                    title=f"{args.model} on {args.dataset} ({args.preset}{'' if cfg.release else ', no release'})")
        state = {k: v.detach().cpu().contiguous().clone() for k, v in res.module.state_dict().items()}
        atomic_save_with(out / "final.safetensors", lambda tmp: save_file(state, tmp))
        summary["export_error"] = _export(res.module, example, out / "final.pt2")
        if args.json:
            print(json.dumps(summary, indent=1))
        else:
            print(f"\nstopped: {res.stopped} after {len(res.records)} cycle(s), {wall:.0f} s"
                  f"{' on ' + str(ddp.world_size()) + ' processes' if distributed else ''}")
            if best:
                print(f"smallest within {cfg.max_drop:g} point(s) of dense on validation: cycle {best['cycle']} "
                      f"({best['stage']}), {best['params']:,} params ({best['compression']:.1f}x), "
                      f"test {best['test_acc']:.2%} vs dense {res.dense_record['test_acc']:.2%}")
            print(f"wrote {out}/cycles.json, cycles.png, final.safetensors"
                  + ("" if summary["export_error"] else ", final.pt2"))
    ddp.barrier()
    return 0
