"""Squeeze-Release against the baselines a reviewer asks for, at the sizes the cycle reaches, at equal epochs.

    nice -n 10 .venv/bin/python benchmarks/baselines.py --dataset fashion-mnist --model lenet-300-100 \\
        --seeds 0 --out benchmarks/out/baselines-lenet --png benchmarks/figures/baselines_lenet_fashion.png

One Squeeze-Release run per seed (``sr_ir.cycle.squeeze_release``, preset ``--preset``, the budget knobs
below) defines the points: after every cycle that removed something, its deployable parameter count P
(parameters + buffers of the minimized module, an input-gather index included) and the epochs E the run has
trained so far, dense training included. At each point every baseline trains E epochs in all:

  sr        the cycle's own model at that point (after the cycle's release fine-tune);
  (a)       single pass: the dense model pruned once to P with the cycle's criterion (one prune_step whose
            amount is bisected until the minimized size is closest to P), minimized, fine-tuned E - D epochs
            with its remaining zeros held at zero (D: the dense epochs, shared with the cycle);
  (b)       the cycle's final architecture at that point, kept inputs included, re-initialized the way its
            layers initialize (U(+-1/sqrt(fan_in)) for linear/conv tensors, norm and layer-scale constants as
            created) and trained E epochs from scratch;
  (c)       the original architecture with every width scaled by one factor, chosen so its parameter count is
            closest to P, trained E epochs from scratch (all inputs kept);
  (d)       Torch-Pruning: the dense model, MetaPruner with GroupMagnitudeImportance(p=2), local (per layer)
            pruning ratio bisected so the final count is closest to P, ``--tp-steps`` iterative steps, each
            followed by (E - D) / steps epochs of fine-tuning;
  (e)       unstructured global magnitude pruning of the dense model to P non-zero parameters in
            ``--mag-steps`` geometric steps, each fine-tuned (E - D) / steps epochs; its deployable size is
            the dense size (the zeros are still stored), plotted at its non-zero count and marked as such.

Every baseline trains with the cycle's loss (cross-entropy, distillation from the same dense model with the
cycle's weight unless ``--baseline-distill`` says otherwise) and no group lasso (the cycle's lasso is a
pruning device). Seeds repeat the whole experiment (initialization, every shuffle); points are aggregated by
cycle index: mean, min/max and standard deviation over seeds, of accuracy and of size.

Writes OUT/results.json (every seed's points and the aggregate), OUT/table.md and the PNG (accuracy against
deployable parameters, log x, one curve per method, min/max bars). ``--json`` prints results.json's content.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sr_ir.cycle import CycleConfig, PruneSpec, Splits, TrainSpec, default_minimizer, evaluate, fine_tune, load_dataset
from sr_ir.cycle import channel_groups, squeeze_release
from sr_ir.cycle.cycle import PRESETS, _excluded
from sr_ir.cycle.data import DATASETS, ImageView
from sr_ir.cycle.metrics import deployable_params
from sr_ir.cycle.pruning import apply_masks, full_masks, nonzero_masks, output_parameter, prune_step
from sr_ir.cycle.train import batches_per_phase
from sr_ir.errors import SrIrError
from sr_ir.models.convnext import ConvNeXt, LayerNorm2d
from sr_ir.models.lenet import LeNet300100
from sr_ir.outputs import atomic_save_with, atomic_write

METHODS = ("sr", "single_pass", "arch_scratch", "uniform", "torch_pruning", "magnitude")
LABELS = {
    "sr": "Squeeze-Release",
    "single_pass": "(a) single pass: prune once, minimize, fine-tune",
    "arch_scratch": "(b) final architecture from scratch",
    "uniform": "(c) uniform width from scratch",
    "torch_pruning": "(d) Torch-Pruning (group L2, iterative)",
    "magnitude": "(e) unstructured magnitude (x = non-zeros; deployable = dense)",
}
SHORT = {"sr": "SR", "single_pass": "(a) single", "arch_scratch": "(b) arch scratch", "uniform": "(c) uniform",
         "torch_pruning": "(d) Torch-Pruning", "magnitude": "(e) magnitude"}


# --- models ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model family the harness can scale uniformly and hand to Torch-Pruning."""

    name: str
    build: Callable[[Splits, float], nn.Module]  # (data, width scale) -> a freshly initialized model (seed first)
    images: bool  # True: the model reads [1, 28, 28] images (ImageView); False: flat rows
    preset: str  # the CycleConfig preset its cycle runs by default
    prune_only: str | None = None

    def tp_settings(self, model: nn.Module) -> dict[str, Any]:
        """Torch-Pruning arguments: the logits layer is never pruned; ConvNeXt's layer scales and
        channels-first LayerNorms hold bare parameters that Torch-Pruning must be told about (channel axis 0)."""
        head = model.fc3 if isinstance(model, LeNet300100) else model.head  # type: ignore[union-attr]
        unwrapped = [(m.gamma, 0) for m in model.modules() if isinstance(getattr(m, "gamma", None), nn.Parameter)]
        unwrapped += [(p, 0) for m in model.modules() if isinstance(m, LayerNorm2d) for p in (m.weight, m.bias)]
        return {"ignored_layers": [head], "unwrapped_parameters": unwrapped or None}


