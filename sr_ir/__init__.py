"""sr-ir: exact structural minimization of pruned neural networks (Squeeze-Release)."""
from __future__ import annotations

from .errors import ParseError, SrIrError, TypeCheckError, UnsupportedOpError, VerificationError
from .ir.parser import parse
from .ir.program import Node, ParamRef, Program, ValueRef
from .ir.types import TensorType
from .ir.persist import load
from .frontend import lower
from .backend import emit
from .minimize import minimize, Minimized

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
