"""Time `sr-ir prove` on the bundled rule library: a cold run (every rule proved again, every op's
torch template checked again) and the certificate check the engine and CI use. The cold run rewrites
proofs/ and proofs/templates/ (new timings and dates in every certificate); the committed files are
put back afterwards. Run from the repository root:

    .venv/bin/python benchmarks/prove_library.py [--jobs 2] [--repeat 3]

Prints one JSON line per measurement and a summary; both figures include interpreter start-up
(they are what a user waits for).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sr_ir(*args: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sr_ir.cli.main", *args], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the --check timing")
    args = ap.parse_args()

    proofs = ROOT / "proofs"
    committed = {p: p.read_bytes() for p in proofs.rglob("*.json")}  # rule and template certificates
    try:
        wall, code, out = sr_ir("prove", "rules/", "--force", "--jobs", str(args.jobs), "--json")
    finally:
        for p in proofs.rglob("*.json"):
            if p not in committed:
                p.unlink()
        for p, data in committed.items():
            p.write_bytes(data)
    data = json.loads(out)
    results = data["results"]
    templates = data["templates"]
    tiers = Counter((r["status"], r.get("tier")) for r in results)
    slowest = sorted(results, key=lambda r: -r.get("seconds", 0))[:5]
    print(json.dumps({"measure": "cold prove rules/ --force", "jobs": args.jobs, "wall_s": round(wall, 2),
                      "exit": code, "rules": len(results),
                      "verdicts": {f"{s}/{t}": n for (s, t), n in sorted(tiers.items(), key=str)},
                      "templates": {"checked": len(templates["checked"]),
                                    "agree": sum(t["status"] == "proved" for t in templates["checked"]),
                                    "no_means": len(templates["no_means"])},
                      "slowest": {r["rule"]: r["seconds"] for r in slowest}}))
    checks = []
    for _ in range(args.repeat):
        w, c, _ = sr_ir("prove", "--check")
        checks.append(w)
    print(json.dumps({"measure": "prove --check", "wall_s": [round(x, 2) for x in checks], "exit": c}))
    print(f"cold prove: {wall:.1f} s for {len(results)} rules (jobs={args.jobs}); "
          f"--check: best {min(checks):.2f} s")


if __name__ == "__main__":
    main()
