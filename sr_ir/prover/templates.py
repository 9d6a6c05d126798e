"""Torch templates checked against op semantics.

The engine and the emitter run an op through its `torch` template, the prover reasons about its
`means`; a rule proved over the means says something about the emitted network only where the two
agree. Each op that has both is checked once (per template text): a match of the op alone, at the
instances the rule prover would use (every attribute varied per element, float attributes distinct,
runs of dims with 0, 1 and 2 axes, optional operands present and absent), plus list attributes
without a default given shape-derived values (the operand's trailing sizes, axis lists). The means
is evaluated on random exact rationals (real function definitions in float64), the template in
float64 torch on the same numbers; a difference beyond rounding is a counterexample, replayed.

An instance where only one side is defined is skipped (a means that covers part of an op's
attribute space, a template that rejects what the means accepts); a template that runs nowhere the
means is defined is a failure.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from fractions import Fraction
from typing import Any, Mapping

from ..ir.opdecl import OpDecl

TEMPLATE_STRATEGY = ("sr-ir-template/2 means(exact rationals, real functions in float64) vs torch float64; "
                     "synthetic match, rule-prover instances (attributes per element, distinct floats, runs 0/1/2), "
                     "optional operands present/absent, masks boolean and additive, shape-derived list attributes; "
                     "rtol=atol=1e-8")
RTOL = 1e-8
DRAWS = 2  # random inputs per instance of the op's own configurations (1 for the others)
VARIANTS = 10  # attribute combinations beyond the configurations (covering ones first)

_MEMO: dict[str, dict] = {}


def template_text(decl: OpDecl) -> str:
    """What a template check depends on: the op's semantics text (which includes the template)."""
    from .certificates import op_semantics_text

    return op_semantics_text(decl)


def template_hash(decl: OpDecl, patterns: tuple[str, ...] = (), vocabulary: Any = None) -> str:
    h = hashlib.sha256()
    h.update(template_text(decl).encode())
    if vocabulary is not None:  # the functions the means is written with, as declared
        from ..lang.functions import calls

        names = vocabulary.closure([f for m in decl.means for f in calls(m)])
        for n in names:
            h.update(b"\0function\0" + vocabulary.functions[n].text().encode())
    for p in patterns:
        h.update(b"\0match\0" + p.encode())
    h.update(b"\0strategy\0" + TEMPLATE_STRATEGY.encode())
    return h.hexdigest()


def checkable(decl: OpDecl) -> bool:
    return decl.torch is not None and bool(decl.means)


def template_result(decl: OpDecl, ops: Mapping[str, OpDecl], patterns: tuple[str, ...] = (),
                    vocabulary: Any = None) -> dict:
    """The check of one op's template (its own instances), computed once per process for each
    template text; with `patterns` (the matches a rule states for the op, as in `patterns_of`) the
    check at those matches, once for each."""
    key = template_hash(decl, patterns, vocabulary)
    if key not in _MEMO:
        _MEMO[key] = check_template(decl, ops, patterns=patterns, vocabulary=vocabulary)
    return _MEMO[key]


def remember(result: dict) -> None:
    """Reuse a result computed elsewhere (another process, a certificate)."""
    if result.get("hash"):
        _MEMO[result["hash"]] = result


def patterns_of(rule: Any, op: str) -> tuple[str, ...]:
    """The matches of `op` a rule states (operand shapes, required attribute values and the rule's
    conditions on that node's attributes), as JSON text: a template is also checked where the rule
    says the op appears (a layer_norm with weight and bias of normalized_shape [n]), which the op's
    own instances may meet only by chance."""
    import json

    from ..lang import ast as A
    from .obligation import classify_where

    out = []
    static = classify_where(rule).static
    for bi, b in enumerate(rule.bindings):
        if b.op != op:
            continue
        operands = [None if o.name is None else
                    [o.name, o.run, None if o.shape is None else ", ".join(_show(d) for d in o.shape)]
                    for o in b.operands]
        attrs = [[k, _show(v), isinstance(v, A.Name)] for k, v in b.attrs]
        mine = {v.id for _, v in b.attrs if isinstance(v, A.Name)}
        others = {v.id for j, c in enumerate(rule.bindings) if j != bi for _, v in c.attrs if isinstance(v, A.Name)}
        conds = [_show(s) for s in static
                 if (names := {n.id for n in A.walk(s) if isinstance(n, A.Name)}) & mine and not names & others]
        rshape = None if b.result_shape is None else ", ".join(_show(d) for d in b.result_shape)
        out.append(json.dumps({"operands": operands, "attrs": attrs, "where": conds, "result": rshape},
                              sort_keys=True))
    return tuple(sorted(set(out)))


