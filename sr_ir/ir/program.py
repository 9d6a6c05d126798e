"""The IR: a typed SSA graph over tensors with parameters held in a weight store."""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Container, Iterator, Union

import torch

from ..errors import Loc
from .types import TensorType


def fresh_name(base: str, *taken: Container[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first that none of `taken` holds. Every new value and
    parameter name in sr-ir comes from here, so names stay readable and never collide."""
    name, k = base, 1
    while any(name in t for t in taken):
        name, k = f"{base}_{k}", k + 1
    return name


_PLAIN_PARAM = re.compile(r"[A-Za-z0-9_.\-]+")


def param_text(name: str) -> str:
    """`@name` as program text writes it: plain when the name holds only letters, digits, `_`, `-`
    and `.`, else quoted (a torch module path may hold any character but `.` in a component)."""
    return "@" + (name if _PLAIN_PARAM.fullmatch(name) else json.dumps(name))


@dataclass(frozen=True)
class ValueRef:
    """An operand that names an SSA value (`%name`)."""

    name: str

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class ParamRef:
    """An operand that names a parameter in the weight store (`@name`)."""

    name: str

    def __str__(self) -> str:
        return param_text(self.name)


# Positional operands: a value, a parameter, an absent optional operand (None) or a scalar.
Operand = Union[ValueRef, ParamRef, None, float, int]


@dataclass
class Node:
    """`%name = op(operands..., attr=...) : type`."""

    name: str
    op: str
    operands: list[Operand]
    attrs: dict[str, Any]
    type: TensorType
    loc: Loc | None = field(default=None, compare=False)
    # Where the node came from in the user's model (file:line), when lowered from PyTorch.
    origin: str | None = field(default=None, compare=False)

    def value_operands(self) -> Iterator[ValueRef]:
        """The operands that are values (%name), in order."""
        for o in self.operands:
            if isinstance(o, ValueRef):
                yield o

    def param_operands(self) -> Iterator[ParamRef]:
        """The operands that are parameters (@name), in order."""
        for o in self.operands:
            if isinstance(o, ParamRef):
                yield o


@dataclass
class Program:
    """A graph with named inputs, declared parameters, nodes in topological order and outputs.

    `weights` maps parameter names to tensors; it may be empty for a program parsed from text
    without its weight file (it can still be printed and type-checked, not run).
    """

    name: str
    inputs: list[tuple[str, TensorType]]
    params: dict[str, TensorType]
    nodes: list[Node]
    outputs: list[str]
    output_types: list[TensorType]
    weights: dict[str, torch.Tensor] = field(default_factory=dict, compare=False)
    # Parameters that are non-trainable state (BatchNorm statistics, index tables, norm constants).
    buffers: set[str] = field(default_factory=set)
    # Where the graph header and its `return` were written, for errors about results.
    loc: Loc | None = field(default=None, compare=False)
    ret_loc: Loc | None = field(default=None, compare=False)
    # Where each parameter was declared, for errors about a declaration (text programs only).
    param_locs: dict[str, Loc] = field(default_factory=dict, compare=False)
    # Parameters lowered from a model tensor of another name: name -> (the model's state_dict key,
    # how it was derived), e.g. GPT-2's `c_attn.weight_t` -> ("c_attn.weight", "transposed"); the
    # key is None for a constant the model computes (attention-mask code).
    origins: dict[str, tuple[str | None, str]] = field(default_factory=dict, compare=False)

    # ---- queries -------------------------------------------------------------------------
    def value_types(self) -> dict[str, TensorType]:
        """The type of every value: the inputs and each node's result."""
        types = {n: t for n, t in self.inputs}
        for node in self.nodes:
            types[node.name] = node.type
        return types

    def node_map(self) -> dict[str, Node]:
        """Each node by the name of the value it defines."""
        return {n.name: n for n in self.nodes}

    def users(self) -> dict[str, list[Node]]:
        """For each value name, the nodes that read it (in program order)."""
        out: dict[str, list[Node]] = {n: [] for n, _ in self.inputs}
        for node in self.nodes:
            out.setdefault(node.name, [])
            for ref in node.value_operands():
                out.setdefault(ref.name, []).append(node)
        return out

    def param_count(self, include_buffers: bool = False) -> int:
        """Elements of the trainable parameters (and of the buffers too, with include_buffers)."""
        total = 0
        for name, t in self.params.items():
            if name in self.buffers and not include_buffers:
                continue
            n = t.numel()
            total += n if isinstance(n, int) else 0
        return total

    def param_bytes(self) -> int:
        """Bytes of everything the weight store holds (parameters and buffers): the deployable size."""
        total = 0
        for t in self.params.values():
            n = t.numel()
            if isinstance(n, int):
                total += n * t.torch_dtype.itemsize
        return total

    # ---- small graph edits shared by the passes --------------------------------------------
    def replace_uses(self, alias: dict[str, str]) -> None:
        """Every read of value `a` (results included) reads `alias[a]` instead."""
        for n in self.nodes:
            n.operands = [ValueRef(alias[o.name]) if isinstance(o, ValueRef) and o.name in alias else o
                          for o in n.operands]
        self.outputs = [alias.get(o, o) for o in self.outputs]

    def drop_unused_params(self) -> None:
        """Remove parameters (and their weights) that no node reads."""
        used = {r.name for n in self.nodes for r in n.param_operands()}
        for name in list(self.params):
            if name not in used:
                del self.params[name]
                self.weights.pop(name, None)
                self.buffers.discard(name)
                self.origins.pop(name, None)

    def drop_dead(self) -> "Program":
        """Remove nodes no result depends on, then the parameters left unused. Returns self."""
        live = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if n.name in live:
                keep.append(n)
                live.update(r.name for r in n.value_operands())
        self.nodes = list(reversed(keep))
        self.drop_unused_params()
        return self

    def copy(self, weights: bool = True) -> "Program":
        """A deep copy of the graph that shares no mutable state with self (weights are cloned, or
        left out with ``weights=False``)."""
        p = copy.copy(self)
        p.inputs = list(self.inputs)
        p.params = dict(self.params)
        p.param_locs = dict(self.param_locs)
        p.origins = dict(self.origins)
        p.buffers = set(self.buffers)
        p.nodes = [copy.copy(n) for n in self.nodes]
        for n in p.nodes:
            n.operands = list(n.operands)
            n.attrs = copy.deepcopy(n.attrs)
        p.outputs = list(self.outputs)
        p.output_types = list(self.output_types)
        p.weights = {k: v.clone() for k, v in self.weights.items()} if weights else {}
        return p

    # ---- text and files ------------------------------------------------------------------
    def to_text(self) -> str:
        """The program as IR text (what `sr_ir.parse` reads back)."""
        from .printer import print_program

        return print_program(self)

    def save(self, path: str) -> None:
        """Write the IR text to `path` and the weights beside it (`<stem>.safetensors`), as one pair
        `sr_ir.load` reads back; atomically, with the user's umask."""
        from .persist import save_program

        save_program(self, path)

    def check(self) -> None:
        """Type-check every node against its op's declaration (TypeCheckError at the first mistake)."""
        from .checker import check_program

        check_program(self)

    def __str__(self) -> str:
        return self.to_text()
