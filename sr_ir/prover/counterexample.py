"""Counterexamples: the smallest real one (zeros, then small integers, then small rationals), its
intermediate values, both sides' outputs, and a float64 replay through the emitted PyTorch code.

The replay renders each side with the ops' `torch` templates (F = torch.nn.functional, P = the
emitted-code prelude) and the functions' torch spellings (sr_ir.lang.functions.torch_function) and
runs it on the counterexample's numbers, so the user sees the difference the real network would
show, not only the one in our semantics.
"""
from __future__ import annotations

import itertools
import random
from fractions import Fraction
from typing import Any, Iterable, Mapping

from ..lang import ast as A
from ..lang.rule import BackwardFact, ForwardFact, Rewrite, Rule, conclusion_trees
from ..ir.opdecl import OpDecl
from .algebra import Exact
from .axioms import Theory
from .obligation import Instance, Valuation, Where, build
from .semantics import InstanceError, SemanticsError, Tensor


def _fixed_draw(fixed: dict, fallback):
    def draw(t: str, idx: tuple) -> Any:
        key = (t, idx)
        if key in fixed:
            return fixed[key]
        return fallback(t, idx)

    return draw


def _phase_draw(rng: random.Random, phase: str):
    def draw(t: str, idx: tuple) -> Any:
        if phase == "zero":
            return Fraction(0)
        if phase == "int":
            return Fraction(rng.randint(-2, 2))
        return Fraction(rng.randint(-9, 9), rng.choice([1, 2, 3, 4]))

    return draw


def _attempt(rule, ops, where, inst, draw, values) -> tuple[bool, Any]:
    alg = Exact("real", theory=Theory.of_rule(rule))
    val = Valuation(alg, draw)
    try:
        ob = build(rule, ops, alg, inst, val, where, values, first_diff=True)
        if not all(bool(a) for a in ob.assumptions):
            return False, None
        for label, l, r in ob.pairs:
            if _differs(l, r):
                return True, (ob, val, label, l, r)
    except (ArithmeticError, ValueError, SemanticsError, InstanceError):
        return False, None
    return False, (ob, val, None, None, None)


def _differs(a: Any, b: Any) -> bool:
    fa, fb = float(a), float(b)
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a != b
    return abs(fa - fb) > 1e-9 * max(1.0, abs(fa), abs(fb))


def _model_draw(model: dict | None):
    """Entries and value variables from a z3 model (sympy atoms -> (tensor, index))."""
    entries: dict[tuple[str, tuple], Fraction] = {}
    values: dict[str, Fraction] = {}
    for key, v in (model or {}).items():
        if not isinstance(v, Fraction):
            continue
        args = getattr(key, "args", ())
        name = type(key).__name__
        if getattr(key, "is_Symbol", False):
            values[str(key)] = v
        elif args and all(getattr(a, "is_Integer", False) for a in args) and not name.startswith(("softmax", "SUM")):
            entries[(name, tuple(int(a) for a in args))] = v
    return entries, values


def search_real(rule: Rule, ops: Mapping[str, OpDecl], where: Where, inst: Instance, rng: random.Random,
                model: dict | None = None):
    """The first real counterexample in the order zeros, small integers, small rationals; minimised."""
    if model:
        entries, mvalues = _model_draw(model)
        for phase in ("zero", "int", "rational"):
            draw = _fixed_draw(entries, _phase_draw(rng, phase))
            values = {v: mvalues.get(v, draw("", ())) for v in rule.info.values}
            found, info = _attempt(rule, ops, where, inst, draw, values)
            if found:
                return _minimise(rule, ops, where, inst, info, values)
    for phase, n in (("zero", 1), ("int", 40), ("rational", 40)):
        for _ in range(n):
            draw = _phase_draw(rng, phase)
            values = {v: draw("", ()) for v in rule.info.values}
            found, info = _attempt(rule, ops, where, inst, draw, values)
            if found:
                return _minimise(rule, ops, where, inst, info, values)
    return None


