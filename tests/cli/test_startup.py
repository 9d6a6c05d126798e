"""Start-up of the CLI and the package: what is imported (not how long it takes: benchmarks/startup.py
times it), complete --help without the commands' modules, the global -q/-v flags, the thread policy."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sr_ir.cli import main as M

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sympy", "z3")


def _python(code: str, env: dict | None = None) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line last."""
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    e.update(env or {})
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


# an expression, in the child, of which of these modules it has imported
_LOADED = "{m: m in sys.modules for m in %r}" % (HEAVY + ("lark", "sr_ir.cli.minimize"),)


def test_import_sr_ir_imports_no_torch_sympy_or_lark():
    got = _python(f"import json, sys, sr_ir; print(json.dumps({_LOADED}))")
    assert not any(got.values()), got


def test_top_level_help_imports_no_command_module():
    code = ("import contextlib, io, json, sys\nfrom sr_ir.cli.main import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main(['--help'])\n"
            "    except SystemExit as e:\n        code = e.code\n"
            f"print(json.dumps({{'code': code, 'help': out.getvalue(), 'loaded': {_LOADED}}}))")
    got = _python(code)
    assert got["code"] == 0
    assert not any(got["loaded"].values()), got["loaded"]
    help_ = " ".join(got["help"].split())
    for name, (_, summary) in M.COMMANDS.items():
        assert f"{name} {' '.join(summary.split())}" in help_
    assert "-q, --quiet" in help_ and "-v, --verbose" in help_ and "exit codes:" in help_


def test_prove_check_from_the_cache_imports_no_torch_or_sympy(tmp_path, monkeypatch, capsys):
    env = {"SR_IR_CACHE_DIR": str(tmp_path / "cache"), "SR_IR_NO_CACHE": ""}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)  # where the child runs: the rule files' names are relative to it
    status = M.main(["prove", "--check"])  # loads the rule files and writes the cache
    expected = capsys.readouterr().out
    code = ("import contextlib, io, json, sys\nfrom sr_ir.cli.main import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    code = main(['prove', '--check'])\n"
            f"print(json.dumps({{'code': code, 'out': out.getvalue(), 'loaded': {_LOADED}}}))")
    got = _python(code, env)
    # the same report (whatever the state of proofs/: 0 when every certificate is current)
    assert got["code"] == status and got["out"] == expected and "rules have a current certificate" in expected
    assert not any(v for k, v in got["loaded"].items() if k != "lark"), got["loaded"]


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")


def test_summaries_are_the_commands_own_and_every_help_is_complete():
    full = M.build_parser(every=True)
    sub = _subparsers(full)
    assert list(sub.choices) == list(M.COMMANDS)
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: summary for name, (_, summary) in M.COMMANDS.items()}
    lazy_top = M.build_parser()
    assert lazy_top.format_help() == full.format_help()
    for name in M.COMMANDS:
        # the parser main builds for this command: its own full parser, the same help as with every module
        lazy = _subparsers(M.build_parser(name)).choices[name]
        assert lazy.format_help() == sub.choices[name].format_help(), name
        assert "-q" in lazy.format_help() and "--traceback" in lazy.format_help()


