"""`sr-ir` entry point: dispatches to subcommand modules; every way a command ends is one line on stderr
and one of the EXIT_* codes below (a bug included, unless --traceback asks for the traceback).

Start-up is kept short: the top-level --help lists the commands from COMMANDS without importing any of
them; a command's module is imported only when that command is run or its --help is asked for, and
imports at its top only what its parser needs (no torch, sympy, z3 or lark: the library's values a help
text shows come from sr_ir.constants, or from light copies that tests/cli/test_startup.py keeps equal to
the library's). The functions that run a command import the library; torch is imported just before a
command whose module sets USES_TORCH runs (`_quiet_torch_logs`)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Iterator, Sequence

from ..errors import SrIrError, VerificationError, describe

# Subcommands in the order `--help` lists them: name -> (module in sr_ir.cli, one-line summary). Each
# module defines `register(subparsers)`, which adds the command's parser and sets `func(args) -> int`,
# and `USES_TORCH = True` if the command runs torch.
# The summary is the `help=` the module registers (tests/cli/test_startup.py keeps the two equal): the
# top-level --help shows it without importing the module.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the pipeline on the bundled LeNet-300-100 and print the check"),
    "lower": ("lower", "lower a PyTorch model (.pt2 or module:factory) to sr-ir text + weights"),
    "show": ("show", "print a program with parameter counts and bytes per op"),
    "emit": ("emit", "emit a program as a PyTorch module (.pt2 and/or Python source)"),
    "prove": ("prove", "prove rule files (tiers: test, bounded, parametric) and write certificates in proofs/"),
    "minimize": ("minimize", "remove every removable channel of a masked model, exactly (verified)"),
    "squeeze-release": ("squeeze_release",
                        "iterate prune -> minimize -> release -> fine-tune until no unit can be removed"),
}

# Verbosity (args.verbosity, for commands that print more or less): -q gives QUIET, -v INFO, -vv DEBUG
QUIET, NORMAL, INFO, DEBUG = -1, 0, 1, 2

EXIT_OK = 0
EXIT_ERROR = 1  # an SrIrError: a bad model, file, option value or rule; a file that cannot be read or written
EXIT_USAGE = 2  # the command line itself (argparse's code)
EXIT_VERIFICATION = 4  # the result differs from the original beyond rounding: nothing was written
EXIT_INTERNAL = 70  # a bug in sr-ir (EX_SOFTWARE of sysexits.h)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): a scheduler's or `kill`'s stop


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that its `finally` blocks run: the temporary files of an
    output being written go, the output keeps its old content, the --out lock is released."""

EPILOG = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    error in the input: model, file, option value, rules (one line, file:line:col where known);
       also a file that cannot be read or written
  {EXIT_USAGE}    usage error (unknown option, missing argument)
  {EXIT_VERIFICATION}    verification refused the result (it differs from the original): nothing was written
  {EXIT_INTERNAL}   internal error, a bug in sr-ir: one line; --traceback prints the traceback
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_TERMINATED}  terminated (SIGTERM); as with Ctrl-C, no output is left half-written
`sr-ir prove` reports proof outcomes in its own codes: 1 a rule refuted or vacuous (with --check: a
certificate missing or stale), 2 unknown or timed out, 3 rule files that do not parse or type-check."""


def _command(name: str):
    """The module of command `name` (imported now)."""
    import importlib

    return importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


def build_parser(only: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    """The `sr-ir` parser. Command `only` gets its full parser (its module is imported), the others a
    stand-in with their summary, enough for the top-level --help and for argparse's list of choices;
    `every=True` imports every command's module and gives each its full parser (tests, documentation)."""
    parser = argparse.ArgumentParser(
        prog="sr-ir",
        description="Exact structural minimization of pruned neural networks through a proved rewrite IR.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--traceback", action="store_true", help="print the full traceback of an error")
    _add_verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        if every or name == only:
            _command(name).register(sub)
        else:
            sub.add_parser(name, help=summary, description=summary)
    for p in sub.choices.values():
        # also after the command (`sr-ir minimize M --traceback`); SUPPRESS keeps the subparser from
        # overwriting a --traceback given before the command with its own default
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error")
        _add_verbosity(p, top=False)
    return parser


