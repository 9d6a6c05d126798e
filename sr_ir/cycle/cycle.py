"""The Squeeze-Release cycle: prune -> minimize -> release -> fine-tune, until no unit is removed.

    train (or take) the dense model; A0 = its validation accuracy
    repeat:
        prune     iterative pruning, each step fine-tuned under the mask and kept only while the
                  validation accuracy stays >= A0 - max_drop (a failed step is undone; the step size
                  is halved and retried ``backoff`` times)
        minimize  exact structural rewrite (sr_ir.minimize); its verification, and ours on real
                  data, must pass or the run stops with VerificationError
        stop      if minimization removed nothing
        release   the exact zeros in the compacted tensors become trainable, seeded with calibrated
                  noise (or, with release off, they stay masked: the ablation)
        fine-tune
    every cycle: a checkpoint (atomic), a JSON record, a callback for tables and plots; at the end the
    run's files (cycles.json, cycles.txt, cycles.png, final.safetensors, final.pt2: run_files.py)

``CycleConfig.preset("unit" | "coupled" | "faithful")`` is the configuration ``sr-ir squeeze-release
--preset`` runs. Everything random is seeded from ``(config.seed, phase name)``, so ``resume=True`` after an
interruption continues exactly where the uninterrupted run would be.
"""
from __future__ import annotations

import copy
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..comparison import compare
from ..errors import SrIrError, VerificationError
from . import checkpoint as ckpt
from . import ddp
from .channel_groups import ChannelGroup, channel_groups
from .metrics import size_summary
from .pruning import (
    PruneSpec,
    apply_masks,
    full_masks,
    nonzero_masks,
    output_parameter,
    prunable_parameters,
    prune_step,
    sparsity,
)
from .release import ReleaseRecord, default_ladder, release
from .report import table_text
from .run_files import check_folder, claim, write_final, write_progress
from .train import DEFAULT_BATCH_SIZE, TrainSpec, batches_per_phase, evaluate, fine_tune, phase_seed


class MinimizeResult(Protocol):
    module: nn.Module
    report: Any


Minimizer = Callable[[nn.Module, tuple], MinimizeResult]


def default_minimizer(model: nn.Module, example_inputs: tuple) -> MinimizeResult:
    """``sr_ir.minimization.minimize(model, example_inputs, verify=True)`` (a float32 model's float64
    check at float32 rounding): what the cycle minimizes with unless given another minimizer.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():  # unit 1 is relu(0 * x - 1) = 0: dead
    ...     _ = net[0].weight[1].zero_(), net[0].bias[1].fill_(-1.0)
    >>> default_minimizer(net, (torch.randn(2, 4),)).report.params_after
    16
    """
    from ..minimization import minimize

    # A float32 model's folded constants are rounded to float32 once, so its float64 comparison can only
    # agree to float32 rounding (~6e-8 relative per folded value); 1e-6 still catches any real error.
    tol = {torch.float64: 1e-6} if next(model.parameters()).dtype == torch.float32 else None
    return minimize(model, example_inputs, verify=True, tolerance=tol)


