"""`sr-ir` entry point: dispatches to subcommand modules; reports SrIrError as one line, exit non-zero."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import SrIrError

# Subcommands in the order `--help` lists them. Each module defines `register(subparsers)`, which adds
# its parser and sets `func(args) -> int`; a module is imported only when its command is registered.
COMMANDS = ["demo", "lower", "show", "emit", "prove", "minimize", "squeeze_release"]


def _command(name: str):
    if name == "demo":
        from . import demo as m
    elif name == "lower":
        from . import lower as m
    elif name == "show":
        from . import show as m
    elif name == "emit":
        from . import emit as m
    elif name == "prove":
        from . import prove as m
    elif name == "minimize":
        from . import minimize as m
    elif name == "squeeze_release":
        from . import squeeze_release as m
    else:
        raise KeyError(name)
    return m


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-ir",
        description="Exact structural minimization of pruned neural networks through a proved rewrite IR.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        _command(name).register(sub)
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
