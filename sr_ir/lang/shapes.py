"""An op declaration's shape patterns checked when its rule file is loaded.

The type checker (sr_ir.ir.checker) binds the names of the operand patterns as it matches a node's
operands, then evaluates the result pattern and the `where` conditions with them; the prover
instantiates the same names. A declaration whose result or condition uses a name nothing binds (or
a run of dims `*B` as one dim, or one dim as a run) would fail at the first program that uses the op,
blaming that program: here it is a TypeCheckError at the declaration.
"""
from __future__ import annotations

from typing import Any

from ..errors import TypeCheckError
from ..ir.opdecl import OpDecl
from ..ir.shape_functions import SHAPE_FUNCTIONS
from . import ast as A

# what sr_ir.lang.evaluate computes in shape expressions and conditions
SHAPE_CALLS = ("len", "max", "min")


def check_shapes(decl: OpDecl) -> None:
    """TypeCheckError at the declaration unless every name its patterns, result and `where` read is
    bound whenever the op is used: by an attribute, or by a required operand's pattern (an optional
    operand may be absent, a variadic one empty)."""
    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"op {decl.name!r}: {msg}", decl.loc)

    names = [t.name for t in decl.tensor_params] + [a.name for a in decl.attr_params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise err(f"parameter {twice[0]!r} is declared twice")
    attrs = {a.name: a.kind for a in decl.attr_params}
    sure: dict[str, str] = {n: "attr" for n in attrs}  # bound at every use: name -> "dim" | "run" | "attr"
    maybe: dict[str, str] = {}  # bound by an optional or variadic operand only
    dtypes: set[str] = set()
    for t in decl.tensor_params:
        certain = not (t.optional or t.variadic)
        into = sure if certain else maybe
        local = dict(sure)
        for d in t.pattern.dims:
            if isinstance(d, A.Variadic):
                _bind(local, into, d.name, "run", t.name, err)
            elif isinstance(d, A.Name):
                _bind(local, into, d.id, "dim", t.name, err)
            else:  # a dim computed from names bound before it (the checker compares the operand's axis)
                _reads(d, local, attrs, f"{t.name}'s pattern", err)
        if certain and len(t.pattern.dtype) == 1:
            dtypes.add(t.pattern.dtype)
    for cond in decl.where:
        _reads(cond, sure, attrs, "a `where` condition", err, maybe)
    result = decl.result
    if isinstance(result, str):
        if result not in SHAPE_FUNCTIONS:
            raise err(f"no shape function {result!r} (there are {', '.join(sorted(SHAPE_FUNCTIONS))})")
        return
    if len(result.dtype) == 1 and result.dtype not in dtypes:
        raise err(f"the result's dtype {result.dtype} is not the dtype of a required operand")
    for d in result.dims:
        if isinstance(d, A.Variadic):
            _need(d.name, "run", sure, "the result", err, maybe)
        else:
            _reads(d, sure, attrs, "the result", err, maybe)


def _bind(local: dict[str, str], into: dict[str, str], name: str, kind: str, operand: str, err) -> None:
    prev = local.get(name) or into.get(name)
    if prev is not None and prev != kind:
        what = {"run": f"a run of dims (*{name})", "dim": "one dim", "attr": "an attribute"}
        raise err(f"{operand}'s pattern uses {name!r} as {what[kind]}, elsewhere it is {what[prev]}")
    local[name] = kind
    into.setdefault(name, kind)


def _reads(tree: Any, bound: dict[str, str], attrs: dict[str, str], where: str, err,
           maybe: dict[str, str] | None = None) -> None:
    """The names a shape expression or condition reads are bound, and used as what they are: a run
    of dims only by `len`, a list attribute by `len`, indexed once or compared, a string compared."""
    whole = {id(a) for sub in A.walk(tree) if isinstance(sub, A.Call) and sub.fn == "len" for a in sub.args}
    compared = {id(x) for sub in A.walk(tree) if isinstance(sub, A.Cmp) and sub.op in ("==", "!=")
                for x in (sub.left, sub.right)}
    for sub in A.walk(tree):
        if isinstance(sub, A.Call) and sub.fn not in SHAPE_CALLS:
            raise err(f"{where} calls {sub.fn}(...); a shape expression calls only {', '.join(SHAPE_CALLS)}")
        if isinstance(sub, (A.Bound, A.Slice, A.Spread, A.Variadic, A.Quant, A.Unused, A.IndexEq)):
            raise err(f"{where}: `{A.show(sub)}` is not a shape expression")
        if isinstance(sub, A.Index):
            if _kind(sub.base, attrs, bound) != "list" or len(sub.indices) != 1:
                raise err(f"{where} reads `{A.show(sub)}`: only a list attribute is indexed, with one index")
        if isinstance(sub, A.Name):
            _need(sub.id, None, bound, where, err, maybe)
            kind = _kind(sub.id, attrs, bound)
            if kind == "run" and id(sub) not in whole:
                raise err(f"{where} uses the run of dims {sub.id!r} as a number (len({sub.id}) is its length)")
            if kind in ("list", "str") and id(sub) not in whole | compared:
                raise err(f"{where} uses the {kind} attribute {sub.id!r} as a number (a {kind} is compared with "
                          f"`==` or `!=`{', indexed or measured with len' if kind == 'list' else ''})")


def _kind(name: str, attrs: dict[str, str], bound: dict[str, str]) -> str:
    """run | list | str | number: what a name evaluates to when a node is checked."""
    if name in attrs:
        return {"ints": "list", "floats": "list", "dims": "list", "str": "str"}.get(attrs[name], "number")
    return "run" if bound.get(name) == "run" else "number"


def _need(name: str, kind: str | None, bound: dict[str, str], where: str, err,
          maybe: dict[str, str] | None = None) -> str:
    have = bound.get(name)
    if have is None:
        if maybe and name in maybe:
            raise err(f"{where} uses {name!r}, which only an optional or variadic operand binds")
        raise err(f"{where} uses {name!r}, which no operand or attribute binds")
    if kind is not None and have != kind:
        raise err(f"{where} uses {name!r} as a run of dims (*{name}); it is {'an attribute' if have == 'attr' else 'one dim'}")
    return have

