"""Locate the project's data folders (grammar/, rules/, proofs/, prelude/).

From a checkout they sit beside the `sr_ir` package; in an installed wheel they are packaged
inside it as `sr_ir/_data/<name>` (see pyproject.toml). Never relative to the working directory.
"""
from __future__ import annotations

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
