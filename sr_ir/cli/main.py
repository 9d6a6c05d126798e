"""`sr-ir` entry point: dispatches to subcommand modules; reports SrIrError as one line, exit non-zero."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ..errors import SrIrError

# Subcommand modules in sr_ir/cli/, in the order `--help` lists them. Each defines
# `register(subparsers)` which adds its parser and sets `func(args) -> int`.
COMMANDS = ["demo", "lower", "show", "emit", "prove", "minimize", "squeeze_release"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-ir",
        description="Exact structural minimization of pruned neural networks through a proved rewrite IR.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sr-ir prove` (notably `--check`, run by CI and before minimizing) must start fast: register
    # only its own parser instead of importing every command (and torch with them)
    parser = build_parser("prove" if argv[:1] == ["prove"] else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SrIrError as e:
        print(f"sr-ir {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        print("sr-ir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