@pytest.mark.parametrize("name", list(M.COMMANDS))
def test_command_help_imports_no_torch_and_is_the_full_help(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the same width for the help here and in the child
    code = ("import contextlib, io, json, sys\nfrom sr_ir.cli.main import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main([%r, '--help'])\n"
            "    except SystemExit as e:\n        code = e.code\n"
            "print(json.dumps({'code': code, 'help': out.getvalue(), 'modules': sorted(sys.modules), "
            "'loaded': {m: m in sys.modules for m in %r}}))") % (name, HEAVY + ("lark",))
    got = _python(code)
    assert got["code"] == 0
    assert not any(got["loaded"].values()), got["loaded"]
    # of the library, only modules that import nothing heavy themselves
    library = {m for m in got["modules"] if m.startswith("sr_ir.") and not m.startswith("sr_ir.cli.")}
    assert library <= {"sr_ir.cli", "sr_ir.constants", "sr_ir.errors", "sr_ir.outputs"}, library
    assert got["help"] == _subparsers(M.build_parser(every=True)).choices[name].format_help()


def test_the_values_the_help_shows_are_the_library_s():
    import sr_ir.constants as C
    from sr_ir.cli.inputs import INPUT_DTYPES
    from sr_ir.cli.squeeze_release import PRESET_SUMMARY
    from sr_ir.cycle import pruning, train
    from sr_ir.cycle.cycle import PRESETS
    from sr_ir.ir.types import DTYPES
    from sr_ir.minimization import verify

    assert INPUT_DTYPES == tuple(sorted(DTYPES))
    assert list(PRESET_SUMMARY) == list(PRESETS)
    for name, shown in PRESET_SUMMARY.items():
        assert shown == {k: PRESETS[name][k] for k in shown}, name
    # the library's own constants are those of sr_ir.constants, not copies
    assert (verify.N_RANDOM, pruning.CRITERIA, pruning.SCOPES, train.DEFAULT_BATCH_SIZE) == \
        (C.N_RANDOM, C.CRITERIA, C.SCOPES, C.DEFAULT_BATCH_SIZE)
    assert pruning.CRITERIA is C.CRITERIA and pruning.SCOPES is C.SCOPES and train.SCHEDULES is C.SCHEDULES


def test_sr_ir_constants_imports_nothing():
    import ast

    import sr_ir.constants as C

    tree = ast.parse(Path(C.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in imports] == ["from __future__ import annotations"]


def test_a_torch_command_runs_with_torch_imported_and_its_logs_quiet():
    # the command's module imports torch only in its functions; main imports it before the command
    # runs, so that it can lower torch's loggers (importing torch resets their levels)
    code = ("import json, logging, sys\nfrom sr_ir.cli import main as M, show\nseen = {}\n"
            "def run(args):\n    seen['level'] = logging.getLogger('torch').level\n"
            "    seen['torch'] = 'torch' in sys.modules\n    return 0\n"
            "show.run = run\nseen['code'] = M.main(['show', 'x.sr'])\nprint(json.dumps(seen))")
    assert _python(code) == {"code": 0, "level": logging.ERROR, "torch": True}


def test_command_in_argv():
    assert M._command_in(["-q", "--traceback", "minimize", "m.sr", "-v"]) == "minimize"
    assert M._command_in(["squeeze-release", "--help"]) == "squeeze-release"
    assert M._command_in(["--help"]) is None and M._command_in([]) is None
    assert M._command_in(["nosuch", "prove"]) is None and M._command_in(["--", "prove"]) is None


@pytest.fixture
def noisy(monkeypatch):
    """`sr-ir prove` replaced by a command that writes what a quiet run must not show: a tqdm bar, a
    line on stderr, a warning and a log record; and a result on stdout. It records its arguments."""
    from sr_ir.cli import prove

    seen = {}

    def run(args):
        import logging

        from tqdm import tqdm

        seen["args"] = args
        for _ in tqdm(range(3), desc="progress-bar", disable=False):
            pass
        print("an info line", file=sys.stderr)
        warnings.warn("a warning")
        logging.getLogger("sr_ir.test").info("a log record")
        print("the result")
        return 0

    monkeypatch.setattr(prove, "run", run)
    return seen


def _main_recording_warnings(argv):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = M.main(argv)
    return code, [str(w.message) for w in caught]


def test_quiet_silences_stderr_but_not_results(noisy, capsys):
    assert _main_recording_warnings(["-q", "prove", "--check"]) == (0, [])
    assert capsys.readouterr() == ("the result\n", "")
    assert noisy["args"].verbosity == M.QUIET
    assert _main_recording_warnings(["prove", "--check", "-q"]) == (0, [])  # after the command too
    assert capsys.readouterr() == ("the result\n", "")
    # without -q everything shows (the log record only with -v)
    assert _main_recording_warnings(["prove", "--check"]) == (0, ["a warning"])
    out, err = capsys.readouterr()
    assert out == "the result\n" and "progress-bar" in err and "an info line" in err and "a log record" not in err
    assert noisy["args"].verbosity == M.NORMAL


def test_quiet_still_reports_a_failure(monkeypatch, capsys):
    from sr_ir.cli import show

    def run(args):
        print("noise", file=sys.stderr)
        raise M.SrIrError("no such program")

    monkeypatch.setattr(show, "run", run)
    assert M.main(["-q", "show", "x.sr"]) == M.EXIT_ERROR
    assert capsys.readouterr().err == "sr-ir show: error: no such program\n"


def test_verbose_prints_the_library_log(noisy, capsys):
    assert _main_recording_warnings(["-v", "prove", "--check"]) == (0, ["a warning"])
    err = capsys.readouterr().err
    assert "sr-ir prove: a log record" in err and "sr-ir prove: done in" in err
    assert noisy["args"].verbosity == M.INFO
    assert _main_recording_warnings(["prove", "-vv"])[0] == 0 and noisy["args"].verbosity == M.DEBUG
    assert _main_recording_warnings(["-vvvv", "prove"])[0] == 0 and noisy["args"].verbosity == M.DEBUG
    capsys.readouterr()
    import logging

    assert not logging.getLogger("sr_ir").handlers  # the handler goes with the command


def test_quiet_and_verbose_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        M.main(["-q", "-v", "prove"])
    assert e.value.code == M.EXIT_USAGE
    assert "not allowed with" in capsys.readouterr().err


def test_global_quiet_turns_off_the_minimize_progress_bar(monkeypatch):
    from sr_ir.cli import minimize

    seen = {}

    def run(args):
        seen["args"] = args
        return 0

    monkeypatch.setattr(minimize, "run", run)
    assert M.main(["-q", "minimize", "m.sr"]) == 0
    assert seen["args"].quiet is True and seen["args"].verbosity == M.QUIET
    seen.clear()
    assert M.main(["minimize", "m.sr", "--quiet"]) == 0  # the command's own flag: only its progress bar
    assert seen["args"].quiet is True and seen["args"].verbosity == M.NORMAL


def test_cli_sets_a_passive_wait_policy_unless_the_user_chose_one():
    code = ("import json, os, sys\nfrom sr_ir.cli.main import main\ntry:\n    main(['prove', '--help'])\n"
            "except SystemExit:\n    pass\nprint(json.dumps(os.environ.get('OMP_WAIT_POLICY')))")
    assert _python(code) == "PASSIVE"
    assert _python(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
