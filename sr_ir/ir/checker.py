"""Type and shape checking of every node against its op declaration from rules/."""
from __future__ import annotations

from typing import Any

import sympy
from torch import nn

from ..errors import Loc, TypeCheckError
from ..lang import ast as A
from ..lang.evaluate import EvalError, eval_cond, eval_expr
from .opdecl import DTYPE_CLASSES, AttrParam, OpDecl, TensorParam, TensorPattern
from .printer import format_attr
from .shape_functions import SHAPE_FUNCTIONS, ShapeError
from .program import Node, ParamRef, Program, ValueRef
from .types import MAX_INT, TensorType, dim_problem, dims_equal, normalize_dim


def check_program(p: Program, rules: Any = None) -> None:
    """Raise TypeCheckError (with the node's location) at the first ill-typed node."""
    from ..lang.loader import default_rules

    ops = (rules or default_rules()).ops
    check_declarations(p)
    env: dict[str, TensorType] = {}
    for name, t in p.inputs:
        env[name] = t
    bound = bound_symbols(p)
    for node in p.nodes:
        decl = ops.get(node.op)
        if decl is None:
            raise TypeCheckError(f"unknown op {node.op!r} (declare it in a rule file)", node.loc)
        try:
            result = infer_node(decl, node, env, p.params)
        except (ShapeError, EvalError) as e:
            raise TypeCheckError(f"{node.op}: {e}", node.loc) from None
        if result.dtype != node.type.dtype or result.rank != node.type.rank or not all(
            dims_equal(a, b) for a, b in zip(result.shape, node.type.shape)
        ):
            raise TypeCheckError(f"%{node.name} is declared {node.type} but {node.op} gives {result}", node.loc)
        _check_sizes(node.type, f"%{node.name}", node.loc)
        _check_attr_symbols(node, bound)
        env[node.name] = node.type
    if len(p.outputs) != len(p.output_types):
        raise TypeCheckError(f"graph declares {len(p.output_types)} results but returns {len(p.outputs)}", p.ret_loc)
    for name, t in zip(p.outputs, p.output_types):
        if name not in env:
            raise TypeCheckError(f"return of undefined value %{name}", p.ret_loc)
        if env[name] != t:
            raise TypeCheckError(f"returned %{name} has type {env[name]}, graph declares {t}", p.ret_loc)


# Attributes every nn.Module has, and those sr_ir.backend.emit sets on the module it emits: a
# parameter path component of one of these names cannot be registered (torch refuses it).
RESERVED_ATTRIBUTES = frozenset(dir(nn.Module())) | {"sr_ir_source", "sr_ir_program", "sr_ir_names", "sr_ir_rules"}


def check_declarations(p: Program) -> None:
    """Raise TypeCheckError at the first input or parameter that no module could hold: a size that
    is not positive, a parameter of symbolic shape (weights are concrete tensors), or a name that is
    not a torch module path (see `module_path_problem`)."""
    for name, t in p.inputs:
        _check_sizes(t, f"input %{name}", p.loc)
    for name, t in p.params.items():
        loc = p.param_locs.get(name, p.loc)
        ref = ParamRef(name)
        problem = module_path_problem(name, p.params)
        if problem:
            raise TypeCheckError(f"parameter {ref}: {problem}", loc)
        if not t.is_static():
            raise TypeCheckError(f"parameter {ref} has the symbolic shape {t} (a weight has a concrete shape)", loc)
        _check_sizes(t, f"parameter {ref}", loc)


def module_path_problem(name: str, tensors: Any = ()) -> str | None:
    """Why `name` cannot be the state_dict key of a tensor in a module tree that also holds
    `tensors` (None when it can): a dotted path of non-empty components, none of them an nn.Module
    attribute (`forward`, `training`), and no proper prefix that is itself a tensor (`fc1` beside
    `fc1.bias`: a tensor cannot hold another)."""
    parts = name.split(".")
    if any(not part for part in parts):
        return "a module path has no empty component"
    clash = next((part for part in parts if part in RESERVED_ATTRIBUTES), None)
    if clash is not None:
        return f"{clash!r} is an attribute of every nn.Module, not a free name"
    prefix = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in tensors), None)
    if prefix is not None:
        return f"{ParamRef(prefix)} is a tensor, it cannot hold {ParamRef(name)}"
    return None


