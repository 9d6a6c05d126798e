"""`sr-ir` entry point: dispatches to subcommand modules; every way a command ends is one line on stderr
and one of the EXIT_* codes below (a bug included, unless --traceback asks for the traceback)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from typing import Sequence

from ..errors import SrIrError, VerificationError, describe

# Subcommands in the order `--help` lists them. Each module defines `register(subparsers)`, which adds
# its parser and sets `func(args) -> int`; a module is imported only when its command is registered.
COMMANDS = ["demo", "lower", "show", "emit", "prove", "minimize", "squeeze_release"]

EXIT_OK = 0
EXIT_ERROR = 1  # an SrIrError: a bad model, file, option value or rule; a file that cannot be read or written
EXIT_USAGE = 2  # the command line itself (argparse's code)
EXIT_VERIFICATION = 4  # the result differs from the original beyond rounding: nothing was written
EXIT_INTERNAL = 70  # a bug in sr-ir (EX_SOFTWARE of sysexits.h)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

EPILOG = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    error in the input: model, file, option value, rules (one line, file:line:col where known);
       also a file that cannot be read or written
  {EXIT_USAGE}    usage error (unknown option, missing argument)
  {EXIT_VERIFICATION}    verification refused the result (it differs from the original): nothing was written
  {EXIT_INTERNAL}   internal error, a bug in sr-ir: one line; --traceback prints the traceback
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
`sr-ir prove` reports proof outcomes in its own codes: 1 a rule refuted or vacuous (with --check: a
certificate missing or stale), 2 unknown or timed out, 3 rule files that do not parse or type-check."""


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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--traceback", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        _command(name).register(sub)
    for p in sub.choices.values():
        # also after the command (`sr-ir minimize M --traceback`); SUPPRESS keeps the subparser from
        # overwriting a --traceback given before the command with its own default
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error")
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
    if not args.traceback:
        _quiet_torch_logs()
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as e:  # every ending is one line, a bug's included
        return report_failure(e, f"sr-ir {args.command}", args.traceback)


def report_failure(e: Exception | KeyboardInterrupt, who: str, show_traceback: bool = False) -> int:
    """Print `e` as one line on stderr (after its traceback with `show_traceback`); its exit code."""
    if show_traceback:
        traceback.print_exception(e, file=sys.stderr)
    if isinstance(e, KeyboardInterrupt):
        print(f"{who}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(e, BrokenPipeError):
        # the reader went away (`sr-ir show M | head`): nothing to tell it; keep the interpreter's final
        # flush of stdout from failing again
        with contextlib.suppress(OSError, ValueError):  # a stdout without a descriptor (captured)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    if not isinstance(e, SrIrError):
        e = _in_generated_module(e) or e
    if isinstance(e, SrIrError):
        print(f"{who}: error: {_joined(str(e))}", file=sys.stderr)
        default = EXIT_VERIFICATION if isinstance(e, VerificationError) else EXIT_ERROR
        return getattr(e, "exit_code", default)
    if isinstance(e, OSError) and e.strerror:
        # the file system's refusal (permissions, a full disk, a missing folder), not a bug
        print(f"{who}: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_ERROR
    hint = "" if show_traceback else " (run with --traceback for details)"
    print(f"{who}: internal error: {describe(e)}{hint}", file=sys.stderr)
    return EXIT_INTERNAL


def _quiet_torch_logs() -> None:
    """Keep torch's own diagnostics off stderr (the traceback it logs when a .pt2 archive does not load,
    warnings while it traces): the failure they belong to is reported in one line, and --traceback
    shows them. Only once torch is imported (by the commands' modules), since importing torch sets its
    loggers' levels."""
    if "torch" in sys.modules:
        import logging

        logging.getLogger("torch").setLevel(logging.ERROR)


def _in_generated_module(e: Exception) -> SrIrError | None:
    """The IR node behind `e` when a generated module's forward raised it (a bad index in a program,
    say): the error then names the node and its source line instead of generated code."""
    if "torch" not in sys.modules:  # no module was generated (and none of torch is imported for nothing)
        return None
    from ..backend.run import generated_module_failure

    return generated_module_failure(e)


def _os_error(e: OSError) -> str:
    path = e.filename if e.filename is not None else ""
    return f"{path}: {e.strerror}" if path else e.strerror


def _joined(text: str) -> str:
    """An SrIrError's message on one line, nothing dropped."""
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


if __name__ == "__main__":
    sys.exit(main())
