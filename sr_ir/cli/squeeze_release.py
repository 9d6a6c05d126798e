"""`sr-ir squeeze-release [MODEL]`: prune -> minimize -> release -> fine-tune until no unit can be removed.

MODEL is a bundled model or the user's `package.module:factory` (the current folder is importable); the
data is a bundled offline dataset (`--dataset`: the MNIST subset by default, digits, or the full
Fashion-MNIST from the Debian package `dataset-fashion-mnist`) or the user's arrays (`--data FILE.npz`).
Defaults run the bundled LeNet-300-100 on the offline 5,000-image MNIST subset in a few minutes on
CPU. The presets and every file of the run are the library's (sr_ir.cycle: CycleConfig.preset,
run_files.py); this module only turns flags into them. Under ``torchrun --nproc_per_node N -m
sr_ir.cli.main squeeze-release ...`` the fine-tuning runs data-parallel (gloo on CPU, NCCL on CUDA);
rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import CRITERIA, DEFAULT_BATCH_SIZE, SCHEDULES, SCOPES
from ..errors import SrIrError, describe

if TYPE_CHECKING:  # torch and sr_ir.cycle are imported by the functions that run the command
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from ..cycle import CycleConfig
    from ..cycle.data import Splits

USES_TORCH = True  # main imports torch before the command runs (sr_ir.cli.main._quiet_torch_logs)

MODELS = ("lenet300-100", "convnext-tiny", "convnext-test")
DATASETS = ("mnist-subset", "digits", "fashion-mnist")

# Flags that override the preset: (dest, the CycleConfig.preset keyword). None on the command line
# means "the preset's value", so the preset's definition (sr_ir.cycle.cycle.PRESETS) is the only one.
_OVERRIDES = ("max_cycles", "max_drop", "dense_epochs", "prune_amount", "criterion", "scope", "prune_epochs",
              "max_prune_steps", "backoff", "release", "release_epochs", "release_tolerance", "lr", "distill",
              "group_lasso", "l1", "weight_decay", "schedule", "seed")


# What --help shows of the presets (sr_ir.cycle.cycle.PRESETS, which imports torch): their names in
# order and these of their values. Only the help text reads it; tests/cli/test_startup.py keeps it equal
# to PRESETS.
PRESET_SUMMARY: dict[str, dict[str, Any]] = {
    "unit": dict(criterion="unit", scope="layer", distill=0.7, group_lasso=5e-3),
    "coupled": dict(criterion="coupled", scope="layer", distill=0.7, group_lasso=5e-3),
    "faithful": dict(criterion="magnitude", scope="global", distill=0.0, group_lasso=0.0),
}


def _preset_help() -> str:
    def show(name: str) -> str:
        p = PRESET_SUMMARY[name]
        return (f"{name}: {p['criterion']} criterion ({p['scope']}), distill {p['distill']:g}, group lasso "
                f"{p['group_lasso']:g}")
    return "; ".join(show(n) for n in PRESET_SUMMARY)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "squeeze-release",
        help="iterate prune -> minimize -> release -> fine-tune until no unit can be removed",
        description="Run the Squeeze-Release cycle on a bundled model or your own (package.module:factory, "
        "importable from the current folder) with a bundled dataset or your own arrays (--data FILE.npz). "
        "Writes into OUT one checkpoint per cycle (cycle_NNN.pt, atomically), the records (cycles.json), the "
        "table (cycles.txt), a plot (cycles.png), the final module's weights (final.safetensors) and its "
        "torch.export program with a dynamic batch (final.pt2). --resume continues an interrupted run with "
        "identical results. OUT is locked for the run (OUT/.sr-ir.lock): a second run on it refuses.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help=f"{', '.join(MODELS)} (bundled; default {MODELS[0]}) or package.module:factory, a function "
                   "returning an nn.Module classifier that takes the data's rows as they are")
    p.add_argument("--model", dest="model_option", metavar="MODEL", help="the same as the MODEL argument")
    p.add_argument("--weights", metavar="FILE", help="safetensors state dict for a module:factory model "
                   "(a trained model: add --dense-epochs 0)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--dataset", choices=DATASETS,
                   help="offline dataset with its fixed split (default mnist-subset); fashion-mnist: the full "
                   "60,000/10,000 images from the Debian package dataset-fashion-mnist (55,000 train / 5,000 "
                   "validation / 10,000 test; another folder of its idx files via $SR_IR_FASHION_MNIST)")
    d.add_argument("--data", metavar="FILE.npz",
                   help="your own arrays: x_train, y_train and optionally x_val, y_val, x_test, y_test (np.savez; "
                   "read without pickle); a split it lacks is held out of the training arrays, 10%% per class")
    p.add_argument("--out", default="out/squeeze-release", help="output folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoints are in OUT")
    p.add_argument("--preset", choices=list(PRESET_SUMMARY), default="unit",
                   help=f"the schedule and criterion (default %(default)s; the flags below override it): "
                   f"{_preset_help()}. faithful is the paper's method; unit and coupled favour whole-unit death")
    g = p.add_argument_group("schedule (default: the preset's)")
    g.add_argument("--max-cycles", type=int, help="stop after this many cycles")
    g.add_argument("--max-drop", type=float, help="validation accuracy points a pruning step may lose vs dense")
    g.add_argument("--dense-epochs", type=float, help="dense training epochs (0: the model is trained already)")
    g.add_argument("--prune-amount", type=float, help="fraction of the alive weights (or units) removed per step")
    g.add_argument("--criterion", choices=CRITERIA,
                   help="pruning criterion; coupled: whole channels of the network's coupled groups "
                   "(residual-stream channels included), read from its IR")
    g.add_argument("--scope", choices=SCOPES, help="rank globally, or per tensor (per group for coupled)")
    g.add_argument("--prune-epochs", type=float, help="fine-tuning after each step")
    g.add_argument("--max-prune-steps", type=int, help="pruning steps per cycle")
    g.add_argument("--backoff", type=int, help="after a failed pruning step, halve the step and retry this many times")
    g.add_argument("--release", action=argparse.BooleanOptionalAction, default=None,
                   help="release the zeros after each minimization (--no-release: the ablation)")
    g.add_argument("--release-epochs", type=float, help="fine-tuning after release")
    g.add_argument("--release-tolerance", type=float, help="allowed relative change of the calibration loss")
    t = p.add_argument_group("training (default: the preset's)")
    t.add_argument("--lr", type=float, help="Adam learning rate")
    t.add_argument("--batch-size", type=int, help=f"global batch size of the training DataLoader (default {DEFAULT_BATCH_SIZE})")
    t.add_argument("--distill", type=float, help="weight of distillation from the dense model")
    t.add_argument("--group-lasso", type=float,
                   help="group-lasso coefficient on rows and columns (on coupled channels with --criterion coupled)")
    t.add_argument("--l1", type=float,
                   help="elementwise L1 coefficient on the prunable weights while fine-tuning (unit death for --criterion magnitude)")
    t.add_argument("--weight-decay", type=float, help="Adam's L2 weight decay")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate within each phase: constant, or cosine from --lr to 0 over the phase")
    t.add_argument("--seed", type=int, help="seed of every random choice in the run (the data split is fixed)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the run summary as JSON (the table goes to stderr)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run, quiet=False)  # sr-ir -q sets quiet: no progress bars either


def build_config(args: argparse.Namespace) -> CycleConfig:
    """``CycleConfig.preset(--preset)`` with the flags given on the command line (None: the preset's)."""
    from ..cycle import CycleConfig

    for key in ("max_drop", "release_tolerance", "lr", "distill", "group_lasso", "l1", "weight_decay",
                "dense_epochs", "prune_epochs", "release_epochs"):
        if getattr(args, key) is not None and getattr(args, key) < 0:
            raise SrIrError(f"--{key.replace('_', '-')} must be >= 0")
    for key in ("max_cycles", "batch_size", "max_prune_steps"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise SrIrError(f"--{key.replace('_', '-')} must be >= 1")
    if args.backoff is not None and args.backoff < 0:
        raise SrIrError("--backoff must be >= 0")
    return CycleConfig.preset(args.preset, **{k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None})


def model_spec(args: argparse.Namespace) -> str:
    """The model named by MODEL or --model (they must agree), default the bundled LeNet-300-100."""
    if args.model and args.model_option and args.model != args.model_option:
        raise SrIrError(f"two models given: {args.model} and --model {args.model_option}")
    spec = args.model or args.model_option or MODELS[0]
    if spec not in MODELS and ":" not in spec:
        raise SrIrError(f"{spec!r}: expected a bundled model ({', '.join(MODELS)}) or package.module:factory")
    if args.weights and spec in MODELS:
        raise SrIrError("--weights is for a package.module:factory model")
    return spec


def load_data(args: argparse.Namespace) -> Splits:
    """--data FILE.npz, or the --dataset by name (default the MNIST subset); the split is fixed (seed 0)."""
    from ..cycle.data import load_dataset, load_npz

    if args.data:
        return load_npz(args.data)
    return load_dataset(args.dataset or "mnist-subset")


def _bundled(name: str, data: Splits) -> tuple[nn.Module, Dataset, Dataset, Dataset]:
    import torch

    from ..cycle.data import ImageView
    from ..models import convnext, lenet

    torch.manual_seed(0)
    if name == "lenet300-100":  # flattens its input: any row shape
        model = lenet.LeNet300100(in_features=data.num_features, num_classes=data.num_classes)
        return model, data.train, data.val, data.test
    rows = tuple(data.train[0][0].shape)
    if rows not in ((784,), (1, 28, 28)):
        raise SrIrError(f"{name} needs 28x28 single-channel images (rows of 784 or 1x28x28), "
                        f"{data.name} has rows of {'x'.join(map(str, rows))}; use --dataset mnist-subset or fashion-mnist")
    if name == "convnext-tiny":
        model = convnext.convnext_tiny(in_chans=1, num_classes=data.num_classes, small_input=True)
    else:
        model = convnext.convnext_small_test(in_chans=1, num_classes=data.num_classes, stem_stride=2)
    if rows == (1, 28, 28):
        return model, data.train, data.val, data.test
    shape = (1, 28, 28)
    return model, ImageView(data.train, shape), ImageView(data.val, shape), ImageView(data.test, shape)


def _user_model(spec: str, weights: str | None) -> nn.Module:
    from .inputs import load_factory  # the CLI's one resolver of package.module:factory (cwd importable)

    model, _ = load_factory(spec, weights)
    return model


def _check_model(spec: str, model: nn.Module, example: torch.Tensor, num_classes: int) -> None:
    """The model runs on a batch of the data and gives one row of class scores per example: one line if not."""
    import torch

    shape = "x".join(map(str, example.shape))
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as e:  # the user's forward: any exception, reported as one line naming the shapes
        raise SrIrError(f"{spec}: the model's forward fails on a batch of the data of shape {shape} ({describe(e)})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(example) or out.shape[1] < num_classes:
        got = "x".join(map(str, out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SrIrError(f"{spec}: gives {got} on a batch of shape {shape}; expected class scores of shape "
                        f"{len(example)}x{num_classes} or wider (the data has {num_classes} classes)")


def model_and_data(args: argparse.Namespace, spec: str):
    """(model, train, val, test, example inputs, data) as the run uses them."""
    import torch

    data = load_data(args)
    if spec in MODELS:
        model, train, val, test = _bundled(spec, data)
    else:
        model, train, val, test = _user_model(spec, args.weights), data.train, data.val, data.test
    example = torch.stack([val[i][0] for i in range(min(8, len(val)))])
    _check_model(spec, model, example, data.num_classes)
    return model, train, val, test, (example,), data


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cycle import ddp
    from ..cycle.run_files import check_folder, claim

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ddp.init_from_env()
    cfg = build_config(args)
    spec = model_spec(args)
    out = Path(args.out)
    check_folder(out)
    if args.resume and not list(out.glob("cycle_*.pt")) and list(out.glob("checkpoints/cycle_*.pt")):
        raise SrIrError(f"{out}/checkpoints holds a run in the former layout: move its cycle_NNN.pt files into {out}")
    # One run per folder, claimed before any work (the library's own claim of the folder then passes).
    with claim(out) if ddp.is_main() else nullcontext():
        return _run(args, cfg, spec, out)


def _run(args: argparse.Namespace, cfg: CycleConfig, spec: str, out: Path) -> int:
    """The run itself, with OUT claimed (by the main process, which alone writes there)."""
    from torch.utils.data import DataLoader

    from ..cycle import ddp, squeeze_release
    from ..cycle.report import record_lines, summary_lines, table_header

    main = ddp.is_main()
    model, train, val, test, example, data = model_and_data(args, spec)
    table = sys.stderr if args.json else sys.stdout
    if main:
        for note in data.notes:  # how a split the data file lacks was made
            print(f"note: {note}", file=sys.stderr, flush=True)

    def on_cycle(r: dict[str, Any]) -> None:
        if not main:
            return
        if r["cycle"] == 0:
            print(table_header(), file=table, flush=True)
        print("\n".join(record_lines(r)), file=table, flush=True)

    bs = args.batch_size or DEFAULT_BATCH_SIZE
    loaders = (DataLoader(train, batch_size=bs, shuffle=True), DataLoader(val, batch_size=bs),
               DataLoader(test, batch_size=bs))
    info = {"model": spec, "dataset": args.data or data.name, "preset": args.preset}
    if data.notes:
        info["data_notes"] = list(data.notes)
    res = squeeze_release(model, loaders[0], loaders[1], test=loaders[2], example_inputs=example, config=cfg,
                          checkpoint_dir=out, resume=args.resume, on_cycle=on_cycle,
                          progress=not (args.no_progress or args.quiet), info=info)
    summary = res.summary
    if main:
        if args.json:
            print(json.dumps(summary, indent=1))
        else:
            print()
            print("\n".join(summary_lines(summary)))
            print(f"wrote {out}/cycles.json, cycles.txt, cycles.png, final.safetensors"
                  + ("" if summary["export_error"] else f", final.pt2 ({summary['export_batch']} batch)"))
    ddp.barrier()
    return 0