def _show(x: Any) -> str:
    from ..lang import ast as A

    return A.show(x)


def _pattern_text(p: str) -> str:
    """A pattern as the match it stands for (for messages)."""
    import json

    d = json.loads(p)
    ops = ["none" if o is None else f"{o[0]}{'...' if o[1] else ''}" + (f": [{o[2]}]" if o[2] is not None else "")
           for o in d["operands"]]
    text = ", ".join(ops + [f"{k}={v}" for k, v, _ in d["attrs"]])
    return text + (f" where {', '.join(d['where'])}" if d["where"] else "")


def synthetic_rules(decl: OpDecl, ops: Mapping[str, OpDecl], patterns: tuple[str, ...] = ()) -> list[Any]:
    """`match out = op(p1, ..., pk)` with every optional operand present, and again with all absent;
    with `patterns`, one match per pattern instead."""
    import json

    from ..lang import rule as R
    from ..lang.loader import name_operands, parse_rule_text

    res = "out"
    while res in decl.param_names:
        res += "_"
    variadic = any(t.variadic for t in decl.tensor_params)
    call = [f"{t.name}..." if t.variadic else t.name for t in decl.tensor_params]
    attr_names = [a.name for a in decl.attr_params]
    matches: list[tuple[str, str, list[str]]] = []  # (suffix, match text, arguments of the identity)
    if patterns:
        for k, p in enumerate(patterns):
            d = json.loads(p)
            names = set()
            args, cargs = [], []
            for o in d["operands"]:
                if o is None:
                    args.append("none")
                    continue
                name, run, shape = o
                while name in (res,):
                    name += "_"
                names.add(name)
                args.append(f"{name}{'...' if run else ''}" + (f": [{shape}]" if shape is not None else ""))
                cargs.append(f"{name}..." if run else name)
            renamed = {a: v for a, v, is_name in d["attrs"] if is_name}
            args += [f"{a}={v}" for a, v, _ in d["attrs"]]
            if variadic:
                cargs += [renamed.get(a, a) for a in attr_names]
            where = f"\n  where {', '.join(d['where'])}" if d["where"] else ""
            rshape = f": [{d['result']}]" if d["result"] is not None else ""
            matches.append((f".match{k}", f"{res}{rshape} = {decl.name}({', '.join(args)}){where}", cargs))
    else:
        matches.append(("", f"{res} = {decl.name}({', '.join(call)})", call + (attr_names if variadic else [])))
        if any(t.optional for t in decl.tensor_params):
            args = ["none" if t.optional else c for t, c in zip(decl.tensor_params, call)]
            cargs = [c for t, c in zip(decl.tensor_params, call) if not t.optional]
            matches.append((".absent", f"{res} = {decl.name}({', '.join(args)})",
                            cargs + (attr_names if variadic else [])))
    out = []
    for suffix, match, cargs in matches:
        text = f"rule template.{decl.name}{suffix}\n  match {match}\n  then  {res} = {decl.name}({', '.join(cargs)})\n"
        try:
            (r,) = parse_rule_text(text, f"<template of {decl.name}>")
            out.append(R.resolve(name_operands(r, dict(ops)), dict(ops)))
        except Exception:
            if not patterns:
                raise
            # a rule's match that does not stand alone (its dims come from another node): the op's
            # own instances still check the template
    return out


