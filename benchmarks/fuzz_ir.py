"""Fuzz the IR front door: mutate the seed programs of sr_ir.testing.ir_mutation `--n` times (seeded)
and send every mutant through the library (parse + check, then emit + run what is accepted) and
through the CLI (`sr-ir emit FILE --print`, in process, stderr captured). Prints the counts:

    accepted                 the checker accepted the mutant, and it ran as declared
    accepted_too_large_to_run  accepted, with a tensor of more than 256 MiB at batch 2: not run
    rejected_located         a ParseError/TypeCheckError with file:line:col (the expected failure)
    rejected_unlocated       a project error without a location, or spanning several lines
    uncaught                 any other exception out of sr_ir.parse
    cli_tracebacks           the CLI raised, or printed a traceback or an error of more than one line
    accepted_failed_run      accepted, then failed to emit or to run as declared

Every count but the first two must be 0. `--show K` lists the first K failures of each kind.

    .venv/bin/python benchmarks/fuzz_ir.py --n 10000 --seed 0
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import torch

import sr_ir
from sr_ir.cli.main import main as cli_main
from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.testing.ir_mutation import SEED_TEXTS, mutate, random_weights, run_as_declared

FAILURES = ("rejected_unlocated", "uncaught", "cli_tracebacks", "accepted_failed_run")


def _library(text: str, filename: str) -> tuple[str, str, sr_ir.Program | None]:
    """(outcome, detail, program) of parsing and checking one mutant, then running it if accepted."""
    try:
        program = sr_ir.parse(text, filename)
    except (ParseError, TypeCheckError) as e:
        located = e.loc is not None and e.loc.file == filename and e.loc.line >= 1 and e.loc.col >= 1
        one_line = "\n" not in str(e)
        return ("rejected_located" if located and one_line else "rejected_unlocated"), str(e), None
    except Exception as e:  # noqa: BLE001 - counting what escapes is the point
        return "uncaught", _short(e), None
    try:
        ran = run_as_declared(program)
    except Exception as e:  # noqa: BLE001
        return "accepted_failed_run", _short(e), program
    return ("accepted" if ran else "accepted_too_large_to_run"), "", program


def _cli(text: str, program: sr_ir.Program | None, workdir: Path) -> str | None:
    """None when `sr-ir emit FILE --print` ends cleanly (0, or 1 with a one-line error); otherwise
    what went wrong."""
    path = workdir / "fuzz.sr"
    path.write_text(text, encoding="utf-8")
    weights = path.with_suffix(".safetensors")
    weights.unlink(missing_ok=True)
    if program is not None and program.params:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in random_weights(program).items()}, str(weights))
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = cli_main(["emit", str(path), "--print"])
    except BaseException as e:  # noqa: BLE001 - SystemExit from argparse included
        return f"raised {_short(e)}"
    msg = err.getvalue()
    if "Traceback" in msg or msg.count("\n") > 1 or (rc != 0 and not msg.startswith("sr-ir emit: error: ")):
        return f"rc={rc}: {msg.strip()[:300]}"
    if (rc == 0) != (program is not None):
        return f"rc={rc} but the library {'accepted' if program is not None else 'rejected'} it: {msg.strip()[:200]}"
    return None


def _short(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}{where}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="mutants in all (spread over the seed programs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=5, help="failures listed per kind")
    ap.add_argument("--no-cli", action="store_true", help="library only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny programs: threads only add overhead
    rng = random.Random(args.seed)
    seeds = list(SEED_TEXTS.values())
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {k: [] for k in FAILURES}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            text = mutate(seeds[i % len(seeds)], rng)
            outcome, detail, program = _library(text, "fuzz.sr")
            counts[outcome] += 1
            if outcome in FAILURES and len(examples[outcome]) < args.show:
                examples[outcome].append(f"#{i}: {detail}\n{text}")
            # (the CLI cannot be given weights for a program too large to run; one that failed counts once)
            if args.no_cli or outcome in ("accepted_too_large_to_run", "accepted_failed_run"):
                continue
            bad = _cli(text, program, Path(tmp))
            if bad is not None:
                counts["cli_tracebacks"] += 1
                if len(examples["cli_tracebacks"]) < args.show:
                    examples["cli_tracebacks"].append(f"#{i}: {bad}\n{text}")
    wall = time.perf_counter() - start
    report = {"n": args.n, "seed": args.seed, "wall_s": round(wall, 1),
              **{k: counts[k] for k in ("accepted", "accepted_too_large_to_run", "rejected_located", *FAILURES)}}
    if args.json:
        print(json.dumps({**report, "examples": examples}, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:>26}: {v}")
        for k in FAILURES:
            for ex in examples[k]:
                print(f"\n--- {k} {ex}")
    return 1 if any(counts[k] for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
