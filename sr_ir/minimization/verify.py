"""Numeric verification: the minimized module against the original, on the example inputs and on
random inputs, in the model's own dtype and in float32 and float64. A mismatch beyond rounding raises
VerificationError naming the check, the output and the position where it appeared.

No pass copies a model. The pass in a module's own dtype runs the module as it is; a pass in another
dtype runs the module's program (the lowered original, or the program an emitted module carries, with
the module's current weights) through the interpreter (`sr_ir.backend.interpret.run_program`), which
casts each parameter for the one node that reads it. A float64 check of a float32 model of M bytes so
holds one float64 parameter at a time, not a 2M float64 copy of each model. A plain nn.Module without a
program (the cycle's and a user's own comparisons) is still converted as a deep copy."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..comparison import cast_inputs, difference, flat_outputs, random_like
from ..constants import N_RANDOM  # random inputs beside the example: one (why: sr_ir/constants.py)
from ..errors import VerificationError
from ..ir.program import Program
from ..ir.types import DTYPE_NAMES, DTYPES, FLOAT_DTYPES, TensorType
from ..lang.loader import RuleSet

# Relative to max |y| of the original output: float64 rounding gives ~1e-15, float32 ~1e-7. A pass in a
# half dtype compares two networks that both round every op's result to 8 (bfloat16) or 11 (float16)
# significant bits, in different orders (fewer channels, folded constants): measured up to 1.4e-2 for
# bfloat16 and 1.2e-3 for float16 on small MLPs, CNNs, ConvNeXts and transformers (2026-12-02), about 3
# units of their rounding (2^-8, 2^-11) after a few layers; the tolerances leave a factor 3-4 to that.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}

# What storing a folded constant in a model's own dtype costs a pass in a wider dtype: a float32 model
# checked in float64 is held to the float32 tolerance; a half model checked in float32 or float64 sees
# only its folded biases rounded once (unit 2^-9 bfloat16, 2^-12 float16; measured up to 7.4e-4 and
# 1.9e-4 on the same networks), far less than its own pass's op-by-op rounding, so it gets this bound.
STORED_ROUNDING = {torch.float16: 1e-3, torch.bfloat16: 4e-3}

_HALF = (torch.float16, torch.bfloat16)


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
        for dt in ("bfloat16", "float16", "float32", "float64"):
            w = self.worst(dt)
            if w is not None:
                out[dt] = {"max_abs": w.max_abs, "max_rel": w.max_rel, "worst_inputs": w.inputs}
        out["checks"] = len(self.checks)
        return out


def same_function(original: nn.Module, minimized: nn.Module, example: Sequence[Any], *, n_random: int = N_RANDOM,
                  dtypes: Sequence[torch.dtype] | None = None, tolerance: dict | None = None,
                  raise_on_mismatch: bool = True, rules: RuleSet | None = None,
                  original_program: Program | None = None) -> VerificationReport:
    """Compare the two modules on `example` and `n_random` random inputs like it, in each dtype;
    VerificationError at the first output beyond the tolerance (unless `raise_on_mismatch` is off).

    `dtypes` defaults to float32 and float64, preceded by the model's own dtype when that is a half
    one (bfloat16, float16): the pass in the model's dtype checks what the user runs, the wider passes
    check the function at a resolution the half dtypes cannot show.

    In its own dtype a module runs as it is (in eval mode, restored after). In another dtype, each
    side computes like the model converted with `.to(dtype)`: an emitted module as its program retyped
    to that dtype (`retyped`, with the module's weights as they are now), the original as
    `original_program` retyped (the program it was lowered to; give it, or the original is deep-copied
    and converted), both run by the interpreter with each parameter cast for the node that reads it.
    Retyping keeps the model's own casts (HF RMSNorm's float32) where `.to` would keep them too. `rules`
    (default: the bundled ones) are the op templates the programs run with; a program with an op they
    do not declare is emitted modules' old path: a converted copy."""
    for i, x in enumerate(example):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise VerificationError(f"example input {i} holds NaN or infinite values: a comparison on it shows "
                                    f"nothing; give finite example inputs (nothing was written)")
    tol = {**TOLERANCE, **(tolerance or {})}
    stored = _param_dtype(minimized)
    if stored in tol:
        # folded biases are stored in the model's own precision: a float32 model evaluated in float64
        # still carries float32 rounding in those parameters
        floor = STORED_ROUNDING.get(stored, tol[stored])
        for dt in list(tol):
            if torch.finfo(dt).eps < torch.finfo(stored).eps:
                tol[dt] = max(tol[dt], floor)
    if dtypes is None:
        own = _own_dtype(original, original_program)
        dtypes = ((own,) if own in _HALF else ()) + (torch.float32, torch.float64)
    rep = VerificationReport()
    inputs = [("example", list(example))] + [(f"random #{i + 1}", random_like(example, 1234 + i)) for i in range(n_random)]
    for dtype in dtypes:
        with _as_dtype(original, dtype, rules, original_program) as a, _as_dtype(minimized, dtype, rules) as b:
            _check_all(a, b, inputs, dtype, tol, rep, raise_on_mismatch)
    return rep


