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
from ..ir.program import Program
from ..ir.types import DTYPE_NAMES, FLOAT_DTYPES, TensorType
from ..lang.loader import RuleSet

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
                  raise_on_mismatch: bool = True, rules: RuleSet | None = None) -> VerificationReport:
    """Compare the two modules on `example` and `n_random` random inputs like it, in each dtype;
    VerificationError at the first output beyond the tolerance (unless `raise_on_mismatch` is off).

    A module sr-ir emitted is compared in each dtype as its program retyped to that dtype and emitted
    again with `rules` (default: the bundled ones), so that both sides compute like with like: the
    original converted with `.to(dtype)` keeps its own float32 casts and follows the dtype elsewhere,
    and so does the retyped program (`retyped`)."""
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
        with _as_dtype(original, dtype, rules) as a, _as_dtype(minimized, dtype, rules) as b:
            _check_all(a, b, inputs, dtype, tol, rep, raise_on_mismatch)
    return rep


def _param_dtype(m: nn.Module) -> torch.dtype | None:
    for p in m.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def working_dtype(program: Program) -> str | None:
    """The float dtype a program computes in: that of its float inputs, else the one most of its
    float parameters hold (a language model reads integer ids); None when it has no float values.
    Float values of another dtype are the model's own casts (HF RMSNorm computes in float32)."""
    inputs = {t.dtype for _, t in program.inputs if t.dtype in FLOAT_DTYPES}
    if len(inputs) == 1:
        return inputs.pop()
    counts: dict[str, int] = {}
    for t in program.params.values():
        if t.dtype in FLOAT_DTYPES:
            counts[t.dtype] = counts.get(t.dtype, 0) + 1
    return max(counts, key=lambda d: counts[d]) if counts else None


def retyped(program: Program, dtype: str) -> Program:
    """`program` computing in `dtype` instead of its working dtype (a copy; weights shared, converted
    when emitted): inputs, parameters and values of the working dtype take `dtype`, and so does every
    `dtype` attribute naming it (a cast back to the model's dtype, a zeros_like); casts to other
    dtypes stay as the model wrote them. This is what the model itself does when converted with
    `.to(dtype)`: its parameters change, its explicit casts to fixed dtypes do not, and its casts back
    to "the input's dtype" follow the input."""
    work = working_dtype(program)
    p = program.copy(weights=False)
    p.weights = dict(program.weights)
    if work is None or work == dtype:
        return p

    def conv(t: TensorType) -> TensorType:
        return TensorType(dtype, t.shape) if t.dtype == work else t

    p.inputs = [(name, conv(t)) for name, t in p.inputs]
    p.params = {name: conv(t) for name, t in p.params.items()}
    for n in p.nodes:
        n.type = conv(n.type)
        if n.attrs.get("dtype") == work:
            n.attrs["dtype"] = dtype
    p.output_types = [conv(t) for t in p.output_types]
    return p


def _emitted_in(model: nn.Module, dtype: torch.dtype, rules: RuleSet | None) -> nn.Module | None:
    """A module emitted by sr-ir, emitted again from its program retyped to `dtype`: converting the
    module's parameters alone would leave the casts of its generated code at the program's dtypes,
    computing a mixture the original never does. None for any other module, and for a program whose
    ops `rules` does not declare (a user's rule directory not passed here), which is converted as
    before."""
    skeleton = getattr(model, "sr_ir_program", None)
    names = getattr(model, "sr_ir_names", None)
    if not isinstance(skeleton, Program) or not isinstance(names, dict):
        return None
    from ..backend import emit
    from ..lang.loader import default_rules

    rules = rules or default_rules()
    if any(n.op not in rules.ops for n in skeleton.nodes):
        return None
    state = model.state_dict()
    program = skeleton.copy(weights=False)
    program.weights = {n: state[names[n]].detach() for n in program.params}
    return emit(retyped(program, DTYPE_NAMES[dtype]), rules).eval()


@contextlib.contextmanager
def _as_dtype(model: nn.Module, dtype: torch.dtype, rules: RuleSet | None = None):
    """The model in `dtype`: an emitted module emitted again in it (`_emitted_in`); any other a deep
    copy converted where possible; modules that cannot be copied (pruning re-parametrizations hold
    non-leaf tensors) are converted in place and restored exactly after."""
    again = _emitted_in(model, dtype, rules)
    if again is not None:
        yield again
        return
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