def _minimise(rule, ops, where, inst, info, values):
    ob, val, *_ = info
    fixed = dict(val.values)
    vals = dict(values)
    zero = lambda t, i: Fraction(0)  # noqa: E731
    # whole tensors first (cheap), then single entries, within a budget of re-evaluations
    budget = 60
    for tname in sorted({t for t, _ in fixed}):
        keys = [k for k in fixed if k[0] == tname and fixed[k] != 0]
        if not keys:
            continue
        old = {k: fixed[k] for k in keys}
        for k in keys:
            fixed[k] = Fraction(0)
        budget -= 1
        ok, _ = _attempt(rule, ops, where, inst, _fixed_draw(fixed, zero), vals)
        if not ok:
            fixed.update(old)
    for key in list(fixed):
        if budget <= 0:
            break
        budget -= 1
        if fixed[key] == 0:
            continue
        old = fixed[key]
        fixed[key] = Fraction(0)
        ok, got = _attempt(rule, ops, where, inst, _fixed_draw(fixed, zero), vals)
        if not ok:
            fixed[key] = old
    for k in list(vals):
        if vals[k] == 0:
            continue
        old = vals[k]
        vals[k] = Fraction(0)
        ok, _ = _attempt(rule, ops, where, inst, _fixed_draw(fixed, zero), vals)
        if not ok:
            vals[k] = old
    ok, info = _attempt(rule, ops, where, inst, _fixed_draw(fixed, zero), vals)
    return info, vals


def realize(rule: Rule, ops: Mapping[str, OpDecl], where: Where, inst: Instance, rng: random.Random,
            ob_found: Any, model: dict | None) -> dict:
    """A report of the counterexample (a JSON-able dict)."""
    real = search_real(rule, ops, where, inst, rng, model)
    out: dict[str, Any] = {"instance": inst.label, "real": real is not None}
    if real is not None:
        (ob, val, label, l, r), vals = real
        out["inputs"] = _inputs(ob, val)
        out["values"] = {k: num(v) for k, v in vals.items()}
        out["at"] = label
        out["lhs"] = num(l)
        out["rhs"] = num(r)
        out["intermediates"] = _intermediates(rule, ob)
        try:
            out["replay"] = replay(rule, ops, inst, ob, vals)
        except Exception as e:  # the replay is a report, never a reason to lose the verdict
            out["replay"] = {"error": f"{type(e).__name__}: {e}"}
    else:
        out["axiom_hint"] = ", ".join(axiom_hints(rule, ops))
        if model:
            out["model"] = {str(k): num(v) for k, v in list(model.items())[:40] if isinstance(v, Fraction)}
        elif ob_found is not None:
            for label, l, r in ob_found.pairs:
                if l != r:
                    out["at"], out["lhs"], out["rhs"] = label, num(l), num(r)
                    break
    return out


def _walk_means(d: OpDecl):
    for m in d.means:
        for s in A.walk(m):
            if isinstance(s, A.Call):
                yield s


def _functions_used(rule: Rule, ops: Mapping[str, OpDecl]) -> set[str]:
    """The functions the proof sees: called by the rule or by the semantics of its ops (not those
    they are defined with: the proof never looks into a definition)."""
    names = {s.fn for t in [*rule.where, *conclusion_trees(rule.conclusion)] for s in A.walk(t) if isinstance(s, A.Call)}
    for op in rule.ops_used:
        d = ops.get(op)
        if d:
            names |= {s.fn for s in _walk_means(d)}
    return names


def axiom_hints(rule: Rule, ops: Mapping[str, OpDecl]) -> list[str]:
    """The declared axioms about the functions the rule's semantics use (the built-in softmax
    included) that the rule does not name yet."""
    vocab = rule.vocabulary
    if vocab is None:
        return []
    used = _functions_used(rule, ops)
    return [a.id for a in vocab.axioms.values() if set(a.functions) & used and a.id not in rule.axioms]


def num(v: Any) -> Any:
    if isinstance(v, Fraction):
        return str(v) if v.denominator != 1 else int(v)
    if isinstance(v, float):
        return v
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, list):
        return [num(x) for x in v]
    return str(v)