def _param_dtype(m: nn.Module) -> torch.dtype | None:
    for p in m.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _own_dtype(model: nn.Module, program: Program | None = None) -> torch.dtype | None:
    """The float dtype `model` computes in: its program's working dtype, else the dtype most of its
    floating parameters (then buffers) hold."""
    if program is None:
        program = _program_of(model)
    if program is not None:
        work = working_dtype(program)
        return DTYPES[work] if work is not None else None
    counts: dict[torch.dtype, int] = {}
    for group in (list(model.parameters()), list(model.buffers())):
        for t in group:
            if t.is_floating_point():
                counts[t.dtype] = counts.get(t.dtype, 0) + 1
        if counts:
            return max(counts, key=lambda d: counts[d])
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


def _program_of(model: nn.Module) -> Program | None:
    """The program of a module sr-ir emitted, with the module's current tensors as its weights (shared,
    not copied: a module fine-tuned or altered since is what is checked); None for any other module."""
    skeleton = getattr(model, "sr_ir_program", None)
    names = getattr(model, "sr_ir_names", None)
    if not isinstance(skeleton, Program) or not isinstance(names, dict):
        return None
    state = model.state_dict(keep_vars=True)
    if any(names.get(n) not in state for n in skeleton.params):
        return None
    program = skeleton.copy(weights=False)
    program.weights = {n: state[names[n]].detach() for n in program.params}
    return program


class _Interpreted:
    """A program run node by node by the interpreter, called like the module it stands for."""

    def __init__(self, program: Program, rules: RuleSet | None):
        self.program, self.rules = program, rules

    def __call__(self, *inputs: Any) -> list[torch.Tensor]:
        from ..backend.interpret import run_program

        return run_program(self.program, inputs, rules=self.rules)


def _runs_as_is(model: nn.Module, program: Program | None, dtype: torch.dtype) -> bool:
    """Whether `model` as it is computes the pass in `dtype`: `dtype` is its own, and an emitted module
    still holds every tensor in the dtype its program declares (one converted with `.float()` since
    does not: its generated casts would compute a mixture)."""
    if _own_dtype(model, program) != dtype:
        return False
    if getattr(model, "sr_ir_program", None) is None or program is None:
        return True
    return all(program.weights[n].dtype == t.torch_dtype for n, t in program.params.items())


def _interpretable(program: Program, rules: RuleSet | None) -> bool:
    from ..lang.loader import default_rules

    ops = (rules or default_rules()).ops
    return all(n.op in ops and ops[n.op].torch is not None for n in program.nodes)


@contextlib.contextmanager
def _as_dtype(model: nn.Module, dtype: torch.dtype, rules: RuleSet | None = None,
              program: Program | None = None) -> Iterator[Callable[..., Any]]:
    """`model` computing in `dtype`, as a callable: the module itself in its own dtype; its program
    (`program`, else the one an emitted module carries) retyped and interpreted in another; else a
    deep copy converted where possible; modules that cannot be copied (pruning re-parametrizations
    hold non-leaf tensors) are converted in place and restored exactly after."""
    if program is None:
        program = _program_of(model)
    rules = rules or getattr(model, "sr_ir_rules", None)  # an emitted module's own ops (a user's rules)
    if _runs_as_is(model, program, dtype):
        with _evaluating(model):
            yield model
        return
    if program is not None and _interpretable(program, rules):
        yield _Interpreted(retyped(program, DTYPE_NAMES[dtype]), rules)
        return
    try:
        copied = copy.deepcopy(model)
    except RuntimeError:
        copied = None
    if copied is not None:
        yield copied.to(dtype).eval()
        return
    saved = {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    with _evaluating(model):
        try:
            yield model.to(dtype)
        finally:
            for name, t in list(model.named_parameters()) + list(model.named_buffers()):
                if name in saved:
                    t.data = saved[name]


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode (dropout off, batch norm on its running statistics), each submodule's
    training flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was in flags:
            m.training = was


def _check_all(a: Callable[..., Any], b: Callable[..., Any], inputs: list, dtype: torch.dtype, tol: dict,
               rep: "VerificationReport", raise_on_mismatch: bool) -> None:
    name = str(dtype)[6:]
    for label, xs in inputs:
        xs = cast_inputs(xs, dtype)
        with torch.no_grad():
            ya = flat_outputs(a(*xs))
        if any(y.is_floating_point() and not bool(torch.isfinite(y).all()) for y in ya):
            raise VerificationError(f"the original model's output holds NaN or infinite values on the {label} "
                                    f"inputs in {name}: nothing can be compared there (nothing was written)")
        with torch.no_grad():
            yb = flat_outputs(b(*xs))
        try:
            d = difference(ya, yb)
        except VerificationError as e:
            raise VerificationError(f"{label} inputs ({name}): {e}") from None
        rep.checks.append(Check(label, name, d.max_abs, d.max_rel, d.worst_output, d.position))
        if raise_on_mismatch and not d.within(tol[dtype]):
            u = ya[d.worst_output].double()
            v = yb[d.worst_output].double()
            at = tuple(d.position)
            raise VerificationError(
                f"minimized model differs from the original on {label} inputs in {name}: "
                f"output {d.worst_output} at {d.position}: {float(u[at]):.9g} vs {float(v[at]):.9g} "
                f"(max relative error {d.max_rel:.3g} > {tol[dtype]:.0e}); nothing was written"
            )
        del ya, yb