def _scaled(widths: Sequence[int], s: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * s)) for w in widths)


def _lenet(data: Splits, s: float) -> nn.Module:
    return LeNet300100(in_features=data.num_features, hidden=_scaled((300, 100), s), num_classes=data.num_classes)


def _convnext_narrow(data: Splits, s: float) -> nn.Module:
    if data.num_features != 28 * 28:
        raise SrIrError(f"convnext-narrow reads 28x28 images; {data.name} has {data.num_features} features")
    return ConvNeXt(1, data.num_classes, depths=(2, 2, 2, 2), dims=_scaled((32, 64, 128, 256), s), stem_stride=2)


MODELS = {
    "lenet-300-100": ModelSpec("lenet-300-100", _lenet, images=False, preset="unit"),
    # depths 2-2-2-2 (not Tiny's 3-3-9-3) so that a run fits on 2 CPU cores; coupled residual channels
    "convnext-narrow": ModelSpec("convnext-narrow", _convnext_narrow, images=True, preset="coupled"),
}


def views(spec: ModelSpec, data: Splits) -> tuple[Dataset, Dataset, Dataset]:
    if not spec.images:
        return data.train, data.val, data.test
    shape = (1, 28, 28)
    return ImageView(data.train, shape), ImageView(data.val, shape), ImageView(data.test, shape)


def count_at_scale(spec: ModelSpec, data: Splits, s: float) -> int:
    with torch.device("meta"):  # shapes only: no initialization cost for wide models
        return deployable_params(spec.build(data, s))


def uniform_scale(spec: ModelSpec, data: Splits, target: int) -> tuple[float, int]:
    """The width factor whose model's parameter count is closest to ``target`` (bisection on the factor:
    the count is a non-decreasing step function of it)."""
    lo, hi = 1e-6, 1.0
    if count_at_scale(spec, data, hi) <= target:
        return hi, count_at_scale(spec, data, hi)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if count_at_scale(spec, data, mid) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda s: (abs(count_at_scale(spec, data, s) - target), s))
    return best, count_at_scale(spec, data, best)


@torch.no_grad()
def reinitialize(module: nn.Module, template: nn.Module, seed: int) -> None:
    """Fresh weights for ``module`` (a minimized model) as its layers would be created at their new shapes:
    a tensor whose freshly built ``template`` counterpart is one constant (norm scale and shift, layer scale)
    gets that constant; a linear or convolution weight and its bias get U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in read from the weight's minimized shape (torch's default for nn.Linear and nn.Conv*)."""
    g = torch.Generator().manual_seed(seed)
    fresh = dict(template.named_parameters())
    params = dict(module.named_parameters())
    for name, p in params.items():
        ref = fresh.get(name)
        if ref is None:
            raise SrIrError(f"minimized parameter {name!r} has no counterpart in the original model to initialize it by")
        first = ref.flatten()[0]
        constant = bool((ref == first).all())
        owner = name.rpartition(".")[0]
        weight = p if p.dim() >= 2 else params.get(f"{owner}.weight" if owner else "weight")
        is_bias = weight is not None and weight.dim() >= 2
        if ref.dim() < 2 and ((constant and ref.numel() > 1) or not is_bias):
            if not constant:
                raise SrIrError(f"cannot tell how {name!r} is initialized (a vector that is neither constant nor a bias)")
            p.fill_(first)
            continue
        bound = 1.0 / math.sqrt(weight[0].numel())  # type: ignore[index]
        p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * (2 * bound) - bound)