def _add_verbosity(p: argparse.ArgumentParser, top: bool) -> None:
    """-q/--quiet and -v/--verbose, before the command or after it. After it, SUPPRESS keeps the
    subparser from resetting what was given before; a spelling the command already uses for an option
    of its own (`minimize --quiet`: no progress bar) stays the command's."""
    default = NORMAL if top else argparse.SUPPRESS
    taken = set(p._option_string_actions)  # argparse has no public view of a parser's option strings
    group = p.add_mutually_exclusive_group()
    quiet = [o for o in ("-q", "--quiet") if o not in taken]
    verbose = [o for o in ("-v", "--verbose") if o not in taken]
    if quiet:
        group.add_argument(*quiet, dest="verbosity", action="store_const", const=QUIET, default=default,
                           help="quiet: no progress bars, info lines or warnings on stderr (errors are "
                           "still reported; results on stdout are unchanged)")
    if verbose:
        group.add_argument(*verbose, dest="verbosity", action="count", default=default,
                           help="more detail on stderr (what sr-ir does and how long it takes; the rule "
                           "cache); -vv: debugging detail")


def _version() -> str:
    from .. import __version__

    return __version__


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named on the command line: the first word that is not an option (the options before
    a command take no values), if it is one."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    if "torch" not in sys.modules:
        _passive_threads()
    # only the command named is imported, and its module without torch: `sr-ir --help`, `sr-ir COMMAND
    # --help` and `sr-ir prove --check` (run by CI and before minimizing) start fast
    parser = build_parser(command)
    args = parser.parse_args(argv)
    args.verbosity = max(QUIET, min(args.verbosity, DEBUG))  # -vvv is -vv
    if args.verbosity == QUIET and hasattr(args, "quiet"):
        args.quiet = True  # a command's own "no progress bar" option
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    who = f"sr-ir {args.command}"
    try:
        with _verbosity(args.verbosity, who), terminate_as_interrupt():
            if not args.traceback and args.verbosity < INFO:
                _quiet_torch_logs(_command(args.command))
            t0, c0 = time.perf_counter(), time.process_time()
            code = int(args.func(args) or 0)
            logging.getLogger("sr_ir").info("done in %.2f s (%.2f s of CPU), exit %d",
                                            time.perf_counter() - t0, time.process_time() - c0, code)
            return code
    except (Exception, KeyboardInterrupt) as e:  # every ending is one line, a bug's included
        return report_failure(e, who, args.traceback)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises Terminated in it (instead of ending the process where it
    stands); a handler someone else installed, or a thread other than the main one, is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _verbosity(level: int, who: str) -> Iterator[None]:
    """While a command runs: with QUIET nothing reaches stderr (progress bars, info lines and warnings
    all write to sys.stderr; the one line of a failure is printed after this block); with INFO or DEBUG
    the library's log records (logger `sr_ir`) are printed there."""
    if level == QUIET:
        import warnings

        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
        return
    if level < INFO:
        yield
        return
    logger = logging.getLogger("sr_ir")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{who}: %(message)s"))
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if level >= DEBUG else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _passive_threads() -> None:
    """Let torch's OpenMP threads sleep instead of spinning while they wait for work (OMP_WAIT_POLICY=
    PASSIVE), unless the user chose a policy. On a busy machine the default spinning burns the time
    slices the working threads need: a warm 2-thread minimize with verification took 7.6x the wall time
    and 8x the CPU time of PASSIVE, 16x beside one busy core (benchmarks/RESULTS.md, "Start-up and
    threads"). OpenMP reads the variable once, when torch loads it: only a process that has not
    imported torch yet can still set it (it then holds for the worker processes it starts too)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def report_failure(e: Exception | KeyboardInterrupt, who: str, show_traceback: bool = False) -> int:
    """Print `e` as one line on stderr (after its traceback with `show_traceback`); its exit code."""
    if show_traceback:
        traceback.print_exception(e, file=sys.stderr)
    if isinstance(e, Terminated):
        print(f"{who}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
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


def _quiet_torch_logs(command: Any) -> None:
    """Keep torch's own diagnostics off stderr (the traceback it logs when a .pt2 archive does not load,
    warnings while it traces): the failure they belong to is reported in one line, and --traceback
    shows them. Importing torch sets its loggers' levels, so torch is imported first here when the
    `command` module that is about to run sets USES_TORCH (its functions import torch themselves, later;
    its module does not, for a fast --help); a command without it (`prove`) is left without torch."""
    if getattr(command, "USES_TORCH", False):
        import torch  # noqa: F401
    if "torch" in sys.modules:
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
