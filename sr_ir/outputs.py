"""Output files that survive interruption: atomic, durable writes with the user's umask, and locks.

A write goes to a temporary file beside its target, ``.sr-ir-tmp.<pid>.<random>.<target name>``
(the target's name last: some writers insist on its suffix), created as ``open(path, "w")`` would
create it (mode ``0o666`` less the umask), synced to disk and renamed over the target; then the
folder is synced. A reader sees the old file or the new one, and so does the disk after a crash.
A writer that is called with a path writes inside a temporary folder of that name, so the files it
creates itself go with it. A failed write removes its temporary; one left by a killed process is
removed when the next write to that target starts.

Two locks, both ``fcntl.flock`` (released by the kernel when their holder dies, so a killed run never
leaves a folder locked): ``folder_lock`` serializes the writers of a folder's multi-file outputs
(a program's text and weights); ``run_lock`` claims a folder for one whole run and refuses a second.
Where ``fcntl`` does not exist (Windows) both are no-ops and the atomic renames alone protect outputs.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import SrIrError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TEMP_PREFIX = ".sr-ir-tmp."
RUN_LOCK = ".sr-ir.lock"
_TEMP = re.compile(r"^\.sr-ir-tmp\.(\d+)\.[0-9a-f]+\.(.+)$")
# The temporary files this process is writing now; another one with our pid is a leftover (of an
# interrupted clean-up, or of an earlier process that had our pid).
_IN_FLIGHT: set[Path] = set()

PathLike = str | os.PathLike[str]


def check_target(path: PathLike) -> Path:
    """``path`` as a Path, or SrIrError when it is a folder (a file cannot be written there)."""
    p = Path(path)
    if p.is_dir():
        raise SrIrError(f"{p}: is a folder; give a file name to write")
    return p


def atomic_write(path: PathLike, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path``: readers see the old file or the new one, never a torn one."""
    target = check_target(path)
    with _temporary(target, folder=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        durable_replace(tmp, target)


def atomic_save_with(path: PathLike, writer: Callable[[str], object]) -> None:
    """Call ``writer(tmp_path)`` (``tmp_path`` ends in the target's name), then move it to ``path`` atomically.

    The writer gets a path inside a temporary folder of its own: files it creates beside its output
    (safetensors writes its own temporary file and renames it) are removed with that folder.
    """
    target = check_target(path)
    with _temporary(target, folder=True) as work:
        tmp = work / target.name
        fd = _create(tmp)
        mode = os.fstat(fd).st_mode & 0o7777
        os.close(fd)
        writer(str(tmp))
        # A writer may replace the file by one of its own mode (safetensors: 0o600): give ours back.
        os.chmod(tmp, mode)
        _sync_file(tmp)
        durable_replace(tmp, target)


def durable_replace(src: PathLike, dst: PathLike) -> None:
    """``os.replace(src, dst)``, then sync the folder so the rename itself survives a crash."""
    os.replace(src, dst)
    _sync_folder(Path(dst).parent)


def _create(path: Path) -> int:
    # 0o666 through the umask: the mode open(path, "w") gives (mkstemp's 0o600 would hide outputs)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


@contextmanager
def _temporary(target: Path, *, folder: bool) -> Iterator[Path]:
    """A fresh temporary file (or folder) beside ``target``; whatever is left of it goes when the block ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp: Path | None = None
    try:
        while True:
            # named before it is made, so an interrupt between the two still removes it below
            tmp = target.parent / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{target.name}"
            _IN_FLIGHT.add(tmp)
            try:
                tmp.mkdir() if folder else os.close(_create(tmp))
                break
            except FileExistsError:
                _IN_FLIGHT.discard(tmp)
                tmp = None  # another writer's: not ours to remove
        yield tmp
    finally:
        if tmp is not None:
            _IN_FLIGHT.discard(tmp)  # first: if the removal is interrupted, the next write removes the rest
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(target: PathLike, *, matching: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the temporary files and folders for ``target`` whose writer is gone; the paths removed.

    With ``matching``, those for every target name in ``target``'s folder that ``matching`` accepts.
    """
    target = Path(target)
    matching = matching or target.name.__eq__
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except FileNotFoundError:
        return removed
    for e in entries:
        m = _TEMP.match(e.name)
        if m and matching(m.group(2)) and _writer_gone(int(m.group(1)), Path(e.path)):
            _remove(Path(e.path))
            removed.append(Path(e.path))
    return removed


def _writer_gone(pid: int, path: Path) -> bool:
    if pid == os.getpid():
        return path not in _IN_FLIGHT
    # The pid is the writer's on this machine: a folder shared with other machines or pid namespaces
    # could see a live writer's file as stale, whose rename then fails loudly (never a torn target).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder; its renames are as durable as it makes them
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to sync a folder; the rename is done regardless
        pass
    finally:
        os.close(fd)


@dataclass
class _Folder:
    fd: int  # open for the process's life: it pins the folder's inode, so its (device, inode) stays unique
    threads: threading.Lock = field(default_factory=threading.Lock)  # flock does not exclude our own threads
    users: int = 0


class _FolderLocks:
    """One descriptor per locked folder, kept open (the least recently used beyond a few are closed).

    Releasing is then one unlock, never a close: an interrupt just before it leaves the folder locked
    by this descriptor, which the next lock in this process takes again at once, instead of by a
    leaked descriptor this process would wait for forever.
    """

    LIMIT = 16

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._open: dict[tuple[int, int], _Folder] = {}  # least recently used first
        if hasattr(os, "register_at_fork"):
            # a forked child shares our descriptors, and with them our locks: it must open its own
            os.register_at_fork(after_in_child=self._forget)

    def enter(self, folder: PathLike) -> _Folder | None:
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # Windows cannot open a folder
            return None
        st = os.fstat(fd)
        with self._guard:
            known = self._open.pop((st.st_dev, st.st_ino), None)
            if known is not None:
                os.close(fd)
            entry = known or _Folder(fd)
            entry.users += 1
            self._open[(st.st_dev, st.st_ino)] = entry
            self._close_idle()
        return entry

    def leave(self, entry: _Folder) -> None:
        with self._guard:
            entry.users -= 1

    def _close_idle(self) -> None:
        for key in list(self._open)[: -self.LIMIT]:
            if self._open[key].users == 0:
                os.close(self._open.pop(key).fd)

    def _forget(self) -> None:
        for entry in self._open.values():
            os.close(entry.fd)
        self._open = {}
        self._guard = threading.Lock()


_FOLDERS = _FolderLocks()


@contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (waiting for it): one writer of its outputs at a time,
    across processes and threads. It locks the folder's own inode, so no file is left behind; where the
    file system cannot lock (some network mounts), the block runs unlocked."""
    entry = _FOLDERS.enter(folder)
    if entry is None:
        yield
        return
    try:
        with entry.threads:
            _flock(entry.fd, lock=True)
            try:
                yield
            finally:
                _flock(entry.fd, lock=False)
    finally:
        _FOLDERS.leave(entry)


def _flock(fd: int, *, lock: bool) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if lock else fcntl.LOCK_UN)
    except OSError:  # a file system without locks: the transaction alone protects its outputs
        pass


@contextmanager
def run_lock(folder: PathLike) -> Iterator[Path]:
    """Claim ``folder`` for this run (created if missing) through ``folder/.sr-ir.lock``, which records our pid.

    A folder another live process holds is refused at once with a one-line SrIrError naming its pid.
    The lock file stays (removing it would let a third run lock a fresh file while the second still
    holds the old one); an unheld lock file means nothing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SrIrError(f"{folder} is in use by another sr-ir run (pid {_holder(fd)})") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote ('?' while it has not yet)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text if text.isdigit() else "?"


__all__ = [
    "RUN_LOCK", "TEMP_PREFIX", "atomic_save_with", "atomic_write", "check_target", "durable_replace",
    "folder_lock", "remove_stale_temps", "run_lock",
]