# --- configuration -----------------------------------------------------------------------------------------


def cycle_config(a: argparse.Namespace, spec: ModelSpec, seed: int) -> CycleConfig:
    """The cycle's settings: ``CycleConfig.preset`` (its loss: distillation, group lasso; its criterion)
    with the harness's budget knobs. ``dense_epochs`` is 0 because the harness trains the dense model itself
    (as the cycle would) and keeps it for the baselines."""
    over: dict[str, Any] = dict(
        max_cycles=a.max_cycles, max_drop=a.max_drop, dense_epochs=0.0, prune_amount=a.prune_amount,
        prune_epochs=a.prune_epochs, max_prune_steps=a.max_prune_steps, backoff=a.backoff,
        release_epochs=a.release_epochs, lr=a.lr, batch_size=a.batch_size, prune_only=spec.prune_only, seed=seed,
    )
    over.update({k: v for k, v in (("criterion", a.criterion), ("scope", a.scope), ("schedule", a.schedule))
                 if v is not None})
    over.update(parse_settings(a.set))
    return CycleConfig.preset(a.preset or spec.preset, **over)


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as CycleConfig flat settings; VALUE is read as JSON where it parses
    (numbers, true/false), else kept as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise SrIrError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def baseline_train(cfg: CycleConfig, a: argparse.Namespace) -> TrainSpec:
    """How every baseline trains: the cycle's loss without its group lasso (a device to make units die),
    with the cycle's distillation weight unless ``--baseline-distill`` gives another."""
    distill = cfg.train.distill if a.baseline_distill is None else a.baseline_distill
    return replace(cfg.train, group_lasso=0.0, distill=distill)


# --- one seed ----------------------------------------------------------------------------------------------


def train_phase(model: nn.Module, dataset: Dataset, spec: TrainSpec, show: bool, desc: str, **kw) -> None:
    """``fine_tune`` with a progress bar whose total is the phase's batch count."""
    if spec.epochs <= 0:
        return
    with tqdm(total=batches_per_phase(dataset, spec), desc=desc, unit="batch", leave=False, dynamic_ncols=True,
              disable=not show) as bar:
        fine_tune(model, dataset, spec, progress=bar.update, **kw)


def accuracies(model: nn.Module, val: Dataset, test: Dataset) -> dict[str, float]:
    """Validation and test accuracy."""
    return {"val_acc": evaluate(model, val)[0], "test_acc": evaluate(model, test)[0]}


def nonzero_count(model: nn.Module) -> int:
    """Non-zero parameters plus every buffer element (an index buffer is stored whatever its values)."""
    return sum(int((t != 0).sum()) for t in model.parameters()) + sum(b.numel() for b in model.buffers())


def sr_points(dense_record: dict, records: list[dict], modules: list[nn.Module], dense_epochs: float) -> list[dict]:
    """One point per cycle that removed something: its size, its cumulative epochs and its accuracy after
    the cycle's fine-tune, with the module as minimized (for (b))."""
    points, epochs, prev = [], dense_epochs, dense_record["params"]
    for rec, mod in zip(records, modules):
        epochs += rec["train_epochs"]
        if rec["params"] >= prev:
            continue  # the last cycle removed nothing: its size is already a point
        prev = rec["params"]
        released = rec.get("released_test_acc") is not None
        points.append({
            "cycle": rec["cycle"], "epochs": epochs, "params": rec["params"], "module": mod,
            "sr": {"params": rec["params"], "nonzero": rec["params"], "epochs": epochs,
                   "val_acc": rec["released_val_acc"] if released else rec["val_acc"],
                   "test_acc": rec["released_test_acc"] if released else rec["test_acc"]},
        })
    return points