@dataclass(frozen=True)
class CycleConfig:
    """Every knob of a run. Stored in each checkpoint; a resume must use the same values
    (``max_cycles`` excepted, so a finished run can be extended)."""

    max_cycles: int = 8
    max_drop: float = 1.0  # accuracy points below the dense validation accuracy a pruned model may lose
    dense_epochs: float = 0.0  # train the given model first (0: it is already trained)
    prune: PruneSpec = field(default_factory=PruneSpec)
    prune_epochs: float = 2.0  # fine-tuning after each pruning step
    max_prune_steps: int = 25  # per cycle
    backoff: int = 1  # on a failed step: halve the step and retry this many times
    release: bool = True
    release_epochs: float = 3.0
    release_tolerance: float = 0.05  # allowed relative change of the calibration loss
    release_ladder: tuple[float, ...] = default_ladder()
    calibration_size: int = 256  # first examples of the validation set
    train: TrainSpec = field(default_factory=TrainSpec)
    dense_train: TrainSpec | None = None  # dense training (defaults to ``train`` without distillation)
    stop_on_no_removal: bool = True  # False: run all max_cycles (ablations at an equal training budget)
    prune_only: str | None = None  # regex: prune only parameters whose name matches (None: all >= 2-D weights)
    verify_tolerance: float = 1e-4  # max |y - y'| / max |y| on real data, float32
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every value as JSON-ready data (stored in each checkpoint; `from_dict` reads it back)."""
        d = asdict(self)
        d["release_ladder"] = list(self.release_ladder)
        return d

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "CycleConfig":
        """The configuration ``sr-ir squeeze-release --preset NAME`` runs (``PRESETS``), with ``overrides``:
        any CycleConfig field, or a field of its specs by its flat name (``criterion``, ``scope``,
        ``prune_amount``, ``min_keep``; ``lr``, ``batch_size``, ``distill``, ``group_lasso``, ``l1``,
        ``weight_decay``, ``temperature``, ``schedule``). The batch size stays ``None``: the DataLoader's.

        >>> CycleConfig.preset("unit", max_cycles=2, dense_epochs=0).prune.criterion
        'unit'
        """
        if name not in PRESETS:
            raise SrIrError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_flat({**PRESETS[name], **overrides})

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "CycleConfig":
        """A config from CycleConfig fields and the flat names of its specs' fields (see ``preset``)."""
        own = {f.name for f in fields(cls)}
        unknown = sorted(k for k in values if k not in own and k not in _FLAT)
        if unknown:
            raise SrIrError(f"unknown setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(own | set(_FLAT)))}")
        top = {k: v for k, v in values.items() if k in own}
        nested: dict[str, dict[str, Any]] = {"prune": {}, "train": {}}
        for k, v in values.items():
            if k in _FLAT:
                spec, key = _FLAT[k]
                nested[spec][key] = v
        cfg = cls(**top)
        return replace(cfg, prune=replace(cfg.prune, **nested["prune"]), train=replace(cfg.train, **nested["train"]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CycleConfig":
        """The config `to_dict` wrote."""
        d = dict(d)
        d["prune"] = PruneSpec(**d["prune"])
        d["train"] = TrainSpec(**d["train"])
        d["dense_train"] = TrainSpec(**d["dense_train"]) if d.get("dense_train") else None
        d["release_ladder"] = tuple(d["release_ladder"])
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# The flat names of the specs' fields, as ``CycleConfig.preset`` and the CLI's flags spell them.
_FLAT: dict[str, tuple[str, str]] = {
    "criterion": ("prune", "criterion"),
    "scope": ("prune", "scope"),
    "prune_amount": ("prune", "amount"),
    "min_keep": ("prune", "min_keep"),
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "distill": ("train", "distill"),
    "group_lasso": ("train", "group_lasso"),
    "l1": ("train", "l1"),
    "weight_decay": ("train", "weight_decay"),
    "temperature": ("train", "temperature"),
    "schedule": ("train", "schedule"),
}

# The presets, in flat names: the one definition ``CycleConfig.preset`` and ``sr-ir squeeze-release
# --preset`` share. "faithful" is the method as the paper states it (unstructured global magnitude
# pruning); "unit" adds what favours whole-unit death: unit-RMS pruning of rows and columns, group lasso
# and distillation from the dense model (reported separately); "coupled" is "unit" with whole coupled
# channels read from the network's IR (residual-stream channels included), for ConvNeXt-like networks.
_COMMON: dict[str, Any] = dict(max_drop=1.0, dense_epochs=20.0, backoff=2, release=True, release_tolerance=0.05,
                               lr=1e-3, seed=0)
PRESETS: dict[str, dict[str, Any]] = {
    "unit": dict(_COMMON, criterion="unit", scope="layer", distill=0.7, group_lasso=5e-3, prune_amount=0.1,
                 prune_epochs=6.0, release_epochs=15.0, max_cycles=25, max_prune_steps=40),
    "coupled": dict(_COMMON, criterion="coupled", scope="layer", distill=0.7, group_lasso=5e-3, prune_amount=0.1,
                    prune_epochs=6.0, release_epochs=15.0, max_cycles=25, max_prune_steps=40),
    "faithful": dict(_COMMON, criterion="magnitude", scope="global", distill=0.0, group_lasso=0.0, prune_amount=0.2,
                     prune_epochs=2.0, release_epochs=4.0, max_cycles=8, max_prune_steps=20),
}


@dataclass
class CycleResult:
    """What a run produced: the final module, the dense reference and one record per cycle."""

    module: nn.Module
    dense_record: dict[str, Any]
    records: list[dict[str, Any]]
    stopped: str  # "no-unit-removed" | "max-cycles"
    config: CycleConfig | None = None  # as run: the batch size resolved from the DataLoader
    summary: dict[str, Any] = field(default_factory=dict)  # what cycles.json holds at the end
    folder: Path | None = None  # where the run's files are (``checkpoint_dir``)

    def best(self) -> dict[str, Any] | None:
        """The smallest deployable state (minimized or released) within the accuracy floor."""
        return best_state(self.dense_record, self.records)

    def table(self) -> str:
        """The per-cycle table, as ``sr-ir squeeze-release`` prints it and ``cycles.txt`` holds it."""
        return table_text(self.dense_record, self.records)

    def __repr__(self) -> str:
        return (f"CycleResult({len(self.records)} cycle(s), stopped={self.stopped!r}, "
                f"params {self.dense_record['params']:,} -> {self.records[-1]['params'] if self.records else '-'})")


def best_state(dense: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest state of a run (a cycle's minimized model, or it after release and fine-tuning) whose
    validation accuracy is at least the dense model's ``floor``; fewer parameters first, then higher
    validation accuracy, then the earlier cycle. None when no state holds the floor.

    >>> dense = {"floor": 0.90, "params": 1000}
    >>> records = [{"cycle": 1, "params": 400, "bytes": 1600, "flops": 0, "val_acc": 0.93},
    ...            {"cycle": 2, "params": 200, "bytes": 800, "flops": 0, "val_acc": 0.88,
    ...             "released_val_acc": 0.91}]
    >>> b = best_state(dense, records)
    >>> b["cycle"], b["stage"], b["compression"]
    (2, 'released', 5.0)
    """
    floor = dense["floor"]
    cands = []
    for r in records:
        cands.append({"cycle": r["cycle"], "stage": "minimized", "params": r["params"], "bytes": r["bytes"],
                      "flops": r["flops"], "val_acc": r["val_acc"], "test_acc": r.get("test_acc")})
        if r.get("released_val_acc") is not None:
            cands.append({"cycle": r["cycle"], "stage": "released", "params": r["params"], "bytes": r["bytes"],
                          "flops": r["flops"], "val_acc": r["released_val_acc"], "test_acc": r.get("released_test_acc")})
    ok = [c for c in cands if c["val_acc"] >= floor - 1e-12]
    if not ok:
        return None
    b = min(ok, key=lambda c: (c["params"], -c["val_acc"], c["cycle"]))
    b["compression"] = dense["params"] / b["params"]
    return b


def _dataset(d: DataLoader | Dataset) -> tuple[Dataset, DataLoader | None]:
    return (d.dataset, d) if isinstance(d, DataLoader) else (d, None)


def _batch(dataset: Dataset, n: int, like: DataLoader | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    kw = {"collate_fn": like.collate_fn} if like is not None else {}
    x, y = next(iter(DataLoader(dataset, batch_size=min(n, len(dataset)), shuffle=False, **kw)))  # type: ignore[arg-type]
    return x.to(device), y.to(device)


@torch.no_grad()
def check_same_function(a: nn.Module, b: nn.Module, inputs: Sequence[torch.Tensor], tolerance: float) -> dict[str, float]:
    """Max abs and relative difference of two modules' outputs; VerificationError beyond ``tolerance``.

    >>> import torch
    >>> net = torch.nn.Linear(4, 2)
    >>> check_same_function(net, net, [torch.randn(3, 4)], 1e-6)
    {'max_abs_err': 0.0, 'max_rel_err': 0.0}
    """
    a.eval()
    b.eval()
    worst_abs, worst_rel = 0.0, 0.0
    for x in inputs:
        d = compare(a, b, (x,))
        if not d.within(tolerance):  # also NaN, and non-finite values the original does not have
            raise VerificationError(
                f"minimized module differs from the pruned one by {d.max_rel:.3g} (relative), tolerance {tolerance:g}"
            )
        worst_abs, worst_rel = max(worst_abs, d.max_abs), max(worst_rel, d.max_rel)
    return {"max_abs_err": worst_abs, "max_rel_err": worst_rel}


def removed_units(report: Any) -> dict[str, int]:
    """Per-layer count of removed units from a minimize report (dict or object; counts or index lists)."""
    if report is None:
        return {}
    groups = report.get("groups") if isinstance(report, dict) else getattr(report, "groups", None)
    if isinstance(groups, list) and groups and isinstance(groups[0], dict) and "removed" in groups[0]:
        # sr_ir.minimize: one entry per removal group per pass
        out: dict[str, int] = {}
        for g in groups:
            out[str(g["group"])] = out.get(str(g["group"]), 0) + int(g["removed"])
        # units the transformer reductions removed (residual-stream channels, heads, qk/v dims)
        tr = report.get("transformer") if isinstance(report, dict) else getattr(report, "transformer", None)
        for k, v in (tr or {}).items():
            if k in ("residual_channels", "heads", "qk_dims", "v_dims", "gated_units") and v:
                out[k] = int(v)
        return out
    for key in ("removed_channels", "removed_units", "removed"):
        val = report.get(key) if isinstance(report, dict) else getattr(report, key, None)
        if isinstance(val, dict):
            return {str(k): (v if isinstance(v, int) else len(v)) for k, v in val.items()}
    return {}


def _excluded(model: nn.Module, pattern: str | None, vectors: bool = False) -> list[str]:
    if pattern is None:
        return []
    rx = re.compile(pattern)
    return [n for n in prunable_parameters(model, vectors=vectors) if not rx.search(n)]


class _Bar:
    """One tqdm bar per training phase on the main process, its total the phase's batch count (so it
    shows an ETA); silent elsewhere."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and ddp.is_main()
        self.bar = None

    def start(self, desc: str, total: int) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        self.close()
        self.bar = tqdm(desc=desc, total=total, unit="batch", leave=False, dynamic_ncols=True)
        return self.bar.update

    def note(self, **kw) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def resolve_batch_size(config: CycleConfig, train: DataLoader | Dataset) -> CycleConfig:
    """``config`` with the batch size it trains with: the config's own where it sets one (with a warning
    when a DataLoader says otherwise), else the training DataLoader's, else ``DEFAULT_BATCH_SIZE``.

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    >>> resolve_batch_size(CycleConfig(), DataLoader(data, batch_size=4)).train.batch_size
    4
    """
    loader_bs = train.batch_size if isinstance(train, DataLoader) else None
    own = config.train.batch_size
    if own is not None:
        if loader_bs is not None and loader_bs != own:
            warnings.warn(f"the config's batch size {own} is used, not the DataLoader's {loader_bs} "
                          "(leave TrainSpec.batch_size None to train with the loader's)", UserWarning, stacklevel=3)
        bs = own
    else:
        bs = loader_bs if loader_bs is not None else DEFAULT_BATCH_SIZE
    dense = config.dense_train
    if dense is not None and dense.batch_size is None:
        dense = replace(dense, batch_size=bs)
    return replace(config, train=replace(config.train, batch_size=bs), dense_train=dense)


def squeeze_release(
    model: nn.Module,
    train: DataLoader | Dataset,
    val: DataLoader | Dataset,
    *,
    example_inputs: tuple,
    config: CycleConfig = CycleConfig(),
    test: DataLoader | Dataset | None = None,
    minimizer: Minimizer | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    teacher: nn.Module | None = None,
    on_cycle: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
) -> CycleResult:
    """Run the Squeeze-Release cycle on ``model`` (any nn.Module classifier).

    ``train``/``val``/``test`` are DataLoaders (their dataset and collate function are used; shuffling
    follows the run's seed so runs are reproducible and shard under torchrun) or map-style datasets.
    The batch size is the training DataLoader's unless ``config.train.batch_size`` sets one (then a
    warning where they differ). ``example_inputs`` are handed to the minimizer and to the final
    export. With ``config.train.distill > 0`` the dense model (or ``teacher``) is the distillation
    teacher. ``on_cycle(record)`` is called after every cycle's checkpoint is written (the dense model's
    record has ``cycle == 0``); on resume it is first called with the restored records.

    With ``checkpoint_dir`` the run claims that folder (a second run on it refuses) and writes there
    what ``sr-ir squeeze-release`` writes: ``cycle_NNN.pt`` checkpoints, ``cycles.json`` (with
    ``info``'s entries, e.g. model and dataset names), ``cycles.txt``, ``cycles.png``,
    ``final.safetensors`` and ``final.pt2`` (run_files.py).

    >>> cfg = CycleConfig.preset("unit", max_cycles=2, dense_epochs=0)
    >>> res = squeeze_release(model, train_loader, val_loader, test=test_loader,   # doctest: +SKIP
    ...                       example_inputs=(x,), config=cfg, checkpoint_dir="run/")
    >>> print(res.table()); res.best()                                           # doctest: +SKIP
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        check_folder(folder)
    cfg = resolve_batch_size(config, train)
    # One run per folder, claimed before any work: a second run would overwrite this one's files.
    with claim(folder) if (folder is not None and ddp.is_main()) else nullcontext():
        t0 = time.perf_counter()
        result = _squeeze_release(model, train, val, example_inputs=example_inputs, cfg=cfg, test=test,
                                  minimizer=minimizer, folder=folder, resume=resume, teacher=teacher,
                                  on_cycle=on_cycle, progress=progress, info=dict(info or {}))
        wall = time.perf_counter() - t0
        result.summary = {
            **(info or {}), "processes": ddp.world_size(), "config": cfg.to_dict(), "dense": result.dense_record,
            "cycles": result.records, "stopped": result.stopped, "best": result.best(),
            "single_pass": result.records[0] if result.records else None, "wall_s": wall,
        }
        if folder is not None:
            if ddp.is_main():
                write_final(folder, result.summary, result.module, example_inputs, info or {})
            ddp.barrier()
    return result


def _squeeze_release(
    model: nn.Module,
    train: DataLoader | Dataset,
    val: DataLoader | Dataset,
    *,
    example_inputs: tuple,
    cfg: CycleConfig,
    test: DataLoader | Dataset | None,
    minimizer: Minimizer | None,
    folder: Path | None,
    resume: bool,
    teacher: nn.Module | None,
    on_cycle: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    info: dict[str, Any],
) -> CycleResult:
    """The run itself (``squeeze_release``'s body, with the folder claimed and the batch size resolved)."""
    minimizer = minimizer or default_minimizer
    train_ds, train_like = _dataset(train)
    val_ds, val_like = _dataset(val)
    test_ds, test_like = _dataset(test) if test is not None else (None, None)
    device = next(model.parameters()).device
    bar = _Bar(progress)
    main = ddp.is_main()
    history: list[dict[str, Any]] = []

    def notify(record: dict[str, Any]) -> None:
        """After each record's checkpoint: cycles.json grows with the run (so a long run can be watched),
        then the caller's callback."""
        if folder is not None and main:
            history.append(record)
            write_progress(folder, info, cfg.to_dict(), history)
        if on_cycle is not None:
            on_cycle(record)

    def acc(m: nn.Module, which: str) -> float | None:
        ds, like = (val_ds, val_like) if which == "val" else (test_ds, test_like)
        return None if ds is None else evaluate(m, ds, like=like)[0]

    def save(cycle: int, module, pruned_state, masks, record, meta) -> None:
        if folder is not None and main:
            ckpt.save_cycle(folder, cycle, state=module.state_dict(), pruned_state=pruned_state, masks=masks,
                            record=record, config=cfg.to_dict(), meta=meta)
        ddp.barrier()

    protect = output_parameter(model, example_inputs)
    if cfg.prune_only is not None:
        try:
            re.compile(cfg.prune_only)
        except re.error as e:
            raise SrIrError(f"prune_only is not a valid regular expression: {e}") from None
    records: list[dict[str, Any]] = []
    start_cycle = 1
    masks = None
    stopped = None
    dense_model = None
    done = ckpt.completed_cycles(folder) if (folder is not None and resume) else []
    if done:
        model, masks, records, dense_model, stopped = _restore(model, folder, done, cfg, minimizer, example_inputs)
        dense_record = records.pop(0)
        start_cycle = records[-1]["cycle"] + 1 if records else 1
        protect = output_parameter(model, example_inputs)
        for r in [dense_record, *records]:  # the callback sees the whole history, restored part first
            notify(r)
    else:
        if folder is not None and ckpt.completed_cycles(folder):  # every rank refuses alike
            raise SrIrError(f"{folder} already holds checkpoints; pass resume=True (--resume) or use another folder")
        t0 = time.perf_counter()
        if cfg.dense_epochs > 0:
            spec = replace(cfg.dense_train or cfg.train, epochs=cfg.dense_epochs, distill=0.0, group_lasso=0.0, l1=0.0)
            fine_tune(model, train_ds, spec, seed=cfg.seed, tag="dense", like=train_like,
                      progress=bar.start("dense", batches_per_phase(train_ds, spec)))
            bar.close()
        dense_model = copy.deepcopy(model).eval()
        a0 = acc(model, "val")
        dense_record = {"cycle": 0, **size_summary(model, example_inputs), "train_epochs": cfg.dense_epochs,
                        "val_acc": a0, "test_acc": acc(model, "test"), "floor": a0 - cfg.max_drop / 100.0,
                        "time_s": time.perf_counter() - t0}
        save(0, model, None, {}, dense_record, {"stopped": None})
        notify(dense_record)
    teacher = teacher if teacher is not None else dense_model
    floor = dense_record["floor"]
    # The coupled criterion prunes whole channels, biases and norm entries included: its masks cover
    # every trainable tensor, and its channel groups are read from the current model's IR each cycle.
    vectors = cfg.prune.criterion == "coupled"

    def groups_of(m: nn.Module) -> list[ChannelGroup] | None:
        return channel_groups(m, example_inputs) if vectors else None

    if masks is None:
        masks = full_masks(model, _excluded(model, cfg.prune_only, vectors), vectors)
    if not masks:
        raise SrIrError(f"no prunable parameter matches prune_only={cfg.prune_only!r}")
    # Calibrate on held-out data: after fine-tuning the training loss is near zero, and a relative
    # tolerance on a near-zero loss would refuse any noise at all.
    calib = _batch(val_ds, cfg.calibration_size, val_like, device)
    check_inputs = [_batch(val_ds, 256, val_like, device)[0]]

    cycle = start_cycle
    while stopped is None:
        if cycle > cfg.max_cycles:
            stopped = "max-cycles"
            break
        t0 = time.perf_counter()
        tspec = cfg.train

        # --- prune: iterative, fine-tuned under the mask, floored on validation accuracy
        groups = groups_of(model)
        amount, retries, steps, tried = cfg.prune.amount, cfg.backoff, 0, 0
        while steps < cfg.max_prune_steps:
            spec = replace(cfg.prune, amount=amount)
            new_masks = prune_step(model, masks, spec, protect_rows=[protect] if protect else [], groups=groups)
            if all(torch.equal(new_masks[n], masks[n]) for n in masks):
                break
            saved = copy.deepcopy(model.state_dict())
            apply_masks(model, new_masks)
            phase = replace(tspec, epochs=cfg.prune_epochs)
            tick = bar.start(f"cycle {cycle} prune {steps + 1} ({spec.criterion} {amount:.3g})",
                             batches_per_phase(train_ds, phase))
            fine_tune(model, train_ds, phase, seed=cfg.seed,
                      tag=f"c{cycle}/prune{tried}", masks=new_masks, teacher=teacher,
                      lasso_names=list(new_masks), protect_rows=[protect] if protect else [], lasso_groups=groups,
                      like=train_like, progress=tick)
            tried += 1
            v = acc(model, "val")
            bar.note(val=f"{v:.4f}", sparsity=f"{sparsity(new_masks):.3f}")
            if v >= floor - 1e-12:
                masks, steps = new_masks, steps + 1
                continue
            model.load_state_dict(saved)
            if retries <= 0:
                break
            retries -= 1
            amount /= 2
        bar.close()
        apply_masks(model, masks)
        pruned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        pre_params = size_summary(model, example_inputs)["params"]
        pre_val = acc(model, "val")

        # --- minimize: exact, verified by the minimizer and again here on real data
        res = minimizer(copy.deepcopy(model).eval(), example_inputs)
        small = res.module.to(device).eval()
        ddp.sync_module(small)
        errors = check_same_function(model, small, check_inputs + [example_inputs[0]], cfg.verify_tolerance)
        sizes = size_summary(small, example_inputs)
        units = removed_units(res.report)
        record: dict[str, Any] = {
            "cycle": cycle,
            **sizes,
            "compression": dense_record["params"] / sizes["params"],
            "params_before_minimize": pre_params,
            "sparsity_before_minimize": sparsity(masks),
            "prune_steps": steps,
            "prune_tries": tried,
            "train_epochs": tried * cfg.prune_epochs,  # this cycle's fine-tuning, release phase added below
            "val_acc": acc(small, "val"),
            "test_acc": acc(small, "test"),
            "pruned_val_acc": pre_val,
            "units_removed": units,
            "units_removed_total": sum(units.values()),
            **errors,
        }
        removed_any = sizes["params"] < pre_params
        if not removed_any and cfg.stop_on_no_removal:
            stopped = "no-unit-removed"
            record.update(release=None, released_val_acc=None, released_test_acc=None,
                          time_s=time.perf_counter() - t0)
            model = small
            records.append(record)
            save(cycle, model, pruned_state, nonzero_masks(model, _excluded(model, cfg.prune_only, vectors), vectors), record,
                 {"stopped": stopped})
            notify(record)
            break

        # --- release (or keep the zeros masked: the ablation) and fine-tune
        rel: ReleaseRecord | None = None
        if cfg.release:
            rel = release(small, calib, seed=phase_seed(cfg.seed, f"c{cycle}/release") & 0x7FFFFFFF,
                          ladder=cfg.release_ladder, tolerance=cfg.release_tolerance,
                          exclude=_excluded(small, cfg.prune_only))
            masks = full_masks(small, _excluded(small, cfg.prune_only, vectors), vectors)
        else:
            masks = nonzero_masks(small, _excluded(small, cfg.prune_only, vectors), vectors)
        protect = output_parameter(small, example_inputs)
        phase = replace(tspec, epochs=cfg.release_epochs)
        tick = bar.start(f"cycle {cycle} {'release' if cfg.release else 'masked'} fine-tune",
                         batches_per_phase(train_ds, phase))
        fine_tune(small, train_ds, phase, seed=cfg.seed, tag=f"c{cycle}/release",
                  masks=masks, teacher=teacher, lasso_names=list(masks), protect_rows=[protect] if protect else [],
                  lasso_groups=groups_of(small), like=train_like, progress=tick)
        bar.close()
        record["train_epochs"] += cfg.release_epochs
        record.update(
            release=rel.to_dict() if rel else None,
            released_val_acc=acc(small, "val"),
            released_test_acc=acc(small, "test"),
            time_s=time.perf_counter() - t0,
        )
        model = small
        records.append(record)
        save(cycle, model, pruned_state, masks, record, {"stopped": None})
        notify(record)
        cycle += 1
    bar.close()
    return CycleResult(model, dense_record, records, stopped or "max-cycles", config=cfg, folder=folder)


def _restore(model0, folder, done, cfg: CycleConfig, minimizer, example_inputs):
    """Rebuild the run's state from its checkpoints by replaying minimization on stored weights."""
    if done[0] != 0 or done != list(range(done[-1] + 1)):
        raise SrIrError(f"{folder}: checkpoints {done} are not a contiguous run starting at cycle 0")
    first = ckpt.load_cycle(ckpt.cycle_path(folder, 0))
    diff = _changed_settings(first["config"], cfg)
    if diff:
        raise SrIrError(f"{folder}: cannot resume with different settings ({', '.join(diff)}); use the original ones")
    model = model0
    try:
        model.load_state_dict(first["state"])
    except RuntimeError as e:
        raise SrIrError(f"{folder}: the dense checkpoint does not fit the given model ({str(e).splitlines()[0]})") from None
    dense_model = copy.deepcopy(model).eval()
    records = [first["record"]]
    masks = None
    stopped = first["meta"].get("stopped")
    device = next(model0.parameters()).device
    for k in done[1:]:
        path = ckpt.cycle_path(folder, k)
        c = ckpt.load_cycle(path)
        # a checkpoint copied in from another run would be resumed from silently where its shapes fit
        diff = _changed_settings(c["config"], cfg)
        if c.get("cycle") != k or diff:
            raise SrIrError(f"{path}: not cycle {k} of this run (" + (f"its settings differ: {', '.join(diff)})" if diff
                            else f"it holds cycle {c.get('cycle')})"))
        _load_state(model, c["pruned_state"], path)
        model = minimizer(copy.deepcopy(model).eval(), example_inputs).module.to(device)
        _load_state(model, c["state"], path)
        masks = {n: m.to(device) for n, m in c["masks"].items()}
        records.append(c["record"])
        stopped = c["meta"].get("stopped")
    model.eval()
    ddp.sync_module(model)
    return model, masks, records, dense_model, stopped


def _changed_settings(stored: dict[str, Any], cfg: CycleConfig) -> list[str]:
    """The settings a checkpoint was written with that differ from ``cfg`` (``max_cycles`` may grow)."""
    old, now = CycleConfig.from_dict(stored).to_dict(), cfg.to_dict()
    return sorted(k for k in now if k != "max_cycles" and now[k] != old.get(k))


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch's message: a header line, then one line per mismatched tensor
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise SrIrError(f"{path}: does not fit the model rebuilt from the earlier cycles "
                        f"({lines[1] if len(lines) > 1 else lines[0]})") from None
