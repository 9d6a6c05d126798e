"""Save and load a program: IR text in `<path>` (conventionally .sr) and weights in `<path-stem>.safetensors`.

Both files are written atomically (temporary file in the same folder, then rename), so an
interrupted save never leaves a half-written model behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ParseError, SrIrError
from .parser import parse
from .program import Program
from ..syntax import read_source


def weights_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_suffix(".safetensors")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_with(path: str | os.PathLike[str], writer) -> None:
    """Call `writer(tmp_path)` and move the result to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # Some writers insist on the final suffix (torch.export.save wants .pt2): keep it last.
    final_tmp = tmp + path.suffix
    os.replace(tmp, final_tmp)
    tmp = final_tmp
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_program(p: Program, path: str | os.PathLike[str]) -> None:
    missing = [n for n in p.params if n not in p.weights]
    if missing:
        raise SrIrError(f"cannot save: no weights for {', '.join('@' + m for m in missing[:5])}")
    tensors = {n: p.weights[n].detach().contiguous().cpu() for n in p.params}
    atomic_save_with(weights_path(path), lambda tmp: save_file(tensors, tmp))
    atomic_write(path, p.to_text())


def load(path: str | os.PathLike[str]) -> Program:
    """Load a program saved by Program.save (the IR text and its safetensors weights)."""
    path = Path(path)
    if not path.is_file():
        raise SrIrError(f"no such file: {path}")
    p = parse(read_source(path), str(path))
    wp = weights_path(path)
    if p.params:
        if not wp.is_file():
            raise SrIrError(f"{path}: weight file {wp} is missing")
        weights = load_file(str(wp))
        for name, t in p.params.items():
            if name not in weights:
                raise ParseError(f"parameter @{name} has no tensor in {wp}")
            w = weights[name]
            if tuple(w.shape) != tuple(t.shape) or w.dtype != t.torch_dtype:
                raise ParseError(
                    f"parameter @{name} is declared {t} but {wp} holds {tuple(w.shape)} {w.dtype}"
                )
        p.weights = {n: weights[n] for n in p.params}
    return p


__all__ = ["atomic_write", "atomic_save_with", "load", "save_program", "weights_path", "torch"]
