"""Evaluate op semantics (`means`) and rule expressions over lazily indexed tensors.

One evaluator serves every tier; what differs is the scalar algebra (sr_ir.prover.algebra):
exact rationals with stand-in functions, sympy symbols at concrete sizes, or sympy with symbolic
sizes. With symbolic sizes an axis is an `Extent` (the channel c plus the rest R, the rest alone, or
a generic axis) and index values are symbols; anything that needs a concrete size (index arithmetic,
zero padding, a softmax row) raises NeedConcrete so the caller can make that dim concrete.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..lang import ast as A
from ..ir.opdecl import OpDecl


class NeedConcrete(Exception):
    """A symbolic dim was used where only a number will do; `dims` names it (them)."""

    def __init__(self, dims: set[str]):
        super().__init__(", ".join(sorted(dims)))
        self.dims = dims


class InstanceError(Exception):
    """The chosen sizes/attributes do not satisfy an op's constraints (try another instance)."""


class SemanticsError(Exception):
    """The rule or semantics cannot be evaluated (a bug in the rule text, reported to the user)."""


class OutOfShape(SemanticsError):
    """A read outside a tensor's shape: a bug in a rule; in an op's means, an instance torch rejects
    (operands whose shapes do not broadcast)."""


@dataclass(frozen=True)
class Extent:
    """A symbolic axis length: `full` = {c} + R, `rest` = R (c dropped), `gen` = an axis without c."""

    dim: str
    part: str  # full / rest / gen

    def __repr__(self) -> str:
        return f"{self.dim}:{self.part}"


@dataclass(frozen=True)
class Merged:
    """A symbolic axis that merges adjacent axes row-major (a flatten): its length is the product of
    the factors' lengths and a position on it is the tuple of its digits, one per factor (position
    sum(d_k * prod(len after k))). Only the parametric tier builds these; concrete tiers use integers.
    Dropping channel c of the first factor (`drop(t, axis, c, block)` with block the product of the
    other factors) drops exactly the positions whose first digit is c: the run c*block .. (c+1)*block-1."""

    factors: tuple[Any, ...]

    @property
    def dim(self) -> str:
        return next((f.dim for f in self.factors if isinstance(f, Extent)), "?")

    def __repr__(self) -> str:
        return "*".join(repr(f) for f in self.factors)


@dataclass(frozen=True)
class Joined:
    """A symbolic axis that concatenates the axes of several operands (a concat): its length is the
    sum of the parts' lengths and a position on it is (part, position in that part). Only the
    parametric tier builds these; dropping channel c of a part whose axis carries it drops the
    position (offset of the part) + c."""

    parts: tuple[Any, ...]

    @property
    def dim(self) -> str:
        return next((f.dim for f in self.parts if is_symbolic(f)), "?")

    def __repr__(self) -> str:
        return "+".join(repr(f) for f in self.parts)


def is_symbolic(x: Any) -> bool:
    return isinstance(x, (Extent, Merged, Joined))


def _factors(ext: Any) -> list[Any]:
    return list(ext.factors) if isinstance(ext, Merged) else [ext]


def _unit(f: Any) -> bool:
    return not is_symbolic(f) and int(f) == 1


def _merged(factors: list[Any]) -> Any:
    if not factors:
        return 1
    return factors[0] if len(factors) == 1 else Merged(tuple(factors))


class Tensor:
    """A tensor known entry by entry: `get(idx)` computes (and memoises) one entry."""

    def __init__(self, name: str, shape: tuple[Any, ...] | None, getter: Callable[[tuple], Any], dtype: str = "T"):
        self.name = name
        self.shape = shape
        self._get = getter
        self.dtype = dtype
        self._memo: dict[tuple, Any] = {}

    def __getitem__(self, idx: tuple) -> Any:
        if self.shape is not None and len(idx) != len(self.shape):
            if len(idx) > len(self.shape):  # broadcasting read: trailing axes
                idx = idx[len(idx) - len(self.shape):]
            else:
                raise SemanticsError(f"{self.name} has rank {len(self.shape)}, read with {len(idx)} indices")
        if self.shape is not None:
            idx = tuple(0 if (e == 1 and isinstance(e, int)) else i for i, e in zip(idx, self.shape))
            for i, e in zip(idx, self.shape):
                if isinstance(e, int) and isinstance(i, int) and not 0 <= i < e:
                    raise OutOfShape(f"{self.name}{list(idx)} reads outside its shape {list(self.shape)} "
                                     f"(an index that is a dim name is its size, not a range: use `:`)")
        try:
            return self._memo[idx]
        except KeyError:
            v = self._get(idx)
            self._memo[idx] = v
            return v
        except TypeError:  # unhashable index: compute without memo
            return self._get(idx)


