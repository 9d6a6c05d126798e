"""Numeric verification: the minimized module against the original, on the example inputs and on
random inputs, in float32 and float64. A mismatch beyond rounding raises VerificationError naming the
check, the output and the position where it appeared."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..comparison import cast_inputs, compare, flat_outputs, random_like
from ..errors import VerificationError

# Relative to max |y| of the original output: float64 rounding gives ~1e-15, float32 ~1e-7.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass
class Check:
    inputs: str  # "example" or "random #i"
    dtype: str
    max_abs: float
    max_rel: float
    output: int
    position: list[int]


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)

    def worst(self, dtype: str) -> Check | None:
        cs = [c for c in self.checks if c.dtype == dtype]
        return max(cs, key=lambda c: c.max_rel) if cs else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for dt in ("float32", "float64"):
            w = self.worst(dt)
            if w is not None:
                out[dt] = {"max_abs": w.max_abs, "max_rel": w.max_rel, "worst_inputs": w.inputs}
        out["checks"] = len(self.checks)
        return out


def same_function(original: nn.Module, minimized: nn.Module, example: Sequence[Any], *, n_random: int = 3,
                  dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64), tolerance: dict | None = None,
                  raise_on_mismatch: bool = True) -> VerificationReport:
    """Compare the two modules on `example` and `n_random` random inputs like it, in each dtype;
    VerificationError at the first output beyond the tolerance (unless `raise_on_mismatch` is off)."""
    for i, x in enumerate(example):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise VerificationError(f"example input {i} holds NaN or infinite values: a comparison on it shows "
                                    f"nothing; give finite example inputs (nothing was written)")
    tol = {**TOLERANCE, **(tolerance or {})}
    stored = _param_dtype(minimized)
    if stored in tol:
        # folded biases are stored in the model's own precision: a float32 model evaluated in float64
        # still carries float32 rounding in those parameters
        for dt in list(tol):
            if torch.finfo(dt).eps < torch.finfo(stored).eps:
                tol[dt] = max(tol[dt], tol[stored])
    rep = VerificationReport()
    inputs = [("example", list(example))] + [(f"random #{i + 1}", random_like(example, 1234 + i)) for i in range(n_random)]
    for dtype in dtypes:
        with _as_dtype(original, dtype) as a, _as_dtype(minimized, dtype) as b:
            _check_all(a, b, inputs, dtype, tol, rep, raise_on_mismatch)
    return rep


def _param_dtype(m: nn.Module) -> torch.dtype | None:
    for p in m.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


@contextlib.contextmanager
def _as_dtype(model: nn.Module, dtype: torch.dtype):
    """The model in `dtype`: a deep copy where possible; modules that cannot be copied (pruning
    re-parametrizations hold non-leaf tensors) are converted in place and restored exactly after."""
    try:
        copied = copy.deepcopy(model)
    except RuntimeError:
        copied = None
    if copied is not None:
        yield copied.to(dtype).eval()
        return
    saved = {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    was_training = model.training
    try:
        yield model.to(dtype).eval()
    finally:
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name in saved:
                t.data = saved[name]
        model.train(was_training)


def _check_all(a: nn.Module, b: nn.Module, inputs: list, dtype: torch.dtype, tol: dict, rep: "VerificationReport",
               raise_on_mismatch: bool) -> None:
    for label, xs in inputs:
        xs = cast_inputs(xs, dtype)
        with torch.no_grad():
            ya = flat_outputs(a(*xs))
        if any(y.is_floating_point() and not bool(torch.isfinite(y).all()) for y in ya):
            raise VerificationError(f"the original model's output holds NaN or infinite values on the {label} "
                                    f"inputs in {str(dtype)[6:]}: nothing can be compared there (nothing was written)")
        try:
            d = compare(a, b, xs)
        except VerificationError as e:
            raise VerificationError(f"{label} inputs ({str(dtype)[6:]}): {e}") from None
        rep.checks.append(Check(label, str(dtype).replace("torch.", ""), d.max_abs, d.max_rel, d.worst_output, d.position))
        if raise_on_mismatch and not d.within(tol[dtype]):
            with torch.no_grad():
                u = flat_outputs(a(*xs))[d.worst_output].double()
                v = flat_outputs(b(*xs))[d.worst_output].double()
            at = tuple(d.position)
            raise VerificationError(
                f"minimized model differs from the original on {label} inputs in {str(dtype)[6:]}: "
                f"output {d.worst_output} at {d.position}: {float(u[at]):.9g} vs {float(v[at]):.9g} "
                f"(max relative error {d.max_rel:.3g} > {tol[dtype]:.0e}); nothing was written"
            )
