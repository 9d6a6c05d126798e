"""Save and load a program: IR text in `<path>` (conventionally .sr), weights in `<path-stem>.safetensors`.

The two files are one transaction. The text's first line, ``# sr-ir pair <id>`` (a comment to the
parser), and the weights' metadata carry the same id, a hash of the printed text. Under a lock on
the folder, a save writes, each step atomically (`sr_ir.outputs`):

1. the new text beside the target, as ``.sr-ir-next.<id>.<name>``;
2. the weights over ``<stem>.safetensors``: the commit point;
3. the new text over ``<path>``.

Interrupted before step 2, the old pair is intact; after it, `load` takes the text from step 1's
file (and moves it into place, as the next save also does). A text and weights that were not saved
together (copied from elsewhere, or written by another tool) are a one-line SrIrError naming both
files, never a program with the wrong weights. The id names the text, not the weights: two saves
with the same text are the same program whichever weights file is paired with it. Files without
the id (older saves, hand-written text with its weights) load as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ParseError, SrIrError
from ..outputs import atomic_save_with, atomic_write, check_target, durable_replace, folder_lock, remove_stale_temps
from ..syntax import read_source
from .parser import parse
from .program import Program

if TYPE_CHECKING:
    from ..minimization.api import RulesArg

PAIR_KEY = "sr_ir.pair"  # safetensors metadata: the id of the text saved with these weights
ALIASES_KEY = "sr_ir.aliases"  # safetensors metadata: JSON {name: stored name} of tied tensors
# safetensors metadata of the weights that sr_ir.backend.export writes beside a .py: that file's name
PYTHON_KEY = "sr_ir.python"
NEXT_PREFIX = ".sr-ir-next."
_HEADER = re.compile(r"# sr-ir pair ([0-9a-f]{32})(?![0-9a-f])")
_NEXT = re.compile(r"^\.sr-ir-next\.([0-9a-f]{32})\.(.+)$")


def weights_path(path: str | os.PathLike[str]) -> Path:
    """The weights file of the program saved at ``path``: its name with the suffix ``.safetensors``."""
    return Path(path).with_suffix(".safetensors")


def check_save_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; SrIrError when its text or its weights would have to replace a folder."""
    if Path(path).suffix == ".safetensors":
        raise SrIrError(f"{path}: a program's text cannot be saved as .safetensors (its weights go there); use .sr")
    check_target(weights_path(path))
    return check_target(path)


def pair_id(text: str) -> str:
    """The id that pairs a printed program text with its weights file."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def save_program(p: Program, path: str | os.PathLike[str]) -> None:
    """Write ``p`` as ``path`` (IR text) + ``weights_path(path)``; readers see the old pair or the new one."""
    path = check_save_path(path)
    missing = [n for n in p.params if n not in p.weights]
    if missing:
        raise SrIrError(f"cannot save: no weights for {', '.join('@' + m for m in missing[:5])}")
    text = p.to_text()
    pair = pair_id(text)
    tensors, aliases = distinct_tensors({n: p.weights[n] for n in p.params})
    metadata = {PAIR_KEY: pair, **({ALIASES_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_foreign_weights(path, owner_key=PYTHON_KEY, owner_suffix=".py")
    with folder_lock(path.parent):
        _finish_interrupted_save(path)
        next_text = _next_path(path, pair)
        atomic_write(next_text, f"# sr-ir pair {pair}\n{text}")
        atomic_save_with(weights_path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))
        durable_replace(next_text, path)


def refuse_foreign_weights(path: Path, *, owner_key: str, owner_suffix: str) -> None:
    """Refuse to overwrite ``<stem>.safetensors`` when it holds the weights of the other format's file
    (``small.sr`` and ``small.py`` would both write ``small.safetensors``, and their keys differ)."""
    wp = weights_path(path)
    owner = path.with_suffix(owner_suffix)
    if not (wp.is_file() and owner.is_file()):
        return
    try:
        with safe_open(str(wp), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # not a safetensors file: nobody's weights, this save replaces it
        return
    if owner_key in metadata:
        raise SrIrError(f"{wp} holds the weights of {owner}; saving {path} would replace them: "
                        f"give {path} another name (or remove {owner})")


def distinct_tensors(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store (CPU, contiguous, no two sharing memory) and ``{alias: stored name}``.

    safetensors refuses tensors that share memory. An exact alias (same storage, offset, shape,
    strides and dtype: tied embeddings) is stored once and named in the metadata; any other overlap
    (a view of another tensor) is stored as a copy of its own.
    """
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in weights.items():
        t = t.detach()
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in first:
            aliases[name] = first[key]
            continue
        first[key] = name
        t = t.contiguous().cpu()
        if t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        stored[name] = t
    return stored, aliases


