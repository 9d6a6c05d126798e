"""One PNG comparing runs of benchmarks/squeeze_release_*.py (e.g. with and without release).

    .venv/bin/python benchmarks/squeeze_release_plot.py benchmarks/out/lenet-unit \\
        --with "no release=benchmarks/out/lenet-unit-norelease" --png benchmarks/figures/lenet-unit.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sr_ir.cycle.report import plot_cycles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="folder with summary.json (the main run)")
    ap.add_argument("--with", dest="extra", action="append", default=[], help="LABEL=FOLDER of another run")
    ap.add_argument("--png", required=True)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    main_run = json.loads((Path(a.run) / "summary.json").read_text())
    extra = {}
    for item in a.extra:
        label, _, folder = item.partition("=")
        extra[label] = json.loads((Path(folder) / "summary.json").read_text())["cycles"]
    plot_cycles(a.png, main_run["dense"], main_run["cycles"], baseline=main_run["single_pass"], extra=extra,
                title=a.title or Path(a.run).name)
    print(a.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