def full(t: Tensor, report: bool = False) -> list:
    """Nested lists of a concrete tensor's entries; with `report`, an entry that cannot be computed
    (an intermediate divided by zero away from the counterexample's position) is named, not raised."""
    def rec(prefix: tuple, rest: tuple) -> Any:
        if not rest:
            if not report:
                return t[prefix]
            try:
                return t[prefix]
            except (ArithmeticError, ValueError) as e:
                return f"undefined ({type(e).__name__})"
        return [rec(prefix + (i,), rest[1:]) for i in range(rest[0])]

    return rec((), tuple(t.shape))


def _inputs(ob, val) -> dict[str, Any]:
    out = {}
    for name, t in ob.leaves.items():
        out[name] = num(deep(full(t)))
    return out


def deep(x: Any) -> Any:
    return [deep(y) for y in x] if isinstance(x, list) else x


def _intermediates(rule: Rule, ob) -> dict[str, Any]:
    """The new node's operands (rewrites) and the matched inner results."""
    out: dict[str, Any] = {}
    env = ob.env
    c = rule.conclusion
    for b in rule.bindings[1:]:
        t = env.get(b.result)
        if isinstance(t, Tensor):
            out[b.result] = num(deep(full(t, report=True)))
    if isinstance(c, Rewrite) and isinstance(c.value, A.Call):
        from .semantics import Evaluator

        ev = Evaluator(Exact("real", theory=Theory.of_rule(rule)), {}, ob.instance.channel)
        for a in c.value.args:
            if isinstance(a, (A.Name,)) or (isinstance(a, A.Call) and a.fn == "drop"):
                continue
            try:
                v = ev.tensor_expr(a, env) if not isinstance(a, A.Num) else None
            except Exception:
                continue
            if isinstance(v, Tensor):
                out[A.show(a)] = num(deep(full(v, report=True)))
            elif v is not None:
                out[A.show(a)] = num(v)
    return out


