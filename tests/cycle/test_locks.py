"""One run per output folder: a second `sr-ir squeeze-release` on the same `--out` refuses at once."""
from __future__ import annotations

import os
import time

from sr_ir.cli.main import main
from sr_ir.outputs import RUN_LOCK, run_lock

from .test_cli import ARGS


def test_a_second_cli_run_on_the_same_out_refuses_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    with run_lock(out):  # the first run, as far as the folder can tell
        t0 = time.perf_counter()
        assert main(ARGS + ["--out", str(out)]) == 1
        assert time.perf_counter() - t0 < 5  # refused before loading data or training
    err = capsys.readouterr().err
    assert err == f"sr-ir squeeze-release: error: {out} is in use by another sr-ir run (pid {os.getpid()})\n"
    assert os.listdir(out) == [RUN_LOCK]  # nothing of the first run was touched