def check_template(decl: OpDecl, ops: Mapping[str, OpDecl], seed: int = 0, patterns: tuple[str, ...] = (),
                   vocabulary: Any = None) -> dict:
    """Check one op's torch template against its means (functions evaluated by their declarations in
    `vocabulary`); a JSON-able result."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"op": decl.name, "loc": str(decl.loc or ""),
                           "hash": template_hash(decl, patterns, vocabulary),
                           "template": decl.torch, "status": "proved", "message": "", "instances": []}
    if patterns:
        out["matches"] = [_pattern_text(p) for p in patterns]
    if not checkable(decl):
        out["status"] = "unchecked"
        out["message"] = "no torch template" if decl.torch is None else "no means: the template cannot be checked"
        return out
    from .algebra import Exact
    from .obligation import classify_where, concrete_instances, free_dtype_operands, variant_instances
    from .semantics import SemanticsError

    rng = random.Random(seed)
    skipped: list[str] = []
    template_errors: list[str] = []
    compared = 0
    configs = [(3, "start"), (4, "middle"), (3, "end"), (1, "start")]
    try:
        rules = synthetic_rules(decl, ops, patterns)
        if vocabulary is not None:
            from dataclasses import replace

            rules = [replace(r, vocabulary=vocabulary) for r in rules]
    except Exception as e:  # an op a match cannot state: report, never pass silently
        out["status"] = "unchecked"
        out["message"] = f"no match of the op alone can be built: {e}"
        return out
    for rule in rules:
        where = classify_where(rule)
        try:
            # the op's own match: every attribute combination; a rule's match: its bounded-tier instances
            # (an instance whose means fails somewhere is skipped when compared: no need to evaluate
            # every candidate in full here)
            insts = concrete_instances(rule, ops, where, lambda: Exact("standin"), configs, seed, cover=True,
                                       derived=not patterns, max_cands=4, evaluate=False)
            n_main = len(insts)
            if not patterns:
                insts += variant_instances(rule, ops, where, lambda: Exact("standin"), seed, cap=VARIANTS,
                                           derived=True, max_cands=4, evaluate=False)
        except SemanticsError as e:
            skipped.append(f"{rule.name}: {e}")
            continue
        masks = free_dtype_operands(rule, ops)
        if masks:  # a mask is boolean or additive: the template must agree both ways
            insts = insts[:n_main] + [i.with_bools(masks) for i in insts[:n_main]] + insts[n_main:]
            n_main *= 2
        for k, inst in enumerate(insts):
            for _ in range(DRAWS if k < n_main and not patterns else 1):
                got = _compare(rule, ops, inst, rng)
                if got is None:
                    continue
                kind, info = got
                if kind == "means-undefined":
                    skipped.append(f"{inst.label}: {info}")
                    break
                if kind == "template-error":
                    template_errors.append(f"{inst.label}: {info}")
                    break
                compared += 1
                out["instances"].append(inst.record() | {"match": _match_label(rule.name, decl.name, patterns)})
                if kind == "differs":
                    out["status"] = "refuted"
                    out["counterexample"] = info
                    d = info["replay"]["max_abs_diff"]
                    note = info["replay"].get("note")
                    out["message"] = (f"at {inst.label}: " + (note if note else f"max |template - means| = {d:.6g} "
                                                              f"(float64 torch vs exact means)"))
                    out["seconds"] = round(time.perf_counter() - t0, 4)
                    return out
                break
    if not compared:
        out["status"] = "refuted" if template_errors else "unchecked"
        first = (template_errors or skipped or ["no instance satisfies the op's constraints"])[0]
        out["message"] = (f"the template fails wherever the means is defined: {first}" if template_errors
                          else f"no instance where the means is defined: {first}")
        if template_errors:
            out["counterexample"] = {"instance": first.split(": ")[0], "real": True,
                                     "replay": {"code": [decl.torch], "error": template_errors[0]}}
    out["compared"] = compared
    out["skipped"] = len(skipped) + len(template_errors)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return out


def _match_label(name: str, op: str, patterns: tuple[str, ...]) -> str:
    suffix = name[len(f"template.{op}"):]
    if suffix.startswith(".match"):
        return _pattern_text(patterns[int(suffix[len(".match"):])])
    return "optional operands absent" if suffix == ".absent" else "all operands"


def _draw(rng: random.Random):
    def draw(t: str, idx: tuple) -> Fraction:
        return Fraction(rng.randint(-9, 9), rng.choice([1, 2, 3, 4, 5, 7]))

    return draw


def _compare(rule: Any, ops: Mapping[str, OpDecl], inst: Any, rng: random.Random) -> tuple[str, Any] | None:
    """Means vs template at one instance on one random draw: ("same"|"differs"|"means-undefined"|
    "template-error", detail), or None to draw again (a division by zero in the means)."""
    from .algebra import Exact
    from .counterexample import deep, floatify, full, num
    from .obligation import Valuation, build, classify_where
    from .semantics import InstanceError, SemanticsError, Tensor

    from .axioms import Theory

    alg = Exact("real", theory=Theory.of_rule(rule))  # functions by their declarations
    values: dict = {}
    try:
        ob = build(rule, ops, alg, inst, Valuation(alg, _draw(rng)), classify_where(rule), values,
                   validate_only=True, induction=False)  # a recurrent op: the whole sequence
        result = ob.env[rule.root.result]
        means = deep(full(result)) if isinstance(result, Tensor) and result.shape is not None else None
        if means is None:
            return "means-undefined", "the means gives no tensor"
        inputs = {name: deep(full(t)) for name, t in ob.leaves.items()}
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    except InstanceError as e:
        return "means-undefined", str(e)
    except SemanticsError as e:
        return "means-undefined", str(e)
    try:
        ns, code = _namespace(rule, ops, inst, ob)
        got = eval(code, ns)  # noqa: S307 - the op's own template on our numbers
    except Exception as e:  # a template that cannot run here
        return "template-error", f"{type(e).__name__}: {e}"
    import torch

    want = torch.tensor(floatify(means), dtype=torch.float64)
    if not isinstance(got, torch.Tensor):
        got = torch.tensor(float(got), dtype=torch.float64)
    got = got.to(torch.float64)
    replay = {"code": [f"{rule.root.result} = {code}"], "means": _num_tree(means), "template": got.tolist()}
    if tuple(got.shape) != tuple(want.shape):
        replay["max_abs_diff"] = math.inf
        replay["note"] = f"shapes differ: template {list(got.shape)}, means {list(want.shape)}"
        out = _cex(inst, inputs, replay, None)
        out["at"], out["lhs"], out["rhs"] = "the result's shape", list(want.shape), list(got.shape)
        return "differs", out
    diff = (got - want).abs()
    bad = diff > RTOL * (1 + want.abs())
    bad |= torch.isnan(got) != torch.isnan(want)
    replay["max_abs_diff"] = float(torch.nan_to_num(diff, nan=math.inf).max()) if diff.numel() else 0.0
    if bool((torch.isnan(got) & ~torch.isnan(want)).any()):
        replay["note"] = "the template gives NaN where the means is finite"
    if bool(bad.any()):
        at = tuple(int(i) for i in bad.nonzero()[0]) if bad.dim() else ()
        return "differs", _cex(inst, inputs, replay, at)
    return "same", None


def _num_tree(x: Any) -> Any:
    from .counterexample import num

    return [_num_tree(y) for y in x] if isinstance(x, list) else num(x)


def _cex(inst: Any, inputs: dict, replay: dict, at: tuple | None) -> dict:
    out = {"instance": inst.label, "real": True, "inputs": {k: _num_tree(v) for k, v in inputs.items()},
           "replay": replay}
    if at is not None:
        means, tmpl = replay["means"], replay["template"]
        for i in at:
            means, tmpl = means[i], tmpl[i]
        out["at"] = f"out{list(at)}"
        out["lhs"], out["rhs"] = means, tmpl
    # the CLI prints lhs (means) and rhs (template) of the replay
    replay["lhs"], replay["rhs"] = replay["means"], replay["template"]
    return out


def _namespace(rule: Any, ops: Mapping[str, OpDecl], inst: Any, ob: Any) -> tuple[dict, str]:
    """The template of the matched node, rendered on the instance's operands and attributes."""
    import torch
    import torch.nn.functional as F

    from ..backend.run import prelude_helpers
    from .counterexample import floatify, full, render_attr
    from .obligation import integer_operands, run_names

    ns: dict[str, Any] = {"torch": torch, "F": F, "P": prelude_helpers()}
    ints = integer_operands(rule, ops)
    runs = set(run_names(rule))
    for r in runs:
        ns[r] = []
    for name, t in ob.leaves.items():
        arr = torch.tensor(floatify(full(t)), dtype=torch.float64)
        base = name.split("#")[0]
        if t.dtype == "bool":
            arr = arr != 0
        elif base in ints:
            arr = arr.long()
        if "#" in name and base in runs:
            ns[base].append(arr)
        else:
            ns[name] = arr
    b = rule.root
    decl = ops[b.op]
    fields: dict[str, str] = {}
    items: dict[str, list[str]] = {}
    for o in b.operands:
        p = decl.tensor_param(o.param)
        if p is not None and p.variadic:  # the operands in order, each run spelled out
            if o.run:
                items.setdefault(o.param, []).extend(f"{o.name}[{i}]" for i in range(len(ns.get(o.name, []))))
            else:
                items.setdefault(o.param, []).append(o.name)
        else:
            fields[o.param] = o.name or "None"
    fields.update({k: ", ".join(v) for k, v in items.items()})
    from .obligation import attr_table

    named = {aname: name for name, bi, aname, _ in attr_table(rule, ops) if bi == 0}
    for a in decl.attr_params:
        v = inst.attrs.get(named.get(a.name, a.name), a.default)
        fields[a.name] = render_attr(v)
    for t in decl.tensor_params:
        fields.setdefault(t.name, "None")
    return ns, decl.torch.format(**fields)
