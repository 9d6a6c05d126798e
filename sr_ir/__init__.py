"""sr-ir: exact structural minimization of pruned neural networks (Squeeze-Release)."""
from __future__ import annotations

from .errors import ParseError, SrIrError, TypeCheckError, UnsupportedOpError, VerificationError

# The rest is imported on first use (PEP 562), so that light tools (`sr-ir prove --check`, the rule
# loader) do not pay for importing torch.
def _api() -> dict:
    from .backend import emit
    from .frontend import lower
    from .ir.parser import parse
    from .ir.persist import load
    from .ir.program import Node, ParamRef, Program, ValueRef
    from .ir.types import TensorType
    from .minimization import Minimized, MinimizeReport, minimize
    from .minimization.streaming import minimize_checkpoint

    return {"emit": emit, "lower": lower, "parse": parse, "load": load, "Node": Node, "ParamRef": ParamRef,
            "Program": Program, "ValueRef": ValueRef, "TensorType": TensorType, "Minimized": Minimized,
            "MinimizeReport": MinimizeReport, "minimize": minimize,
            "minimize_checkpoint": minimize_checkpoint}


def __getattr__(name: str) -> object:
    api = _api()
    if name in api:
        globals().update(api)
        return api[name]
    raise AttributeError(f"module 'sr_ir' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, without importing them: tab completion and dir() show the whole public API
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "emit",
    "minimize",
    "minimize_checkpoint",
    "Minimized",
    "MinimizeReport",
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
