"""Type and shape checking of every node against its op declaration from rules/."""
from __future__ import annotations

from typing import Any

import sympy

from ..errors import TypeCheckError
from ..lang import ast as A
from ..lang.evaluate import EvalError, eval_cond, eval_expr
from .opdecl import AttrParam, OpDecl, TensorParam, TensorPattern
from .shape_functions import SHAPE_FUNCTIONS, ShapeError
from .program import Node, ParamRef, Program, ValueRef
from .types import TensorType, dims_equal, normalize_dim


def check_program(p: Program, rules: Any = None) -> None:
    """Raise TypeCheckError (with the node's location) at the first ill-typed node."""
    from ..lang.loader import default_rules

    ops = (rules or default_rules()).ops
    env: dict[str, TensorType] = {}
    for name, t in p.inputs:
        env[name] = t
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
        env[node.name] = node.type
    if len(p.outputs) != len(p.output_types):
        raise TypeCheckError(f"graph declares {len(p.output_types)} results but returns {len(p.outputs)}", p.ret_loc)
    for name, t in zip(p.outputs, p.output_types):
        if name not in env:
            raise TypeCheckError(f"return of undefined value %{name}", p.ret_loc)
        if env[name] != t:
            raise TypeCheckError(f"returned %{name} has type {env[name]}, graph declares {t}", p.ret_loc)



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
            raise ShapeError(f"condition violated: {_cond_text(cond)}")
    if isinstance(decl.result, str):
        fn = SHAPE_FUNCTIONS.get(decl.result)
        if fn is None:
            raise ShapeError(f"unknown shape function {decl.result!r}")
        return fn(typed, attrs)
    return _build(decl.result, bindings, dtypes, typed)


def _match(pat: TensorPattern, t: TensorType, b: dict[str, Any], dtypes: dict[str, str], who: str, fresh: bool = False) -> None:
    if len(pat.dtype) == 1 and pat.dtype.isupper():
        if pat.dtype == "I" and t.dtype not in ("i32", "i64"):
            raise ShapeError(f"{who} must be an integer tensor, got {t}")
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


def _cond_text(c: Any) -> str:
    if isinstance(c, A.Cmp):
        return f"{_expr_text(c.left)} {c.op} {_expr_text(c.right)}"
    if isinstance(c, A.BoolOp):
        if c.op == "not":
            return f"not ({_cond_text(c.operands[0])})"
        return f" {c.op} ".join(_cond_text(x) for x in c.operands)
    return repr(c)


def _expr_text(e: Any) -> str:
    if isinstance(e, A.Num):
        return repr(e.value) if isinstance(e.value, str) else str(e.value)
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.BinOp):
        return f"{_expr_text(e.left)} {e.op} {_expr_text(e.right)}"
    if isinstance(e, A.Index):
        return f"{e.base}[{', '.join(_expr_text(i) for i in e.indices)}]"
    return repr(e)
