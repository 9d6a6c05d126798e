"""A rule's side conditions compiled to a tensor check over all channels at once.

The prover reads `where` as solver assumptions; the engine runs the same conditions here on the
matched node, vectorized over the channel axis:

    check = compile_where(rule)
    m = check(tensors={"weight": W, "bias": b}, attrs={"groups": 1},
              facts=Facts(const={"x": (is_const, value)}, unused={"y": unused_mask}),
              shapes={"x": (8, 300)})
    m.mask      # bool[C]: the rule applies to channel c
    m.values    # {"k": float[C]}: the value variables (NaN where the rule does not apply)

Conditions on a parameter (`weight[c, :] == 0`) are checked on its tensor; conditions on an
activation (`x[*B, c] == k`) come from the engine's channel facts (`Facts.const`), `unused y[..c..]`
from `Facts.unused`; conditions on attributes and dims are scalars; `forall i < l: exists t < s: ...`
is evaluated on index grids (no Python loops over tensor entries).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..errors import SrIrError
from . import ast as A
from .rule import Rule


class TensorCheckError(SrIrError):
    """A condition the tensor check cannot evaluate (names the rule)."""


@dataclass
class Facts:
    """What the engine knows about activation channels: constants and unused channels."""

    const: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # name -> (mask, value)
    unused: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> bool mask


@dataclass
class ChannelMatch:
    mask: torch.Tensor  # bool[C]
    values: dict[str, torch.Tensor]  # value variable -> float64[C]


_FN = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp,
       "rsqrt": torch.rsqrt, "sqrt": torch.sqrt, "abs": torch.abs}


@dataclass
class CompiledWhere:
    rule: Rule

    def __call__(self, tensors: Mapping[str, torch.Tensor | None], attrs: Mapping[str, Any] | None = None,
                 facts: Facts | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
                 channels: int | None = None) -> ChannelMatch:
        return evaluate(self.rule, tensors, attrs or {}, facts or Facts(), shapes or {}, channels)


def compile_where(rule: Rule) -> CompiledWhere:
    """Check once that every condition is of a form the tensor check evaluates; return the check."""
    info = rule.info
    tensors = set(info.tensors) if info else set()
    for w in rule.where:
        for sub in A.walk(w):
            if isinstance(sub, A.Index) and sub.base not in tensors and not isinstance(w, A.Quant):
                raise TensorCheckError(f"rule '{rule.name}': {A.show(sub)} reads an unknown tensor", rule.loc)
    return CompiledWhere(rule)


def _num_channels(rule: Rule, tensors, facts: Facts, shapes, channels) -> int:
    if channels is not None:
        return channels
    for u in rule.info.channel_uses:
        t = tensors.get(u.tensor)
        if isinstance(t, torch.Tensor):
            return t.shape[u.axis]
        if u.tensor in shapes:
            return shapes[u.tensor][u.axis]
        if u.tensor in facts.const:
            return facts.const[u.tensor][0].shape[0]
        if u.tensor in facts.unused:
            return facts.unused[u.tensor].shape[0]
    raise TensorCheckError(f"rule '{rule.name}': cannot tell the number of channels (pass channels=)", rule.loc)


def _bind_dims(rule: Rule, tensors, shapes) -> dict[str, int]:
    """Dim names of the rule's shape annotations, from the given tensors' shapes."""
    env: dict[str, int] = {}
    for b in rule.bindings:
        for o in b.operands:
            if o.name is None or o.shape is None:
                continue
            t = tensors.get(o.name)
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else shapes.get(o.name)
            if shape is None:
                continue
            fixed = [d for d in o.shape if not isinstance(d, A.Variadic)]
            var_at = next((i for i, d in enumerate(o.shape) if isinstance(d, A.Variadic)), None)
            pos = list(range(len(fixed))) if var_at is None else (
                list(range(var_at)) + list(range(len(shape) - (len(o.shape) - var_at - 1), len(shape))))
            for d, p in zip(fixed, pos):
                if isinstance(d, A.Name) and p < len(shape):
                    env.setdefault(d.id, int(shape[p]))
    return env


def evaluate(rule: Rule, tensors: Mapping[str, Any], attrs: Mapping[str, Any], facts: Facts,
             shapes: Mapping[str, tuple[int, ...]], channels: int | None = None) -> ChannelMatch:
    info = rule.info
    C = _num_channels(rule, tensors, facts, shapes, channels)
    mask = torch.ones(C, dtype=torch.bool)
    values: dict[str, torch.Tensor] = {}
    env: dict[str, Any] = dict(_bind_dims(rule, tensors, shapes))
    for name, bi, attr in info.attrs:
        if attr in attrs and bi == 0:
            env[name] = attrs[attr]
        elif name in attrs:
            env[name] = attrs[name]
    ev = _Vec(rule, tensors, env, values, C)
    for w in rule.where:
        mask &= ev.cond(w, facts)
    for k in list(values):
        values[k] = torch.where(mask, values[k], torch.full_like(values[k], math.nan))
    return ChannelMatch(mask, values)


class _Vec:
    """Vectorized evaluation: axis 0 is the channel, further axes the quantified index variables."""

    def __init__(self, rule: Rule, tensors, env, values, C: int):
        self.rule = rule
        self.tensors = tensors
        self.env = env
        self.values = values
        self.C = C
        self.c = rule.info.channel
        self.qvars: list[str] = []

    def err(self, msg: str) -> TensorCheckError:
        return TensorCheckError(f"rule '{self.rule.name}': {msg}", self.rule.loc)

    # ---- conditions ------------------------------------------------------------------------------
    def cond(self, w: Any, facts: Facts) -> torch.Tensor:
        if isinstance(w, A.Unused):
            m = facts.unused.get(w.target.base)
            if m is None:
                return torch.zeros(self.C, dtype=torch.bool)
            return m.to(torch.bool)
        if isinstance(w, A.Cmp) and w.op == "==" and isinstance(w.left, A.Index) and self._has_channel(w.left):
            return self.slice_eq(w.left, w.right, facts)
        v = self.bool_expr(w)
        v = torch.as_tensor(v, dtype=torch.bool)
        while v.dim() > 1:
            v = v.all(dim=-1)
        return v.expand(self.C) if v.dim() == 1 else v.reshape(()).expand(self.C)

    def _has_channel(self, ix: A.Index) -> bool:
        return self.c is not None and A.Name(self.c) in ix.indices

    def slice_eq(self, ix: A.Index, rhs: Any, facts: Facts) -> torch.Tensor:
        t = self.tensors.get(ix.base)
        if not isinstance(t, torch.Tensor):
            # an activation: the engine's constant facts
            known = facts.const.get(ix.base)
            if known is None:
                return torch.zeros(self.C, dtype=torch.bool)
            is_const, value = known[0].to(torch.bool), known[1].to(torch.float64)
            return is_const & self._match_value(rhs, value)
        pos = ix.indices.index(A.Name(self.c))
        var_at = next((i for i, d in enumerate(ix.indices) if isinstance(d, A.Variadic)), None)
        axis = pos - len(ix.indices) if var_at is not None and var_at < pos else pos
        for i, d in enumerate(ix.indices):
            if i != pos and not isinstance(d, (A.Slice, A.Variadic)):
                raise self.err(f"{A.show(ix)}: only `:` and `*B` may stand beside the channel in a condition")
        tm = t.detach().to(torch.float64).movedim(axis, 0).reshape(t.shape[axis], -1)
        if tm.shape[1] == 0:
            return torch.ones(self.C, dtype=torch.bool)
        return self._match_value(rhs, tm)

    def _match_value(self, rhs: Any, tm: torch.Tensor) -> torch.Tensor:
        """All entries of each channel's row equal rhs; binds a value variable on first sight."""
        rows = tm if tm.dim() == 2 else tm.reshape(-1, 1)
        if isinstance(rhs, A.Name) and rhs.id in self.rule.info.values and rhs.id not in self.values:
            first = rows[:, 0]
            self.values[rhs.id] = first.clone()
            return (rows == first[:, None]).all(dim=1)
        want = torch.as_tensor(self.expr(rhs), dtype=torch.float64)
        if want.dim() == 0:
            want = want.expand(rows.shape[0])
        return (rows == want.reshape(-1, 1)).all(dim=1)

    def bool_expr(self, w: Any) -> Any:
        if isinstance(w, A.BoolOp):
            parts = [torch.as_tensor(self.bool_expr(x), dtype=torch.bool) for x in w.operands]
            if w.op == "not":
                return ~parts[0]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if w.op == "and" else (out | p)
            return out
        if isinstance(w, A.Quant):
            n = int(self.expr(w.upper))
            self.qvars.append(w.var)
            self.env[w.var] = ("axis", len(self.qvars), n)
            try:
                body = torch.as_tensor(self.bool_expr(w.body), dtype=torch.bool)
            finally:
                self.env.pop(w.var)
                self.qvars.pop()
            ax = len(self.qvars) + 1
            while body.dim() <= ax:
                body = body.unsqueeze(-1)
            body = body.any(dim=ax) if w.kind == "exists" else body.all(dim=ax)
            return body
        if isinstance(w, A.Cmp):
            a, b = self.expr(w.left), self.expr(w.right)
            if isinstance(a, (list, str, bool)) or isinstance(b, (list, str, bool)) or a is None or b is None:
                a = list(a) if isinstance(a, tuple) else a
                b = list(b) if isinstance(b, tuple) else b
                res = {"==": a == b, "!=": a != b}.get(w.op)
                if res is None:
                    res = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[w.op]
                return torch.tensor(res)
            a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
            return {"==": torch.eq, "!=": torch.ne, "<": torch.lt, "<=": torch.le, ">": torch.gt,
                    ">=": torch.ge}[w.op](a, b)
        raise self.err(f"cannot check {A.show(w)} on tensors")

    # ---- expressions -------------------------------------------------------------------------------
    def _grid(self, axis: int, n: int) -> torch.Tensor:
        shape = [1] * (len(self.qvars) + 1)
        shape[axis] = n
        return torch.arange(n).reshape(shape)

    def expr(self, e: Any) -> Any:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Name):
            if e.id == self.c:
                return self._grid(0, self.C)
            if e.id in self.values:
                return self.values[e.id]
            v = self.env.get(e.id)
            if isinstance(v, tuple) and len(v) == 3 and v[0] == "axis":
                return self._grid(v[1], v[2])
            if e.id not in self.env:
                raise self.err(f"{e.id!r} is not known here (an attribute or dim the engine must pass)")
            return v
        if isinstance(e, A.Index):
            t = self.tensors.get(e.base)
            if isinstance(t, (list, tuple)) or (t is None and isinstance(self.env.get(e.base), (list, tuple))):
                seq = t if t is not None else self.env[e.base]
                return seq[int(self.expr(e.indices[0]))]
            if not isinstance(t, torch.Tensor):
                raise self.err(f"{e.base} is not a parameter tensor here")
            idx = []
            for i in e.indices:
                if isinstance(i, (A.Slice, A.Variadic)):
                    raise self.err(f"{A.show(e)}: `:` only in `t[.., c, ..] == value`")
                idx.append(torch.as_tensor(self.expr(i)).long())
            return t.detach().to(torch.float64)[tuple(idx)]
        if isinstance(e, A.Neg):
            return -self.expr(e.operand)
        if isinstance(e, A.BinOp):
            a, b = self.expr(e.left), self.expr(e.right)
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if e.op == "*":
                return a * b
            if e.op == "/":
                return a / b
            if e.op == "//":
                return a // b
            if e.op == "%":
                return a % b
            if e.op == "^":
                return a**b
        if isinstance(e, A.ListExpr):
            return [self.expr(x) for x in e.items]
        if isinstance(e, A.Call) and e.fn in _FN:
            return _FN[e.fn](torch.as_tensor(self.expr(e.args[0]), dtype=torch.float64))
        if isinstance(e, A.Call) and e.fn in ("dim",):
            t = self.tensors.get(e.args[0].id)
            return t.shape[int(self.expr(e.args[1]))]
        raise self.err(f"cannot evaluate {A.show(e)} on tensors")
