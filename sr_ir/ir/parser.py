"""Parse program text (grammar/ir.lark) into a Program; every error carries file:line:col."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import lark
import sympy

from ..errors import Loc, ParseError
from ..syntax import parsing
from ..resources import grammar_path
from .program import Node, ParamRef, Program, ValueRef
from .types import MAX_INT, TensorType, dim_str, normalize_dim, symbol


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(
        grammar_path("ir.lark").read_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def _loc(filename: str, meta_or_token: Any) -> Loc:
    return Loc(filename, getattr(meta_or_token, "line", 0) or 0, getattr(meta_or_token, "column", 0) or 0)


class _Build(lark.Transformer):
    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    def _int(self, tok: Any) -> int:
        # the digit count first: int() of a huge literal is itself slow (and refused past 4300 digits)
        digits = str(tok).lstrip("-")
        if len(digits) > 19 or int(digits) > MAX_INT:
            raise ParseError(f"integer {_abbrev(str(tok))} is out of range (at most 2**62)", _loc(self.filename, tok))
        return int(str(tok))

    # dims ---------------------------------------------------------------------------------
    def int_dim(self, a):
        return sympy.Integer(self._int(a[0]))

    def sym(self, a):
        return symbol(str(a[0]))

    def neg(self, a):
        return -_expr(a[0])

    def add(self, a):
        return _expr(a[0]) + _expr(a[1])

    def sub(self, a):
        return _expr(a[0]) - _expr(a[1])

    def mul(self, a):
        return _expr(a[0]) * _expr(a[1])

    @lark.v_args(meta=True)
    def floordiv(self, meta, a):
        return sympy.floor(_expr(a[0]) / self._divisor(meta, a[1], "//"))

    @lark.v_args(meta=True)
    def mod(self, meta, a):
        return sympy.Mod(_expr(a[0]), self._divisor(meta, a[1], "%"))

    def _divisor(self, meta: Any, d: Any, op: str) -> sympy.Expr:
        e = sympy.expand(_expr(d))
        if e == 0:
            raise ParseError(f"division by zero in a dim (`{op} {dim_str(normalize_dim(e))}`)", _loc(self.filename, meta))
        return e

    # literals -----------------------------------------------------------------------------
    def float_lit(self, a):
        return float(a[0])

    def int_lit(self, a):
        return self._int(a[0])

    def string_lit(self, a):
        return json.loads(str(a[0]))

    def true_lit(self, _):
        return True

    def false_lit(self, _):
        return False

    def none_lit(self, _):
        return _NONE

    def list_lit(self, a):
        return [_attr(x) for x in a if x is not None]

    def value_ref(self, a):
        return ValueRef(str(a[0])[1:])

    def param_ref(self, a):
        return ParamRef(self._param_name(a[0]))

    def _param_name(self, tok: Any) -> str:
        text = str(tok)[1:]
        if not text.startswith('"'):
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ParseError(f"bad quoted parameter name {_abbrev(text)}: {e.msg}", _loc(self.filename, tok)) from None

    @lark.v_args(meta=True)
    def kwarg(self, meta, a):
        return _Kw(str(a[0]), _attr(a[1]), _loc(self.filename, meta))

    @lark.v_args(meta=True)
    def ttype(self, meta, a):
        dtype = str(a[0])
        dims = [normalize_dim(_expr(d)) for d in a[1:] if d is not None]
        return TensorType(dtype, tuple(dims))

    @lark.v_args(meta=True)
    def input(self, meta, a):
        return ("input", str(a[0])[1:], a[1], _loc(self.filename, meta))

    @lark.v_args(meta=True)
    def param(self, meta, a):
        return ("param", self._param_name(a[0]), a[1], _loc(self.filename, meta))

    @lark.v_args(meta=True)
    def buffer(self, meta, a):
        return ("buffer", self._param_name(a[0]), a[1], _loc(self.filename, meta))

    @lark.v_args(meta=True)
    def node(self, meta, a):
        name = str(a[0])[1:]
        op = str(a[1])
        ttype = a[-1]
        operands: list = []
        attrs: dict[str, Any] = {}
        for item in a[2:-1]:
            if item is None:
                continue
            if isinstance(item, _Kw):
                if item.name in attrs:
                    raise ParseError(f"attribute {item.name!r} given twice", item.loc)
                attrs[item.name] = item.value
            else:
                if attrs:
                    raise ParseError("positional operand after a keyword attribute", _loc(self.filename, meta))
                operands.append(None if item is _NONE else item)
        return ("node", Node(name, op, operands, attrs, ttype, _loc(self.filename, meta)))

    @lark.v_args(meta=True)
    def ret(self, meta, a):
        return ("ret", [str(t)[1:] for t in a], _loc(self.filename, meta))

    @lark.v_args(meta=True)
    def graph(self, meta, a):
        name = str(a[0])
        inputs, params, nodes, outputs, out_types = [], {}, [], [], []
        param_locs: dict[str, Loc] = {}
        buffers: set[str] = set()
        ret_loc = None
        seen: set[str] = set()
        for item in a[1:]:
            if item is None:
                continue
            if isinstance(item, TensorType):
                out_types.append(item)
            elif item[0] == "input":
                _, n, t, loc = item
                if n in seen:
                    raise ParseError(f"value %{n} defined twice", loc)
                seen.add(n)
                inputs.append((n, t))
            elif item[0] in ("param", "buffer"):
                _, n, t, loc = item
                if item[0] == "buffer":
                    buffers.add(n)
                if n in params:
                    raise ParseError(f"parameter {ParamRef(n)} declared twice", loc)
                params[n] = t
                param_locs[n] = loc
            elif item[0] == "node":
                node = item[1]
                if node.name in seen:
                    raise ParseError(f"value %{node.name} defined twice", node.loc)
                seen.add(node.name)
                nodes.append(node)
            elif item[0] == "ret":
                outputs, ret_loc = item[1], item[2]
        return Program(name, inputs, params, nodes, outputs, out_types, buffers=buffers,
                       loc=_loc(self.filename, meta), ret_loc=ret_loc, param_locs=param_locs)


class _NoneType:
    pass


_NONE = _NoneType()


class _Kw:
    def __init__(self, name: str, value: Any, loc: Loc):
        self.name, self.value, self.loc = name, value, loc


def _expr(x: Any) -> sympy.Expr:
    if isinstance(x, sympy.Basic):
        return x
    raise ParseError(f"expected an integer dimension, got {x!r}")


def _abbrev(s: str, n: int = 24) -> str:
    return s if len(s) <= n else f"{s[:n]}... ({len(s)} characters)"


def _attr(x: Any) -> Any:
    if x is _NONE:
        return None
    if isinstance(x, sympy.Basic):
        return normalize_dim(x)
    return x


def parse(text: str, filename: str = "<string>", *, check: bool = True) -> Program:
    """Parse program text. With `check`, also type-check every op against its declaration (the bundled
    rules'); a mistake is a ParseError or TypeCheckError naming `filename`:line:col.

    >>> import sr_ir
    >>> prog = sr_ir.parse('''graph m(%x: f32[N, 4]) -> (f32[N, 2]) {
    ...   param @fc.weight: f32[2, 4]
    ...   %y = linear(%x, @fc.weight) : f32[N, 2]
    ...   return %y
    ... }''')
    >>> prog.param_count(), [n.op for n in prog.nodes]
    (8, ['linear'])
    """
    def build() -> Program:
        tree = _parser().parse(text)
        return _Build(filename).transform(tree.children[0] if tree.data == "start" else tree)

    # a transformer error that is not about the text (a bug) keeps its traceback
    prog = parsing(filename, build, passthrough=(AssertionError, AttributeError, KeyError, IndexError, RecursionError))
    if check:
        from .checker import check_program

        check_program(prog)
    return prog
