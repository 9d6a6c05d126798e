"""Weights that stay on disk: safetensors files read by memory map, and tensors that are recipes over them.

A checkpoint larger than memory cannot be a dict of tensors. Here it is a dict of `Deferred` tensors
instead: each one knows its dtype and shape (so the IR, the type checker and the rewrite engine see an
ordinary tensor) but holds no values. Its values are a *recipe*: a tensor of a safetensors file (found
by the file's header: a seek to its byte offset in a memory map, no copy) followed by the index
selections the rewrites applied to it (`index_select(axis, kept)`, which is what dropping channels
is). Any other operation on a `Deferred` tensor reads its values for that one operation only (the
result is an ordinary tensor; the values read are not kept), so a rule condition that inspects a
weight costs one weight's memory while it runs, and dropping channels costs nothing until the result
is written.

`write_safetensors` evaluates recipes one tensor at a time, writing each to the output file as it
goes; the output is written atomically (`sr_ir.outputs`).

The safetensors layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length N, N bytes of JSON (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
"__metadata__": {...}}`, offsets relative to the end of the header), then the raw little-endian bytes.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch.utils._pytree import tree_map

from ..errors import SrIrError

# safetensors dtype names <-> torch dtypes
ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
ST_NAMES: dict[torch.dtype, str] = {v: k for k, v in ST_DTYPES.items()}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a safetensors file lies: dtype, shape and absolute byte range."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """A safetensors file opened by memory map: `tensor(name)` is a zero-copy view of the file's bytes.

    The map is read-only and shared (``MAP_SHARED``, ``PROT_READ``): the pages read are the kernel's page
    cache (file-backed, reclaimable), not this process's anonymous memory, and a map larger than memory
    is not charged against the commit limit (a private writable map of 32 GB is refused with ENOMEM).
    The views must not be written to (nothing in sr-ir writes into a weight: rewrites make new tensors)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SrIrError(f"no such weights file: {self.path}")
        if sys.byteorder != "little":
            raise SrIrError("reading safetensors by memory map needs a little-endian machine")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SrIrError(f"{self.path}: not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise SrIrError(f"{self.path}: not a safetensors file (header length {n} past the file's end)")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SrIrError(f"{self.path}: not a safetensors file (header is not JSON: {e})") from None
            if not isinstance(header, dict):
                raise SrIrError(f"{self.path}: not a safetensors file (header is not a JSON object)")
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            base = 8 + n
            self.infos: dict[str, TensorInfo] = {}
            for name, h in header.items():
                try:
                    dtype = ST_DTYPES[h["dtype"]]
                    shape = tuple(int(d) for d in h["shape"])
                    b, e = (int(x) for x in h["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise SrIrError(f"{self.path}: tensor {name!r} has an unreadable or unsupported header "
                                    f"entry {h!r}") from None
                numel = 1
                for d in shape:
                    numel *= d
                if e - b != numel * dtype.itemsize or b < 0 or base + e > size:
                    raise SrIrError(f"{self.path}: tensor {name!r}: data_offsets [{b}, {e}] do not fit its "
                                    f"shape {list(shape)} and dtype, or lie past the file's end")
                self.infos[name] = TensorInfo(dtype, shape, base + b, base + e)
            # an empty file section cannot be mapped; nothing can be read from it either
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > base else None

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def names(self) -> list[str]:
        return list(self.infos)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor's values as a view of the mapped file (no copy, nothing read until touched)."""
        info = self.infos[name]
        numel = (info.end - info.begin) // info.dtype.itemsize
        if numel == 0 or self._map is None:
            return torch.empty(info.shape, dtype=info.dtype)
        with warnings.catch_warnings():
            # torch warns that the buffer is not writable: it is read-only on purpose (see the class)
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(self._map, dtype=info.dtype, count=numel, offset=info.begin)
        return flat.view(info.shape)

    def deferred(self, name: str) -> "Deferred":
        """The tensor as a `Deferred` tensor (values read on use, not kept)."""
        info = self.infos[name]
        return Deferred(_Recipe(self, name, ()), info.shape, info.dtype)

    def deferred_all(self) -> dict[str, "Deferred"]:
        return {n: self.deferred(n) for n in self.infos}


@dataclass(frozen=True)
class _Recipe:
    """Tensor `name` of `file`, then `index_select(axis, index)` for each selection in order."""

    file: SafetensorsFile
    name: str
    selections: tuple[tuple[int, torch.Tensor], ...]

    def evaluate(self) -> torch.Tensor:
        t = self.file.tensor(self.name)
        for axis, index in self.selections:
            t = t.index_select(axis, index)
        return t

    def describe(self) -> str:
        sel = "".join(f".index_select({a}, <{i.numel()}>)" for a, i in self.selections)
        return f"{self.file.path.name}[{self.name!r}]{sel}"


_aten = torch.ops.aten
# Ops that give the same values again: a Deferred result, nothing read.
_SAME = {_aten.detach.default, _aten.alias.default, _aten.clone.default, _aten.lift_fresh.default}


class Deferred(torch.Tensor):
    """A tensor whose values are read from a safetensors file when an operation needs them.

    It has a dtype, a shape and contiguous strides like any CPU tensor, and no storage of its own.
    `index_select` on it (dropping channels) gives another `Deferred` tensor with the selection added
    to its recipe; `detach`/`clone` give the same recipe again. Every other operation evaluates the
    recipe (a memory-map view, then the selections), runs on the values, and returns an ordinary
    tensor; the evaluated values are not kept. `materialize()` gives the values as an ordinary tensor.
    """

    recipe: _Recipe

    @staticmethod
    def __new__(cls, recipe: _Recipe, shape: Iterable[int], dtype: torch.dtype) -> "Deferred":
        t = torch.Tensor._make_wrapper_subclass(cls, tuple(shape), dtype=dtype, device="cpu", requires_grad=False)
        t.recipe = recipe
        return t

    def __init__(self, recipe: _Recipe, shape: Iterable[int], dtype: torch.dtype) -> None:
        pass

    def materialize(self) -> torch.Tensor:
        """The values, as an ordinary tensor (a view of the mapped file when no selection was applied)."""
        return self.recipe.evaluate()

    def __repr__(self) -> str:  # printing must not read a 2 GB tensor
        return f"Deferred({self.recipe.describe()}, shape={list(self.shape)}, dtype={self.dtype})"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _aten.index_select.default and isinstance(args[0], Deferred) and \
                not any(isinstance(a, Deferred) for a in args[1:]):
            src, axis, index = args[0], int(args[1]), args[2]
            axis %= max(src.dim(), 1)
            shape = list(src.shape)
            shape[axis] = int(index.numel())
            index = index.detach().to(torch.int64).reshape(-1).clone()
            return Deferred(_Recipe(src.recipe.file, src.recipe.name, src.recipe.selections + ((axis, index),)),
                            shape, src.dtype)
        if func in _SAME and isinstance(args[0], Deferred) and len(args) == 1 and not kwargs.get("memory_format"):
            return Deferred(args[0].recipe, args[0].shape, args[0].dtype)

        def real(x: Any) -> Any:
            return x.materialize() if isinstance(x, Deferred) else x

        return func(*tree_map(real, args), **tree_map(real, kwargs))


def materialize(t: torch.Tensor) -> torch.Tensor:
    """`t`'s values as an ordinary tensor (`t` itself unless it is `Deferred`)."""
    return t.materialize() if isinstance(t, Deferred) else t


def header_for(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[tuple[str, int]]]:
    """The safetensors header for `tensors` (from dtypes and shapes only: nothing is read), padded with
    spaces to a multiple of 8 bytes as the safetensors library writes it; and (name, nbytes) in file order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    order: list[tuple[str, int]] = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in ST_NAMES:
            raise SrIrError(f"cannot write tensor {name!r} to safetensors: dtype {t.dtype} has no safetensors name")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        order.append((name, nbytes))
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None, *, chunk_bytes: int = 64 << 20) -> None:
    """Write `tensors` as a safetensors file, one tensor at a time: a `Deferred` tensor is evaluated
    right before it is written and dropped right after, so the memory held is the largest single
    tensor a recipe has to build (a plain file tensor is copied from the map in chunks of
    `chunk_bytes`). Atomic (temporary file + rename, the user's umask)."""
    from ..outputs import atomic_save_with

    head, order = header_for(tensors, metadata)

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(head)
            for name, nbytes in order:
                t = materialize(tensors[name]).detach()
                if t.device.type != "cpu":
                    t = t.cpu()
                t = t.contiguous().reshape(-1)
                raw = t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
                if raw.numel() != nbytes:
                    raise SrIrError(f"tensor {name!r} changed size while it was written")
                for start in range(0, nbytes, chunk_bytes):
                    f.write(memoryview(raw[start:start + chunk_bytes].numpy()))
                del t, raw
            f.flush()
            os.fsync(f.fileno())

    atomic_save_with(path, writer)


__all__ = ["Deferred", "SafetensorsFile", "TensorInfo", "header_for", "materialize", "write_safetensors"]