def single_pass(dense: nn.Module, cfg: CycleConfig, example: tuple, target: int, iters: int) -> tuple[nn.Module, float]:
    """One prune_step from the dense model with the cycle's criterion, its amount bisected so that the
    minimized module's deployable size is closest to ``target``; the minimized module and the amount."""
    protect = output_parameter(dense, example)
    vectors = cfg.prune.criterion == "coupled"
    masks0 = full_masks(dense, _excluded(dense, cfg.prune_only, vectors), vectors)
    groups = channel_groups(dense, example) if vectors else None
    by_masks: dict[bytes, nn.Module] = {}  # amounts that floor to the same masks share one minimization
    by_amount: dict[float, nn.Module] = {}

    def at(amount: float) -> nn.Module:
        if amount not in by_amount:
            m = copy.deepcopy(dense)
            masks = prune_step(m, masks0, replace(cfg.prune, amount=amount),
                               protect_rows=[protect] if protect else [], groups=groups)
            key = torch.cat([v.flatten() for v in masks.values()]).numpy().tobytes()
            if key not in by_masks:
                apply_masks(m, masks)
                by_masks[key] = default_minimizer(m.eval(), example).module
            by_amount[amount] = by_masks[key]
        return by_amount[amount]

    lo, hi = 1e-3, 1 - 1e-3  # sizes fall as the amount grows
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if deployable_params(at(mid)) > target:
            lo = mid
        else:
            hi = mid
    amount = min((lo, hi), key=lambda x: (abs(deployable_params(at(x)) - target), x))
    return copy.deepcopy(at(amount)), amount


def tp_prune(model: nn.Module, spec: ModelSpec, example: tuple, ratio: float, steps: int,
             after_step: Callable[[int], None] | None = None) -> None:
    """Torch-Pruning in place: MetaPruner, GroupMagnitudeImportance(p=2), local ratio ``ratio`` reached in
    ``steps`` linear steps; ``after_step(i)`` (the fine-tuning) after each."""
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, iterative_steps=steps, **spec.tp_settings(model))
    for i in range(steps):
        pruner.step()
        if after_step is not None:
            after_step(i)


def tp_ratio(dense: nn.Module, spec: ModelSpec, example: tuple, target: int, steps: int, iters: int) -> tuple[float, int]:
    """The local ratio whose ``steps``-step pruning ends closest to ``target`` parameters. Local pruning
    removes a fixed number of channels per layer, so the count does not depend on the weights: it is
    measured on copies without training."""
    def count(r: float) -> int:
        m = copy.deepcopy(dense)
        tp_prune(m, spec, example, r, steps)
        return deployable_params(m)

    lo, hi = 0.0, 0.999
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if count(mid) > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda r: (abs(count(r) - target), r))
    return best, count(best)


def magnitude_schedule(alive: int, keep: int, steps: int) -> list[int]:
    """Weights kept after each of ``steps`` geometric steps from ``alive`` down to exactly ``keep``."""
    return [keep if i == steps else max(keep, round(alive * (keep / alive) ** (i / steps))) for i in range(1, steps + 1)]


