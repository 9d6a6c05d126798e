"""Op declarations read from rule files: signature, shape rule, semantics, ATen and torch mappings.

The declarations are data (rules/ops/*.rules); this module turns their syntax tree into OpDecl
objects and evaluates shape patterns. Nothing here knows any particular op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Loc

# dtype variables of op declarations that range over a class: `I` an index tensor, `F` a floating-point
# one (ops whose `means` is real arithmetic: the prover's semantics, and torch's kernels, are those of
# floats); any other capital letter ranges over every dtype
DTYPE_CLASSES: dict[str, tuple[frozenset[str], str]] = {
    "I": (frozenset({"i32", "i64"}), "an integer tensor (i32, i64)"),
    "F": (frozenset({"f16", "bf16", "f32", "f64"}), "a floating-point tensor (f16, bf16, f32, f64)"),
}


@dataclass
class TensorPattern:
    dtype: str  # a dtype name, or a single capital letter: a dtype variable
    dims: list[Any]  # sympy expressions, or ("*", name) for a variadic run of dims


@dataclass
class TensorParam:
    name: str
    pattern: TensorPattern
    optional: bool
    scalar_ok: bool = False  # `| scalar`: a number may stand in for the tensor
    variadic: bool = False  # `...`: any number of operands (the last parameter only)


@dataclass
class AttrParam:
    name: str
    kind: str  # int, ints, float, floats, bool, str, dims
    optional: bool
    default: Any
    has_default: bool


@dataclass
class AtenMapping:
    target: str  # e.g. aten.linear.default
    args: list[str | None]  # op parameter per ATen positional argument (None: ignored)


@dataclass(frozen=True)
class ModuleTemplate:
    """`module "nn.Linear(...)" holds weight, bias`: the torch.nn layer a node of the op may be emitted
    as (a constructor call over the op's attributes, dims and `has_<operand>`/`dtype` fields), and the
    tensor operands that are the layer's own state (attributes of the same names); the other operands are
    what the layer is called with, in declaration order. Emission only: no proof reads it."""

    text: str
    holds: tuple[str, ...]
    loc: Loc | None = None


@dataclass
class OpDecl:
    name: str
    tensor_params: list[TensorParam]
    attr_params: list[AttrParam]
    result: TensorPattern | str  # a pattern, or the name of a shape function
    where: list[Any] = field(default_factory=list)  # condition trees (see rules/ast)
    aten: list[AtenMapping] = field(default_factory=list)
    torch: str | None = None
    means: list[Any] = field(default_factory=list)
    loc: Loc | None = None
    module: ModuleTemplate | None = None  # the layer a node may be emitted as (sr_ir.backend)
    # a recurrent op (`carry` / `step` clauses): its `means` is one step (sr_ir.lang.recurrence)
    recurrence: Any = None

    def attr(self, name: str) -> AttrParam | None:
        for a in self.attr_params:
            if a.name == name:
                return a
        return None

    def tensor_param(self, name: str) -> TensorParam | None:
        for t in self.tensor_params:
            if t.name == name:
                return t
        return None

    @property
    def param_names(self) -> list[str]:
        return [t.name for t in self.tensor_params] + [a.name for a in self.attr_params]

    def operands_in_order(self, given: "dict[str, Any]") -> list[Any]:
        """A node's operand list from tensor arguments by parameter name (a variadic one: a list), in
        the declaration's order; absent optional operands at the end are left out."""
        operands: list[Any] = []
        for tp in self.tensor_params:
            v = given.get(tp.name)
            if tp.variadic:
                operands.extend(v or [])
            else:
                operands.append(v)
        while operands and operands[-1] is None:
            operands.pop()
        return operands

    def parameters_of(self, args: "list[Any] | tuple[Any, ...]") -> list[tuple[str | None, Any]]:
        """(parameter, argument) for each positional argument of a call: a variadic parameter takes
        every argument up to the parameters after it; arguments beyond the last parameter get None."""
        params = self.param_names
        var = next((t.name for t in self.tensor_params if t.variadic), None)
        if var is None:
            return [(params[i] if i < len(params) else None, a) for i, a in enumerate(args)]
        at = params.index(var)
        n_after = len(params) - at - 1
        args = list(args)
        out: list[tuple[str | None, Any]] = [(params[i], a) for i, a in enumerate(args[:at])]
        out += [(var, a) for a in args[at:len(args) - n_after]]
        out += [(params[at + 1 + k], a) for k, a in enumerate(args[len(args) - n_after:])]
        return out
