"""Atomic, durable output files with the user's umask; temporaries of killed writers; run locks."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import sr_ir.outputs as outputs
from sr_ir.errors import SrIrError
from sr_ir.outputs import RUN_LOCK, atomic_save_with, atomic_write, remove_stale_temps, run_lock

WRITE_AND_HANG = """
import sys, time
from sr_ir.outputs import atomic_save_with

def writer(tmp):
    open(tmp, "w").write("partial")
    print("writing", flush=True)
    time.sleep(60)

atomic_save_with(sys.argv[1], writer)
"""


def names(folder) -> list[str]:
    return sorted(os.listdir(folder))


def dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask):
    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", "{}")
        atomic_save_with(tmp_path / "b.pt", lambda tmp: torch.save({"x": 1}, tmp))
        atomic_save_with(tmp_path / "c.safetensors", lambda tmp: save_file({"x": torch.zeros(2)}, tmp))  # its own 0o600
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt", "c.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write(target, "old")

    def writer(tmp):
        open(tmp, "w").write("half")
        open(os.path.join(os.path.dirname(tmp), "writer-own.tmp"), "w").write("x")  # as safetensors does
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_save_with(target, writer)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, _Interrupting())
    assert target.read_text() == "old" and names(tmp_path) == ["out.json"]


class _Interrupting(str):
    def encode(self, *args, **kwargs):  # Ctrl-C while the data is being written
        raise KeyboardInterrupt


def test_rename_and_folder_are_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    atomic_write(tmp_path / "a.txt", "x")
    assert synced == [False, True]  # the file, then the folder holding the new name


def test_a_folder_is_not_a_target(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(SrIrError, match="is a folder"):
        atomic_write(tmp_path / "d.json", "x")
    assert names(tmp_path / "d.json") == []


def test_temporaries_of_gone_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    stale = [f".sr-ir-tmp.{dead}.00000001.out.json", f".sr-ir-tmp.{os.getpid()}.00000002.out.json"]
    kept = [f".sr-ir-tmp.{alive}.00000003.out.json", f".sr-ir-tmp.{dead}.00000004.other.json"]
    for n in stale + kept:
        (tmp_path / n).write_text("partial")
    (tmp_path / f".sr-ir-tmp.{dead}.00000005.out.json").mkdir()  # a writer's folder, with its file
    (tmp_path / f".sr-ir-tmp.{dead}.00000005.out.json" / "out.json").write_text("partial")
    atomic_write(tmp_path / "out.json", "new")
    assert names(tmp_path) == sorted(kept + ["out.json"])


def test_a_writer_killed_with_sigkill_leaves_a_temporary_the_next_write_removes(tmp_path):
    target = tmp_path / "final.pt2"
    child = subprocess.Popen([sys.executable, "-c", WRITE_AND_HANG, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = [n for n in names(tmp_path) if n.startswith(".sr-ir-tmp.")]
    assert left and not target.exists()
    assert remove_stale_temps(target) == [tmp_path / left[0]] and names(tmp_path) == []


def test_run_lock_refuses_a_second_holder_and_frees_the_folder_after(tmp_path):
    folder = tmp_path / "out"
    with run_lock(folder) as lock:
        assert lock == folder / RUN_LOCK and lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(SrIrError) as e:
            with run_lock(folder):
                pass
        assert str(e.value) == f"{folder} is in use by another sr-ir run (pid {os.getpid()})"
        other = subprocess.run([sys.executable, "-c", "import sys; from sr_ir.outputs import run_lock\n"
                                "with run_lock(sys.argv[1]): pass", str(folder)], capture_output=True, text=True)
        assert other.returncode != 0 and "is in use by another sr-ir run" in other.stderr
    with run_lock(folder):  # released: the next run may start
        pass


def test_folder_lock_is_taken_again_after_an_interrupted_release(tmp_path, monkeypatch):
    real = outputs._flock
    calls = []

    def flock(fd, *, lock):
        calls.append(lock)
        if len(calls) == 2:  # the release of the first lock
            raise KeyboardInterrupt
        real(fd, lock=lock)
    monkeypatch.setattr(outputs, "_flock", flock)
    with pytest.raises(KeyboardInterrupt):
        with outputs.folder_lock(tmp_path):
            pass
    t0 = time.perf_counter()
    with outputs.folder_lock(tmp_path):  # this process still holds it through the same descriptor
        atomic_write(tmp_path / "x.json", json.dumps([1]))
    assert time.perf_counter() - t0 < 1 and (tmp_path / "x.json").read_text() == "[1]"