class Evaluator:
    """Evaluates expressions and op semantics with one algebra."""

    def __init__(self, alg: Any, ops: Mapping[str, OpDecl], channel_value: Any = None):
        self.alg = alg
        self.ops = ops
        self.c = channel_value
        self.depth = 0
        self.assumed: list[tuple[Any, dict]] = []  # op preconditions a symbolic instance cannot decide
        self.scalar_calls = 0  # > 0 inside `means`: a call names a scalar function, never an op
        # how a recurrent op is read: None unrolls its steps; an obligation proving a rule by induction
        # sets an object with `mode` "init" (the result is the stacked initial state) or "step" (one
        # step from the state `pre_states(...)` gives; sr_ir/prover/obligation.py)
        self.recurrence: Any = None

    # ---- scalar / index expressions -----------------------------------------------------------
    def ev(self, e: Any, env: Mapping[str, Any]) -> Any:
        alg = self.alg
        if isinstance(e, A.Num):
            v = e.value
            if isinstance(v, bool) or v is None or isinstance(v, (str, list)):
                return v
            return alg.num(v)
        if isinstance(e, A.Name):
            if e.id not in env and "*" + e.id in env:  # a bound run of indices, as a list
                return list(env["*" + e.id])
            if e.id not in env and "*" + e.id + "#shape" in env:  # a bound run of dims (`len(B)`)
                return list(env["*" + e.id + "#shape"])
            if e.id not in env:
                raise SemanticsError(f"unknown name {e.id!r}")
            v = env[e.id]
            if isinstance(v, Extent):
                return alg.size(v)
            return v
        if isinstance(e, A.Index):
            t = env.get(e.base)
            if t is None and e.base in env:
                raise SemanticsError(f"optional operand {e.base!r} is absent; read it as opt({A.show(e)}, default)")
            if isinstance(t, Tensor):
                if any(isinstance(i, A.Slice) for i in e.indices) or (
                    any(isinstance(i, A.Variadic) and "*" + i.name not in env for i in e.indices)
                ):
                    return self.slice_tensor(e, env)
                return t[self.indices(e, env, t)]
            if isinstance(t, (list, tuple)):  # an ints attribute: padding[0]
                i = self.ev(e.indices[0], env)
                if not -len(t) <= int(i) < len(t):  # a list too short for what the semantics reads
                    raise InstanceError(f"{e.base}[{int(i)}] of the list {list(t)}")
                return alg.num(t[int(i)]) if isinstance(t[int(i)], (int, float)) else t[int(i)]
            raise SemanticsError(f"{e.base} is not a tensor")
        if isinstance(e, A.Neg):
            v = self.ev(e.operand, env)
            if v is None:
                raise InstanceError(f"{A.show(e)} of an absent attribute")
            return [-x for x in v] if isinstance(v, list) else -v
        if isinstance(e, A.BinOp):
            a, b = self.ev(e.left, env), self.ev(e.right, env)
            if a is None or b is None:  # an optional attribute left out: no number to compute with here
                raise InstanceError(f"{A.show(e)} with an absent attribute")
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                return self.tensor_binop(e.op, a, b)
            if isinstance(a, list) or isinstance(b, list):  # attribute lists: elementwise (`s - [0, h * w]`)
                if isinstance(a, list) and isinstance(b, list) and len(a) != len(b):
                    raise SemanticsError(f"lists of lengths {len(a)} and {len(b)} in {A.show(e)}")
                xs = a if isinstance(a, list) else [a] * len(b)
                ys = b if isinstance(b, list) else [b] * len(a)
                return [alg.binop(e.op, x, y) for x, y in zip(xs, ys)]
            return alg.binop(e.op, a, b)
        if isinstance(e, A.ListExpr):
            return [self.ev(x, env) for x in e.items]
        if isinstance(e, A.Call):
            return self.call(e, env)
        if isinstance(e, A.Spread):
            run = env.get(e.name)
            if not isinstance(run, list):
                raise SemanticsError(f"{e.name}... is not a run of operands")
            return run
        raise SemanticsError(f"cannot evaluate {A.show(e)}")

    def indices(self, e: A.Index, env: Mapping[str, Any], t: Tensor) -> tuple:
        out: list[Any] = []
        for i in e.indices:
            if isinstance(i, A.Variadic):
                run = env.get("*" + i.name)
                if run is None:
                    raise SemanticsError(f"*{i.name} is not bound here")
                out.extend(run)
            elif isinstance(i, A.Slice):
                raise SemanticsError(f"`:` cannot be read as a value in {A.show(e)}")
            else:
                v = self.ev(i, env)
                out.append(self.alg.index(v))
        return tuple(out)

    def call(self, e: A.Call, env: Mapping[str, Any]) -> Any:
        alg = self.alg
        fn = e.fn
        if fn == "sum":
            b, body = e.args[0], e.args[1]
            ext = self.extent_of(b.upper, env)
            self.depth += 1
            try:
                return alg.sum(ext, lambda j: self.ev(body, {**env, b.var: j}), self.depth)
            finally:
                self.depth -= 1
        if fn == "softmax":
            b, score, keep, j = e.args
            ext = self.extent_of(b.upper, env)
            if is_symbolic(ext):
                raise NeedConcrete({ext.dim})
            scores = [self.ev(score, {**env, b.var: t}) for t in range(ext)]
            keeps = [self.ev(keep, {**env, b.var: t}) for t in range(ext)]
            return alg.softmax(scores, keeps, int(alg.index(self.ev(j, env))))
        if fn in ("keep_of", "bias_of"):
            # a mask entry: a boolean mask keeps or drops a key, any other mask is added to the score
            # (over the reals every number is finite; the engine checks -inf in floats itself)
            ix = e.args[0]
            t = env.get(ix.base) if isinstance(ix, A.Index) else None
            if t is None:
                return alg.num(1) if fn == "keep_of" else alg.num(0)
            boolean = getattr(t, "dtype", "T") == "bool"
            if (fn == "keep_of") != boolean:
                return alg.num(1) if fn == "keep_of" else alg.num(0)
            return self.ev(ix, env)
        if fn == "span":  # span(a, n): the positions a .. a + n - 1
            a, n = self.ev(e.args[0], env), self.alg.as_int(self.ev(e.args[1], env))
            if n is None:
                raise NeedConcrete(self.alg.dims_of(self.ev(e.args[1], env)) or {"?"})
            return [alg.binop("+", a, k) for k in range(n)]
        if fn == "padded":
            ix = e.args[0]
            if not isinstance(ix, A.Index):
                raise SemanticsError("padded(...) takes one indexed read")
            t = env[ix.base]
            idx = self.indices(ix, env, t)
            if not self.in_bounds(idx, t):
                return alg.num(0)
            return t[idx]
        if fn == "either":  # either(list, fallback): the list, or the fallback when it is empty
            a = self.ev(e.args[0], env)
            a = a if (a is not None and not (isinstance(a, list) and not a)) else self.ev(e.args[1], env)
            if len(e.args) > 2:
                i = int(self.alg.as_int(self.ev(e.args[2], env)))
                if not isinstance(a, (list, tuple)) or not -len(a) <= i < len(a):  # as for padding[0]
                    raise InstanceError(f"item {i} of {a!r} in {A.show(e)}")
                return a[i]
            return a
        if fn == "inside":  # inside(t[...]): 1 when the read is inside the tensor, else 0
            ix = e.args[0]
            t = env[ix.base]
            idx = self.indices(ix, env, t)
            return 1 if self.in_bounds(idx, t) else 0
        if fn == "maxof":  # maxof(p < a, q < b, t[...]): max over a window, reads outside skipped
            bounds = [a for a in e.args if isinstance(a, A.Bound)]
            ix = e.args[-1]
            t = env[ix.base]
            vals = []
            exts = [self.extent_of(b.upper, env) for b in bounds]
            if any(is_symbolic(x) for x in exts):
                raise NeedConcrete({x.dim for x in exts if is_symbolic(x)})
            import itertools as _it

            for combo in _it.product(*[range(x) for x in exts]):
                env2 = {**env, **{b.var: v for b, v in zip(bounds, combo)}}
                idx = self.indices(ix, env2, t)
                if self.in_bounds(idx, t):
                    vals.append(t[idx])
            if not vals:
                raise InstanceError("a pooling window with no element inside the input")
            return alg.call("max", vals)
        if fn == "at":  # at(t, [i, j, ...]): the entry at a computed position
            t = env[e.args[0].id]
            idx = [alg.index(v) for v in self.ev(e.args[1], env)]
            try:
                outside = len(idx) == len(t.shape) and not self.in_bounds(tuple(idx), t)
            except NeedConcrete:  # a position read from a tensor (gather's index): the op's constraints hold
                outside = False
            if outside:  # a layout op reading outside its input (select index 7 of 4): torch raises, no instance
                raise InstanceError(f"{t.name}{idx} is outside its shape {list(t.shape)}")
            return t[tuple(idx)]
        if fn == "concat_at":  # concat_at(xs, dim, I): the entry of the concatenation at I
            xs, d, run = env[e.args[0].id], self.ev(e.args[1], env), list(self.ev(e.args[2], env))
            ax = int(self.alg.as_int(d)) % len(run)
            i = run[ax]
            if isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], int):  # (part, position) on a Joined axis
                return xs[i[0]][tuple(run[:ax] + [i[1]] + run[ax + 1:])]
            if not isinstance(i, int):
                raise NeedConcrete(self.alg.dims_of(i) | {t.shape[ax].dim for t in xs if is_symbolic(t.shape[ax])})
            for t in xs:
                n = t.shape[ax]
                if is_symbolic(n):
                    raise NeedConcrete({n.dim})
                if i < n:
                    return t[tuple(run[:ax] + [i] + run[ax + 1:])]
                i -= n
            raise SemanticsError("concat_at reads past the end")
        if fn == "width":  # width(us, axis): total length along axis of a run of operands
            run = env.get(e.args[0].id)
            ts = run if isinstance(run, list) else [run]
            ax = int(self.alg.as_int(self.ev(e.args[1], env)))
            total: Any = 0
            for t in ts:
                n = t.shape[ax % len(t.shape)]
                total = self.alg.binop("+", total, self.alg.size(n) if is_symbolic(n) else n)
            return total
        if fn == "reshaped":  # reshaped(x, shape, I): the position of x a row-major reshape reads at I
            t = env[e.args[0].id]
            target, run = self.ev(e.args[1], env), list(self.ev(e.args[2], env))
            return self.reshape_index(t.shape, target, run)
        if fn == "permuted":  # permuted(dims, I): the input position of output position I
            dims, run = self.ev(e.args[0], env), self.ev(e.args[1], env)
            r = len(run)
            if len(dims) != r or sorted(int(d) % r for d in dims) != list(range(r)):
                raise InstanceError(f"permute by {list(dims)} of a rank-{r} tensor")  # as torch: no such op
            src: list[Any] = [None] * r
            for k, d in enumerate(dims):
                src[int(d) % r] = run[k]
            return src
        if fn == "choose":  # choose(a, v, then, else): `then` where the attribute a is v, else `else`
            a, v = self.ev(e.args[0], env), self.ev(e.args[1], env)
            return self.ev(e.args[2] if a == v else e.args[3], env)
        if fn == "inserted":  # inserted(I, axis, v): I with v inserted at `axis` of the longer position
            run, ax, v = list(self.ev(e.args[0], env)), int(self.ev(e.args[1], env)), self.ev(e.args[2], env)
            ax %= len(run) + 1
            return run[:ax] + [v] + run[ax:]
        if fn == "replaced":  # replaced(I, axis, v): I with the entry at axis replaced by v
            run, ax, v = self.ev(e.args[0], env), int(self.ev(e.args[1], env)), self.ev(e.args[2], env)
            run = list(run)
            run[ax % len(run)] = v
            return run
        if fn == "nth":  # nth(I, k): entry k of a run (negative k from the end)
            run, k = self.ev(e.args[0], env), int(self.ev(e.args[1], env))
            return run[k % len(run)] if run else 0
        if fn == "reduce_mean":  # reduce_mean(x, dims, keepdim, I): the mean over axes dims at I
            t = env[e.args[0].id]
            dims, keep, run = self.ev(e.args[1], env), self.ev(e.args[2], env), self.ev(e.args[3], env)
            r = len(t.shape)
            if any(not -r <= int(d) < r for d in dims) or len({int(d) % r for d in dims}) != len(dims):
                raise InstanceError(f"mean over dims {list(dims)} of a rank-{r} tensor")  # as torch: no such op
            red = sorted({int(d) % r for d in dims})
            base: list[Any] = []
            it = iter(run)
            for a in range(r):
                if a in red:
                    if keep:
                        next(it)
                    base.append(None)
                else:
                    base.append(next(it))

            def nested_sum(level: int, pos: list) -> Any:
                if level == len(red):
                    return t[tuple(pos)]
                a = red[level]
                return alg.sum(t.shape[a], lambda j: nested_sum(level + 1, pos[:a] + [j] + pos[a + 1:]),
                               self.depth + level + 1)

            total = nested_sum(0, base)
            count = 1
            for a in red:
                ext = t.shape[a]
                count = alg.binop("*", count, alg.size(ext) if is_symbolic(ext) else ext)
            return alg.binop("/", total, count)
        if fn == "opt":  # opt(t[...], d): the entry, or d when the optional operand t is absent
            ix = e.args[0]
            if isinstance(ix, A.Index) and env.get(ix.base, None) is None:
                return self.ev(e.args[1], env)
            return self.ev(ix, env)
        if fn == "dim":
            t = env[e.args[0].id]
            ax = int(self.ev(e.args[1], env))
            if not -len(t.shape) <= ax < len(t.shape):  # no such axis at this rank (torch raises too)
                raise InstanceError(f"dim({t.name}, {ax}) of a rank-{len(t.shape)} tensor")
            ext = t.shape[ax]
            return alg.size(ext) if is_symbolic(ext) else alg.num(ext)
        if fn in ("max", "min"):
            args = [self.ev(a, env) for a in e.args]
            return alg.call(fn, args)
        if fn == "len":
            return len(self.ev(e.args[0], env))
        if fn == "last_axes":  # last_axes(k): the axis list [-k, ..., -1]
            k = self.alg.as_int(self.ev(e.args[0], env))
            if k is None:
                raise NeedConcrete(self.alg.dims_of(self.ev(e.args[0], env)))
            return list(range(-k, 0))
        if fn == "step":  # 1 when the argument is >= 0 (concrete indices)
            v = self.ev(e.args[0], env)
            if not isinstance(v, int):
                raise NeedConcrete(alg.dims_of(v))
            return alg.num(1 if v >= 0 else 0)
        if fn in ("drop", "tensor"):
            return self.tensor_expr(e, env)
        if fn in self.ops and not self.scalar_calls:
            # an op applied to tensors is a new node; applied to numbers (relu(k)) it is the function
            vals = [self.ev(a, env) if not isinstance(a, A.Call) or a.fn not in ("drop", "tensor") else None
                    for a in e.args]
            if any(v is None or isinstance(v, Tensor) for v in vals):
                return self.tensor_expr(e, env)
            return alg.call(fn, vals)
        args = [self.ev(a, env) for a in e.args]
        return alg.call(fn, args)

    def in_bounds(self, idx: tuple, t: Tensor) -> bool:
        """Is a read inside the tensor? A symbolic index on a symbolic axis always is (it names a
        position of that axis); a number against a symbolic length cannot be decided."""
        for v, ext in zip(idx[len(idx) - len(t.shape):], t.shape):
            if isinstance(v, int) and isinstance(ext, int):
                if not 0 <= v < ext:
                    return False
            elif is_symbolic(ext) and not isinstance(v, int) and getattr(v, "is_Symbol", False):
                continue
            else:
                raise NeedConcrete(self.alg.dims_of(v) | ({ext.dim} if is_symbolic(ext) else set()))
        return True

    def extent_of(self, upper: Any, env: Mapping[str, Any]) -> Any:
        """The range of a bound variable: an Extent when the bound is a symbolic dim."""
        if isinstance(upper, A.Name) and isinstance(env.get(upper.id), Extent):
            return env[upper.id]
        if isinstance(upper, A.Call) and upper.fn == "dim":
            t = env[upper.args[0].id]
            ax = int(self.ev(upper.args[1], env))
            if not -len(t.shape) <= ax < len(t.shape):
                raise InstanceError(f"dim({t.name}, {ax}) of a rank-{len(t.shape)} tensor")
            ext = t.shape[ax]
            if is_symbolic(ext):
                return ext
            return ext
        v = self.ev(upper, env)
        iv = self.alg.as_int(v)
        if iv is None:
            raise NeedConcrete(self.alg.dims_of(v))
        return iv

    # ---- tensor-valued expressions (rewrite right sides) ---------------------------------------
    def tensor_expr(self, e: Any, env: Mapping[str, Any]) -> Any:
        if isinstance(e, A.Name):
            return env[e.id]
        if isinstance(e, A.Call) and e.fn == "drop":
            t = self.tensor_expr(e.args[0], env)
            ax = int(self.alg.as_int(self.ev(e.args[1], env)))
            c = self.ev(e.args[2], env)
            if isinstance(c, list):  # several positions (a rotation pair, a whole operand's span)
                ints = [self.alg.as_int(x) for x in c]
                if any(i is None for i in ints):
                    raise NeedConcrete(set().union(*[self.alg.dims_of(x) for x in c]) or {"?"})
                if len(set(ints)) != len(ints):
                    raise SemanticsError(f"{A.show(e)} names one position twice")
                if is_symbolic(t.shape[ax % len(t.shape)]):  # positions of a symbolic axis: sizes needed
                    raise NeedConcrete(self.alg.dims_of(self.alg.size(t.shape[ax % len(t.shape)])) or {"?"})
                for i in sorted(ints, reverse=True):
                    t = drop(t, ax, i)
                return t
            if len(e.args) > 3:
                return drop_block(t, ax, c, self.ev(e.args[3], env), self.alg)
            if isinstance(t.shape[ax % len(t.shape)], Joined):
                return drop_joined(t, ax, c, self.c, self.alg)
            return drop(t, ax, c)
        if isinstance(e, A.Call) and e.fn == "tensor":
            bounds = [a for a in e.args if isinstance(a, A.Bound)]
            body = e.args[-1]
            shape = tuple(self.extent_of(b.upper, env) for b in bounds)

            def get(idx: tuple, bounds=bounds, body=body) -> Any:
                return self.ev(body, {**env, **{b.var: i for b, i in zip(bounds, idx)}})

            return Tensor("tensor", shape, get)
        if isinstance(e, A.Call) and e.fn in self.ops:
            return self.apply_op(self.ops[e.fn], e.args, env)
        if isinstance(e, A.Index) and any(isinstance(i, A.Slice) for i in e.indices):
            return self.slice_tensor(e, env)
        # a scalar-valued or elementwise expression over tensors
        v = self.ev(e, env)
        return v

    def slice_tensor(self, e: A.Index, env: Mapping[str, Any]) -> Tensor:
        t = env[e.base]
        fixed: list[Any] = []
        free: list[int] = []
        pos = 0
        for i in e.indices:
            if isinstance(i, A.Variadic):
                run = env.get("*" + i.name)
                if run is None:
                    # a variadic in a slice reads every batch position: a free run of axes
                    n = len(t.shape) - (len(e.indices) - 1)
                    for _ in range(n):
                        free.append(pos)
                        fixed.append(None)
                        pos += 1
                    continue
                fixed.extend(run)
                pos += len(run)
            elif isinstance(i, A.Slice):
                free.append(pos)
                fixed.append(None)
                pos += 1
            else:
                fixed.append(self.alg.index(self.ev(i, env)))
                pos += 1
        shape = tuple(t.shape[p] for p in free)

        def get(idx: tuple) -> Any:
            full = list(fixed)
            for p, v in zip(free, idx):
                full[p] = v
            return t[tuple(full)]

        return Tensor(f"{t.name}[...]", shape, get)

    def tensor_binop(self, op: str, a: Any, b: Any) -> Tensor:
        alg = self.alg
        ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
        sa = a.shape if ta else ()
        sb = b.shape if tb else ()
        shape = broadcast_shapes(sa, sb)

        def get(idx: tuple) -> Any:
            x = a[idx] if ta else a
            y = b[idx] if tb else b
            return alg.binop(op, x, y)

        return Tensor("expr", shape, get)

    def apply_op(self, decl: OpDecl, args: Any, env: Mapping[str, Any]) -> Tensor:
        """A new node: evaluate `op(args...)` (args: ast trees, positional then name=value)."""
        tensors: dict[str, Any] = {}
        attrs: dict[str, Any] = {}
        params = decl.param_names
        var = next((t.name for t in decl.tensor_params if t.variadic), None)
        if var is not None:  # the variadic parameter takes every argument until the attributes after it
            at = params.index(var)
            n_after = len(params) - at - 1
            group = list(args[at:len(args) - n_after])
            items: list[Any] = []
            for a in group:
                if isinstance(a, A.Spread):
                    items.extend(self.ev(a, env))
                elif isinstance(a, A.Call) and a.fn == "each":  # each(i < n, e): e for i = 0 .. n-1
                    b, body = a.args[0], a.args[1]
                    n = self.extent_of(b.upper, env)
                    if is_symbolic(n):
                        raise NeedConcrete({n.dim})
                    items.extend(self.tensor_expr(body, {**env, b.var: i}) for i in range(n))
                else:
                    items.append(self.tensor_expr(a, env))
            tensors[var] = items
            args = list(args[:at]) + [A.Num(None)] + list(args[len(args) - n_after:])
        for i, a in enumerate(args):
            if i >= len(params):
                raise SemanticsError(f"{decl.name} takes {len(params)} arguments")
            p = params[i]
            if p == var:
                continue
            if decl.tensor_param(p) is not None:
                tensors[p] = None if (isinstance(a, A.Num) and a.value is None) else self.tensor_expr(a, env)
            else:
                v = self.ev(a, env)
                attrs[p] = v[()] if isinstance(v, Tensor) and v.shape == () else v  # a rank-0 operand's value
        # attributes the new node does not give are the matched node's (same name)
        matched = env.get("__attrs__", {})
        inherit = {a.name: matched[a.name] for a in decl.attr_params if a.name not in attrs and a.name in matched}
        return self.op(decl, tensors, attrs, inherit)

    def op(self, decl: OpDecl, tensors: Mapping[str, Any], attrs: Mapping[str, Any],
           inherit: Mapping[str, Any] | None = None) -> Tensor:
        """The result tensor of one op application (lazy; entries from the op's `means`)."""
        if not decl.means:
            raise SemanticsError(f"op {decl.name!r} has no `means` (semantics) declared")
        local: dict[str, Any] = {}
        inherit = inherit or {}
        for p in decl.tensor_params:
            t = tensors.get(p.name)
            if p.variadic:  # a list of operands; their shapes differ along the concatenated axis
                if not t:
                    raise InstanceError(f"{decl.name}: no operands")
                local[p.name] = list(t)
                continue
            if t is None:
                if not p.optional:
                    raise SemanticsError(f"{decl.name} needs operand {p.name!r}")
                local[p.name] = None
                continue
            if not isinstance(t, Tensor):  # a scalar standing in for a tensor
                t = Tensor(p.name, (), lambda idx, v=t: v)
            local[p.name] = t
            bind_pattern(p.pattern.dims, t.shape, local, self, f"{decl.name}.{p.name}")
        for a in decl.attr_params:
            if a.name in attrs:
                local[a.name] = attrs[a.name]
            elif a.name in inherit:
                local[a.name] = inherit[a.name]
            elif a.has_default:
                v = a.default
                local[a.name] = self.alg.num(v) if isinstance(v, float) else v
            else:
                raise SemanticsError(f"{decl.name} needs attribute {a.name!r}")
        for w in decl.where:
            try:
                ok = self.holds(w, local)
            except NeedConcrete:
                if not getattr(self.alg, "symbolic", False):
                    raise
                self.assumed.append((w, dict(local)))  # a precondition of a well-typed node
                continue
            if not ok:
                raise InstanceError(f"{decl.name}: {A.show(w)} fails")
        shape = self.result_shape(decl, local)
        if any(isinstance(x, int) and x < 1 for x in shape):
            raise InstanceError(f"{decl.name}: empty result shape {shape}")
        if decl.recurrence is not None:
            out = self.recurrent(decl, local, shape)
            out.dtype = _result_dtype(decl, local)
            return out
        defs = decl.means
        outs: dict[str, Any] = {}
        final = next((d for d in defs if d.target.base == "out"), defs[-1])
        for d in defs:
            name = d.target.base
            # an intermediate indexed like the result (`mu[*I]`) has the result's shape, so that
            # builtins that need a shape (reduce_mean) can read it
            same = d is final or d.target.indices == final.target.indices
            outs[name] = self._defined(d, local, outs, shape if same else None, decl.name)
        out = outs.get("out") or outs[defs[-1].target.base]
        out.dtype = _result_dtype(decl, local)
        return out

    def recurrent(self, decl: OpDecl, local: Mapping[str, Any], shape: tuple) -> Tensor:
        """A recurrent op's result (sr_ir/lang/recurrence.py): its steps unrolled, or, while an
        obligation proves a rule by induction (`self.recurrence`), the stacked initial state (mode
        "init") or one step from a given state (mode "step"), whose result stacks the step's output
        and the state after it along the step axis: [out, state_1, ..., state_K]."""
        from ..lang.recurrence import output_def, step_axis

        rec = decl.recurrence
        names = rec.names
        p = step_axis(decl)
        state_shape = tuple(shape[:p]) + tuple(shape[p + 1:])
        inits = {c.target.base: self._defined(c, dict(local), {}, state_shape, decl.name) for c in rec.carries}
        mode = getattr(self.recurrence, "mode", None)
        if mode == "init":
            return _stacked(decl.name, [inits[n] for n in names], p, state_shape)
        if mode == "step":
            states = dict(self.recurrence.pre_states(self, decl, state_shape, p))
            steps = 1
        else:
            steps = shape[p]
            if not isinstance(steps, int):
                raise NeedConcrete({steps.dim} if isinstance(steps, Extent) else set(self.alg.dims_of(steps)))
            states = inits
        final = output_def(decl)
        per_step: list[Tensor] = []
        for s in range(steps):
            env = {**local, rec.var: s}
            outs: dict[str, Any] = dict(states)
            for d in decl.means:
                # a carried tensor has the state's shape, `out` the result's; each definition reads
                # the tensors as they stand when it is made (a snapshot: a later redefinition of a
                # carried tensor is the next value, not the one this definition read)
                shp = state_shape if d.target.base in names else (shape if d is final else None)
                outs[d.target.base] = self._defined(d, env, dict(outs), shp, decl.name)
            states = {n: outs[n] for n in names}
            per_step.append(outs[final.target.base])
        if mode == "step":
            step_out = per_step[0]

            def first(idx: tuple) -> Any:  # a state-shaped index: the output at the step's position
                return step_out[tuple(idx[:p]) + (0,) + tuple(idx[p:])]

            return _stacked(decl.name, [Tensor("out", state_shape, first)] + [states[n] for n in names],
                            p, state_shape)

        def get(idx: tuple) -> Any:
            return per_step[idx[p]][idx]

        return Tensor("out", shape, get)

    def _defined(self, d: A.IndexEq, local: dict, outs: dict, shape: Any, decl_name: str = "op") -> Tensor:
        target = d.target
        n_fixed = sum(1 for i in target.indices if not isinstance(i, A.Variadic))
        if shape is not None and (len(shape) < n_fixed or (n_fixed == len(target.indices) and len(shape) != n_fixed)):
            raise InstanceError(f"the means of this op is stated for rank {n_fixed}, the result has rank {len(shape)}")

        def get(idx: tuple) -> Any:
            env = {**local, **outs}
            n_fixed = sum(1 for i in target.indices if not isinstance(i, A.Variadic))
            pos = 0
            for i in target.indices:
                if isinstance(i, A.Variadic):
                    k = len(idx) - n_fixed
                    env["*" + i.name] = tuple(idx[pos:pos + k])
                    pos += k
                elif isinstance(i, A.Name):
                    env[i.id] = idx[pos]
                    pos += 1
                else:
                    raise SemanticsError(f"means target indices are names: {A.show(target)}")
            self.scalar_calls += 1
            try:
                return self.ev(d.value, env)
            except OutOfShape as e:  # the op reads its operands where torch would not run it
                raise InstanceError(f"{decl_name}: {e}") from None
            finally:
                self.scalar_calls -= 1

        return Tensor(target.base, shape, get)

    def result_shape(self, decl: OpDecl, local: Mapping[str, Any]) -> tuple[Any, ...]:
        res = decl.result
        if isinstance(res, str):
            firsts = [local[p.name] for p in decl.tensor_params if isinstance(local.get(p.name), Tensor)]
            if res == "broadcast":
                shape: tuple = ()
                for t in firsts:
                    shape = broadcast_shapes(shape, t.shape)
                return shape
            if res == "pool":
                return self.pool_shape(firsts[0].shape, local)
            if res == "concat":
                xs = [t.shape for t in local[decl.tensor_params[0].name]]
                ax = int(self.alg.as_int(local["dim"]))
                if not -len(xs[0]) <= ax < len(xs[0]):
                    raise InstanceError(f"concat along dim {ax} of rank {len(xs[0])}")
                ax %= len(xs[0])
                if any(len(t) != len(xs[0]) for t in xs) or any(
                        t[:ax] + t[ax + 1:] != xs[0][:ax] + xs[0][ax + 1:] for t in xs):
                    raise InstanceError(f"concat of shapes {xs}")
                if any(is_symbolic(t[ax]) for t in xs):  # symbolic lengths: a Joined axis, one part per operand
                    if any(isinstance(t[ax], (Joined, Merged)) for t in xs):
                        raise NeedConcrete({t[ax].dim for t in xs if is_symbolic(t[ax])})
                    return xs[0][:ax] + (Joined(tuple(t[ax] for t in xs)),) + xs[0][ax + 1:]
                return xs[0][:ax] + (sum(int(t[ax]) for t in xs),) + xs[0][ax + 1:]
            x = firsts[0].shape
            if res == "permute":
                perm = [int(d) for d in local["dims"]]
                if (len(perm) != len(x) or any(not -len(x) <= d < len(x) for d in perm)
                        or sorted(d % len(x) for d in perm) != list(range(len(x)))):
                    raise InstanceError(f"permute of a rank-{len(x)} tensor by {perm}")  # torch raises too
                return tuple(x[d % len(x)] for d in perm)
            if res == "reshape":
                return self.reshape_shape(x, local["shape"])[0]
            if res == "expand":
                if local.get("shape") is None:
                    raise InstanceError("expand without a target shape")
                target = [self.alg.as_int(v) for v in local["shape"]]
                lead = len(target) - len(x)
                if lead < 0 or any(t is None for t in target):
                    raise InstanceError(f"expand of {list(x)} to {local['shape']}")
                out = target[:lead] + [xs if t == -1 else t for t, xs in zip(target[lead:], x)]
                for t, xs in zip(out[lead:], x):
                    if not (xs == 1 or xs == t):
                        raise InstanceError(f"expand of {list(x)} to {target}")
                return tuple(out)
            if res == "slice":
                ax = int(self.alg.as_int(local["dim"])) % len(x)
                if is_symbolic(x[ax]):
                    raise NeedConcrete({x[ax].dim})
                n = len(range(int(x[ax]))[int(local["start"]):int(local["end"]):int(local.get("step", 1))])
                if n < 1:
                    raise InstanceError("an empty slice")
                return x[:ax] + (n,) + x[ax + 1:]
            if res == "select":
                ax = int(self.alg.as_int(local["dim"])) % len(x)
                return x[:ax] + x[ax + 1:]
            if res == "index_select":
                if not -len(x) <= int(local["dim"]) < len(x):
                    raise InstanceError(f"{decl.name} along dim {local['dim']} of a rank-{len(x)} tensor")
                ax = int(local["dim"]) % len(x)
                return x[:ax] + (firsts[1].shape[0],) + x[ax + 1:]
            if res == "reduce":
                if any(not -len(x) <= int(d) < len(x) for d in local["dims"]):
                    raise InstanceError(f"{decl.name} over dims {list(local['dims'])} of a rank-{len(x)} tensor")
                red = {int(d) % len(x) for d in local["dims"]}
                keep = bool(local.get("keepdim"))
                return tuple((1 if keep else None) if a in red else x[a] for a in range(len(x))
                             if keep or a not in red)
            return firsts[0].shape  # same shape as the first operand (layer_norm, softmax, ...)
        out: list[Any] = []
        for d in res.dims:
            if isinstance(d, A.Variadic):
                out.extend(local["*" + d.name + "#shape"])
            else:
                out.append(self.shape_value(d, local))
        return tuple(out)

    def pool_shape(self, shape: tuple, local: Mapping[str, Any]) -> tuple:
        """PyTorch's pooling output size (floor or ceil mode) over the trailing spatial axes."""
        ks = [int(k) for k in local["kernel_size"]]
        n = len(ks)
        st = [int(x) for x in (local.get("stride") or ks)]
        pad = [int(x) for x in local.get("padding", [0] * n)]
        dil = [int(x) for x in local.get("dilation", [1] * n)]
        ceil = bool(local.get("ceil_mode", False))
        if min(len(st), len(pad), len(dil)) < n or len(shape) < n:
            raise InstanceError(f"pooling lists of unequal lengths ({ks}, {st}, {pad}, {dil})")
        out = list(shape[:-n])
        for i, size in enumerate(shape[-n:]):
            if is_symbolic(size):
                raise NeedConcrete({size.dim})
            span = size + 2 * pad[i] - dil[i] * (ks[i] - 1) - 1
            o = (-(-span // st[i]) if ceil else span // st[i]) + 1
            if ceil and (o - 1) * st[i] >= size + pad[i]:
                o -= 1
            out.append(o)
        return tuple(out)

    # ---- reshape (row-major) ------------------------------------------------------------------------
    def reshape_shape(self, xs: tuple, target: Any) -> tuple[tuple, list[list[int]] | None]:
        """The result shape of reshaping a tensor of shape `xs` to `target` (one -1 allowed with
        concrete sizes), and for symbolic sizes the grouping of the input's factors (every input axis
        split into its Merged factors) into result axes. Symbolic sizes must line up factor by factor:
        each result length is the product of a run of consecutive input factors (merging or splitting
        adjacent axes); anything else needs concrete sizes."""
        alg = self.alg
        if not isinstance(target, (list, tuple)):
            raise InstanceError(f"reshape to {target!r}")
        target = list(target)
        if not any(is_symbolic(x) for x in xs):
            ints = [alg.as_int(v) for v in target]
            if all(v is not None for v in ints):
                total = 1
                for x in xs:
                    total *= int(x)
                known = 1
                for v in ints:
                    known *= v if v != -1 else 1
                if ints.count(-1) > 1 or known == 0:
                    raise InstanceError(f"reshape to {ints}")
                out = [v if v != -1 else total // known for v in ints]
                if ints.count(-1) and total % known:
                    raise InstanceError(f"reshape of {list(xs)} to {ints}")
                prod_out = 1
                for v in out:
                    prod_out *= v
                if prod_out != total:
                    raise InstanceError(f"reshape of {list(xs)} to {ints}: {total} entries, {prod_out} wanted")
                return tuple(out), None
        factors = [f for x in xs for f in _factors(x)]
        sizes = [alg.size(f) if is_symbolic(f) else alg.num(f) for f in factors]
        sp = alg.sp
        out: list[Any] = []
        groups: list[list[int]] = []
        k = 0
        for v in target:
            if alg.as_int(v) == -1:
                raise NeedConcrete({f.dim for f in factors if is_symbolic(f)})
            group: list[int] = []
            acc = sp.Integer(1)
            if alg.as_int(v) == 1 and (k >= len(factors) or sp.expand(sizes[k] - 1) != 0):
                out.append(1)
                groups.append(group)
                continue
            while k < len(factors):
                acc = acc * sizes[k]
                group.append(k)
                k += 1
                if sp.expand(acc - v) == 0:
                    break
            else:
                raise NeedConcrete({f.dim for f in factors if is_symbolic(f)} or {"?"})
            out.append(_merged([factors[i] for i in group if not _unit(factors[i])]))
            groups.append(group)
        while k < len(factors) and sp.expand(sizes[k] - 1) == 0:
            k += 1
        if k != len(factors):
            raise NeedConcrete({f.dim for f in factors if is_symbolic(f)} or {"?"})
        return tuple(out), groups

    def reshape_index(self, xs: tuple, target: Any, run: list[Any]) -> list[Any]:
        """The position of the input (shape xs) that output position `run` of reshape(target) reads."""
        out_shape, groups = self.reshape_shape(xs, target)
        if groups is None:  # concrete: ravel the output position, unravel it in the input's shape
            lin = 0
            for i, n in zip(run, out_shape):
                lin = lin * int(n) + int(self.alg.index(i))
            pos: list[Any] = []
            for n in reversed(xs):
                pos.append(lin % int(n))
                lin //= int(n)
            return list(reversed(pos))
        factors = [f for x in xs for f in _factors(x)]
        digits: list[Any] = []
        for i, g in zip(run, groups):
            # a unit factor merged into a result axis (reshape [1, 1, l] to [l]) is read at 0
            live = [j for j in g if not _unit(factors[j])]
            parts = iter(i if len(live) > 1 else (i,))
            digits.extend(next(parts) if j in live else 0 for j in g)
        pos, k = [], 0
        for x in xs:
            n = len(_factors(x))
            pos.append(tuple(digits[k:k + n]) if isinstance(x, Merged) else (digits[k] if n else 0))
            k += n
        return pos

    def shape_value(self, d: Any, env: Mapping[str, Any]) -> Any:
        if isinstance(d, A.Name) and isinstance(env.get(d.id), Extent):
            return env[d.id]
        prod_names = product_names(d)
        if prod_names and any(isinstance(env.get(n), Extent) for n in prod_names):
            # an annotated merged axis (`x: [b, n * h * w]`) with symbolic sizes
            return Merged(tuple(env[n] if isinstance(env.get(n), Extent) else self.shape_value(A.Name(n), env)
                                for n in prod_names))
        v = self.ev(d, env)
        iv = self.alg.as_int(v)
        if iv is None:
            raise NeedConcrete(self.alg.dims_of(v))
        return iv

    # ---- conditions -------------------------------------------------------------------------------
    def holds(self, c: Any, env: Mapping[str, Any]) -> bool:
        """Evaluate a condition over dims/attributes (numbers only: tensor conditions are not here)."""
        if isinstance(c, A.BoolOp):
            if c.op == "and":
                return all(self.holds(x, env) for x in c.operands)
            if c.op == "or":
                return any(self.holds(x, env) for x in c.operands)
            return not self.holds(c.operands[0], env)
        if isinstance(c, A.Cmp):
            a, b = self.ev(c.left, env), self.ev(c.right, env)
            return self.alg.compare(c.op, a, b)
        raise SemanticsError(f"cannot decide {A.show(c)} here")


def bind_pattern(dims: list[Any], shape: tuple[Any, ...], env: dict, ev: Evaluator, what: str) -> None:
    """Match a declared pattern (n, *B, ...) against an actual shape, binding names in env."""
    n_var = sum(1 for d in dims if isinstance(d, A.Variadic))
    n_fixed = len(dims) - n_var
    if (n_var == 0 and len(shape) != n_fixed) or len(shape) < n_fixed:
        raise InstanceError(f"{what}: rank {len(shape)} does not fit the pattern")
    pos = 0
    for d in dims:
        if isinstance(d, A.Variadic):
            k = len(shape) - n_fixed
            run = tuple(shape[pos:pos + k])
            key = "*" + d.name + "#shape"
            if key in env and tuple(env[key]) != run:
                raise InstanceError(f"{what}: *{d.name} differs between operands")
            env[key] = run
            pos += k
            continue
        ext = shape[pos]
        pos += 1
        if isinstance(d, A.Name):
            if d.id in env and env[d.id] is not None:
                if not _same_extent(env[d.id], ext, ev):
                    raise InstanceError(f"{what}: {d.id} is {env[d.id]} and {ext}")
            else:
                env[d.id] = ext
        else:
            want = ev.shape_value(d, env)
            if not _same_extent(want, ext, ev):
                raise InstanceError(f"{what}: axis is {ext}, pattern wants {want}")


def product_names(d: Any) -> list[str] | None:
    """`n * h * w` -> [n, h, w] (left to right); None for anything that is not a product of names."""
    if isinstance(d, A.Name):
        return [d.id]
    if isinstance(d, A.BinOp) and d.op == "*":
        a, b = product_names(d.left), product_names(d.right)
        if a is not None and b is not None:
            return a + b
    return None


def _result_dtype(decl: OpDecl, local: Mapping[str, Any]) -> str:
    """"bool" where the result is boolean: a layout op (select, slice, reshape) of a boolean mask, a
    comparison; the prover's numbers otherwise."""
    if isinstance(decl.result, str):
        if decl.result == "compare":
            return "bool"
        want = decl.tensor_params[0].pattern.dtype if decl.tensor_params else None
    else:
        want = decl.result.dtype
    if want == "bool":
        return "bool"
    for p in decl.tensor_params:
        t = local.get(p.name)
        if p.pattern.dtype == want and isinstance(t, Tensor):
            return t.dtype
    return "T"


def _same_extent(a: Any, b: Any, ev: Evaluator) -> bool:
    if is_symbolic(a) or is_symbolic(b):
        return a == b
    if not isinstance(a, int):
        a = ev.alg.as_int(a)
    return a == b


def _stacked(name: str, parts: list[Tensor], axis: int, shape: tuple) -> Tensor:
    """Tensors of one shape stacked along a new axis at `axis` (a recurrent op's states, sequence-like)."""
    def get(idx: tuple) -> Any:
        return parts[idx[axis]][tuple(idx[:axis]) + tuple(idx[axis + 1:])]

    return Tensor(name, tuple(shape[:axis]) + (len(parts),) + tuple(shape[axis:]), get)


def broadcast_shapes(a: tuple, b: tuple) -> tuple:
    out: list[Any] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        else:
            raise InstanceError(f"cannot broadcast {a} and {b}")
    return tuple(reversed(out))


def drop(t: Tensor, axis: int, c: Any) -> Tensor:
    """`t` without position c on `axis` (the kept channels, in order)."""
    rank = len(t.shape)
    ax = axis % rank
    ext = t.shape[ax]
    if isinstance(ext, Extent):
        if ext.part != "full":
            raise SemanticsError(f"drop on axis {axis} of {t.name}, which does not carry the channel")
        new_ext: Any = Extent(ext.dim, "rest")

        def get(idx: tuple) -> Any:
            return t[idx]
    else:
        if not isinstance(c, int) or not 0 <= c < ext:
            raise InstanceError(f"channel {c} out of range for {t.name} axis {axis}")
        new_ext = ext - 1

        def get(idx: tuple) -> Any:
            i = idx[ax]
            return t[idx[:ax] + (i + 1 if i >= c else i,) + idx[ax + 1:]]

    shape = t.shape[:ax] + (new_ext,) + t.shape[ax + 1:]
    return Tensor(f"drop({t.name})", shape, get, t.dtype)


def drop_joined(t: Tensor, axis: int, at: Any, channel: Any, alg: Any) -> Tensor:
    """`t` without position `at` of a Joined axis: `at` must be (offset of a part) + channel, where
    that part's axis carries the channel ({c} + R); the part becomes R."""
    ax = axis % len(t.shape)
    ext = t.shape[ax]
    sp = alg.sp
    offset = sp.Integer(0)
    for k, part in enumerate(ext.parts):
        if isinstance(part, Extent) and part.part == "full" and sp.expand(sp.sympify(at) - offset - channel) == 0:
            parts = ext.parts[:k] + (Extent(part.dim, "rest"),) + ext.parts[k + 1:]
            shape = t.shape[:ax] + (Joined(parts),) + t.shape[ax + 1:]
            return Tensor(f"drop({t.name})", shape, lambda idx: t[idx], t.dtype)
        offset = offset + (alg.size(part) if is_symbolic(part) else part)
    raise NeedConcrete({p.dim for p in ext.parts if is_symbolic(p)})


def drop_block(t: Tensor, axis: int, c: Any, block: Any, alg: Any) -> Tensor:
    """`t` without the run c*block .. (c+1)*block - 1 on `axis` (channel c of a flattened axis)."""
    rank = len(t.shape)
    ax = axis % rank
    ext = t.shape[ax]
    b = alg.as_int(block)
    if b == 1:
        return drop(t, axis, c)
    if isinstance(ext, Merged):
        first, rest = ext.factors[0], list(ext.factors[1:])
        size_rest = alg.sp.Integer(1)
        for f in rest:
            size_rest = size_rest * (alg.size(f) if is_symbolic(f) else f)
        if not (isinstance(first, Extent) and first.part == "full"):
            raise SemanticsError(f"block drop on axis {axis} of {t.name}, whose first factor does not carry the channel")
        if alg.sp.expand(size_rest - block) != 0:
            raise NeedConcrete({f.dim for f in ext.factors if is_symbolic(f)})
        shape = t.shape[:ax] + (Merged((Extent(first.dim, "rest"),) + tuple(rest)),) + t.shape[ax + 1:]
        return Tensor(f"drop({t.name})", shape, lambda idx: t[idx], t.dtype)
    if is_symbolic(ext) or b is None:
        raise NeedConcrete(({ext.dim} if is_symbolic(ext) else set()) | alg.dims_of(block))
    if b < 1 or ext % b:
        raise SemanticsError(f"block {b} does not divide axis {axis} of {t.name} (length {ext})")
    if not isinstance(c, int) or not 0 <= c < ext // b:
        raise InstanceError(f"channel {c} out of range for {t.name} axis {axis} in blocks of {b}")

    def get(idx: tuple) -> Any:
        i = idx[ax]
        return t[idx[:ax] + (i + b if i >= c * b else i,) + idx[ax + 1:]]

    shape = t.shape[:ax] + (ext - b,) + t.shape[ax + 1:]
    return Tensor(f"drop({t.name})", shape, get, t.dtype)


def points(shape: tuple[Any, ...], alg: Any) -> list[tuple]:
    """Every index tuple to compare: all positions (concrete) or representatives (symbolic)."""
    axes = [alg.points(ext) for ext in shape]
    return [tuple(p) for p in itertools.product(*axes)]
