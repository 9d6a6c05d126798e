"""Fuzz the rule loader: mutate the bundled rule files `--n` times (seeded; sr_ir.testing.rule_mutation)
and send every mutant, as the one file of a rule directory beside the other bundled files, through the
library (load_rules, then what uses the rules later: certificate checks, the prover's front, the rule
compiler, type-checking and emitting the rule-case programs that use a changed op) and through the CLI
(`sr-ir prove --check --rules DIR`, in process, stderr captured). Prints the counts:

    accepted                 the loader accepted the mutant, and every later use survived it
    rejected_located         a ParseError/TypeCheckError with file:line:col, one line (the expected failure)
    rejected_unlocated       a project error without a location, or spanning several lines
    uncaught                 any other exception out of load_rules
    cli_tracebacks           the CLI raised, printed a traceback, an internal error or more than one line
    accepted_crashed         accepted, then a later use raised something other than a project error
    accepted_slow            accepted, and exercising it ran past its deadline (20 s; `sr-ir prove` bounds a
                             rule's proof the same way): not a failure, listed with --show

Every count but the first three must be 0. `--show K` lists the first K failures of each kind.

    .venv/bin/python benchmarks/fuzz_rules.py --n 10000 --seed 0
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
from collections import Counter
from pathlib import Path

from sr_ir.cli.main import main as cli_main
from sr_ir.testing.rule_mutation import (FAILURES, RuleFuzz, bundled_rules_at, case_programs, describe, mutate,
                                         rule_files)

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("accepted", "rejected_located", "accepted_slow", *FAILURES[:2], "cli_tracebacks", *FAILURES[2:])
FAILED = KINDS[3:]


def _cli(fuzz: RuleFuzz, path: Path, accepted: bool) -> str | None:
    """None when `sr-ir prove --check --rules DIR` ends as it should: 0 or 1 (certificates) for an
    accepted mutant, 3 with one line `sr-ir prove: error: file:line:col: ...` for a rejected one."""
    base, user = fuzz.dirs(path)
    err, out = io.StringIO(), io.StringIO()
    try:
        with bundled_rules_at(base), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = cli_main(["prove", "--check", "--rules", str(user)])
    except BaseException as e:  # noqa: BLE001 - SystemExit from argparse included
        return f"raised {describe(e)}"
    msg = err.getvalue()
    if "Traceback" in msg or "internal error" in msg or msg.count("\n") > 1:
        return f"rc={rc}: {msg.strip()[:300]}"
    if accepted and rc not in (0, 1):
        return f"rc={rc} for a mutant the library accepted: {msg.strip()[:200]}"
    if not accepted and (rc != 3 or not msg.startswith("sr-ir prove: error: ")):
        return f"rc={rc} for a mutant the library rejected: {msg.strip()[:200]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="mutants in all (spread over the rule files)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=5, help="failures listed per kind")
    ap.add_argument("--no-cli", action="store_true", help="library only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # tiny programs: threads only add overhead
    rng = random.Random(args.seed)
    files = rule_files()
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {k: [] for k in KINDS[2:]}  # accepted_slow too
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fuzz = RuleFuzz(Path(tmp), programs=case_programs(ROOT / "tests" / "rulecases"))
        for i in range(args.n):
            if i and i % 1000 == 0:  # a long run shows it is alive (stderr: the report stays on stdout)
                print(f"{i} mutants, {time.perf_counter() - start:.0f} s: {dict(counts)}", file=sys.stderr, flush=True)
            path = files[i % len(files)]
            text = mutate(fuzz.original(path), rng)
            outcome = fuzz.run(path, text)
            counts[outcome.kind] += 1
            label = f"#{i} {path.relative_to(ROOT)}"
            if outcome.kind in examples and len(examples[outcome.kind]) < args.show:
                examples[outcome.kind].append(f"{label}: {outcome.detail}\n{_diff(fuzz.original(path), text)}")
            if args.no_cli:
                continue
            bad = _cli(fuzz, path, outcome.kind.startswith("accepted"))
            if bad is not None:
                counts["cli_tracebacks"] += 1
                if len(examples["cli_tracebacks"]) < args.show:
                    examples["cli_tracebacks"].append(f"{label}: {bad}\n{_diff(fuzz.original(path), text)}")
    wall = time.perf_counter() - start
    report = {"n": args.n, "seed": args.seed, "wall_s": round(wall, 1), **{k: counts[k] for k in KINDS}}
    if args.json:
        print(json.dumps({**report, "examples": examples}, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:>20}: {v}")
        for k, exs in examples.items():
            for ex in exs:
                print(f"\n--- {k} {ex}")
    return 1 if any(counts[k] for k in FAILED) else 0


def _diff(before: str, after: str) -> str:
    """The mutant's changed lines (a mutant is one file with a few edits)."""
    import difflib

    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return "\n".join(list(lines)[2:12])


if __name__ == "__main__":
    sys.exit(main())