def bound_symbols(p: Program) -> set[sympy.Symbol]:
    """Symbols that are the size of an input axis: the ones a run of the program knows."""
    return {d for _, t in p.inputs for d in t.shape if isinstance(d, sympy.Symbol)}


def _check_sizes(t: TensorType, who: str, loc: Loc | None) -> None:
    for d in t.shape:
        problem = dim_problem(d)
        if problem:
            raise TypeCheckError(f"{who}: {t}: {problem}", loc)
    if t.is_static() and t.numel() > MAX_INT:  # torch's element and byte counts are 64-bit
        raise TypeCheckError(f"{who}: {t} holds more than 2**62 elements", loc)


def _check_attr_symbols(node: Node, bound: set[sympy.Symbol]) -> None:
    # a symbol no input axis gives has no value when the program runs
    for k, v in node.attrs.items():
        for x in v if isinstance(v, list) else [v]:
            free = getattr(x, "free_symbols", set()) - bound
            if free:
                name = sorted(map(str, free))[0]
                raise TypeCheckError(f"attribute {k!r} reads the symbol {name}, which is not the size of an input axis",
                                     node.loc)


def bind_operands(decl: OpDecl, node: Node) -> list[tuple[TensorParam, Any]]:
    """Pair each tensor parameter with its operand(s); a variadic parameter gets a list."""
    params = decl.tensor_params
    ops = list(node.operands)
    pairs: list[tuple[TensorParam, Any]] = []
    for i, tp in enumerate(params):
        if tp.variadic:
            pairs.append((tp, ops[i:]))
            ops = ops[:i]
            break
        pairs.append((tp, ops[i] if i < len(ops) else None))
    else:
        if len(ops) > len(params):
            raise ShapeError(f"takes {len(params)} operands, got {len(ops)}")
    return pairs