# ---- float64 replay through the torch templates ------------------------------------------------
class _Code:
    def __init__(self, ops: Mapping[str, OpDecl], attrs: Mapping[str, Any], functions: Mapping[str, Any] = {},
                 tensors: Iterable[str] = ()):
        self.ops = ops
        self.attrs = attrs
        self.functions = functions  # declared functions, called in the replay as _fn.NAME(...)
        self.tensors = set(tensors)  # the rule's tensor names (anything else is a number)

    def tensor_valued(self, e: Any) -> bool:
        """Does `e` stand for a tensor (an op's operand) rather than a number? (`relu(drop(x, 1, c))`
        is a node, `relu(k)` the function, as in the prover's semantics.)"""
        if isinstance(e, A.Name):
            return e.id in self.tensors
        if isinstance(e, A.Spread):
            return True
        if isinstance(e, A.Index):
            return any(isinstance(i, (A.Slice, A.Variadic)) for i in e.indices)
        if isinstance(e, A.Call):
            return e.fn in ("drop", "tensor") or (e.fn in self.ops and any(self.tensor_valued(a) for a in e.args))
        if isinstance(e, A.BinOp):
            return self.tensor_valued(e.left) or self.tensor_valued(e.right)
        if isinstance(e, A.Neg):
            return self.tensor_valued(e.operand)
        return False

    def expr(self, e: Any) -> str:
        if isinstance(e, A.Num):
            return repr(e.value)
        if isinstance(e, A.Name):
            return e.id
        if isinstance(e, A.Spread):
            return "*" + e.name
        if isinstance(e, A.Neg):
            return f"(-{self.expr(e.operand)})"
        if isinstance(e, A.BinOp):
            op = {"^": "**"}.get(e.op, e.op)
            return f"({self.expr(e.left)} {op} {self.expr(e.right)})"
        if isinstance(e, A.Index):
            parts = []
            for i in e.indices:
                parts.append("..." if isinstance(i, A.Variadic) else ":" if isinstance(i, A.Slice) else
                             f"int({self.expr(i)})")
            return f"{e.base}[{', '.join(parts)}]"
        if isinstance(e, A.ListExpr):
            return "[" + ", ".join(self.expr(x) for x in e.items) + "]"
        if isinstance(e, A.Call):
            if e.fn == "drop":
                blk = f", {self.expr(e.args[3])}" if len(e.args) > 3 else ""
                return f"_drop({self.expr(e.args[0])}, {self.expr(e.args[1])}, {self.expr(e.args[2])}{blk})"
            if e.fn == "sum":
                b = e.args[0]
                return f"sum(({self.expr(e.args[1])} for {b.var} in range(int({self.expr(b.upper)}))), _t(0.0))"
            if e.fn == "tensor":
                bounds = [a for a in e.args if isinstance(a, A.Bound)]
                vs = ", ".join(b.var for b in bounds)
                sizes = ", ".join(f"int({self.expr(b.upper)})" for b in bounds)
                return f"_build(lambda {vs}: {self.expr(e.args[-1])}, ({sizes},))"
            if e.fn == "dim":
                return f"{self.expr(e.args[0])}.shape[{self.expr(e.args[1])}]"
            if e.fn == "width":
                return f"_width({self.expr(e.args[0])}, {self.expr(e.args[1])})"
            if e.fn in self.ops and (e.fn not in self.functions or any(self.tensor_valued(a) for a in e.args)):
                decl = self.ops[e.fn]
                args = [self.expr(a) for a in e.args]
                var = next((t.name for t in decl.tensor_params if t.variadic), None)
                if var is not None:  # the variadic parameter's operands, as one list
                    at = decl.param_names.index(var)
                    n_after = len(decl.param_names) - at - 1
                    args = args[:at] + [", ".join(args[at:len(args) - n_after])] + args[len(args) - n_after:]
                return self.op(decl, args)
            d = self.functions.get(e.fn)
            if d is None or d.torch is None:
                raise SemanticsError(f"no torch spelling for function {e.fn!r}")
            return f"_fn.{e.fn}({', '.join(f'_t({self.expr(a)})' for a in e.args)})"
        raise SemanticsError(f"cannot render {A.show(e)}")

    def op(self, decl: OpDecl, args: list[str], named: Mapping[str, str] | None = None) -> str:
        if decl.torch is None:
            raise SemanticsError(f"op {decl.name!r} has no torch template")
        fields: dict[str, str] = {}
        names = decl.param_names
        for n, a in zip(names, args):
            fields[n] = a
        for n, a in (named or {}).items():
            fields[n] = a
        for a in decl.attr_params:
            if a.name not in fields:
                fields[a.name] = repr(a.default)
        for t in decl.tensor_params:
            fields.setdefault(t.name, "None")
        return decl.torch.format(**fields)


def render_attr(v: Any) -> str:
    if isinstance(v, Fraction):
        return repr(float(v))
    if isinstance(v, list):
        return "[" + ", ".join(render_attr(x) for x in v) + "]"
    return repr(v)


