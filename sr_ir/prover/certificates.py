"""Proof certificates: `proofs/<rule>.<hash>.json`, and the fast check the engine and CI use.

The hash covers the normalised rule (positions and comments stripped), the semantics of every op the
rule uses (its torch template included: the rule is applied through it), the declared statement of
every axiom it names, the declaration (`means` and torch spelling) of every function it uses, and the
proof strategy; change any of them and the certificate is stale. Nothing here imports a solver:
`status` only hashes text and looks for a file.

Template checks (sr_ir.prover.templates) are cached as certificates of their own,
`proofs/templates/<op>.<hash>.json`: a rule's certificate is written only when the templates it
relies on passed, so the rule certificates alone say what the engine may apply.

Bundled rules (the package's rules/) keep their certificates in the package's proofs/; rules from a
user directory DIR keep them in DIR/proofs/.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import SrIrError
from ..lang import ast as A
from ..lang.rule import Rule
from ..ir.opdecl import OpDecl
from ..resources import data_dir, helpers_called, prelude_sources

# The strategy string is part of every hash: bump it when the prover's method changes.
STRATEGY = ("sr-ir-prove/3 test(standin,relu; every covering attribute combination) bounded(z3; c-dim 3 at "
            "start/middle/end, 4/6/2 at start/second for channel-position conditions; degenerate 1; list "
            "attributes per element; distinct float attributes, optional ones also absent; masks boolean and "
            "additive; runs of dims "
            "with 0/1/2 axes) parametric(sympy; c+R; per run rank; a counterexample is confirmed at concrete sizes "
            "and refutes) templates(torch float64 vs means, per op and per match)")


class UncertifiedRule(SrIrError):
    """A rule without a current certificate was about to be applied."""


@dataclass(frozen=True)
class Status:
    """Certificate status of one rule: `state` is current, stale or missing."""

    state: str
    path: Path | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.state == "current"

    def __str__(self) -> str:
        return self.state


def op_semantics_text(decl: OpDecl) -> str:
    """The parts of an op declaration a proof depends on."""
    parts = [decl.name]
    for t in decl.tensor_params:
        parts.append(f"{t.name}:{t.pattern.dtype}[{', '.join(A.show(d) for d in t.pattern.dims)}]"
                     f"{'?' if t.optional else ''}")
    for a in decl.attr_params:
        parts.append(f"{a.name}:{a.kind}={a.default!r}")
    res = decl.result
    parts.append("-> " + (res if isinstance(res, str) else f"[{', '.join(A.show(d) for d in res.dims)}]"))
    parts += ["where " + A.show(w) for w in decl.where]
    parts += ["means " + A.show(m) for m in decl.means]
    if decl.recurrence is not None:  # a recurrent op: its means is one step of this recurrence
        parts.append(decl.recurrence.text())
    # the template is what the engine and the emitter run: a rule is certified through it, and
    # through the source of every prelude helper the template calls
    parts.append("torch " + (decl.torch if decl.torch is not None else "<none>"))
    if decl.torch is not None:
        sources = prelude_sources()
        parts += [f"helper {name}\n{sources[name]}" for name in helpers_called(decl.torch)]
    return "\n".join(parts)


def vocabulary_text(rule: Rule) -> str:
    """The declared statements of the rule's axioms and the declarations of the functions it uses."""
    vocab = rule.vocabulary
    parts = []
    for a in sorted(rule.axioms):
        decl = vocab.axioms.get(a) if vocab is not None else None
        parts.append(decl.text() if decl is not None else f"axiom {a}: <undeclared>")
    for f in rule.functions:
        decl = vocab.functions.get(f) if vocab is not None else None
        parts.append(decl.text() if decl is not None else f"function {f}: <undeclared>")
    return "\n".join(parts)


def rule_hash(rule: Rule, ops: dict[str, OpDecl]) -> str:
    h = hashlib.sha256()
    h.update(rule.text().encode())
    for name in sorted(set(rule.ops_used)):
        decl = ops.get(name)
        h.update(b"\0op\0" + (op_semantics_text(decl) if decl else f"<missing {name}>").encode())
    h.update(b"\0axioms\0" + vocabulary_text(rule).encode())
    h.update(b"\0strategy\0" + STRATEGY.encode())
    return h.hexdigest()


def proofs_dir(rule: Rule) -> Path:
    """Where the rule's certificate lives (see the module docstring)."""
    bundled = data_dir("rules").resolve()
    origin = rule.origin.resolve() if rule.origin else bundled
    if origin == bundled or bundled in origin.parents:
        return data_dir("proofs") if _has_proofs() else bundled.parent / "proofs"
    return origin / "proofs"


def _has_proofs() -> bool:
    try:
        data_dir("proofs")
        return True
    except FileNotFoundError:
        return False


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def _own(folder: Path, rule_name: str) -> list[Path]:
    """The certificate files of exactly this rule (`<name>.<16 hex>.json`)."""
    import re

    pat = re.compile(re.escape(_safe(rule_name)) + r"\.[0-9a-f]{16}\.json")
    return sorted(p for p in folder.glob(f"{_safe(rule_name)}.*.json") if pat.fullmatch(p.name))


