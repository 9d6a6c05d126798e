"""Run a Program node by node, without building a module: each node goes through its op's `torch`
template (`run_node`, the very text the emitter writes into a generated module's forward), each
parameter is fetched when the node that reads it runs, cast there if asked, and each activation is
dropped after its last reader.

What this buys over `emit(program)(*inputs)`: no module holding every weight in the computing dtype. A
float64 check of a float32 model holds one float64 copy of one parameter at a time (the one the running
node reads) instead of a float64 copy of the whole model, and a `weight` callable can read parameters
from anywhere (a memory-mapped checkpoint) only when they are needed.

The result is the emitted module's to rounding: a node the emitter makes a child layer (`nn.Linear`,
`nn.Conv2d`, ...) runs here in its op's functional form, which is what those layers call.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import sympy
import torch

from ..errors import SrIrError
from ..ir.program import Node, ParamRef, Program, ValueRef
from ..lang.loader import RuleSet, default_rules
from .run import run_node

WeightFn = Callable[[str], torch.Tensor]


def run_program(program: Program, inputs: Sequence[Any], *, rules: RuleSet | None = None,
                dtype: torch.dtype | None = None, weight: WeightFn | None = None) -> list[torch.Tensor]:
    """The outputs of `program` on `inputs` (positional, like the program's inputs), computed node by
    node through the ops' `torch` templates of `rules` (default: the bundled ones).

    `weight(name)` gives parameter `name` (default: ``program.weights[name]``); it is called once per
    node that reads the parameter, right before that node runs, and the tensor is not kept after it.
    With `dtype`, every floating parameter and floating input is cast to `dtype` as it is read (integer
    index tables stay as they are); without, a parameter whose tensor's dtype differs from its
    declaration (a program retyped without converting its weights) is cast to the declared dtype. Casts
    the program itself makes (`cast` nodes) run as written: to compute "as the model converted with
    `.to(dtype)`", pass a program retyped to that dtype (`sr_ir.minimization.verify.retyped`).

    Every value is dropped as soon as the last node reading it has run, so the peak is the live
    activations plus the parameters of one node. Runs under `torch.no_grad`. A node that fails is one
    SrIrError naming it and its line."""
    rules = rules or default_rules()
    missing = sorted({n.op for n in program.nodes if n.op not in rules.ops or rules.ops[n.op].torch is None})
    if missing:
        raise SrIrError(f"cannot interpret program {program.name!r}: no torch template for op(s) "
                        f"{', '.join(missing)} in the rules given")
    if len(inputs) != len(program.inputs):
        raise SrIrError(f"program {program.name!r} takes {len(program.inputs)} inputs, got {len(inputs)}")
    fetch = weight if weight is not None else _store_reader(program)
    env: dict[str, Any] = {}
    sizes: dict[sympy.Symbol, int] = {}
    for (name, t), x in zip(program.inputs, inputs):
        if dtype is not None and isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.to(dtype)
        env[name] = x
        if isinstance(x, torch.Tensor):
            for axis, d in enumerate(t.shape):
                if isinstance(d, sympy.Symbol) and axis < x.dim():
                    sizes.setdefault(d, int(x.shape[axis]))
    last = _last_reads(program)
    with torch.no_grad():
        for i, node in enumerate(program.nodes):
            decl = rules.ops[node.op]
            operands = [_operand(o, env, fetch, program, dtype) for o in node.operands]
            env[node.name] = run_node(decl, _concrete(node, sizes), operands)
            del operands  # the parameters this node read (cast copies included) go now
            for name in last.get(i, ()):
                env.pop(name, None)
    return [env[o] for o in program.outputs]


def _store_reader(program: Program) -> WeightFn:
    def read(name: str) -> torch.Tensor:
        try:
            return program.weights[name]
        except KeyError:
            raise SrIrError(f"cannot run program {program.name!r}: no weights for parameter {name!r}") from None

    return read


def _operand(o: Any, env: dict[str, Any], fetch: WeightFn, program: Program, dtype: torch.dtype | None) -> Any:
    if isinstance(o, ValueRef):
        return env[o.name]
    if isinstance(o, ParamRef):
        t = fetch(o.name)
        if t.is_floating_point():
            want = dtype if dtype is not None else program.params[o.name].torch_dtype if o.name in program.params else t.dtype
            if t.dtype != want:
                t = t.to(want)
        return t
    if isinstance(o, (list, tuple)):
        return [_operand(x, env, fetch, program, dtype) for x in o]
    return o


def _last_reads(program: Program) -> dict[int, list[str]]:
    """Node index -> the values to drop once that node has run: those it is the last reader of, and
    its own result when nothing reads it. Results and inputs nobody reads are kept / never held long."""
    keep = set(program.outputs)
    last: dict[str, int] = {name: -1 for name, _ in program.inputs}
    for i, node in enumerate(program.nodes):
        last[node.name] = i
        for o in node.operands:
            for x in (o if isinstance(o, (list, tuple)) else [o]):
                if isinstance(x, ValueRef):
                    last[x.name] = i
    out: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            out.setdefault(max(i, 0), []).append(name)
    return out


def _concrete(node: Node, sizes: dict[sympy.Symbol, int]) -> Node:
    """`node` with every symbolic dim in its attributes (a reshape to [N, 16]) evaluated at the input
    sizes, as the emitted forward binds `N = x.shape[0]`; the node itself when it has none."""
    if not any(_symbolic(v) for v in node.attrs.values()):
        return node
    attrs = {k: _evaluate(v, sizes, node) for k, v in node.attrs.items()}
    return Node(node.name, node.op, node.operands, attrs, node.type, node.loc, node.origin)


def _symbolic(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_symbolic(x) for x in v)
    return isinstance(v, sympy.Basic)


def _evaluate(v: Any, sizes: dict[sympy.Symbol, int], node: Node) -> Any:
    if isinstance(v, (list, tuple)):
        return type(v)(_evaluate(x, sizes, node) for x in v)
    if isinstance(v, sympy.Basic):
        e = v.subs(sizes)
        if not e.is_Integer:
            raise SrIrError(f"%{node.name}: attribute dim {v} is not fixed by the input shapes", node.loc)
        return int(e)
    return v


__all__ = ["run_program"]
