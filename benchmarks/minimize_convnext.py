"""ConvNeXt-Tiny at 90% random sparsity with planted dead channels: sr-ir minimize vs a state_dict clone
(the floor) vs Torch-Pruning removing the same channels (its DependencyGraph build + prune), with the
capture variants (sr-ir's fast trace, torch.export) as rows of their own. Warm and cold process CPU
time, the warm time as a ratio to Torch-Pruning's, wall time, peak memory, parameters, output error.

Every method runs in its own fresh processes (same seed, same model), twice per process on a freshly
built model each time: the second call is the warm figure. Peak memory is that method's own (max RSS
above the process's RSS after the models were built).

    .venv/bin/python benchmarks/minimize_convnext.py [--size 64] [--dead 0.4] [--unused 0.1] [--repeat 3]

Torch-Pruning is a benchmark-only dependency (`pip install torch-pruning`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import resource
import time
from typing import Any

import torch


def build(seed: int, dead: float, unused: float, sparsity: float) -> tuple[torch.nn.Module, dict[str, list[int]]]:
    """ConvNeXt-Tiny with random unstructured masks (torch.nn.utils.prune, then made permanent so every
    tool sees the same plain weights) and planted MLP units: `dead` of each block's hidden units get a
    zero pwconv1 row (constant gelu(bias), nonzero), `unused` get a zero pwconv2 column."""
    from torch.nn.utils import prune

    from sr_ir.models.convnext import convnext_tiny

    torch.manual_seed(seed)
    m = convnext_tiny().eval()
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            prune.random_unstructured(mod, "weight", sparsity)
            prune.remove(mod, "weight")
    g = torch.Generator().manual_seed(seed + 1)
    plan: dict[str, list[int]] = {}
    with torch.no_grad():
        for si, stage in enumerate(m.stages):
            for bi, blk in enumerate(stage):
                blk.gamma.normal_(0, 0.5, generator=g)  # a trained-looking layer scale (init 1e-6 hides errors)
                h = blk.pwconv1.out_features
                perm = torch.randperm(h, generator=g)
                d, u = perm[: int(dead * h)], perm[int(dead * h): int((dead + unused) * h)]
                blk.pwconv1.weight[d] = 0
                blk.pwconv1.bias[d] = torch.randn(len(d), generator=g)
                blk.pwconv2.weight[:, u] = 0
                plan[f"stages.{si}.{bi}"] = sorted(torch.cat([d, u]).tolist())
    return m, plan


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / a.double().abs().max())


def _timed(method: str, args: dict[str, Any], model: torch.nn.Module, plan: dict[str, list[int]],
           x: torch.Tensor) -> dict[str, Any]:
    """One call of `method` on `model`: CPU and wall seconds, and what the call produced."""
    out: dict[str, Any] = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    if method == "clone":
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["params"] = sum(v.numel() for v in sd.values() if v.is_floating_point())
        out["module"] = None
    elif method in ("sr-ir", "sr-ir (export)", "sr-ir-verify"):
        import sys

        from sr_ir.frontend.lower import lower
        from sr_ir.minimization import minimize

        lowering = sys.modules[lower.__module__]  # (the package re-exports the function under the same name)

        # "sr-ir (export)": today's minimize with torch.export as the capture (lower's default switched
        # for this process only), the figure before the fast capture
        lowering.lower.__kwdefaults__["capture"] = "export" if method == "sr-ir (export)" else "trace"
        verify = method == "sr-ir-verify"
        res = minimize(model, (x,), verify=verify, **({"n_random": 1} if verify else {}))
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["phases"] = {k: round(v, 3) for k, v in res.report.seconds.items()}
        out["params"] = sum(p.numel() for p in res.module.parameters())
        out["module"] = res.module
        out["removed_units"] = sum(g["removed"] for g in res.report.groups)
        if verify:
            out["verification"] = res.report.verification
    elif method == "torch.export":  # the floor of any torch.export front end
        from sr_ir.frontend.lower import export_model

        export_model(model, (x,))
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["params"] = sum(p.numel() for p in model.parameters())
        out["module"] = None
    elif method == "capture (trace)":  # sr-ir's fast capture alone (sr_ir/frontend/capture.py)
        from sr_ir.frontend.capture import capture

        assert capture(model.eval(), (x,), {}) is not None
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["params"] = sum(p.numel() for p in model.parameters())
        out["module"] = None
    elif method in ("lower (trace)", "lower (export)"):  # capture + lowering to the IR + its type check
        from sr_ir import lower

        prog = lower(model, (x,), capture=method[7:-1])
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["params"] = prog.param_count()
        out["module"] = None
    elif method == "sr-ir engine":  # `sr-ir minimize model.sr`: from the IR, rules loaded, no emission
        from sr_ir import lower
        from sr_ir.lang.loader import default_rules
        from sr_ir.minimization import minimize_program

        prog = lower(model, (x,))
        default_rules()
        c0, t0 = time.process_time(), time.perf_counter()
        small, _ = minimize_program(prog)
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["params"] = small.param_count()
        out["module"] = None
    elif method == "torch-pruning":
        import torch_pruning as tp

        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
        t_graph = time.perf_counter() - t0
        for name, idxs in plan.items():
            si, bi = name.split(".")[1:]
            blk = model.stages[int(si)][int(bi)]
            group = dg.get_pruning_group(blk.pwconv1, tp.prune_linear_out_channels, idxs=idxs)
            group.prune()
        out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        out["phases"] = {"dependency_graph": round(t_graph, 3)}
        out["params"] = sum(p.numel() for p in model.parameters())
        out["module"] = model
    else:
        raise SystemExit(f"minimize_convnext: unknown method {method!r}")
    return out


def _run(method: str, args: dict[str, Any], q: Any) -> None:
    """Two calls of `method` in this fresh process, each on a freshly built model: the first is the cold
    figure (first-call start-up of torch and sr-ir included, imports not), the second the warm one."""
    torch.set_num_threads(args["threads"])
    x = torch.randn(2, 3, args["size"], args["size"], generator=torch.Generator().manual_seed(7))
    models = [build(args["seed"], args["dead"], args["unused"], args["sparsity"]) for _ in range(2)]
    with torch.no_grad():
        y0 = models[0][0](x)
    base = _rss_mb()
    cold = _timed(method, args, *models[0], x)
    out = _timed(method, args, *models[1], x)
    out["method"] = method
    out["cold_cpu_seconds"] = cold["cpu_seconds"]
    module = out.pop("module")
    cold.pop("module")
    if module is not None:
        with torch.no_grad():
            out["rel_error"] = _rel(y0, module(x))
    else:
        out["rel_error"] = 0.0 if method == "clone" else float("nan")
    out["peak_mb"] = _rss_mb() - base
    q.put(out)


def measure(method: str, args: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run, args=(method, args, q))
    p.start()
    while True:  # a child that dies (a missing torch-pruning, say) must not leave us waiting forever
        try:
            out = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():
                raise SystemExit(f"minimize_convnext: the {method!r} run failed (exit {p.exitcode}); see above")
    p.join()
    return out


METHODS = ("clone", "torch-pruning", "sr-ir", "sr-ir (export)", "sr-ir-verify", "capture (trace)",
           "torch.export", "lower (trace)", "lower (export)", "sr-ir engine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="input height/width (default 64)")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--dead", type=float, default=0.4, help="fraction of MLP units with a zero pwconv1 row")
    ap.add_argument("--unused", type=float, default=0.1, help="fraction of MLP units with a zero pwconv2 column")
    ap.add_argument("--repeat", type=int, default=3, help="processes per method (the fastest warm call is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", choices=METHODS, help="methods to run (default: all; clone and "
                    "torch-pruning always run, the table's references)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    args = vars(a)
    methods = [m for m in METHODS if not a.only or m in a.only or m in ("clone", "torch-pruning")]
    rows = []
    for method in methods:
        runs = [measure(method, args) for _ in range(a.repeat if method != "sr-ir-verify" else 1)]
        best = min(runs, key=lambda r: r["cpu_seconds"])
        best["cold_cpu_seconds"] = min(r["cold_cpu_seconds"] for r in runs)
        best["peak_mb"] = max(r["peak_mb"] for r in runs)
        rows.append(best)
    floor = rows[0]["cpu_seconds"]
    tp_cpu = next(r["cpu_seconds"] for r in rows if r["method"] == "torch-pruning")
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"ConvNeXt-Tiny, {a.sparsity:.0%} random sparsity, planted dead {a.dead:.0%} / unused {a.unused:.0%} "
          f"of MLP units, input 2x3x{a.size}x{a.size}, {a.threads} threads, best of {a.repeat} processes")
    print("CPU s: process CPU time of the warm call (the second in its process, on a fresh model); "
          "x TP: that over Torch-Pruning's; cold: the first call's CPU s; wall s of the warm call")
    print(f"{'method':<16} {'CPU s':>7} {'x TP':>6} {'x clone':>8} {'cold':>7} {'wall s':>7} {'peak MB':>8} "
          f"{'params':>12} {'rel. error':>11}  phases (wall)")
    for r in rows:
        print(f"{r['method']:<16} {r['cpu_seconds']:>7.3f} {r['cpu_seconds'] / tp_cpu:>6.2f} "
              f"{r['cpu_seconds'] / floor:>8.1f} {r['cold_cpu_seconds']:>7.3f} {r['seconds']:>7.3f} "
              f"{r['peak_mb']:>8.1f} {r['params']:>12,} {r['rel_error']:>11.2e}  {r.get('phases', '')}")


if __name__ == "__main__":
    main()