def run_seed(spec: ModelSpec, data: Splits, a: argparse.Namespace, seed: int, show: bool) -> dict[str, Any]:
    """The cycle and every baseline for one seed; a JSON-ready dict."""
    train, val, test = views(spec, data)
    example = (torch.stack([val[i][0] for i in range(8)]),)
    cfg = cycle_config(a, spec, seed)
    tspec = baseline_train(cfg, a)
    t_start = time.perf_counter()

    # the dense model: trained here exactly as squeeze_release(dense_epochs=D) would, and kept
    torch.manual_seed(seed)
    model = spec.build(data, 1.0)
    dense_spec = replace(cfg.train, epochs=a.dense_epochs, distill=0.0, group_lasso=0.0)
    train_phase(model, train, dense_spec, show, f"seed {seed} dense", seed=seed, tag="dense")
    dense = copy.deepcopy(model).eval()
    dense_acc = accuracies(dense, val, test)

    minimized: list[nn.Module] = []

    def capture(m: nn.Module, ex: tuple):
        res = default_minimizer(m, ex)
        minimized.append(copy.deepcopy(res.module))  # the architecture (and kept inputs) before release
        return res

    res = squeeze_release(model, train, val, test=test, example_inputs=example, config=cfg, minimizer=capture,
                          progress=show)
    points = sr_points(res.dense_record, res.records, minimized, a.dense_epochs)
    if a.max_points and len(points) > a.max_points:  # evenly spaced, the last (smallest) always kept
        pick = sorted({round(i * (len(points) - 1) / (a.max_points - 1)) for i in range(a.max_points)}) \
            if a.max_points > 1 else [len(points) - 1]
        points = [points[i] for i in pick]
    sr_wall = time.perf_counter() - t_start

    # one tick per baseline training (up to five per point)
    want = set(a.methods)
    prog = tqdm(total=len(points) * len(want), desc=f"seed {seed} baselines", unit="run",
                dynamic_ncols=True, disable=not show)
    vectors = cfg.prune.criterion == "coupled"
    dense_n = deployable_params(dense)
    for pt in points:
        k, E, P = pt["cycle"], pt["epochs"], pt["params"]
        ft = replace(tspec, epochs=E - a.dense_epochs)  # the baselines that start from the dense model
        scratch = replace(tspec, epochs=E)
        teach = {"teacher": dense}

        # (a) single pass
        if "single_pass" in want:
            small, amount = single_pass(dense, cfg, example, P, a.search_iters)
            masks = nonzero_masks(small, vectors=vectors)
            train_phase(small, train, ft, show, f"c{k} (a)", seed=seed, tag=f"bl/c{k}/single", masks=masks, **teach)
            pt["single_pass"] = {"params": deployable_params(small), "nonzero": nonzero_count(small), "epochs": E,
                                 "amount": amount, **accuracies(small, val, test)}
            prog.update()

        # (b) the cycle's architecture, kept inputs included, from scratch
        if "arch_scratch" in want:
            arch = copy.deepcopy(pt["module"])
            torch.manual_seed(seed)
            reinitialize(arch, spec.build(data, 1.0), seed=seed * 1_000_003 + k)
            train_phase(arch, train, scratch, show, f"c{k} (b)", seed=seed, tag=f"bl/c{k}/arch", **teach)
            pt["arch_scratch"] = {"params": deployable_params(arch), "nonzero": nonzero_count(arch), "epochs": E,
                                  **accuracies(arch, val, test)}
            prog.update()

        # (c) uniform width, same count, from scratch
        if "uniform" in want:
            s, _ = uniform_scale(spec, data, P)
            torch.manual_seed(seed * 1_000_003 + k)
            uni = spec.build(data, s)
            train_phase(uni, train, scratch, show, f"c{k} (c)", seed=seed, tag=f"bl/c{k}/uniform", **teach)
            pt["uniform"] = {"params": deployable_params(uni), "nonzero": nonzero_count(uni), "epochs": E, "scale": s,
                             **accuracies(uni, val, test)}
            prog.update()

        # (d) Torch-Pruning, iterative, fine-tuned after each step
        if "torch_pruning" in want:
            ratio, _ = tp_ratio(dense, spec, example, P, a.tp_steps, a.search_iters)
            tpm = copy.deepcopy(dense)
            per = replace(tspec, epochs=(E - a.dense_epochs) / a.tp_steps)
            tp_prune(tpm, spec, example, ratio, a.tp_steps, lambda i: train_phase(
                tpm, train, per, show, f"c{k} (d) step {i + 1}", seed=seed, tag=f"bl/c{k}/tp{i}", **teach))
            pt["torch_pruning"] = {"params": deployable_params(tpm), "nonzero": nonzero_count(tpm), "epochs": E,
                                   "ratio": ratio, **accuracies(tpm, val, test)}
            prog.update()

        # (e) unstructured global magnitude to the same non-zero count
        if "magnitude" in want:
            mag = copy.deepcopy(dense)
            mmasks = full_masks(mag)
            fixed = deployable_params(mag) - sum(int(m.numel()) for m in mmasks.values())  # biases, buffers
            keep_total = max(P - fixed, len(mmasks))
            per = replace(tspec, epochs=(E - a.dense_epochs) / a.mag_steps)
            for i, keep in enumerate(magnitude_schedule(sum(int(m.sum()) for m in mmasks.values()), keep_total, a.mag_steps)):
                alive = sum(int(m.sum()) for m in mmasks.values())
                if keep < alive:  # +0.5: prune_step floors amount * alive, so exactly alive - keep go
                    mmasks = prune_step(mag, mmasks, PruneSpec((alive - keep + 0.5) / alive, "magnitude", "global"))
                train_phase(mag, train, per, show, f"c{k} (e) step {i + 1}", seed=seed, tag=f"bl/c{k}/mag{i}",
                            masks=mmasks, **teach)
            apply_masks(mag, mmasks)
            pt["magnitude"] = {"params": dense_n, "nonzero": nonzero_count(mag), "epochs": E,
                               **accuracies(mag, val, test)}
            prog.update()
        del pt["module"]
    prog.close()
    return {"seed": seed, "dense": {"params": dense_n, "epochs": a.dense_epochs, **dense_acc},
            "cycle_records": res.records, "stopped": res.stopped, "points": points,
            "sr_wall_s": sr_wall, "wall_s": time.perf_counter() - t_start}


