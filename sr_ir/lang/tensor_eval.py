"""Rule-language expressions evaluated on real tensors, vectorized over channels.

This is the engine's reading of a rule (the prover's reading of the same tree is
sr_ir/prover/semantics.py): side conditions become masks over channels, forward-fact values and the
arguments of a rewrite's right-hand side become tensors. Nothing here knows an op; scalar functions
(`relu(k)`, `rsqrt(v + eps)`) are looked up in the function table the caller passes.

Values are plain Python scalars (numbers, bools, strings, lists, sympy dims) or `Arr`s: a torch
tensor whose leading axes are *named* — one per index variable in scope: the channel variable (one
lane per channel being considered) and the variables bound by `sum`, `tensor`, `forall`, `exists` —
and whose trailing axes are *data* axes (from `:` and `*B` in a read, or a whole tensor). Arithmetic
aligns named axes by name and data axes from the right, like numpy broadcasting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import sympy
import torch

from ..errors import Loc, SrIrError
from ..ir.types import TensorType, dims_equal, normalize_dim
from . import ast as A


class RuleEvalError(SrIrError):
    """A rule expression the engine cannot evaluate on this match (the rule does not apply here)."""


@dataclass
class Arr:
    t: torch.Tensor
    names: tuple[str, ...] = ()

    @property
    def ndata(self) -> int:
        return self.t.dim() - len(self.names)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.t.shape[len(self.names):])


@dataclass
class Facts:
    """What the engine knows about the channels of an activation, per axis:
    `const[axis] = (known: bool[n], value: float64[n])` — channel i holds value[i] everywhere;
    `source[axis]`: bool[n, R], which fact rules (by the caller's numbering) that knowledge rests on."""

    const: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    source: dict[int, torch.Tensor] = field(default_factory=dict)

    def select(self, axis: int, keep: torch.Tensor) -> None:
        """Keep only the channels `keep` of an axis (the index space after channels were removed)."""
        if axis in self.const:
            k, v = self.const[axis]
            self.const[axis] = (k[keep], v[keep])
        if axis in self.source:
            self.source[axis] = self.source[axis][keep]


@dataclass
class Operand:
    """What one tensor name of a rule stands for at a match."""

    kind: str  # param | value | absent | scalar | run
    type: TensorType | None = None
    tensor: torch.Tensor | None = None  # param: its current tensor
    facts: Facts | None = None  # value: its known constant channels
    scalar: Any = None
    items: list["Operand"] | None = None  # run: the operands of a run `us...`
    ref: Any = None  # the IR operand (ValueRef / ParamRef), for the caller


FunctionTable = Mapping[str, Callable[..., torch.Tensor]]


def _as_tensor(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, bool):
        return torch.tensor(v)
    if isinstance(v, int):
        return torch.tensor(v, dtype=torch.int64)
    if isinstance(v, float):
        return torch.tensor(v, dtype=torch.float64)
    if isinstance(v, sympy.Basic):
        iv = normalize_dim(v)
        if isinstance(iv, int):
            return torch.tensor(iv, dtype=torch.int64)
        raise RuleEvalError(f"the dim {v} is symbolic here; a number is needed")
    raise RuleEvalError(f"{v!r} is not a number")


def lift(v: Any) -> Arr:
    if isinstance(v, Arr):
        return v
    return Arr(_as_tensor(v), ())


def _placed(a: Arr, names: tuple[str, ...], ndata: int) -> torch.Tensor:
    """a.t with its named axes moved to `names` order (size-1 where a lacks one) and its data axes
    right-aligned to `ndata` data axes."""
    t = a.t
    have = list(a.names)
    perm = [have.index(n) for n in names if n in have]
    k = len(have)
    t = t.permute(perm + list(range(k, t.dim()))) if perm != list(range(k)) else t
    shape = list(t.shape)
    out_shape: list[int] = []
    it = iter(shape[:k])
    for n in names:
        out_shape.append(next(it) if n in have else 1)
    data = shape[k:]
    out_shape += [1] * (ndata - len(data)) + data
    return t.reshape(out_shape)


def align(*xs: Any) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    arrs = [lift(x) for x in xs]
    names: list[str] = []
    for a in arrs:
        for n in a.names:
            if n not in names:
                names.append(n)
    nd = max(a.ndata for a in arrs)
    return [_placed(a, tuple(names), nd) for a in arrs], tuple(names)


def _is_plain(v: Any) -> bool:
    return not isinstance(v, (Arr, torch.Tensor))


def _list_binop(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise RuleEvalError(f"lists of lengths {len(a)} and {len(b)} in {op}")
        return [scalar_binop(op, x, y) for x, y in zip(a, b)]
    if isinstance(a, list):
        return [scalar_binop(op, x, b) for x in a]
    return [scalar_binop(op, a, y) for y in b]


def _norm(v: Any) -> Any:
    if isinstance(v, sympy.Basic):
        return normalize_dim(v)
    return v


def scalar_binop(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, list) or isinstance(b, list):
        return _list_binop(op, a, b)
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        raise RuleEvalError(f"cannot compute {a!r} {op} {b!r}")
    if op == "+":
        return _norm(a + b)
    if op == "-":
        return _norm(a - b)
    if op == "*":
        return _norm(a * b)
    if op == "/":
        if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
            return a // b
        return a / b
    if op == "//":
        return _norm(a // b)
    if op == "%":
        return _norm(a % b)
    if op == "^":
        return _norm(a**b)
    raise RuleEvalError(f"unknown operator {op}")


_TORCH_BINOP: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.true_divide,
    "//": torch.floor_divide, "%": torch.remainder, "^": torch.pow,
}
_TORCH_CMP: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "==": torch.eq, "!=": torch.ne, "<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge,
}


def plain_cmp(op: str, a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(b, tuple):
        b = list(b)
    if isinstance(a, list) and isinstance(b, list):
        if op not in ("==", "!="):
            raise RuleEvalError("lists compare with == or != only")
        eq = len(a) == len(b) and all(plain_cmp("==", x, y) for x, y in zip(a, b))
        return eq if op == "==" else not eq
    if isinstance(a, (sympy.Basic, int)) and isinstance(b, (sympy.Basic, int)) and not isinstance(a, bool) \
            and not isinstance(b, bool) and (isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic)):
        if op == "==":
            return dims_equal(a, b)
        if op == "!=":
            return not dims_equal(a, b)
        d = sympy.simplify(sympy.sympify(a) - sympy.sympify(b))
        truth = {"<": d < 0, "<=": d <= 0, ">": d > 0, ">=": d >= 0}[op]
        if truth not in (sympy.true, sympy.false):
            raise RuleEvalError(f"cannot decide {a} {op} {b} for every size")
        return bool(truth)
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if a is None or b is None:
        raise RuleEvalError(f"cannot order {a!r} and {b!r}")
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


class LaneEval:
    """Evaluates one rule's trees at one match, with the channel variable bound to `lanes`."""

    def __init__(self, env: Mapping[str, Any], functions: FunctionTable, channel: str | None = None,
                 lanes: torch.Tensor | None = None, values: tuple[str, ...] = (), where: Loc | None = None,
                 rule: str = "", memo: dict | None = None, all_lanes: bool | None = None):
        self.env: dict[str, Any] = dict(env)
        # slice tests already computed (see `_slice_test`), shared by every evaluator of one analysis:
        # rules that test the same parameter's slices the same way (a zero row) reuse the answer
        self.memo = memo
        self.functions = functions
        self.channel = channel
        self.values = set(values)  # value variables (bound by the first condition that names them)
        self.where = where
        self.rule = rule
        self._fresh = 0
        self._lane_arr: Arr | None = None
        # whether lane i is channel i (lanes = arange(n)): a read at the channel is then a whole axis
        self._all_lanes = False
        if channel is not None and lanes is not None:
            self._lane_arr = self.env[channel] = Arr(lanes.to(torch.int64), ("#c",))
            n = lanes.numel()
            # `all_lanes`: the caller knows lanes is arange(n) (the engine's evaluators), which spares
            # the test below, thousands of small tensor ops per analysis
            self._all_lanes = all_lanes if all_lanes is not None else lanes.dim() == 1 and (
                n == 0 or (int(lanes[0]) == 0 and int(lanes[-1]) == n - 1 and bool((lanes.diff() == 1).all())))
        self.lanes = lanes
        self.sources: torch.Tensor | None = None  # bool[lanes, R]: fact rules the reads rested on

    @property
    def n_lanes(self) -> int:
        return int(self.lanes.numel()) if self.lanes is not None else 1

    def err(self, msg: str) -> RuleEvalError:
        return RuleEvalError(f"rule '{self.rule}': {msg}" if self.rule else msg, self.where)

    # ---- expressions --------------------------------------------------------------------------
    def expr(self, e: Any) -> Any:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Name):
            if e.id not in self.env:
                if "*" + e.id in self.env:
                    return list(self.env["*" + e.id])
                raise self.err(f"{e.id!r} is not known at this match")
            v = self.env[e.id]
            if isinstance(v, Operand):
                if v.kind == "scalar":
                    return v.scalar
                if v.kind == "param":
                    return Arr(v.tensor, ())
                if v.kind == "absent":
                    return None
                raise self.err(f"{e.id} is an activation: its entries are only known through channel facts")
            return v
        if isinstance(e, A.Neg):
            v = self.expr(e.operand)
            if _is_plain(v):
                return scalar_binop("*", -1, v) if not isinstance(v, list) else [scalar_binop("*", -1, x) for x in v]
            return Arr(-v.t, v.names)
        if isinstance(e, A.BinOp):
            return self.binop(e.op, self.expr(e.left), self.expr(e.right))
        if isinstance(e, A.ListExpr):
            return [self.expr(x) for x in e.items]
        if isinstance(e, A.Index):
            return self.read(e)
        if isinstance(e, A.Call):
            return self.call(e)
        raise self.err(f"cannot evaluate {A.show(e)} here")

    def binop(self, op: str, a: Any, b: Any) -> Any:
        if _is_plain(a) and _is_plain(b):
            return scalar_binop(op, a, b)
        if isinstance(a, list) or isinstance(b, list):
            raise self.err("a list and a tensor in one expression")
        (ta, tb), names = align(a, b)
        if op in ("+", "-", "*", "/") and (ta.is_floating_point() or tb.is_floating_point()):
            ta, tb = ta.to(torch.float64), tb.to(torch.float64)
        return Arr(_TORCH_BINOP[op](ta, tb), names)

    def _int_index(self, e: Any) -> Any:
        v = self.expr(e)
        if isinstance(v, Arr):
            if v.ndata:
                raise self.err(f"the index {A.show(e)} is not a number per channel")
            if v.t.is_floating_point():
                if not bool((v.t == v.t.round()).all()):
                    raise self.err(f"the index {A.show(e)} is not an integer")
                return Arr(v.t.to(torch.int64), v.names)
            return v
        if isinstance(v, sympy.Basic):
            v = normalize_dim(v)
        if isinstance(v, float) and v == int(v):
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.err(f"the index {A.show(e)} is {v!r}, not an integer")
        return v

    def operand(self, name: str) -> Operand:
        v = self.env.get(name)
        if not isinstance(v, Operand):
            raise self.err(f"{name!r} is not a tensor of the match")
        return v

    def read(self, e: A.Index, padded: bool = False) -> Any:
        base = self.env.get(e.base)
        if isinstance(base, (list, tuple)):  # an ints attribute: padding[0]
            i = self._int_index(e.indices[0])
            if isinstance(i, Arr):
                raise self.err(f"{A.show(e)}: a list attribute read at a channel-dependent index")
            try:
                return base[i]
            except IndexError:
                raise self.err(f"{A.show(e)} reads past the end of {base}") from None
        op = self.operand(e.base)
        if op.kind == "absent":
            raise self.err(f"optional operand {e.base!r} is absent here")
        if op.kind != "param":
            raise self.err(f"{A.show(e)} reads an activation's entries (only parameters are known)")
        t = op.tensor
        n_var = sum(isinstance(i, A.Variadic) for i in e.indices)
        n_fixed = len(e.indices) - n_var
        if (n_var == 0 and n_fixed != t.dim()) or n_fixed > t.dim():
            raise self.err(f"{A.show(e)} indexes {len(e.indices)} axes of a rank-{t.dim()} tensor")
        axes: list[tuple[int, Any]] = []  # (axis, index) for indexed axes
        kept: list[int] = []
        pos = 0
        for i in e.indices:
            if isinstance(i, A.Variadic):
                k = t.dim() - n_fixed
                kept.extend(range(pos, pos + k))
                pos += k
            elif isinstance(i, A.Slice):
                kept.append(pos)
                pos += 1
            else:
                axes.append((pos, self._int_index(i)))
                pos += 1
        if not axes:
            return Arr(t, ())
        idx_arrs = [lift(ix) for _, ix in axes]
        tensors, names = align(*idx_arrs)
        tensors = [x.reshape(x.shape[: len(names)]) if x.dim() > len(names) else x for x in tensors]
        shape = torch.broadcast_shapes(*[x.shape for x in tensors])
        tensors = [x.expand(shape) for x in tensors]
        inside = None
        if padded:
            inside = torch.ones(shape, dtype=torch.bool)
            clamped = []
            for (ax, _), x in zip(axes, tensors):
                n = t.shape[ax]
                inside &= (x >= 0) & (x < n)
                clamped.append(x.clamp(0, max(n - 1, 0)))
            tensors = clamped
        else:
            for (ax, _), x in zip(axes, tensors):
                n = t.shape[ax]
                if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n):
                    raise self.err(f"{A.show(e)} reads outside axis {ax} of {e.base} (length {n})")
        moved = t.permute([ax for ax, _ in axes] + kept)
        out = moved[tuple(tensors)]
        if inside is not None:
            mask = inside.reshape(tuple(inside.shape) + (1,) * len(kept))
            out = torch.where(mask, out, torch.zeros((), dtype=out.dtype))
        return Arr(out, names)

    def _bound(self, b: A.Bound) -> tuple[str, int]:
        n = self.expr(b.upper)
        if isinstance(n, sympy.Basic):
            n = normalize_dim(n)
        if not isinstance(n, int):
            raise self.err(f"the range {A.show(b)} needs a number, got {n!r}")
        self._fresh += 1
        return f"{b.var}#{self._fresh}", n

    def _with_grid(self, bounds: list[A.Bound], body: Callable[[], Any]) -> tuple[Any, list[tuple[str, int]]]:
        saved = {b.var: self.env.get(b.var, _MISSING) for b in bounds}
        grid: list[tuple[str, int]] = []
        try:
            for b in bounds:
                axis, n = self._bound(b)
                self.env[b.var] = Arr(torch.arange(n), (axis,))
                grid.append((axis, n))
            return body(), grid
        finally:
            for k, v in saved.items():
                if v is _MISSING:
                    self.env.pop(k, None)
                else:
                    self.env[k] = v

    def call(self, e: A.Call) -> Any:
        fn = e.fn
        if fn == "sum":
            bounds = [a for a in e.args if isinstance(a, A.Bound)]
            val, grid = self._with_grid(bounds, lambda: self.expr(e.args[-1]))
            v = lift(val)
            for axis, n in grid:
                if axis in v.names:
                    k = v.names.index(axis)
                    v = Arr(v.t.sum(k), v.names[:k] + v.names[k + 1:])
                else:
                    v = Arr(v.t * n, v.names)
            return v
        if fn == "tensor":
            bounds = [a for a in e.args if isinstance(a, A.Bound)]
            val, grid = self._with_grid(bounds, lambda: self.expr(e.args[-1]))
            v = lift(val)
            out_names = tuple(n for n in v.names if n not in {g for g, _ in grid})
            order = list(out_names) + [g for g, _ in grid]
            sizes = {g: n for g, n in grid}
            t = _placed(v, tuple(order), v.ndata)
            shape = list(t.shape)
            for i, g in enumerate(order):
                if g in sizes:
                    shape[i] = sizes[g]
            return Arr(t.expand(shape).contiguous(), out_names)
        if fn == "dim":
            op = self.operand(e.args[0].id)
            ax = self.expr(e.args[1])
            shape = op.type.shape if op.type is not None else tuple(op.tensor.shape)
            return shape[ax]
        if fn == "opt":
            ix = e.args[0]
            if isinstance(ix, A.Index):
                o = self.env.get(ix.base)
                if isinstance(o, Operand) and o.kind == "absent":
                    return self.expr(e.args[1])
            return self.expr(ix)
        if fn == "padded":
            return self.read(e.args[0], padded=True)
        if fn == "len":
            v = self.expr(e.args[0])
            return len(v)
        if fn == "width":
            run = self.env.get(e.args[0].id)
            ax = self.expr(e.args[1])
            items = run.items if isinstance(run, Operand) and run.kind == "run" else [run]
            total: Any = 0
            for o in items:
                total = normalize_dim(total + o.type.shape[ax])
            return total
        if fn in ("max", "min"):
            args = [self.expr(a) for a in e.args]
            if all(_is_plain(a) for a in args):
                if any(isinstance(a, sympy.Basic) for a in args):
                    return normalize_dim((sympy.Max if fn == "max" else sympy.Min)(*args))
                return max(args) if fn == "max" else min(args)
            ts, names = align(*args)
            out = ts[0]
            for x in ts[1:]:
                out = torch.maximum(out, x) if fn == "max" else torch.minimum(out, x)
            return Arr(out, names)
        if fn == "step":
            v = self.expr(e.args[0])
            if _is_plain(v):
                return 1 if v >= 0 else 0
            return Arr((v.t >= 0).to(torch.int64), v.names)
        if fn == "choose":
            a, v = self.expr(e.args[0]), self.expr(e.args[1])
            return self.expr(e.args[2] if a == v else e.args[3])
        if fn in ("keep_of", "bias_of"):
            # a mask entry: a boolean mask keeps (1) or drops (0) a key; an additive one keeps every
            # key it does not set to -inf, and adds itself to the score
            v = lift(self.expr(e.args[0]))
            boolean = v.t.dtype == torch.bool
            if fn == "keep_of":
                t = v.t if boolean else v.t > float("-inf")
                return Arr(t.to(torch.int64), v.names)
            return Arr(torch.zeros_like(v.t, dtype=torch.float64) if boolean else v.t.to(torch.float64), v.names)
        if fn == "either":
            a = self.expr(e.args[0])
            a = a if (a is not None and not (isinstance(a, list) and not a)) else self.expr(e.args[1])
            if len(e.args) > 2:
                return a[self.expr(e.args[2])]
            return a
        f = self.functions.get(fn)
        if f is None:
            raise self.err(f"no torch definition of the function {fn!r}")
        args = [lift(self.expr(a)) for a in e.args]
        ts, names = align(*args)
        ts = [x.to(torch.float64) for x in ts]
        return Arr(f(*ts), names)

    # ---- conditions ----------------------------------------------------------------------------
    def holds(self, w: Any) -> torch.Tensor:
        """bool[lanes]: where the condition holds (every other named axis reduced)."""
        fast = self._slice_test(w)
        if fast is not None:
            return fast
        v = self._bool(w)
        return self._reduce_lanes(v)

    def _slice_test(self, w: Any) -> torch.Tensor | None:
        """`p[:, c, *S] <cmp> k` -- a parameter's slice at the channel against one number (`weight[c, :] ==
        0`, a zero row) -- decided by reductions of the whole tensor over every other axis
        (`_slice_compare`), and remembered per tensor, axis and test in `memo`. The same answer as
        reading the slices (`read`: a gather copying the tensor, per rule), comparing them in float64
        and reducing (`_reduce_lanes`); None where the condition has another form. The result may be
        shared through `memo`: callers must not write into it."""
        if not (isinstance(w, A.Cmp) and w.op in _TORCH_CMP and isinstance(w.left, A.Index) and self._all_lanes
                and self.env.get(self.channel) is self._lane_arr):  # (not shadowed by a bound variable)
            return None
        op = self.env.get(w.left.base)
        if not isinstance(op, Operand) or op.kind != "param" or op.tensor is None:
            return None
        if isinstance(w.right, A.Name) and w.right.id in self.values and w.right.id not in self.env:
            return None  # `== k` binds k: the general path does that
        t = op.tensor
        axis = self._channel_axis(w.left, t.dim())
        if axis is None or t.shape[axis] != self.n_lanes:
            return None
        k = self.expr(w.right)
        if isinstance(k, sympy.Basic):
            k = normalize_dim(k)
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return None
        key = (id(t), t._version, axis, w.op, float(k), type(k))
        if self.memo is not None:
            hit = self.memo.get(key)
            if hit is not None and hit[0] is t:
                return hit[1]
        out = _slice_compare(t, axis, w.op, k)
        if self.memo is not None:
            self.memo[key] = (t, out)
        return out

    def _channel_axis(self, ix: A.Index, rank: int) -> int | None:
        """The axis a read indexes by the channel variable itself, every other index being `:` or `*B`;
        None for any other read."""
        n_var = sum(isinstance(i, A.Variadic) for i in ix.indices)
        n_fixed = len(ix.indices) - n_var
        if n_var > 1 or (n_var == 0 and n_fixed != rank) or n_fixed > rank:
            return None
        axis, pos = None, 0
        for i in ix.indices:
            if isinstance(i, A.Variadic):
                pos += rank - n_fixed
                continue
            if not isinstance(i, A.Slice):
                if axis is not None or not (isinstance(i, A.Name) and i.id == self.channel):
                    return None
                axis = pos
            pos += 1
        return axis

    def _reduce_lanes(self, v: Any) -> torch.Tensor:
        n = self.n_lanes
        if _is_plain(v):
            return torch.full((n,), bool(v), dtype=torch.bool)
        v = lift(v)
        t = v.t.to(torch.bool)
        # reduce data axes and every named axis but the channel's
        if v.ndata:
            t = t.reshape(tuple(t.shape[: len(v.names)]) + (-1,)).all(-1)
        names = list(v.names)
        for k in reversed(range(len(names))):
            if names[k] != "#c":
                t = t.all(k)
                names.pop(k)
        if names == ["#c"]:
            return t.expand(n) if t.numel() == 1 else t
        return t.reshape(()).expand(n)

    def _bool(self, w: Any) -> Any:
        if isinstance(w, A.BoolOp):
            parts = [self._bool(x) for x in w.operands]
            if w.op == "not":
                p = parts[0]
                return (not p) if _is_plain(p) else Arr(~lift(p).t.to(torch.bool), lift(p).names)
            if all(_is_plain(p) for p in parts):
                return all(parts) if w.op == "and" else any(parts)
            ts, names = align(*[self._full_bool(p) for p in parts])
            out = ts[0].to(torch.bool)
            for x in ts[1:]:
                out = (out & x.to(torch.bool)) if w.op == "and" else (out | x.to(torch.bool))
            return Arr(out, names)
        if isinstance(w, A.Quant):
            val, grid = self._with_grid([A.Bound(w.var, w.upper)], lambda: self._bool(w.body))
            v = self._full_bool(val)
            axis = grid[0][0]
            if axis in v.names:
                k = v.names.index(axis)
                t = v.t.to(torch.bool)
                t = t.any(k) if w.kind == "exists" else t.all(k)
                return Arr(t, v.names[:k] + v.names[k + 1:])
            if grid[0][1] == 0:
                return w.kind == "forall"
            return v
        if isinstance(w, A.Unused):
            raise self.err("`unused` conditions are facts the engine does not track")
        if isinstance(w, A.Cmp):
            fact = self._fact_cmp(w)
            if fact is not None:
                return fact
            if (w.op == "==" and isinstance(w.right, A.Name) and w.right.id in self.values
                    and w.right.id not in self.env):
                return self._bind_value(w.right.id, self.expr(w.left))
            a, b = self.expr(w.left), self.expr(w.right)
            if _is_plain(a) and _is_plain(b):
                return plain_cmp(w.op, a, b)
            (ta, tb), names = align(a, b)
            if ta.is_floating_point() or tb.is_floating_point():
                ta, tb = ta.to(torch.float64), tb.to(torch.float64)
            return Arr(_TORCH_CMP[w.op](ta, tb), names)
        raise self.err(f"cannot check {A.show(w)} on tensors")

    def _full_bool(self, v: Any) -> Arr:
        if _is_plain(v):
            return Arr(torch.tensor(bool(v)), ())
        v = lift(v)
        t = v.t.to(torch.bool)
        if v.ndata:  # a comparison of whole slices holds where every entry does
            t = t.reshape(tuple(t.shape[: len(v.names)]) + (-1,)).all(-1)
        return Arr(t, v.names)

    def _bind_value(self, name: str, a: Any) -> Any:
        """`slice == k` with k unbound: k is the slice's value where the slice is uniform."""
        v = lift(a).t.to(torch.float64)
        names = lift(a).names
        if names and names != ("#c",):
            raise self.err(f"{name} would depend on more than the channel")
        if v.dim() > len(names):
            flat = v.reshape(tuple(v.shape[: len(names)]) + (-1,))
            first = flat[..., 0] if flat.shape[-1] else torch.zeros(flat.shape[:-1], dtype=torch.float64)
            uniform = (flat == first.unsqueeze(-1)).all(-1) if flat.shape[-1] else torch.ones_like(first, dtype=torch.bool)
        else:
            first, uniform = v, torch.ones(v.shape, dtype=torch.bool)
        self.env[name] = Arr(torch.where(uniform, first, torch.zeros_like(first)), names)
        return Arr(uniform, names)

    def _fact_cmp(self, w: A.Cmp) -> Any:
        """`x[.., c, ..] == e` on an activation x: read from the channel facts."""
        if w.op != "==" or not isinstance(w.left, A.Index):
            return None
        op = self.env.get(w.left.base)
        if not isinstance(op, Operand) or op.kind != "value":
            return None
        ix = w.left
        rank = op.type.rank
        n_var = sum(isinstance(i, A.Variadic) for i in ix.indices)
        n_fixed = len(ix.indices) - n_var
        if (n_var == 0 and n_fixed != rank) or n_fixed > rank:
            raise self.err(f"{A.show(ix)} indexes {len(ix.indices)} axes of a rank-{rank} activation")
        axis = None
        pos_expr = None
        pos = 0
        for i in ix.indices:
            if isinstance(i, A.Variadic):
                pos += rank - n_fixed
                continue
            if not isinstance(i, A.Slice):
                if axis is not None:
                    raise self.err(f"{A.show(ix)}: a channel fact names one axis; the others are `:`")
                axis, pos_expr = pos, i
            pos += 1
        if axis is None:
            raise self.err(f"{A.show(ix)} names no channel")
        known, value = (op.facts.const.get(axis) if op.facts else None) or (None, None)
        lanes = self.n_lanes
        if known is None:
            return Arr(torch.zeros(lanes, dtype=torch.bool), ("#c",))
        if isinstance(pos_expr, A.Call) and pos_expr.fn == "block":
            lo = lift(self._int_index(pos_expr.args[0]))
            size = self._int_index(pos_expr.args[1])
            if isinstance(size, Arr):
                raise self.err("a block's length must be the same for every channel")
            (lo_t,), names = align(lo)
            idx = lo_t.unsqueeze(-1) * size + torch.arange(size)
        else:
            p = lift(self._int_index(pos_expr))
            (idx,), names = align(p)
            idx = idx.unsqueeze(-1)
        n = known.numel()
        inside = (idx >= 0) & (idx < n)
        cl = idx.clamp(0, max(n - 1, 0))
        k = known[cl] & inside
        vals = value[cl]
        ok = k.all(-1) & ((vals == vals[..., :1]).all(-1))
        val = vals[..., 0]
        src = op.facts.source.get(axis)
        if src is not None:
            read = src[cl].any(-2) & ok.unsqueeze(-1)  # [.., R]
            if names == ("#c",):
                self.sources = read if self.sources is None else self.sources | read
            elif not names:
                r = read.reshape(1, -1).expand(self.n_lanes, -1)
                self.sources = r if self.sources is None else self.sources | r
        rhs = w.right
        if isinstance(rhs, A.Name) and rhs.id in self.values and rhs.id not in self.env:
            self.env[rhs.id] = Arr(torch.where(ok, val, torch.zeros_like(val)), names)
            return Arr(ok, names)
        want = self.expr(rhs)
        (tok, tv, tw), names2 = align(Arr(ok, names), Arr(val, names), want)
        return Arr(tok & (tv == tw.to(torch.float64)), names2)


