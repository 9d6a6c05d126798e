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



def test_the_python_cycle_claims_its_checkpoint_dir(tmp_path):
    import pytest

    from sr_ir.cycle import CycleConfig, digits, squeeze_release
    from sr_ir.cycle.run_files import claim
    from sr_ir.errors import SrIrError

    from .test_cycle import fresh

    d = digits()
    out = tmp_path / "run"
    with run_lock(out):  # another run holds the folder (a separate open file: another holder)
        with pytest.raises(SrIrError, match=f"{out} is in use by another sr-ir run"):
            squeeze_release(fresh(), d.train, d.val, example_inputs=(d.val[:8][0],), config=CycleConfig(max_cycles=1),
                            checkpoint_dir=out, progress=False)
    assert os.listdir(out) == [RUN_LOCK]  # refused before anything was written
    with claim(out):  # the CLI's claim: the library's own claim inside it passes (same process)
        with claim(out):
            pass
        with pytest.raises(SrIrError, match="in use"):
            with run_lock(out):
                pass
