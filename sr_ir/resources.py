"""Locate the project's data folders (grammar/, rules/, proofs/, prelude/).

From a checkout they sit beside the `sr_ir` package; in an installed wheel they are packaged
inside it as `sr_ir/_data/<name>` (see pyproject.toml). Never relative to the working directory.
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
DATA_DIRS = ("grammar", "rules", "proofs", "prelude")


@lru_cache(maxsize=None)
def data_dir(name: str) -> Path:
    """Return the folder `name` (one of DATA_DIRS), from a wheel or a checkout."""
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data folder {name!r}")
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"sr-ir data folder {name!r} not found beside {_PACKAGE}")


def grammar_path(filename: str) -> Path:
    return data_dir("grammar") / filename


_HELPER_CALL = re.compile(r"\bP\.([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=1)
def prelude_sources() -> dict[str, str]:
    """Function name -> source text of the helpers emitted code calls as `P.name`: prelude/pytorch.py
    and sr_ir/nn/functional.py (read as text: nothing is imported or run)."""
    files = [data_dir("prelude") / "pytorch.py", _PACKAGE / "nn" / "functional.py"]
    out: dict[str, str] = {}
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef):
                out.setdefault(node.name, ast.get_source_segment(text, node) or "")
    return out


def helpers_called(code: str) -> list[str]:
    """The prelude helpers `code` calls (`P.name`), and the ones those call, in a stable order."""
    sources = prelude_sources()
    seen: list[str] = []
    todo = _HELPER_CALL.findall(code)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in sources:
            continue
        seen.append(name)
        todo += _HELPER_CALL.findall(sources[name])
    return sorted(seen)
