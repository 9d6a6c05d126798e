"""Recurrent ops: an op whose `means` is one time step over a carried state (docs/rules.md, "Recurrent ops").

```
op rnn(x: F[b, t, n], w: F[m, n], u: F[m, m], h0: F[b, m]?) -> F[b, t, m]
  carry h[bi, j] = opt(h0[bi, j], 0)
  step  s < t
  means h[bi, j] = tanh(sum(k < n, w[j, k] * x[bi, s, k]) + sum(k < m, u[j, k] * h[bi, k]));
        out[bi, s, j] = h[bi, j]
```

`carry` gives each carried tensor's initial value (over the operands); `step s < t` names the step
index and the number of steps; `means` is one step, read in order: a carried tensor read before its
redefinition in the step is the state before the step (the carry at s = 0), a redefinition is its
value after the step, which later definitions read. `out` is written at step `s`: its target holds
the step index once, as a plain name, and every carried tensor is indexed like `out` without it (the
state has the shape of one step of the result), so that a channel of the result is a channel of every
state.

Only the syntax and its load-time checks live here; the prover's reading (unrolled at concrete sizes,
and the induction that proves a channel rule for every sequence length from one step) is in
sr_ir/prover/semantics.py and sr_ir/prover/obligation.py. No op's equations are in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Loc, TypeCheckError
from . import ast as A


@dataclass(frozen=True)
class Recurrence:
    """The `carry` and `step` clauses of a recurrent op (its `means` is the step body)."""

    var: str  # the step index (`s`)
    extent: Any  # the number of steps, a dim expression (`t`)
    carries: tuple[A.IndexEq, ...]  # initial values, one per carried tensor

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.target.base for c in self.carries)

    def text(self) -> str:
        """The clauses as certificates hash them."""
        inits = "; ".join(A.show(c) for c in self.carries)
        return f"carry {inits} step {self.var} < {A.show(self.extent)}"


def step_axis(decl: Any) -> int:
    """The result axis the step index writes (its position in `out`'s target)."""
    out = output_def(decl)
    return next(k for k, i in enumerate(out.target.indices) if isinstance(i, A.Name) and i.id == decl.recurrence.var)


def output_def(decl: Any) -> A.IndexEq:
    return next((d for d in decl.means if d.target.base == "out"), decl.means[-1])


def check_recurrence(decl: Any, loc: Loc | None, what: str) -> None:
    """The shape of a recurrence that the prover's reading relies on (module docstring)."""
    rec: Recurrence | None = decl.recurrence
    if rec is None:
        return

    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"{what}: recurrence: {msg}", loc)

    if not rec.carries:
        raise err("a `step` needs a `carry` (the state the steps carry)")
    if not decl.means:
        raise err("a recurrent op needs `means` (one step)")
    if isinstance(decl.result, str):
        raise err("a recurrent op's result is a pattern (`-> F[b, t, m]`), not a shape function")
    names = rec.names
    if len(set(names)) != len(names):
        raise err("a tensor is carried twice")
    params = set(decl.param_names)
    clash = next((n for n in names if n in params or n == "out" or n == rec.var), None)
    if clash is not None:
        raise err(f"carried tensor {clash!r} is also a parameter, the step index or `out`")
    out = output_def(decl)
    if out.target.base in names:
        raise err("the step's last definition writes `out`, not a carried tensor")
    at = [k for k, i in enumerate(out.target.indices) if isinstance(i, A.Name) and i.id == rec.var]
    if len(at) != 1 or any(isinstance(i, A.Variadic) for i in out.target.indices):
        raise err(f"`out` is indexed by names with the step index {rec.var!r} once (`out[bi, {rec.var}, j]`)")
    state = tuple(i for k, i in enumerate(out.target.indices) if k != at[0])
    for c in rec.carries:
        if c.target.indices != state:
            raise err(f"carried tensor {c.target.base!r} is indexed like `out` without the step index "
                      f"([{', '.join(A.show(i) for i in state)}]), not {A.show(c.target)}")
        if any(isinstance(n, A.Index) and n.base in names for n in A.walk(c.value)):
            raise err(f"the carry of {c.target.base!r} reads a carried tensor (it reads the operands)")
        if any(isinstance(n, A.Name) and n.id == rec.var for n in A.walk(c.value)):
            raise err(f"the carry of {c.target.base!r} reads the step index")
    seen: set[str] = set()
    for d in decl.means:
        if d.target.base in names:
            if d.target.base in seen:
                raise err(f"{d.target.base!r} is redefined twice in one step")
            if d.target.indices != state:
                raise err(f"the step redefines {d.target.base!r} indexed as {A.show(d.target)}; "
                          f"a carried tensor keeps its indices")
            seen.add(d.target.base)
