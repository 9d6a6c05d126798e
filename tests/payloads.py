"""Pickles that run code when unpickled: they create a marker file, so a test can tell whether an input
that sr-ir reads was unpickled by anything that executes it."""
from __future__ import annotations

import io
import os
import pathlib
from pathlib import Path
from typing import Any

import torch


class Payload:
    """Unpickling this creates `marker`, through os.system ("system"), pathlib.Path.touch ("touch") or
    builtins.exec ("exec")."""

    def __init__(self, marker: Path, how: str = "system"):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        if self.how == "touch":
            return pathlib.Path.touch, (self.marker,)
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


# the global each payload's pickle names (os.system is posix.system here)
GLOBALS = {"system": f"{os.system.__module__}.system", "touch": "pathlib.Path.touch", "exec": "builtins.exec"}


def saved(obj: Any, protocol: int = 2) -> bytes:
    """`obj` as torch.save writes it (protocol 4 pickles globals with STACK_GLOBAL, 2 with GLOBAL)."""
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()
