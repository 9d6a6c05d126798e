"""sr-ir: exact structural minimization of pruned neural networks (Squeeze-Release)."""
from __future__ import annotations

from .errors import ParseError, SrIrError, TypeCheckError, UnsupportedOpError, VerificationError

# The rest is imported on first use (PEP 562), so that light tools (`sr-ir prove --check`, the rule
# loader) do not pay for importing torch.
_LAZY = {
    "parse": (".ir.parser", "parse"),
    "Node": (".ir.program", "Node"),
    "ParamRef": (".ir.program", "ParamRef"),
    "Program": (".ir.program", "Program"),
    "ValueRef": (".ir.program", "ValueRef"),
    "TensorType": (".ir.types", "TensorType"),
    "load": (".ir.persist", "load"),
    "lower": (".frontend", "lower"),
    "emit": (".backend", "emit"),
    "minimize": (".minimization", "minimize"),
    "Minimized": (".minimization", "Minimized"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sr_ir' has no attribute {name!r}")


__all__ = [
    "emit",
    "minimize",
    "Minimized",
    "load",
    "lower",
    "Node",
    "ParamRef",
    "ParseError",
    "Program",
    "SrIrError",
    "TensorType",
    "TypeCheckError",
    "UnsupportedOpError",
    "ValueRef",
    "VerificationError",
    "parse",
]
__version__ = "0.1.0"
