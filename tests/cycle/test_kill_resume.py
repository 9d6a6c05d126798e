"""A run killed with SIGKILL after cycle 0, in the middle of a cycle and in the middle of writing a
checkpoint, then resumed, ends exactly where the uninterrupted run ends (same records, same weights)."""
from __future__ import annotations

import io
import os
import signal

import pytest
import torch

import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cycle import digits
from sr_ir.cycle.checkpoint import completed_cycles

from .test_cycle import run, strip


@pytest.fixture(scope="module")
def data():
    return digits()


def killed(what) -> None:
    """Run ``what()`` in a forked child that SIGKILLs itself at the moment ``what`` arranges; wait for it."""
    pid = os.fork()
    if pid == 0:
        try:
            what()
        finally:
            os._exit(3)  # the kill point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child ended with status {status}"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def temporaries(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".sr-ir-tmp."))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_resume_after_kill_9_at_three_moments_is_identical(data, tmp_path):
    whole = run(data, tmp_path / "whole")
    cut = tmp_path / "cut"

    # 1. after cycle 0 (the dense model's checkpoint is written, then the callback runs)
    killed(lambda: run(data, cut, on_cycle=lambda r: die() if r["cycle"] == 0 else None))
    assert completed_cycles(cut) == [0]

    # 2. in the middle of cycle 1: pruned and minimized, killed in the release
    def in_release():
        cycle_mod.release = lambda *a, **k: die()  # the child's own copy of the module
        run(data, cut, resume=True)
    killed(in_release)
    assert completed_cycles(cut) == [0]

    # 3. half-way through writing cycle 1's checkpoint
    def in_checkpoint_write():
        real_save = torch.save

        def torn_save(obj, f, *args, **kwargs):
            if str(f).endswith("cycle_001.pt"):
                buf = io.BytesIO()
                real_save(obj, buf)
                with open(f, "wb") as out:
                    out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                die()
            return real_save(obj, f, *args, **kwargs)
        torch.save = torn_save
        run(data, cut, resume=True)
    killed(in_checkpoint_write)
    assert completed_cycles(cut) == [0]  # the torn file never took the checkpoint's name
    assert temporaries(cut) != []  # what the killed writer left

    resumed = run(data, cut, resume=True)
    assert strip(resumed.records) == strip(whole.records)
    assert resumed.dense_record["val_acc"] == whole.dense_record["val_acc"]
    a, b = resumed.module.state_dict(), whole.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert completed_cycles(cut) == completed_cycles(tmp_path / "whole")
    assert temporaries(cut) == []  # removed when cycle 1's checkpoint was written again