def _next_path(path: Path, pair: str) -> Path:
    return path.parent / f"{NEXT_PREFIX}{pair}.{path.name}"


def _finish_interrupted_save(path: Path) -> None:
    """Complete a save of ``path`` interrupted after its commit; remove the texts of saves that never committed.

    Called under the folder lock, so no other save of the folder is between its steps.
    """
    pair = _stored_pair(weights_path(path))
    if pair is not None:
        pending = _next_path(path, pair)
        if pending.is_file() and not _file_matches(path, pair):
            durable_replace(pending, path)
    def is_next(name: str) -> bool:
        m = _NEXT.match(name)
        return m is not None and m.group(2) == path.name

    for e in list(os.scandir(path.parent)):
        if is_next(e.name):
            Path(e.path).unlink(missing_ok=True)
    remove_stale_temps(path, matching=is_next)  # those of next texts a killed save was writing


def _file_matches(path: Path, pair: str) -> bool:
    try:
        return _matches(read_source(path), pair)
    except (OSError, ParseError):  # missing, or not text: this save replaces it
        return False


def _stored_pair(wp: Path) -> str | None:
    """The pair id in the metadata of ``wp`` (None: no file, no id, or not a safetensors file)."""
    if not wp.is_file():
        return None
    try:
        with safe_open(str(wp), framework="pt") as f:
            return (f.metadata() or {}).get(PAIR_KEY)
    except Exception:  # a foreign or torn file is overwritten by this save: it has no committed text
        return None


def _matches(text: str, pair: str | None) -> bool:
    """Whether ``text`` was saved with the weights whose id is ``pair``."""
    m = _HEADER.match(text)
    if m:
        return m.group(1) == pair
    # no header: an older save (no id on either side), or the printed text with its header removed
    return pair is None or pair_id(text) == pair


@dataclass(frozen=True)
class _Pair:
    text_file: Path  # where the text was read: the program's path, or an interrupted save's next text
    text: str
    tensors: dict[str, torch.Tensor] | None  # None: there is no weights file
    metadata: dict[str, str]