# --- aggregation, table, plot ------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per point index (the i-th size of each seed's run) and method: statistics over seeds."""
    n_points = max(len(r["points"]) for r in runs)
    methods = methods_in(runs)
    rows = []
    for i in range(n_points):
        have = [r["points"][i] for r in runs if len(r["points"]) > i]
        row: dict[str, Any] = {"index": i, "cycles": [p["cycle"] for p in have], "epochs": _stats([p["epochs"] for p in have])}
        for m in methods:
            row[m] = {key: _stats([float(p[m][key]) for p in have]) for key in ("params", "nonzero", "test_acc", "val_acc")}
        rows.append(row)
    dense = {key: _stats([float(r["dense"][key]) for r in runs]) for key in ("params", "test_acc", "val_acc")}
    return {"dense": dense, "points": rows, "methods": methods}


def methods_in(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The methods every point of every run measured (`--methods` may leave baselines out)."""
    return [m for m in METHODS if all(m in p for r in runs for p in r["points"])]


def _k(n: float) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:.0f}"


def table(agg: dict[str, Any]) -> str:
    """Markdown: one row per point, test accuracy mean +- std over seeds (params of each method below)."""
    d = agg["dense"]
    n = d["test_acc"]["n"]
    head = (f"Dense: {d['params']['mean']:,.0f} params, test {100 * d['test_acc']['mean']:.2f}%"
            + (f" +- {100 * d['test_acc']['std']:.2f}" if n > 1 else "") + f" ({n} seed{'s' if n > 1 else ''}).\n\n")
    cols = ["point", "SR params (x)", "epochs"] + [SHORT[m] for m in agg["methods"]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in agg["points"]:
        p = r["sr"]["params"]["mean"]
        cells = [f"{r['index'] + 1} (cycle {'/'.join(map(str, r['cycles']))})",
                 f"{p:,.0f} ({d['params']['mean'] / p:.1f}x)", f"{r['epochs']['mean']:.1f}"]
        for m in agg["methods"]:
            acc = r[m]["test_acc"]
            size = r[m]["nonzero" if m == "magnitude" else "params"]["mean"]
            cells.append(f"{100 * acc['mean']:.2f}" + (f" +- {100 * acc['std']:.2f}" if acc["n"] > 1 else "")
                         + f" ({_k(size)}{' nz' if m == 'magnitude' else ''})")
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def plot(agg: dict[str, Any], path: str | Path, title: str, runs: Sequence[dict[str, Any]] = ()) -> None:
    """The figure: per method the mean over seeds with min/max bars, and with ``runs`` every seed's own
    point as a faint cross (seeds stop at different sizes, so the mean of a point index mixes sizes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2))
    styles = {"sr": ("-o", 2.2), "magnitude": ("--s", 1.0)}
    for m in agg["methods"]:
        key = "nonzero" if m == "magnitude" else "params"
        xs = [r[m][key]["mean"] for r in agg["points"]]
        ys = [100 * r[m]["test_acc"]["mean"] for r in agg["points"]]
        yerr = [[100 * (r[m]["test_acc"]["mean"] - r[m]["test_acc"]["min"]) for r in agg["points"]],
                [100 * (r[m]["test_acc"]["max"] - r[m]["test_acc"]["mean"]) for r in agg["points"]]]
        xerr = [[r[m][key]["mean"] - r[m][key]["min"] for r in agg["points"]],
                [r[m][key]["max"] - r[m][key]["mean"] for r in agg["points"]]]
        fmt, lw = styles.get(m, ("-o", 1.2))
        h = ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, fmt=fmt, lw=lw, ms=4, capsize=3, label=LABELS[m])
        own = [(p[m][key], 100 * p[m]["test_acc"]) for r in runs for p in r["points"]]
        if own:
            ax.scatter(*zip(*own), marker="x", s=18, alpha=0.45, color=h[0].get_color())
    d = agg["dense"]
    # the dense model as a point too: it anchors the log axis, and it is where (e) is deployed
    ax.plot([d["params"]["mean"]], [100 * d["test_acc"]["mean"]], "k*", ms=12,
            label=f"dense ({d['params']['mean']:,.0f} params; (e)'s deployable size)")
    ax.axhline(100 * d["test_acc"]["mean"], color="black", lw=0.6)
    ax.axhline(100 * d["test_acc"]["mean"] - 1.0, color="black", lw=0.8, ls=":", label="dense - 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("deployable parameters (log)")
    ax.set_ylabel("test accuracy (%)")
    n = d["test_acc"]["n"]
    seeds = ", crosses: each seed" if runs else ""
    ax.set_title(f"{title}\nmean over {n} seed{'s' if n > 1 else ''}, bars min/max{seeds}; equal epochs per point")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_save_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# --- command line ------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    ap.add_argument("--model", choices=sorted(MODELS), default="lenet-300-100")
    ap.add_argument("--width", type=float, default=1.0,
                    help="scale every width of the model (ConvNeXt 32-64-128-256 at 1.0; LeNet 300-100)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="CycleConfig.preset of the cycle: its criterion and loss (distillation, group lasso); "
                         "default unit for LeNet, coupled for ConvNeXt. The budget flags below override it")
    ap.add_argument("--criterion", choices=("magnitude", "unit", "coupled"), default=None,
                    help="the cycle's (and (a)'s) pruning criterion (default: the preset's)")
    ap.add_argument("--scope", choices=("global", "layer"), default=None)
    b = ap.add_argument_group("budget (epochs)")
    b.add_argument("--dense-epochs", type=float, default=8)
    b.add_argument("--prune-epochs", type=float, default=0.5, help="fine-tuning after each pruning step")
    b.add_argument("--release-epochs", type=float, default=1.0)
    b.add_argument("--prune-amount", type=float, default=0.2)
    b.add_argument("--max-prune-steps", type=int, default=6, help="per cycle")
    b.add_argument("--max-cycles", type=int, default=5)
    b.add_argument("--backoff", type=int, default=1)
    b.add_argument("--max-drop", type=float, default=1.0, help="validation points a pruning step may lose")
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="learning rate of every phase, dense training and the baselines included (default: "
                        "the preset's, constant)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other CycleConfig flat setting of the cycle, e.g. distill=0.5, group_lasso=0, "
                        "release=false (the baselines take the cycle's loss: its distillation, no lasso)")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--baseline-distill", type=float, default=None,
                   help="distillation weight of every baseline (default: the cycle's)")
    b.add_argument("--methods", nargs="+", choices=METHODS[1:], default=list(METHODS[1:]), metavar="METHOD",
                   help=f"the baselines to train (default all: {', '.join(METHODS[1:])})")
    b.add_argument("--tp-steps", type=int, default=4, help="Torch-Pruning iterative steps")
    b.add_argument("--mag-steps", type=int, default=4, help="magnitude pruning steps")
    b.add_argument("--max-points", type=int, default=0, help="baselines at this many evenly spaced sizes (0: all)")
    b.add_argument("--search-iters", type=int, default=12, help="bisection steps of the size searches")
    o = ap.add_argument_group("output")
    o.add_argument("--out", required=True, help="folder for results.json and table.md")
    o.add_argument("--png", default=None, help="figure path (default OUT/baselines_<model>_<dataset>.png)")
    o.add_argument("--json", action="store_true", help="print results.json to stdout")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="train nothing: aggregate the runs of earlier OUT folders (one seed each, say, so that a "
                        "long measurement keeps what finished) into --out and --png")
    return ap