def certificate_path(rule: Rule, ops: dict[str, OpDecl]) -> Path:
    return proofs_dir(rule) / f"{_safe(rule.name)}.{rule_hash(rule, ops)[:16]}.json"


def status(rule: Rule, ruleset: Any) -> str:
    """'current' | 'stale' | 'missing' (no solver involved)."""
    return certificate_status(rule, ruleset).state


def certificate_status(rule: Rule, ruleset: Any) -> Status:
    ops = ruleset.ops if hasattr(ruleset, "ops") else ruleset
    path = certificate_path(rule, ops)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return Status("stale", path, f"certificate {path.name} is unreadable")
        if data.get("result") == "proved" and data.get("hash") == rule_hash(rule, ops):
            return Status("current", path, "")
        return Status("stale", path, f"certificate {path.name} does not record a proof of this rule")
    others = _own(path.parent, rule.name) if path.parent.is_dir() else []
    if others:
        return Status("stale", others[0], "the rule, the semantics it uses, its axioms, its functions or the "
                                          "strategy changed since its certificate was written")
    return Status("missing", None, "no certificate")


def require_certified(rules: Iterable[Rule], ruleset: Any) -> None:
    """Raise UncertifiedRule naming the first rule without a current certificate."""
    for r in rules:
        st = certificate_status(r, ruleset)
        if not st.ok:
            where = f" ({r.loc})" if r.loc else ""
            raise UncertifiedRule(
                f"rule '{r.name}'{where} has no current certificate ({st.state}: {st.reason}); "
                f"run `sr-ir prove` to prove it")


def write(rule: Rule, ops: dict[str, OpDecl], result: dict) -> Path:
    """Write the certificate of a proved rule (atomically) and remove the rule's stale ones."""
    from ..ir.persist import atomic_write

    path = certificate_path(rule, ops)
    versions = {}
    try:
        import z3

        versions["z3"] = z3.get_version_string()
    except ImportError:  # pragma: no cover
        pass
    try:
        import sympy

        versions["sympy"] = sympy.__version__
    except ImportError:  # pragma: no cover
        pass
    data = {
        "rule": rule.name,
        "file": str(rule.loc) if rule.loc else None,
        "hash": rule_hash(rule, ops),
        "result": "proved",
        "tier": result.get("tier"),
        "sizes": result.get("sizes", []),
        # every instance (sizes and attribute values) the bounded tier proved, the test tier tried, and
        # the run settings of the parametric tier
        "bounded": result.get("bounded", []),
        "tested": result.get("tested", []),
        "parametric": result.get("parametric", []),
        "templates": result.get("templates", {}),
        "symbolic_dims": result.get("symbolic_dims", []),
        "note": result.get("message", ""),
        "warnings": result.get("warnings", []),
        "seconds": result.get("seconds"),
        "axioms": list(rule.axioms),
        "strategy": STRATEGY,
        "solvers": versions,
        "arithmetic": "exact real arithmetic; float rounding is not modelled (measured separately)",
        "rule_text": rule.text(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    remove_stale(rule, ops)
    return path


def remove_stale(rule: Rule, ops: dict[str, OpDecl], keep_current: bool = True) -> None:
    path = certificate_path(rule, ops)
    if not path.parent.is_dir():
        return
    for p in _own(path.parent, rule.name):
        if p != path or not keep_current:
            p.unlink(missing_ok=True)


# ---- template certificates ---------------------------------------------------------------------
def _op_proofs_dir(decl: OpDecl) -> Path:
    """Bundled ops keep template certificates in the package's proofs/templates, others next to
    their rule file (DIR/proofs/templates)."""
    bundled = data_dir("rules").resolve()
    f = Path(decl.loc.file).resolve() if decl.loc else bundled
    if f == bundled or bundled in f.parents:
        base = data_dir("proofs") if _has_proofs() else bundled.parent / "proofs"
    else:
        base = f.parent / "proofs"
    return base / "templates"


def template_certificate_path(decl: OpDecl, vocabulary: Any = None) -> Path:
    from .templates import template_hash

    return _op_proofs_dir(decl) / f"{_safe(decl.name)}.{template_hash(decl, (), vocabulary)[:16]}.json"


def template_certificate(decl: OpDecl, vocabulary: Any = None) -> dict | None:
    """The stored check of an op's template, when current (no solver, no torch)."""
    from .templates import template_hash

    path = template_certificate_path(decl, vocabulary)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("status") == "proved" and data.get("hash") == template_hash(decl, (), vocabulary) else None


def write_template(decl: OpDecl, result: dict, vocabulary: Any = None) -> Path | None:
    """Store a passed template check (and drop the op's stale ones); a failed one only drops them."""
    from ..ir.persist import atomic_write

    path = template_certificate_path(decl, vocabulary)
    folder = path.parent
    if folder.is_dir():
        for p in _own(folder, decl.name):
            if p != path or result.get("status") != "proved":
                p.unlink(missing_ok=True)
    if result.get("status") != "proved":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    data = dict(result)
    data["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["arithmetic"] = "means in exact rationals (real functions in float64) vs the template in float64 torch"
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return path