_MISSING = object()

# Which whole-slice extremes decide `all(slice <op> k)`: every entry equals k iff the largest and the
# smallest do, every entry is below k iff the largest is, and so on (`!=` has no such extreme).
_EXTREMES = {"==": ("amax", "amin"), "<": ("amax",), "<=": ("amax",), ">": ("amin",), ">=": ("amin",)}


def _slice_compare(t: torch.Tensor, axis: int, op: str, k: int | float) -> torch.Tensor:
    """bool[t.shape[axis]]: whether every entry of slice i of t along `axis` compares `op` k, as `_bool`
    decides it (both sides in float64 when either is a float).

    The slices' largest and smallest entries decide it (`_EXTREMES`): one reduction per extreme, in
    t's own dtype, with no copy of t. Taking a max is exact in any dtype and widening to float64 is
    exact and order-preserving, so comparing the n extremes in float64 is the entrywise float64 test; a
    NaN entry makes its extreme NaN and the test false, as it makes the entrywise test false."""
    others = tuple(d for d in range(t.dim()) if d != axis)
    wide = t.is_floating_point() or isinstance(k, float)
    ref = torch.tensor(k, dtype=torch.float64 if wide else torch.int64)
    if op in _EXTREMES and t.dtype != torch.bool and all(t.shape[d] for d in others):
        out = None
        for fn in _EXTREMES[op]:
            e = getattr(t, fn)(dim=others) if others else t
            hit = _TORCH_CMP[op](e.to(torch.float64) if wide else e, ref)
            out = hit if out is None else out & hit
        return out
    x = t.to(torch.float64) if wide else t  # `!=`, bool tensors, empty slices: entrywise as `_bool` does
    hit = _TORCH_CMP[op](x, ref.to(x.dtype))
    return hit.all(dim=others) if others else hit


def lanes_value(v: Any, n: int) -> torch.Tensor:
    """A lane-indexed value as a tensor [n, *data] (broadcast where it does not depend on the channel)."""
    a = lift(v)
    if any(x != "#c" for x in a.names):
        raise RuleEvalError("a value that depends on a bound variable outside its `sum`/`tensor`")
    t = a.t
    if "#c" not in a.names:
        t = t.unsqueeze(0)
    return t.expand((n,) + tuple(t.shape[1:]))


def is_nan_free(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all()) if t.is_floating_point() else True


__all__ = ["Arr", "Facts", "LaneEval", "Operand", "RuleEvalError", "align", "lanes_value", "lift", "math"]