def merge(a: argparse.Namespace) -> dict[str, Any]:
    """``--merge``: the runs of earlier results.json files, aggregated, tabled and plotted as one."""
    parts = []
    for folder in a.merge:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise SrIrError(f"--merge: {path} does not exist")
        parts.append(json.loads(path.read_text()))
    kinds = {(p["model"], p["dataset"]) for p in parts}
    if len(kinds) > 1:
        raise SrIrError(f"--merge: the folders hold different models or datasets: {sorted(kinds)}")
    seeds = [r["seed"] for p in parts for r in p["runs"]]
    if len(set(seeds)) < len(seeds):
        raise SrIrError(f"--merge: a seed appears twice ({sorted(seeds)})")
    model, dataset = parts[0]["model"], parts[0]["dataset"]
    runs = [r for p in parts for r in p["runs"]]
    agg = aggregate(runs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    png = Path(a.png) if a.png else out / f"baselines_{model}_{dataset}.png"
    result = {"model": model, "dataset": dataset, "commands": [p["command"] for p in parts],
              "merged": [str(f) for f in a.merge], "cycle_config": parts[0]["cycle_config"],
              "baseline_train": parts[0]["baseline_train"], "runs": runs, "aggregate": agg,
              "wall_s": sum(p["wall_s"] for p in parts), "png": str(png)}
    md = table(agg)
    atomic_write(out / "results.json", json.dumps(result, indent=1, default=float))
    atomic_write(out / "table.md", md)
    plot(agg, png, f"{model} on {dataset}: Squeeze-Release vs baselines ({len(runs)} seeds)", runs)
    print(md)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {png}")
    return result


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    a = parser().parse_args(argv)
    if a.merge:
        return merge(a)
    if a.dense_epochs <= 0:
        raise SrIrError("--dense-epochs must be > 0: the baselines that start from the dense model need it")
    torch.set_num_threads(a.threads)
    base = MODELS[a.model]
    if not 0 < a.width <= 1:
        raise SrIrError(f"--width must be in (0, 1], got {a.width}")
    # every width of the model times --width: "dense" is then the narrowed model, and (c) scales from it
    spec = replace(base, build=lambda d, s: base.build(d, a.width * s))
    data = load_dataset(a.dataset)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    png = Path(a.png) if a.png else out / f"baselines_{a.model}_{a.dataset}.png"
    t0 = time.perf_counter()
    seeds_bar = tqdm(a.seeds, desc="seeds", unit="seed", total=len(a.seeds), dynamic_ncols=True,
                     disable=a.no_progress)
    runs = [run_seed(spec, data, a, s, not a.no_progress) for s in seeds_bar]
    seeds_bar.close()
    if not any(r["points"] for r in runs):
        raise SrIrError("no cycle of any seed removed a unit: there is no size to compare at "
                        "(train longer, or allow a larger --max-drop)")
    agg = aggregate(runs)
    command = "benchmarks/baselines.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"model": a.model, "dataset": a.dataset, "command": command, "args": vars(a),
              "cycle_config": cycle_config(a, spec, a.seeds[0]).to_dict(),
              "baseline_train": baseline_train(cycle_config(a, spec, a.seeds[0]), a).__dict__,
              "runs": runs, "aggregate": agg, "wall_s": time.perf_counter() - t0, "png": str(png)}
    md = table(agg)
    atomic_write(out / "results.json", json.dumps(result, indent=1, default=float))
    atomic_write(out / "table.md", md)
    plot(agg, png, f"{a.model} on {a.dataset}: Squeeze-Release vs baselines", runs)
    if a.json:
        print(json.dumps(result, indent=1, default=float))
    else:
        print(md)
        print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {png} ({result['wall_s']:.0f} s)")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(argv)
    except SrIrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
