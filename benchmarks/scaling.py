"""Scale: time and peak memory of `sr_ir.minimize` from 1M to 1B parameters, with and without verification.

Two families, float32, each with planted removable structure:
  - mlp: 8 square ReLU layers of width `w` (params ~ 8 w^2, each weight 1/8 of the model); in every
    hidden layer 10% of the units are constants (zero weight row, bias 0.5: folded into the next layer)
    and 5% are unread (zero column of the next layer);
  - convnext: sr_ir.models.convnext.ConvNeXt, depths (3, 3, 9, 3) and 1000 classes, widths scaled to the
    size, input 1x3x32x32; in every block 25% of the MLP units are constants (zero pwconv1 row, bias 0.3).
Each point runs in a fresh subprocess (`--point`): it builds the model, runs it once, resets the kernel's
peak-RSS mark (/proc/self/clear_refs), calls `minimize` and reports the peak RSS above the RSS before the
call (VmHWM - VmRSS), divided by the model's bytes, and the wall/CPU time of the call (after one warm-up
`minimize` of a tiny model of the family: rule set and torch.export start-up are not counted). "beyond
fixed" is the CPU time minus the smallest point's of the same family and mode, per 100M parameters (CPU,
not wall: the machine is shared).

    .venv/bin/python benchmarks/scaling.py                       # 1M .. 100M, both families, both modes
    nice -n 10 .venv/bin/python benchmarks/scaling.py --sizes 1000 --families mlp   # the 1B point
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def build(family: str, millions: float):
    """(model, example inputs) of about `millions` M float32 parameters with planted removable units."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    if family == "mlp":
        depth = 8
        w = int(round(math.sqrt(millions * 1e6 / depth) / 8) * 8)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(w, w), nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
        with torch.no_grad():
            lin = [m for m in model if isinstance(m, nn.Linear)]
            for a, b in zip(lin, lin[1:]):
                dead = torch.randperm(w, generator=g)[: w // 10]
                a.weight[dead] = 0
                a.bias[dead] = 0.5
                unread = torch.randperm(w, generator=g)[: w // 20]
                b.weight[:, unread] = 0
        x = torch.randn(4, w, generator=g)
    elif family == "convnext":
        from sr_ir.models.convnext import ConvNeXt

        # parameters ~ 28.6M * (width / 96)^2 for ConvNeXt-Tiny's depths
        base = 96 * math.sqrt(millions / 28.6)
        d0 = max(8, int(round(base / 8) * 8))
        model = ConvNeXt(3, 1000, (3, 3, 9, 3), (d0, 2 * d0, 4 * d0, 8 * d0), layer_scale_init=0.5)
        with torch.no_grad():
            for m in model.modules():
                if type(m).__name__ == "Block":
                    hidden = m.pwconv1.weight.shape[0]
                    dead = torch.randperm(hidden, generator=g)[: hidden // 4]
                    m.pwconv1.weight[dead] = 0
                    m.pwconv1.bias[dead] = 0.3
        x = torch.randn(1, 3, 32, 32, generator=g)
    else:
        raise SystemExit(f"unknown family {family!r}")
    return model.eval(), (x,)


def point(family: str, millions: float, verify: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    import sr_ir

    model, x = build(family, millions)
    n = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        model(*x)
    # warm the rule set and torch.export once on a tiny model of the same family: the fixed start-up
    # cost is not what this table is about
    small, xs = build(family, 0.05)
    sr_ir.minimize(small, xs, verify=verify)
    del small
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    rss0 = _kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    r = sr_ir.minimize(model, x, verify=verify)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _kb("VmHWM")
    return {"family": family, "params": n, "model_bytes": model_bytes, "verify": verify, "wall_s": wall,
            "cpu_s": cpu, "peak_growth_bytes": (peak - rss0) * 1024, "peak_per_model_byte": (peak - rss0) * 1024 / model_bytes,
            "params_after": r.program.param_count(), "verification": r.report.verification,
            "seconds": {k: round(v, 3) for k, v in r.report.seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["mlp", "convnext"])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1, 10, 100], help="millions of parameters")
    ap.add_argument("--modes", nargs="+", default=["verify", "noverify"])
    ap.add_argument("--point", nargs=3, metavar=("FAMILY", "MILLIONS", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="append each point's record to this file (JSON lines)")
    ap.add_argument("--fixed-mmap-threshold", action="store_true",
                    help="run the points with glibc's mmap threshold fixed at its 128 KiB default "
                         "(MALLOC_MMAP_THRESHOLD_): freed tensors go back to the kernel instead of staying in "
                         "the heap, so the peak is what is live rather than what the allocator kept")
    args = ap.parse_args()
    if args.point:
        fam, mil, mode = args.point
        print(json.dumps(point(fam, float(mil), mode == "verify")))
        return
    rows = []
    for fam in args.families:
        for size in args.sizes:
            for mode in args.modes:
                env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
                if args.fixed_mmap_threshold:
                    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
                out = subprocess.run([sys.executable, __file__, "--point", fam, str(size), mode], capture_output=True,
                                     text=True, env=env, cwd=ROOT)
                if out.returncode:
                    print(f"{fam} {size}M {mode}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(rec)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                print(f"{fam:9s} {rec['params']:>13,} {mode:9s} wall {rec['wall_s']:7.2f} s  cpu {rec['cpu_s']:7.2f} s  "
                      f"peak +{rec['peak_growth_bytes'] / 2**20:8.1f} MiB = {rec['peak_per_model_byte']:.2f}x model", flush=True)
    print()
    print("| family | params | verify | wall s | CPU s | beyond fixed, CPU s per 100M | peak RSS growth / model bytes | after |")
    print("|---|---|---|---|---|---|---|---|")
    for rec in rows:
        same = [r for r in rows if r["family"] == rec["family"] and r["verify"] == rec["verify"]]
        first = min(same, key=lambda r: r["params"])
        extra = (rec["cpu_s"] - first["cpu_s"]) / ((rec["params"] - first["params"]) / 1e8) if rec is not first else float("nan")
        print(f"| {rec['family']} | {rec['params']:,} | {'yes' if rec['verify'] else 'no'} | {rec['wall_s']:.2f} | "
              f"{rec['cpu_s']:.2f} | {'-' if extra != extra else f'{extra:.2f}'} | {rec['peak_per_model_byte']:.2f}x | "
              f"{rec['params_after']:,} |")


if __name__ == "__main__":
    main()
