"""SIGTERM (a scheduler's stop, `kill`) ends a command like Ctrl-C: its `finally` blocks run, so an output
being written keeps its old content and leaves no temporary file, and the exit is one line, code 143."""
import os
import signal
import subprocess
import sys
import textwrap

from sr_ir.cli.main import EXIT_TERMINATED, Terminated, report_failure, terminate_as_interrupt
from sr_ir.outputs import atomic_save_with


def test_sigterm_inside_a_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"old")

    def writer(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the middle of the write

    raised = False
    with terminate_as_interrupt():
        try:
            atomic_save_with(target, writer)
        except Terminated:
            raised = True
    assert raised
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back afterwards


def test_the_exit_is_one_line_with_its_code(capsys):
    assert report_failure(Terminated(), "sr-ir minimize") == EXIT_TERMINATED == 143
    assert capsys.readouterr().err == "sr-ir minimize: terminated\n"


def test_a_terminated_cli_run_exits_143_in_one_line(tmp_path):
    """The real process: a command that receives SIGTERM while it runs."""
    code = textwrap.dedent("""
        import os, signal, sys
        from sr_ir.cli import main as M, prove
        def stop(args):  # the command, stopped while it runs
            os.kill(os.getpid(), signal.SIGTERM)
            return 0
        prove.run = stop
        sys.exit(M.main(["prove", "--check"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines() == ["sr-ir prove: terminated"]
