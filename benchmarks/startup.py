"""Start-up cost: `import sr_ir`, `sr-ir --help`, `sr-ir prove --check`, and `default_rules()` with and
without the parsed-rule cache. Each figure is the median wall time of `--repeat` fresh processes. Two
rows give the former behaviour under the same load: `--help` with every command's module imported, and
`prove --check` with the cache off.

    .venv/bin/python benchmarks/startup.py [--repeat 5] [--json] [--importtime]
    .venv/bin/python benchmarks/startup.py --wait-policy [--repeat 3] [--size 32]

The rule cache is exercised in a temporary folder (SR_IR_CACHE_DIR), so the user's own cache is neither
read nor changed: "miss" runs with SR_IR_NO_CACHE=1 (parse and check every rule file), "hit" after one
run has written the cache. `--importtime` also prints the ten slowest imports (cumulative, `python -X
importtime`) of `import sr_ir` and of the `prove --check` process.

`--wait-policy` instead times the library's own compute with torch's OpenMP threads spinning while they
wait (OMP_WAIT_POLICY unset, libgomp's default) and sleeping (PASSIVE, what the CLI sets): a warm
`minimize(verify=True)` of ConvNeXt-Tiny (benchmarks/minimize_convnext.py's planted model) on 2 threads,
in a fresh process per run, alone and beside a process that keeps one core busy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# default_rules() in a fresh process: the time of the import of the loader and of the call, apart
_RULES = ("import time; t0 = time.perf_counter(); from sr_ir.lang.loader import default_rules; "
          "t1 = time.perf_counter(); rs = default_rules(); t2 = time.perf_counter(); "
          "import json, sys; print(json.dumps({'import': t1 - t0, 'call': t2 - t1, "
          "'torch': 'torch' in sys.modules, 'rules': len(rs.rules)}))")


_FORMER_HELP = ("import contextlib, io\nfrom sr_ir.cli.main import build_parser\n"
                "with contextlib.redirect_stdout(io.StringIO()):\n    build_parser(every=True).print_help()")


def _cli() -> list[str]:
    """The installed console script when there is one beside this Python (what users run), else -m."""
    script = Path(sys.executable).with_name("sr-ir")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sr_ir.cli.main"]


def _wall(cmd: list[str], env: dict[str, str], repeat: int, ok=(0,)) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode not in ok:
            raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return out


def _rules(env: dict[str, str], repeat: int) -> dict[str, list[float]]:
    rows: dict[str, list] = {"import": [], "call": [], "total": [], "torch": []}
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-c", _RULES], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True)
        d = json.loads(p.stdout.strip().splitlines()[-1])
        rows["import"].append(d["import"])
        rows["call"].append(d["call"])
        rows["total"].append(d["import"] + d["call"])
        rows["torch"].append(d["torch"])
    return rows


def _importtime(cmd: list[str], env: dict[str, str], top: int = 10) -> list[tuple[float, str]]:
    p = subprocess.run(cmd, cwd=ROOT, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    rows = []
    for ln in p.stderr.splitlines():
        if ln.startswith("import time:") and "|" in ln:
            _, cum, name = ln[len("import time:"):].split("|")
            if cum.strip().isdigit():
                rows.append((int(cum) / 1e6, name.rstrip()))
    return sorted(rows, reverse=True)[:top]


_WAIT = """
import json, sys, time
sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(2)
from minimize_convnext import build
from sr_ir.minimization import minimize
model, _ = build(0, 0.4, 0.1, 0.9)
x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
minimize(model, (x,), verify=True, n_random=1)  # the first call's start-up (torch.export) is not the point
c0, t0 = time.process_time(), time.perf_counter()
res = minimize(model, (x,), verify=True, n_random=1)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "phases": {k: round(v, 3) for k, v in res.report.seconds.items()}}))
"""


def wait_policy(repeat: int, size: int) -> dict[str, list[dict]]:
    """Runs of _WAIT per (load, policy), interleaved so that the other jobs of a shared machine weigh on
    every cell alike."""
    cells = [(load, policy) for load in ("alone", "beside a busy core") for policy in ("default", "PASSIVE")]
    out: dict[str, list[dict]] = {f"{load}, {policy}": [] for load, policy in cells}
    for _ in range(repeat):
        for load, policy in cells:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            burner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "alone" else None)
            try:
                p = subprocess.run([sys.executable, "-c", _WAIT.replace("SIZE", str(size))], cwd=ROOT, env=env,
                                   capture_output=True, text=True)
            finally:
                if burner is not None:
                    burner.kill()
                    burner.wait()
            if p.returncode != 0:
                raise SystemExit(f"wait-policy run failed: {p.stderr.strip()[-800:]}")
            out[f"{load}, {policy}"].append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--wait-policy", action="store_true", help="time minimize with and without spinning threads")
    ap.add_argument("--size", type=int, default=32, help="--wait-policy: input height/width (default 32)")
    args = ap.parse_args()
    n = args.repeat
    if args.wait_policy:
        runs = wait_policy(n, args.size)
        if args.json:
            print(json.dumps(runs, indent=1))
            return
        print(f"warm minimize(verify=True), ConvNeXt-Tiny 2x3x{args.size}x{args.size}, 2 threads; median of {n} "
              f"fresh processes; load average {os.getloadavg()[0]:.2f} at the end")
        for k, rows in runs.items():
            wall = [r["wall"] for r in rows]
            cpu = [r["cpu"] for r in rows]
            print(f"  {k:32} wall {statistics.median(wall):6.2f} s (min {min(wall):.2f}, max {max(wall):.2f})  "
                  f"CPU {statistics.median(cpu):6.2f} s")
        return
    with tempfile.TemporaryDirectory(prefix="sr-ir-startup-") as cache:
        env = {**os.environ, "SR_IR_CACHE_DIR": cache}
        env.pop("SR_IR_NO_CACHE", None)
        cold = {**env, "SR_IR_NO_CACHE": "1"}
        _wall(_cli() + ["prove", "--check"], env, 1, ok=(0, 1))  # writes the cache for the "hit" rows
        res = {
            "python -c pass": _wall([sys.executable, "-c", "pass"], env, n),
            "import sr_ir": _wall([sys.executable, "-c", "import sr_ir"], env, n),
            "sr-ir --help": _wall(_cli() + ["--help"], env, n),
            # what `sr-ir --help` did before the commands' modules were imported lazily, under today's load
            "--help importing every command (former)": _wall([sys.executable, "-c", _FORMER_HELP], env, n),
            "sr-ir prove --help": _wall(_cli() + ["prove", "--help"], env, n),
            "sr-ir prove --check (cache hit)": _wall(_cli() + ["prove", "--check"], env, n, ok=(0, 1)),
            "sr-ir prove --check (no cache)": _wall(_cli() + ["prove", "--check"], cold, n, ok=(0, 1)),
        }
        miss, hit = _rules(cold, n), _rules(env, n)
        for label, r in (("default_rules() miss", miss), ("default_rules() hit", hit)):
            res[f"{label}: import loader"] = r["import"]
            res[f"{label}: call"] = r["call"]
            res[f"{label}: import + call"] = r["total"]
        torch_loaded = {"miss": any(miss["torch"]), "hit": any(hit["torch"])}
        imports = ({"import sr_ir": _importtime([sys.executable, "-c", "import sr_ir"], env),
                    "sr-ir prove --check": _importtime(_cli() + ["prove", "--check"], env)}
                   if args.importtime else {})
    med = {k: statistics.median(v) for k, v in res.items()}
    if args.json:
        print(json.dumps({"median_s": med, "runs_s": res, "torch_imported_by_default_rules": torch_loaded,
                          "importtime": imports}, indent=1))
        return
    print(f"median of {n} fresh processes (wall s); load average {os.getloadavg()[0]:.2f} at the end")
    for k, v in med.items():
        print(f"  {k:42} {v:7.3f}   (min {min(res[k]):.3f}, max {max(res[k]):.3f})")
    print(f"  torch imported by default_rules(): {torch_loaded}")
    for what, rows in imports.items():
        print(f"slowest imports of `{what}` (cumulative s):")
        for s, name in rows:
            print(f"  {s:7.3f}  {name}")


if __name__ == "__main__":
    main()