def attrs_with_defaults(decl: OpDecl, node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in node.attrs:
        if decl.attr(k) is None:
            raise ShapeError(f"unknown attribute {k!r}")
    for a in decl.attr_params:
        if a.name in node.attrs:
            v = node.attrs[a.name]
            _check_attr_kind(a, v)
            out[a.name] = v
        elif a.has_default:
            out[a.name] = a.default
        elif a.optional:
            out[a.name] = None
        else:
            raise ShapeError(f"missing attribute {a.name!r}")
    return out


def _is_dim(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, sympy.Basic)


def _check_attr_kind(a: AttrParam, v: Any) -> None:
    if v is None:
        if a.optional or (a.has_default and a.default is None):
            return
        raise ShapeError(f"attribute {a.name!r} may not be none")
    ok = {
        "int": lambda: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda: isinstance(v, bool),
        "str": lambda: isinstance(v, str),
        "ints": lambda: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
        "floats": lambda: isinstance(v, list) and all(isinstance(x, (int, float)) for x in v),
        "dims": lambda: isinstance(v, list) and all(_is_dim(x) for x in v),
    }[a.kind]()
    if not ok:
        raise ShapeError(f"attribute {a.name!r} must be {a.kind}, got {v!r}")


def infer_node(decl: OpDecl, node: Node, env: dict[str, TensorType], params: dict[str, TensorType]) -> TensorType:
    """The result type the declaration gives for this node's operands and attributes."""
    attrs = attrs_with_defaults(decl, node)

    def type_of(o: Any, tp: TensorParam) -> Any:
        if o is None:
            if not tp.optional:
                raise ShapeError(f"operand {tp.name!r} is required")
            return None
        if isinstance(o, ValueRef):
            if o.name not in env:
                raise ShapeError(f"use of undefined value %{o.name}")
            return env[o.name]
        if isinstance(o, ParamRef):
            if o.name not in params:
                raise ShapeError(f"use of undeclared parameter @{o.name}")
            return params[o.name]
        if isinstance(o, (int, float)) and not isinstance(o, bool):
            if not tp.scalar_ok:
                raise ShapeError(f"operand {tp.name!r} must be a tensor, got the number {o!r}")
            return o
        raise ShapeError(f"bad operand {o!r}")

    bindings: dict[str, Any] = dict(attrs)
    dtypes: dict[str, str] = {}
    typed: list[Any] = []
    for tp, o in bind_operands(decl, node):
        if tp.variadic:
            ts = [type_of(x, tp) for x in o]
            for t in ts:
                _match(tp.pattern, t, bindings, dtypes, tp.name, fresh=True)
            typed.extend(ts)
            continue
        t = type_of(o, tp)
        typed.append(t)
        if isinstance(t, TensorType):
            _match(tp.pattern, t, bindings, dtypes, tp.name)
    for cond in decl.where:
        if not eval_cond(cond, bindings):
            raise ShapeError(f"condition violated: {A.show(cond)}{_values_read(cond, bindings)}")
    if isinstance(decl.result, str):
        fn = SHAPE_FUNCTIONS.get(decl.result)
        if fn is None:
            raise ShapeError(f"unknown shape function {decl.result!r}")
        return fn(typed, attrs)
    return _build(decl.result, bindings, dtypes, typed)


def _match(pat: TensorPattern, t: TensorType, b: dict[str, Any], dtypes: dict[str, str], who: str, fresh: bool = False) -> None:
    if len(pat.dtype) == 1 and pat.dtype.isupper():
        allowed, what = DTYPE_CLASSES.get(pat.dtype, (None, ""))
        if allowed is not None and t.dtype not in allowed:
            raise ShapeError(f"{who} must be {what}, got {t}")
        prev = dtypes.setdefault(pat.dtype, t.dtype)
        if prev != t.dtype:
            raise ShapeError(f"{who} has dtype {t.dtype}, expected {prev}")
    elif pat.dtype != t.dtype:
        raise ShapeError(f"{who} must be {pat.dtype}, got {t.dtype}")
    nvar = sum(isinstance(d, A.Variadic) for d in pat.dims)
    fixed = len(pat.dims) - nvar
    if (nvar == 0 and t.rank != fixed) or t.rank < fixed:
        raise ShapeError(f"{who} must have rank {fixed}{'+' if nvar else ''}, got {t}")
    shape = list(t.shape)
    i = 0
    for d in pat.dims:
        if isinstance(d, A.Variadic):
            n = t.rank - fixed
            _bind(b, d.name, tuple(shape[i : i + n]), who, fresh)
            i += n
        elif isinstance(d, A.Name):
            _bind(b, d.id, shape[i], who, fresh)
            i += 1
        else:
            want = eval_expr(d, b)
            if not dims_equal(want, shape[i]):
                raise ShapeError(f"{who} axis {i} is {shape[i]}, expected {want}")
            i += 1


def _bind(b: dict[str, Any], name: str, value: Any, who: str, fresh: bool) -> None:
    if name in b and not fresh:
        prev = b[name]
        same = (
            len(prev) == len(value) and all(dims_equal(x, y) for x, y in zip(prev, value))
            if isinstance(prev, tuple)
            else (not isinstance(value, tuple) and dims_equal(prev, value))
        )
        if not same:
            raise ShapeError(f"{who}: {name} is {_show(value)} here but {_show(prev)} elsewhere")
    else:
        b[name] = value


def _show(v: Any) -> str:
    return "[" + ", ".join(map(str, v)) + "]" if isinstance(v, tuple) else str(v)


def _build(pat: TensorPattern, b: dict[str, Any], dtypes: dict[str, str], typed: list[Any]) -> TensorType:
    dtype = dtypes.get(pat.dtype, pat.dtype) if len(pat.dtype) == 1 else pat.dtype
    dims: list[Any] = []
    for d in pat.dims:
        if isinstance(d, A.Variadic):
            dims.extend(b[d.name])
        else:
            v = eval_expr(d, b)
            dims.append(normalize_dim(v))
    return TensorType(dtype, tuple(dims))


def _values_read(cond: Any, bindings: dict[str, Any]) -> str:
    """` (stride = [0, 1])`: the values of the names a failed condition reads."""
    names = sorted({n.id for n in A.walk(cond) if isinstance(n, A.Name)} |
                   {n.base for n in A.walk(cond) if isinstance(n, A.Index)})
    shown = [f"{n} = {format_attr(v) if isinstance(v, (str, list)) else _show(v)}"
             for n, v in ((n, bindings[n]) for n in names if n in bindings)]
    return f" ({', '.join(shown)})" if shown else ""