def replay(rule: Rule, ops: Mapping[str, OpDecl], inst: Instance, ob, values: Mapping[str, Any]) -> dict:
    """Run both sides through the emitted PyTorch code in float64; report the largest difference."""
    import torch
    import torch.nn.functional as F

    from ..backend.run import prelude_helpers

    ns: dict[str, Any] = {"torch": torch, "F": F, "P": prelude_helpers()}
    dt = torch.float64

    def _t(x: Any) -> Any:
        return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=dt)

    def _drop(t: Any, axis: int, c: int, block: int = 1) -> Any:
        n, b = t.shape[axis], int(block)
        keep = torch.tensor([i for i in range(n) if i // b != int(c)], dtype=torch.long)
        return torch.index_select(t, axis, keep)

    def _build(fn, sizes) -> Any:
        out = torch.zeros(sizes, dtype=dt)
        for idx in itertools.product(*[range(s) for s in sizes]):
            out[idx] = _t(fn(*idx))
        return out

    def _width(v: Any, axis: int) -> int:
        return sum(int(t.shape[axis]) for t in (v if isinstance(v, list) else [v]))

    from types import SimpleNamespace

    from ..lang.functions import torch_function

    functions = rule.vocabulary.functions if rule.vocabulary is not None else {}
    fns = SimpleNamespace(**{n: torch_function(functions[n]) for n in rule.functions
                             if functions[n].torch is not None})
    ns.update(_t=_t, _drop=_drop, _build=_build, _width=_width, _fn=fns)
    from .obligation import run_names

    runs = set(run_names(rule))
    for r in runs:
        ns[r] = []
    from .obligation import integer_operands

    ints = integer_operands(rule, ops)
    for name, t in ob.leaves.items():
        arr = torch.tensor(floatify(full(t)), dtype=dt)
        if t.dtype == "bool":
            arr = arr != 0
        elif name.split("#")[0] in ints:  # positions (gather, embedding) index as integers
            arr = arr.long()
        if "#" in name and name.split("#")[0] in runs:  # one operand of a run `us...`
            ns[name.split("#")[0]].append(arr)
            continue
        ns[name] = arr
    for k, v in values.items():
        ns[k] = float(v)
    for k, v in inst.dims.items():
        if isinstance(v, int):
            ns[k] = v
    for k, v in inst.attrs.items():
        ns[k] = float(v) if isinstance(v, Fraction) else v
    if rule.info.channel:
        ns[rule.info.channel] = int(inst.channel)
    code = _Code(ops, inst.attrs, functions, rule.info.tensors)
    # the matched nodes, innermost first, through their templates
    lines = []
    from .obligation import attr_table

    table = attr_table(rule, ops)
    for bi in reversed(range(len(rule.bindings))):
        b = rule.bindings[bi]
        decl = ops[b.op]
        named: dict[str, str] = {}
        for o in b.operands:
            p = decl.tensor_param(o.param)
            if p is not None and p.variadic:  # `*us, x, *vs` inside the template's list
                item = ("*" if o.run else "") + (o.name or "None")
                named[o.param] = f"{named[o.param]}, {item}" if o.param in named else item
            else:
                named[o.param] = o.name or "None"
        for name, bidx, aname, _ in table:
            if bidx == bi:
                named[aname] = render_attr(inst.attrs.get(name, ns.get(name)))
        src = code.op(decl, [], named)
        lines.append(f"{b.result} = {src}")
        ns[b.result] = eval(src, ns)  # noqa: S307 - our own templates, our own numbers
    c = rule.conclusion
    if isinstance(c, ForwardFact):
        lhs_src, rhs_src = code.expr(c.target), code.expr(c.value)
    elif isinstance(c, BackwardFact):
        tgt = c.targets[0]
        alt = ns[tgt.base].clone()
        idx_src = code.expr(A.Index("_alt", tgt.indices))
        ns["_alt"] = alt
        exec(f"{idx_src} = {idx_src} + 1.0", ns)  # noqa: S102 - change only the unused channel
        ns2 = dict(ns)
        ns2[tgt.base] = ns["_alt"]
        for ln in lines:
            name, src = ln.split(" = ", 1)
            ns2[name] = eval(src, ns2)  # noqa: S307
        ns["_other"] = ns2[rule.root.result]
        lhs_src, rhs_src = rule.root.result, "_other"
        lines.append(f"# again with {A.show(tgt)} changed by +1: _other")
    else:
        lhs_src, rhs_src = code.expr(c.target), code.expr(c.value)
    lhs = eval(lhs_src, ns)  # noqa: S307
    rhs = eval(rhs_src, ns)  # noqa: S307
    lhs_t, rhs_t = _t(lhs), _t(rhs)
    try:
        diff = (lhs_t - rhs_t).abs()
        maxdiff = float(diff.max()) if diff.numel() else 0.0
        if diff.numel() and torch.isnan(diff).any():
            maxdiff = float("nan")
    except RuntimeError as e:
        maxdiff = float("inf")
        lines.append(f"# shapes differ: {e}")
    return {
        "code": lines + [f"lhs = {lhs_src}", f"rhs = {rhs_src}"],
        "lhs": _floatify_t(lhs_t),
        "rhs": _floatify_t(rhs_t),
        "max_abs_diff": maxdiff,
    }


def floatify(x: Any) -> Any:
    return [floatify(y) for y in x] if isinstance(x, list) else float(x)


def _floatify_t(t: Any) -> Any:
    return t.tolist() if hasattr(t, "tolist") else float(t)