def load(path: str | os.PathLike[str], rules: RulesArg = None) -> Program:
    """Load a program saved by Program.save (the IR text and its safetensors weights, checked to be one pair).

    ``rules`` are those its ops are checked against, as `sr_ir.minimize` takes them: None for the
    bundled rules, a RuleSet, or a rule directory (or several) added to the bundled ones. A program
    that uses an op of a user's rule directory reads back with that directory:

    >>> prog = load("small.sr", rules="my_rules/")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        found = _read_pair(path)
    except (SrIrError, FileNotFoundError):
        # a save may have replaced a file in between (safetensors opens one twice), or renamed the next
        # text we were about to read into place: look again under the folder's lock, which saves hold
        found = None
    if found is None or found.text_file != path:
        # A save may be between its renames (wait for it, then look again) or was interrupted there.
        with folder_lock(path.parent) if path.parent.is_dir() else nullcontext():
            found = _read_pair(path)
            if found is not None and found.text_file != path:
                found = _move_into_place(found, path)
    wp = weights_path(path)
    if found is None:
        raise SrIrError(f"{path} and {wp} were not saved together (the text's pair id differs from the weights'); "
                        "save the program again")
    from ..ir.checker import check_program
    from ..minimization.api import resolve_rules  # (lazy: the minimization package imports this one)

    rule_set = resolve_rules(rules)  # first: a bad rule directory is reported as such, not as the text's op
    p = parse(found.text, str(found.text_file), check=False)
    check_program(p, rule_set)
    if p.params:
        if found.tensors is None:
            raise SrIrError(f"{path}: weight file {wp} is missing")
        p.weights = _checked_weights(p, _with_aliases(found.tensors, found.metadata, wp), wp)
    return p


def _read_pair(path: Path) -> _Pair | None:
    """The program's text and weights when they are one saved pair; None when they are not."""
    wp = weights_path(path)
    text = read_source(path) if path.is_file() else None
    if not wp.is_file():
        if text is None:
            raise SrIrError(f"no such file: {path}")
        return _Pair(path, text, None, {})
    metadata, tensors = _read_weights(wp)
    pair = metadata.get(PAIR_KEY)
    if text is not None and _matches(text, pair):
        return _Pair(path, text, tensors, metadata)
    pending = _next_path(path, pair) if pair else None
    if pending is not None and pending.is_file():
        pending_text = read_source(pending)
        if _matches(pending_text, pair):
            return _Pair(pending, pending_text, tensors, metadata)
    if text is None:
        raise SrIrError(f"no such file: {path}")
    return None


def _move_into_place(found: _Pair, path: Path) -> _Pair:
    """Finish the interrupted save whose text ``found`` holds; a read-only folder keeps it where it is."""
    try:
        durable_replace(found.text_file, path)
    except OSError:
        return found
    return replace(found, text_file=path)


def _read_weights(wp: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    fd = -1
    try:
        fd = os.open(wp, os.O_RDONLY)
        # safetensors opens its path twice (the header, then the data): a save renaming another file over
        # `wp` in between would pair one file's header with the other's bytes. Through our descriptor
        # both opens are of this one file.
        with safe_open(_descriptor_path(fd, wp), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors has its own error types for torn and foreign files
        first = next(iter(str(e).strip().splitlines()), "")
        raise SrIrError(f"{wp}: not a readable safetensors file ({type(e).__name__}: {first})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _descriptor_path(fd: int, fallback: Path) -> str:
    """A path that opens the file ``fd`` is open on (Linux, macOS); ``fallback`` where there is none."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        if os.path.exists(f"{folder}/{fd}"):
            return f"{folder}/{fd}"
    return str(fallback)


def _with_aliases(tensors: dict[str, torch.Tensor], metadata: dict[str, str], wp: Path) -> dict[str, torch.Tensor]:
    """``tensors`` plus the tied names the save stored once, sharing their tensor again."""
    try:
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except json.JSONDecodeError:
        raise SrIrError(f"{wp}: metadata {ALIASES_KEY} is not JSON") from None
    out = dict(tensors)
    for name, stored in aliases.items():
        if stored not in tensors:
            raise SrIrError(f"{wp}: tensor {name} is stored as {stored}, which the file does not hold")
        out[name] = tensors[stored]
    return out


def _checked_weights(p: Program, weights: dict[str, torch.Tensor], wp: Path) -> dict[str, torch.Tensor]:
    for name, t in p.params.items():
        if name not in weights:
            raise ParseError(f"parameter @{name} has no tensor in {wp}")
        w = weights[name]
        if tuple(w.shape) != tuple(t.shape) or w.dtype != t.torch_dtype:
            raise ParseError(f"parameter @{name} is declared {t} but {wp} holds {tuple(w.shape)} {w.dtype}")
    return {n: weights[n] for n in p.params}


__all__ = ["atomic_save_with", "atomic_write", "check_save_path", "distinct_tensors", "load", "pair_id", "refuse_foreign_weights", "save_program", "weights_path"]
